"""Group commit: concurrent appends are durable, ordered and share fsyncs; a closed journal refuses appends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from s4.journal import EventDraft, EventType, GroupCommitQueue, Journal, JournalClosedError


def test_concurrent_appends_are_gap_free_durable_and_in_acknowledged_order(tmp_path: Path) -> None:
    async def main() -> list[int]:
        journal = Journal(tmp_path, origin="n1")
        try:
            events = await asyncio.gather(*(journal.append(EventType.BUCKET_CREATED, {"bucket": f"b{i}"}, f"u{i}")
                                            for i in range(200)))
        finally:
            journal.close()
        return [e.seq for e in events]

    seqs = asyncio.run(main())
    assert sorted(seqs) == list(range(1, 201))
    reopened = Journal(tmp_path, origin="n1")  # a fresh open proves the events reached the disk intact
    try:
        logged = list(reopened.read())
    finally:
        reopened.close()
    assert [e.seq for e in logged] == list(range(1, 201))
    by_bucket = {e.payload["bucket"]: e for e in logged}
    for i, seq in enumerate(seqs):
        assert by_bucket[f"b{i}"].seq == seq and by_bucket[f"b{i}"].actor == f"u{i}"
    assert all(a.hlc < b.hlc for a, b in zip(logged, logged[1:], strict=False))


def test_concurrent_appends_share_batches(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        journal = Journal(tmp_path, origin="n1")
        try:
            await asyncio.gather(*(journal.append(EventType.BUCKET_CREATED, {"bucket": f"b{i}"}) for i in range(256)))
            assert journal.committer is not None
            return journal.committer.batches, journal.committer.items
        finally:
            journal.close()

    batches, items = asyncio.run(main())
    assert items == 256 and batches < items


def test_batch_collects_everything_queued_while_the_previous_one_commits() -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[list[int]] = []

    def process(batch: list[int]) -> list[int]:
        seen.append(list(batch))
        if len(seen) == 1:
            started.set()
            release.wait(5)
        return [x * 10 for x in batch]

    queue: GroupCommitQueue[int, int] = GroupCommitQueue(process)
    try:
        first = queue.submit_sync(0)
        assert started.wait(5)
        rest = [queue.submit_sync(i) for i in range(1, 11)]
        release.set()
        assert first.result(5) == 0 and [f.result(5) for f in rest] == [i * 10 for i in range(1, 11)]
    finally:
        queue.close()
    assert seen == [[0], list(range(1, 11))]
    assert queue.batches == 2 and queue.items == 11 and queue.mean_batch == 5.5


def test_a_failed_batch_fails_every_submitter_and_the_next_batch_still_runs() -> None:
    calls = 0

    def process(batch: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return batch

    queue: GroupCommitQueue[str, str] = GroupCommitQueue(process)
    try:
        with pytest.raises(OSError, match="disk full"):
            queue.submit_sync("a").result(5)
        assert queue.submit_sync("b").result(5) == "b"
    finally:
        queue.close()


def test_per_item_exceptions_reach_only_their_submitter() -> None:
    def process(batch: list[int]) -> list[int | BaseException]:
        return [ValueError(str(x)) if x % 2 else x for x in batch]

    queue: GroupCommitQueue[int, int] = GroupCommitQueue(process)
    try:
        futures = [queue.submit_sync(i) for i in range(4)]
        assert futures[0].result(5) == 0 and futures[2].result(5) == 2
        with pytest.raises(ValueError, match="3"):
            futures[3].result(5)
    finally:
        queue.close()


def test_close_finishes_queued_items_then_refuses() -> None:
    gate = threading.Event()

    def process(batch: list[int]) -> list[int]:
        gate.wait(5)
        return batch

    queue: GroupCommitQueue[int, int] = GroupCommitQueue(process)
    queued = [queue.submit_sync(i) for i in range(5)]
    gate.set()
    queue.close()
    assert [f.result(0) for f in queued] == list(range(5))
    with pytest.raises(JournalClosedError):
        queue.submit_sync(99).result(0)


def test_closed_journal_refuses_appends_and_writes(tmp_path: Path) -> None:
    async def main() -> None:
        journal = Journal(tmp_path, origin="n1")
        await journal.append(EventType.BUCKET_CREATED, {"bucket": "before"})
        journal.close()
        with pytest.raises(JournalClosedError):
            await journal.append(EventType.BUCKET_CREATED, {"bucket": "after"})
        with pytest.raises(JournalClosedError):
            journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "after"})])

    asyncio.run(main())
    reopened = Journal(tmp_path, origin="n1")
    try:
        assert [e.payload["bucket"] for e in reopened.read()] == ["before"]
    finally:
        reopened.close()


def test_closed_journal_without_appends_refuses_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    journal.close()
    with pytest.raises(JournalClosedError):
        journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "x"})])


def test_write_events_refuses_a_seq_that_does_not_continue_the_log(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1")
    try:
        (event,) = journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "x"})])
        with pytest.raises(ValueError, match="does not continue"):
            journal.write_events([journal.stamp(EventDraft(EventType.BUCKET_DELETED, {"bucket": "x"}), 3)])
        assert journal.last_seq == 1
    finally:
        journal.close()


def test_segments_roll_at_the_configured_size(tmp_path: Path) -> None:
    journal = Journal(tmp_path, origin="n1", segment_size_bytes=200)
    try:
        for i in range(20):
            journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": f"bucket-{i}"})])
        assert [e.seq for e in journal.read()] == list(range(1, 21))
        assert [e.seq for e in journal.read(7, 9)] == [7, 8, 9]
    finally:
        journal.close()
    assert len(list(tmp_path.glob("*.s4j"))) > 3
