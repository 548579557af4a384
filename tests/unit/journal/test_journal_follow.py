"""JournalTail: a reader following the log from a seq, incrementally, across segment rolls and partial records."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from s4.journal import EventDraft, EventType, Journal
from s4.journal.framing import ScanEnd, scan_records
from s4.journal.segment import SEGMENT_HEADER_BYTES, list_segments
from s4.journal.tail import JournalTail


def _write(journal: Journal, sizes: list[int]) -> None:
    n = 0
    for size in sizes:
        journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": f"b-{n + i}", "pad": "x" * 50})
                             for i in range(size)])
        n += size


def test_follows_every_event_in_order_across_segment_rolls(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1", segment_size_bytes=4096)
    tail = JournalTail(tmp_path, 0)
    seen: list[int] = []
    for round_ in range(6):  # the log grows between reads; the reader keeps its place
        _write(journal, [3, 1, 5])
        while len(seen) < journal.last_seq:
            batch = tail.read(journal.last_seq, limit=4)
            assert batch, f"stalled at {tail.next_seq} of {journal.last_seq} (round {round_})"
            seen.extend(e.seq for e in batch)
    assert len(list_segments(tmp_path)) > 1
    assert seen == list(range(1, journal.last_seq + 1))
    assert tail.read(journal.last_seq) == []
    journal.close()


def test_never_returns_past_upto_and_resumes_inside_a_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    _write(journal, [10])  # one record holding seqs 1..10
    tail = JournalTail(tmp_path, 2)
    assert [e.seq for e in tail.read(6)] == [3, 4, 5, 6]
    assert [e.seq for e in tail.read(6)] == []
    assert [e.seq for e in tail.read(10)] == [7, 8, 9, 10]
    journal.close()


def test_a_record_still_being_written_is_waited_for(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    _write(journal, [2, 2])
    segment = list_segments(tmp_path)[-1]
    whole = segment.read_bytes()
    journal.close()
    with open(segment, "r+b") as f:  # the second record half written (as another process may see it)
        f.truncate(len(whole) - 10)
    tail = JournalTail(tmp_path, 0)
    assert [e.seq for e in tail.read(4)] == [1, 2]
    with open(segment, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(whole[len(whole) - 10:])
    assert [e.seq for e in tail.read(4)] == [3, 4]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=25), st.integers(0, 40), st.integers(1, 7))
def test_any_start_and_batch_size_reads_exactly_the_events_after_it(tmp_path_factory, sizes, after, limit) -> None:
    path = tmp_path_factory.mktemp("j")
    journal = Journal(path, origin="n1", segment_size_bytes=2048)
    _write(journal, sizes)
    last = journal.last_seq
    tail = JournalTail(path, after)
    seen: list[int] = []
    for _ in range(last + 2):
        seen.extend(e.seq for e in tail.read(last, limit))
    assert seen == list(range(after + 1, last + 1))
    journal.close()


def test_a_record_longer_than_the_read_chunk_is_read_whole_and_a_cut_one_waited_for(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from s4.journal import tail as tail_module

    monkeypatch.setattr(tail_module, "READ_CHUNK_BYTES", 256)  # records of ~1 KiB: each needs a bigger read
    journal = Journal(tmp_path, origin="n1")
    _write(journal, [12, 12])
    segment = list_segments(tmp_path)[-1]
    whole = segment.read_bytes()
    journal.close()
    second = [item for item in scan_records(whole, SEGMENT_HEADER_BYTES) if not isinstance(item, ScanEnd)][1][0]
    cut = second + 512  # exactly two chunks of the second record: the read that doubled past it finds half of it
    assert len(whole) > cut
    with open(segment, "r+b") as f:
        f.truncate(cut)
    follower = JournalTail(tmp_path, 0)
    assert [e.seq for e in follower.read(24)] == list(range(1, 13))
    assert follower.read(24) == []  # waits for the rest (once looped for ever here)
    with open(segment, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(whole[cut:])
    assert [e.seq for e in follower.read(24)] == list(range(13, 25))
