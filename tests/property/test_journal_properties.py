"""Journal properties (hypothesis): codec round trip, recovery after a cut at any byte, any single flipped bit."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.journal import CorruptJournalError, Event, EventDraft, EventType, Journal, decode_event, encode_event, recover
from s4.journal.framing import HEADER_BYTES, scan_records
from s4.journal.segment import SEGMENT_HEADER_BYTES, list_segments

SETTINGS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
           | st.binary(max_size=40) | st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
payloads = st.dictionaries(st.text(max_size=10), values, max_size=6)
event_types = st.sampled_from(list(EventType))

events = st.builds(Event, seq=st.integers(0, 2**63 - 1), hlc=st.integers(0, 2**64 - 1), origin=st.text(max_size=20),
                   type=event_types, payload=payloads, actor=st.text(max_size=20))
# Logs only need varied sizes, not varied shapes (the codec property covers those): cheap payloads keep them fast.
flat_payloads = st.dictionaries(st.sampled_from(["bucket", "key", "v", "b"]),
                                st.binary(max_size=60) | st.text(max_size=30) | st.integers(0, 2**40), max_size=3)
drafts = st.builds(EventDraft, type=event_types, payload=flat_payloads, actor=st.sampled_from(["", "alice"]))
# A log: a few group-committed batches; small segments so most logs span several files.
logs = st.tuples(st.lists(st.lists(drafts, min_size=1, max_size=4), min_size=1, max_size=5),
                 st.integers(64, 1500))


@pytest.fixture(autouse=True, scope="module")
def no_fsync() -> Iterator[None]:
    """Durability is not what these properties test; skipping fsync keeps hundreds of examples fast."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        mp.setattr(os, "fdatasync", lambda fd: None)
        yield


@SETTINGS
@given(events)
def test_codec_round_trips_any_event(event: Event) -> None:
    assert decode_event(encode_event(event)) == event


def write(directory: Path, batches: list[list[EventDraft]], segment_size: int) -> list[list[Event]]:
    """The events of each batch; a batch is one journal record."""
    journal = Journal(directory, origin="prop", segment_size_bytes=segment_size)
    try:
        return [journal.write_batch(batch) for batch in batches]
    finally:
        journal.close()


def read_all(directory: Path) -> list[Event]:
    journal = Journal(directory, origin="prop")
    try:
        return list(journal.read())
    finally:
        journal.close()


def frame_ends(path: Path) -> list[int]:
    """End offset of every record of a segment, in order."""
    return [off + HEADER_BYTES + len(p) for off, p in
            (item for item in scan_records(path.read_bytes(), SEGMENT_HEADER_BYTES) if isinstance(item, tuple))]


def layout(directory: Path, batches: list[list[Event]]) -> list[tuple[Path, list[tuple[int, Event]]]]:
    """Each segment with (end offset of its record, event) for the events it holds: one record per batch."""
    out, index = [], 0
    for path in list_segments(directory):
        ends = frame_ends(path)
        records = [(end, e) for end, batch in zip(ends, batches[index : index + len(ends)], strict=True)
                   for e in batch]
        out.append((path, records))
        index += len(ends)
    assert index == len(batches)
    return out


@SETTINGS
@given(logs, st.data())
def test_a_cut_at_any_byte_recovers_exactly_the_events_written_before_it(log: Any, data: st.DataObject) -> None:
    batches, segment_size = log
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        written = write(directory, batches, segment_size)
        segments = layout(directory, written)
        last, records = segments[-1]
        cut = data.draw(st.integers(0, last.stat().st_size), label="cut")
        with open(last, "r+b") as fh:
            fh.truncate(cut)
        earlier = [e for _, recs in segments[:-1] for _, e in recs]
        expected = earlier + [e for end, e in records if end <= cut]

        report = recover(directory)
        assert report.last_seq == len(expected)
        assert read_all(directory) == expected

        journal = Journal(directory, origin="prop")
        try:
            (extra,) = journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "after-cut"})])
        finally:
            journal.close()
        assert extra.seq == len(expected) + 1
        assert read_all(directory) == [*expected, extra]


@SETTINGS
@given(logs, st.data())
def test_any_flipped_bit_is_detected_and_repair_keeps_the_intact_prefix(log: Any, data: st.DataObject) -> None:
    batches, segment_size = log
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        written = write(directory, batches, segment_size)
        logged = [e for batch in written for e in batch]
        segments = layout(directory, written)
        index = data.draw(st.integers(0, len(segments) - 1), label="segment")
        path, records = segments[index]
        raw = bytearray(path.read_bytes())
        pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        path.write_bytes(bytes(raw))
        # Events whose record lies wholly before the damaged byte (earlier segments included).
        intact = [e for _, recs in segments[:index] for _, e in recs] + [e for end, e in records if end <= pos]

        try:
            recover(directory)
        except CorruptJournalError as exc:
            assert exc.segment == path.name
        else:  # only a damaged last record of the last segment may pass for a torn tail
            recovered = read_all(directory)
            assert len(recovered) < len(logged)
            assert recovered == logged[: len(recovered)] == intact

        report = recover(directory, repair=True)
        assert report.last_seq == len(intact)
        assert read_all(directory) == intact
