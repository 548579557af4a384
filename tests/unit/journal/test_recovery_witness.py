"""Issue 18 item 3: a durable witness (the trusted views' last_seq) turns a "torn tail" below it into corruption.

A tear is only a tear when nothing durable proves its records were committed. Recovery with ``witness=W`` must:
refuse (CorruptJournalError naming segment, offset and why, nothing modified) when the log would end below W,
whether through a damaged last record or a log that simply ends early; and keep cutting tears above W as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_recovery import flip, frames, one_record_per_event, only_segment, read_back, write_log

from s4.journal import CorruptJournalError, Journal, recover
from s4.journal.recovery import witness_gap
from s4.journal.segment import list_segments

__all__ = ["one_record_per_event"]  # the autouse fixture: one record per event, as in test_recovery


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in list_segments(directory)}


def test_issue18_flipped_bit_in_the_last_record_below_the_witness_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    last_start, _ = frames(seg)[-1]
    flip(seg, seg.stat().st_size - 1)
    before = snapshot(tmp_path)
    with pytest.raises(CorruptJournalError) as exc:
        recover(tmp_path, witness=3)
    assert exc.value.segment == seg.name and exc.value.offset == last_start
    assert "payload checksum mismatch" in exc.value.reason and "seq 3 was committed" in exc.value.reason
    assert snapshot(tmp_path) == before  # refusing changes nothing


def test_issue18_journal_open_with_a_witness_refuses_too(tmp_path: Path) -> None:
    write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    flip(seg, seg.stat().st_size - 1)
    with pytest.raises(CorruptJournalError, match="seq 3 was committed"):
        Journal(tmp_path, origin="n1", witness=3)


def test_issue18_cut_off_last_record_below_the_witness_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [4])
    seg = only_segment(tmp_path)
    last_start, last_end = frames(seg)[-1]
    with open(seg, "r+b") as fh:
        fh.truncate(last_end - 3)
    with pytest.raises(CorruptJournalError) as exc:
        recover(tmp_path, witness=4)
    assert exc.value.offset == last_start and "cut off" in exc.value.reason


def test_issue18_log_ending_cleanly_below_the_witness_refuses(tmp_path: Path) -> None:
    """A lost record boundary or a deleted last segment: no damaged byte, but acknowledged events are missing."""
    write_log(tmp_path, [2, 2], segment_size_bytes=1)
    last = list_segments(tmp_path)[-1]
    last.unlink()
    with pytest.raises(CorruptJournalError) as exc:
        recover(tmp_path, witness=4)
    assert exc.value.segment == list_segments(tmp_path)[-1].name
    assert "seq 3..4 were committed" in exc.value.reason and "journal ends at seq 2" in exc.value.reason


def test_issue18_empty_journal_below_the_witness_refuses(tmp_path: Path) -> None:
    with pytest.raises(CorruptJournalError, match="journal ends at seq 0"):
        recover(tmp_path, witness=1)


def test_issue18_torn_tail_above_the_witness_is_still_cut(tmp_path: Path) -> None:
    """A record the views never applied was never acknowledged: cut as before (kill -9 during a write)."""
    events = write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    flip(seg, seg.stat().st_size - 1)
    report = recover(tmp_path, witness=2)
    assert report.last_seq == 2 and "payload checksum mismatch" in report.notes[0]
    assert read_back(tmp_path) == events[:2]


def test_issue18_flipped_bit_in_a_middle_record_refuses_whatever_the_witness(tmp_path: Path) -> None:
    write_log(tmp_path, [5])
    seg = only_segment(tmp_path)
    start, _ = frames(seg)[2]
    flip(seg, start + 14)
    for witness in (0, 2, 5):
        with pytest.raises(CorruptJournalError) as exc:
            recover(tmp_path, witness=witness)
        assert exc.value.offset == start


def test_issue18_repair_cuts_below_the_witness_and_says_what_was_lost(tmp_path: Path) -> None:
    write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    flip(seg, seg.stat().st_size - 1)
    report = recover(tmp_path, repair=True, witness=3)
    assert report.last_seq == 2
    assert any("seq 3 was committed" in note for note in report.notes)


def test_witness_gap_wording() -> None:
    assert witness_gap(5, 5) is None and witness_gap(5, 0) is None
    assert "seq 6 was committed" in (witness_gap(5, 6) or "")
    assert "seq 6..9 were committed" in (witness_gap(5, 9) or "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000), witness=st.integers(min_value=0, max_value=6))
def test_issue18_any_cut_recovers_or_refuses_by_the_witness(tmp_path_factory: pytest.TempPathFactory, cut: int,
                                                            witness: int) -> None:
    """Truncating the log anywhere: recovery keeps exactly the records before the cut when they reach the witness,
    and refuses (changing nothing) when they do not."""
    directory = tmp_path_factory.mktemp("log")
    events = write_log(directory, [6])
    seg = only_segment(directory)
    spans = frames(seg)
    size = seg.stat().st_size
    cut_at = spans[0][0] + cut % (size - spans[0][0] + 1)
    with open(seg, "r+b") as fh:
        fh.truncate(cut_at)
    intact = sum(1 for _, end in spans if end <= cut_at)
    before = snapshot(directory)
    if intact >= witness:
        assert recover(directory, witness=witness).last_seq == intact
        assert read_back(directory) == events[:intact]
    else:
        with pytest.raises(CorruptJournalError):
            recover(directory, witness=witness)
        assert snapshot(directory) == before
