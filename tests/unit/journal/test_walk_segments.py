"""journal.recovery.walk_segments: the one loop over the log that start-up recovery and the offline tools
(tools/replay.py) share. Read-only; a SegmentEnd after each segment; nothing after the first unclean one."""

from __future__ import annotations

from pathlib import Path

from s4.journal import Event, EventDraft, EventType, Journal
from s4.journal.framing import StopReason
from s4.journal.recovery import SegmentEnd, walk_segments
from s4.journal.segment import SEGMENT_HEADER_BYTES, list_segments


def write_segments(directory: Path, count: int) -> list[Path]:
    """``count`` segments of one batch (two events) each."""
    journal = Journal(directory, origin="n1", segment_size_bytes=1)
    for i in range(count):
        journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": f"b{i}-{j}"}) for j in range(2)])
    journal.close()
    return list_segments(directory)


def test_walk_yields_every_event_and_a_clean_end_per_segment(tmp_path: Path) -> None:
    segments = write_segments(tmp_path, 3)
    assert len(segments) == 3
    items = list(walk_segments(segments))
    assert [i.seq for i in items if isinstance(i, Event)] == list(range(1, 7))
    ends = [i for i in items if isinstance(i, SegmentEnd)]
    assert [(e.index, e.path, e.end.reason) for e in ends] == [(n, p, StopReason.CLEAN) for n, p in enumerate(segments)]
    assert [i.seq for i in walk_segments(segments, 1) if isinstance(i, Event)] == [3, 4, 5, 6]


def test_walk_stops_at_the_first_unclean_segment_and_changes_nothing(tmp_path: Path) -> None:
    segments = write_segments(tmp_path, 3)
    middle = segments[1]
    data = bytearray(middle.read_bytes())
    data[SEGMENT_HEADER_BYTES + 6] ^= 0x01  # inside the first record's frame
    middle.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in segments}
    items = list(walk_segments(segments))
    assert [i.seq for i in items if isinstance(i, Event)] == [1, 2]
    last = items[-1]
    assert isinstance(last, SegmentEnd) and last.index == 1 and last.end.reason is not StopReason.CLEAN
    assert {p: p.read_bytes() for p in segments} == before
