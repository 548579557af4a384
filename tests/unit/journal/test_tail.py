"""The journal's tail API for the sequencer's overlapped fsyncs: encode, write_encoded, tail_record, cut_tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.journal import EventDraft, EventType, Journal, JournalClosedError, writer
from s4.journal.segment import SEGMENT_HEADER_BYTES, list_segments


def drafts(n: int, start: int = 0) -> list[EventDraft]:
    return [EventDraft(EventType.BUCKET_CREATED, {"bucket": f"bucket-{start + i}"}) for i in range(n)]


def stamped(journal: Journal, n: int, start: int = 0):  # type: ignore[no-untyped-def]
    return [journal.stamp(d, journal.last_seq + i) for i, d in enumerate(drafts(n, start), 1)]


def test_tail_record_is_the_last_batch_and_cut_tail_removes_it_durably(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    assert journal.tail_record() is None
    journal.write_events(stamped(journal, 3))
    batch = journal.encode(stamped(journal, 2, start=3))
    assert (batch.records, batch.first_seq, batch.last_seq) == (1, 4, 5)
    offset = journal.write_encoded(batch)
    tail = journal.tail_record()
    assert tail is not None and tail.offset == offset
    assert [e.seq for e in tail.events] == [4, 5]
    journal.cut_tail(tail.offset, 3)
    assert journal.last_seq == 3
    journal.write_events(stamped(journal, 1, start=10))  # the log continues where the cut left it
    journal.close()
    reopened = Journal(tmp_path, origin="n1")
    assert [(e.seq, e.payload["bucket"]) for e in reopened.read()] == [
        (1, "bucket-0"), (2, "bucket-1"), (3, "bucket-2"), (4, "bucket-10")]
    reopened.close()


def test_cutting_a_batch_that_opened_a_segment_leaves_an_empty_segment_the_log_continues_in(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1", segment_size_bytes=1)  # every batch rolls to a new segment
    journal.write_events(stamped(journal, 2))
    offset = journal.write_encoded(journal.encode(stamped(journal, 2, start=2)))
    assert offset == SEGMENT_HEADER_BYTES and len(list_segments(tmp_path)) == 2
    journal.cut_tail(offset, 2)
    assert journal.tail_record() is None  # the tail segment has no record: the last batch is in the one before
    journal.close()
    reopened = Journal(tmp_path, origin="n1")
    assert reopened.last_seq == 2
    reopened.write_events(stamped(reopened, 1, start=7))
    assert [e.seq for e in reopened.read()] == [1, 2, 3]
    reopened.close()


def test_a_batch_past_the_record_target_is_several_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "RECORD_TARGET_BYTES", 1)
    journal = Journal(tmp_path, origin="n1")
    batch = journal.encode(stamped(journal, 3))
    assert batch.records == 3
    journal.write_encoded(batch)
    tail = journal.tail_record()
    assert tail is not None and [e.seq for e in tail.events] == [3]
    journal.close()


def test_a_batch_that_does_not_continue_the_log_or_has_a_gap_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    early = journal.encode(stamped(journal, 1))
    journal.write_events(stamped(journal, 1))
    with pytest.raises(ValueError, match="does not continue"):
        journal.write_encoded(early)
    events = stamped(journal, 3)
    with pytest.raises(ValueError, match="does not follow"):
        journal.encode([events[0], events[2]])
    assert journal.last_seq == 1
    journal.close()


def test_a_journal_that_cannot_be_cut_refuses_further_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    offset = journal.write_encoded(journal.encode(stamped(journal, 1)))
    journal.close()  # the descriptor is gone: the cut fails
    journal._closed = False  # noqa: SLF001 - pretend it is still open, so only the cut's failure closes it
    with pytest.raises(OSError):
        journal.cut_tail(offset, 0)
    with pytest.raises(JournalClosedError):
        journal.write_events(stamped(journal, 1))
