"""Start-up recovery, one test per LevelDB ``log_test``-style edge case.

A torn tail (the bytes of a write that never completed) is truncated and reported; anything bad before the durable
end refuses start-up with CorruptJournalError naming segment and offset, unless ``repair=True``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from s4.journal import CorruptJournalError, Event, EventDraft, EventType, Journal, recover, writer
from s4.journal.codec import encode_event
from s4.journal.framing import HEADER_BYTES, checksum, encode_record, scan_records
from s4.journal.segment import SEGMENT_HEADER_BYTES, encode_header, list_segments, segment_name


@pytest.fixture(autouse=True)
def one_record_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer packs a batch into one record; these tests address each event's own frame."""
    monkeypatch.setattr(writer, "RECORD_TARGET_BYTES", 0)


def write_log(directory: Path, batches: list[int], segment_size_bytes: int = 1 << 20) -> list[Event]:
    """A journal of ``sum(batches)`` small events; with ``segment_size_bytes=1`` every batch gets a segment."""
    journal = Journal(directory, origin="n1", segment_size_bytes=segment_size_bytes)
    events: list[Event] = []
    for size in batches:
        drafts = [EventDraft(EventType.BUCKET_CREATED, {"bucket": f"bucket-{len(events) + i}"}) for i in range(size)]
        events += journal.write_batch(drafts)
    journal.close()
    return events


def read_back(directory: Path) -> list[Event]:
    journal = Journal(directory, origin="n1")
    try:
        return list(journal.read())
    finally:
        journal.close()


def frames(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every intact record of a segment."""
    out = []
    for item in scan_records(path.read_bytes(), SEGMENT_HEADER_BYTES):
        if isinstance(item, tuple):
            offset, payload = item
            out.append((offset, offset + HEADER_BYTES + len(payload)))
    return out


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def only_segment(directory: Path) -> Path:
    (path,) = list_segments(directory)
    return path


def write_segment(directory: Path, first_seq: int, events: list[Event]) -> Path:
    path = directory / segment_name(first_seq)
    path.write_bytes(encode_header(first_seq, 0) + b"".join(encode_record(encode_event(e)) for e in events))
    return path


# -- clean logs ----------------------------------------------------------------------------------------------------
def test_empty_directory_recovers_to_nothing(tmp_path: Path) -> None:
    report = recover(tmp_path)
    assert (report.last_seq, report.tail_segment, report.dropped_bytes) == (0, None, 0)


def test_clean_log_is_left_byte_for_byte_untouched(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3, 2], segment_size_bytes=1)
    before = {p.name: p.read_bytes() for p in list_segments(tmp_path)}
    report = recover(tmp_path)
    assert {p.name: p.read_bytes() for p in list_segments(tmp_path)} == before
    assert report.last_seq == 5 and report.last_hlc == events[-1].hlc
    assert report.tail_segment == list_segments(tmp_path)[-1]
    assert report.tail_offset == report.tail_segment.stat().st_size
    assert not report.notes and not report.dropped_segments


# -- torn tails: truncated and reported ----------------------------------------------------------------------------
def test_truncated_header_at_the_tail_is_truncated(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    size = seg.stat().st_size
    with open(seg, "ab") as fh:
        fh.write(encode_record(b"never finished")[:5])
    report = recover(tmp_path)
    assert seg.stat().st_size == size
    assert report.last_seq == 3 and report.dropped_bytes == 5
    assert "shorter than a record header" in report.notes[0]
    assert read_back(tmp_path) == events


def test_truncated_payload_at_the_tail_drops_only_that_record(tmp_path: Path) -> None:
    events = write_log(tmp_path, [4])
    seg = only_segment(tmp_path)
    last_start, last_end = frames(seg)[-1]
    with open(seg, "r+b") as fh:
        fh.truncate(last_end - 3)
    report = recover(tmp_path)
    assert report.last_seq == 3 and report.tail_offset == last_start == seg.stat().st_size
    assert "cut off" in report.notes[0]
    assert read_back(tmp_path) == events[:3]


def test_valid_header_claiming_more_bytes_than_the_file_holds_is_torn(tmp_path: Path) -> None:
    write_log(tmp_path, [2])
    seg = only_segment(tmp_path)
    head = struct.pack("<II", 1000, 0)
    with open(seg, "ab") as fh:
        fh.write(head + struct.pack("<I", checksum(head)) + b"partial")
    report = recover(tmp_path)
    assert report.last_seq == 2 and report.dropped_bytes == HEADER_BYTES + 7


def test_checksum_mismatch_in_the_very_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    flip(seg, seg.stat().st_size - 1)
    report = recover(tmp_path)
    assert report.last_seq == 2 and "payload checksum mismatch" in report.notes[0]
    assert read_back(tmp_path) == events[:2]


def test_zero_filled_tail_from_preallocation_is_truncated(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    size = seg.stat().st_size
    with open(seg, "ab") as fh:
        fh.write(bytes(8192))
    report = recover(tmp_path)
    assert seg.stat().st_size == size and report.dropped_bytes == 8192
    assert "zero-filled" in report.notes[0]
    assert read_back(tmp_path) == events


def test_empty_last_segment_is_removed(tmp_path: Path) -> None:
    events = write_log(tmp_path, [2])
    empty = tmp_path / segment_name(3)
    empty.write_bytes(b"")
    report = recover(tmp_path)
    assert not empty.exists() and report.dropped_segments == [empty.name]
    assert report.last_seq == 2 and read_back(tmp_path) == events


def test_partly_written_segment_header_is_removed(tmp_path: Path) -> None:
    write_log(tmp_path, [2])
    partial = tmp_path / segment_name(3)
    partial.write_bytes(encode_header(3, 0)[:10])
    report = recover(tmp_path)
    assert not partial.exists() and report.last_seq == 2


def test_journal_continues_the_seq_after_a_torn_tail(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3])
    with open(only_segment(tmp_path), "ab") as fh:
        fh.write(b"\x07\x00")
    journal = Journal(tmp_path, origin="n1")
    try:
        assert journal.report.dropped_bytes == 2
        (new,) = journal.write_batch([EventDraft(EventType.BUCKET_DELETED, {"bucket": "bucket-0"})])
        assert new.seq == 4 and new.hlc > events[-1].hlc
    finally:
        journal.close()
    assert read_back(tmp_path) == [*events, new]


# -- corruption before the durable end: refuse -----------------------------------------------------------------------
def test_checksum_mismatch_mid_log_refuses_naming_segment_and_offset(tmp_path: Path) -> None:
    write_log(tmp_path, [4])
    seg = only_segment(tmp_path)
    start, end = frames(seg)[1]
    flip(seg, end - 1)
    before = seg.read_bytes()
    with pytest.raises(CorruptJournalError) as info:
        recover(tmp_path)
    assert (info.value.segment, info.value.offset) == (seg.name, start)
    assert seg.name in str(info.value) and f"offset {start}" in str(info.value)
    assert "s4-journal repair" in str(info.value)
    assert seg.read_bytes() == before  # refusing changes nothing


def test_bad_length_mid_log_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    start, _ = frames(seg)[0]
    flip(seg, start + 1, 0x80)  # length grows by 32 KiB: the header checksum catches it
    with pytest.raises(CorruptJournalError, match="header checksum"):
        recover(tmp_path)


def test_undecodable_event_in_an_intact_frame_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [1])
    seg = only_segment(tmp_path)
    with open(seg, "ab") as fh:
        fh.write(encode_record(b"\xc1 is never valid msgpack"))
    with pytest.raises(CorruptJournalError, match="undecodable event"):
        recover(tmp_path)


def test_seq_gap_inside_a_segment_refuses(tmp_path: Path) -> None:
    events = [Event(seq, seq << 16, "n1", EventType.BUCKET_CREATED, {"bucket": f"b{seq}"}) for seq in (1, 2, 4)]
    write_segment(tmp_path, 1, events)
    with pytest.raises(CorruptJournalError, match="seq 4 where 3 was expected"):
        recover(tmp_path)


def test_bad_segment_header_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [2])
    bad = tmp_path / segment_name(3)
    bad.write_bytes(b"garbage!" * 8)
    with pytest.raises(CorruptJournalError, match="invalid segment header") as info:
        recover(tmp_path)
    assert (info.value.segment, info.value.offset) == (bad.name, 0)


def test_empty_segment_before_the_last_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [2, 2], segment_size_bytes=1)
    first, second = list_segments(tmp_path)
    first.write_bytes(b"")
    with pytest.raises(CorruptJournalError) as info:
        recover(tmp_path)
    assert info.value.segment == first.name
    assert second.exists()


def test_missing_middle_segment_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [2, 2, 2], segment_size_bytes=1)
    _, middle, last = list_segments(tmp_path)
    middle.unlink()
    with pytest.raises(CorruptJournalError, match="starts at seq 5, expected 3") as info:
        recover(tmp_path)
    assert info.value.segment == last.name


def test_segment_whose_name_disagrees_with_its_header_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, [2, 2], segment_size_bytes=1)
    _, second = list_segments(tmp_path)
    second.rename(tmp_path / segment_name(2))  # now sorts out of order and claims seq 2
    with pytest.raises(CorruptJournalError, match="segment starts at seq 3"):
        recover(tmp_path)


def test_torn_tail_of_an_earlier_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, [2, 2], segment_size_bytes=1)
    first, _ = list_segments(tmp_path)
    with open(first, "r+b") as fh:
        fh.truncate(first.stat().st_size - 1)
    with pytest.raises(CorruptJournalError, match="cut off"):
        recover(tmp_path)


# -- repair on purpose -----------------------------------------------------------------------------------------------
def test_repair_cuts_at_the_first_bad_spot_and_removes_later_segments(tmp_path: Path) -> None:
    events = write_log(tmp_path, [3, 3, 3], segment_size_bytes=1)
    first, second, third = list_segments(tmp_path)
    start, end = frames(second)[1]
    flip(second, end - 2)
    size_after_cut = second.stat().st_size - start + third.stat().st_size
    report = recover(tmp_path, repair=True)
    assert report.last_seq == 4 and report.tail_segment == second and second.stat().st_size == start
    assert report.dropped_segments == [third.name] and not third.exists()
    assert report.dropped_bytes == size_after_cut
    assert any(note.startswith("repair: cut") for note in report.notes)
    assert first.exists() and read_back(tmp_path) == events[:4]


def test_repair_removes_a_segment_whose_header_is_bad(tmp_path: Path) -> None:
    events = write_log(tmp_path, [2, 2], segment_size_bytes=1)
    _, second = list_segments(tmp_path)
    flip(second, 9)
    report = recover(tmp_path, repair=True)
    assert report.dropped_segments == [second.name] and not second.exists()
    assert read_back(tmp_path) == events[:2]


def test_journal_open_with_repair_flag_repairs(tmp_path: Path) -> None:
    write_log(tmp_path, [3])
    seg = only_segment(tmp_path)
    flip(seg, frames(seg)[0][1] - 1)
    with pytest.raises(CorruptJournalError):
        Journal(tmp_path, origin="n1")
    journal = Journal(tmp_path, origin="n1", repair=True)
    try:
        assert journal.last_seq == 0
        assert journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "x"})])[0].seq == 1
    finally:
        journal.close()
