"""Issue 19, the node's wiring (cluster/wiring.py): CatchUp serves only committed events, and the apply adapter over
the engine's ReplicaPort answers missing blobs and releases the staged entries it consumed.

The defect the first test pins: the events area served the journal writer's head. The sequencer writes a batch to
the journal (its seqs become the head) while the volumes it names are still syncing; when a sync fails the batch is
cut again (journal/writer.py ``cut_tail``) and its seqs go to the next batch. A peer streaming in that window took
an event this node never acknowledged, and moved its cursor past the seq the next (real) event then got."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from s4.cluster.blobs import StagedBlobs
from s4.cluster.catch_up import BatchLimits, journal_batches
from s4.cluster.wiring import CommittedJournal, ReplicaApplier
from s4.engine.errors import MissingBlobsError
from s4.engine.model import BlobLocation
from s4.engine.replica import Applied, PeerBatchResult
from s4.journal import Journal
from s4.journal.codec import decode_event
from s4.journal.events import Event, EventDraft, EventType


async def served(journal: Any, after: int) -> tuple[list[Event], int]:
    events: list[Event] = []
    head = -1
    async for batch in journal_batches(journal, after, BatchLimits(events=3)):
        events += [decode_event(bytes(e)) for e in batch.events]
        head = batch.head_seq
    return events, head


def test_issue19_catch_up_serves_only_committed_events_not_a_batch_cut_after_a_failed_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", origin="node-1")
    try:
        journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": f"b{i}"}) for i in range(3)])
        committed = 3  # the views' last_seq
        # The sequencer's next batch: written (the writer's head is 5 now) while its volume sync runs.
        offset = journal.write_encoded(journal.encode([journal.stamp(EventDraft(
            EventType.BUCKET_CREATED, {"bucket": f"doomed{i}"}), 4 + i) for i in range(2)]))
        assert journal.last_seq == 5
        reader = CommittedJournal(journal, lambda: committed)

        events, head = asyncio.run(served(reader, 0))
        assert head == 3 and [e.seq for e in events] == [1, 2, 3]
        assert list(reader.read(4)) == []  # nothing beyond the committed head, even asked without an end
        # What the journal itself would have served (the defect): the two events never acknowledged.
        raw, raw_head = asyncio.run(served(journal, 0))
        assert raw_head == 5 and {e.payload["bucket"] for e in raw} >= {"doomed0", "doomed1"}

        # The sync failed: the batch is cut, and seq 4 goes to the next (committed) event.
        journal.cut_tail(offset, 3)
        journal.write_batch([EventDraft(EventType.BUCKET_CREATED, {"bucket": "real"})])
        committed = 4
        events, head = asyncio.run(served(reader, 3))
        assert head == 4 and [(e.seq, e.payload["bucket"]) for e in events] == [(4, "real")]
    finally:
        journal.close()


class Port:
    """A ReplicaPort: refuses with MissingBlobsError while a referenced hash is neither indexed nor resolved, else
    applies (and indexes the blobs, as the projection does)."""

    def __init__(self) -> None:
        self.held: set[tuple[int, str]] = set()
        self.indexed: set[bytes] = set()

    def apply_peer_events(self, events: Sequence[Event], resolve: Callable[[bytes], BlobLocation | None] = ...,  # type: ignore[assignment]
                          volumes: Sequence[str] = ()) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        hashes = [c[0] for e in events for c in e.payload.get("version", {}).get("b", ())]
        missing = [h for h in hashes if h not in self.indexed and resolve(h) is None]
        if missing:
            future.set_exception(MissingBlobsError(missing))
            return future
        outcomes = tuple(Applied.ALREADY_HAD if (e.hlc, e.origin) in self.held else Applied.APPLIED for e in events)
        self.held |= {(e.hlc, e.origin) for e in events}
        self.indexed |= set(hashes)
        future.set_result(PeerBatchResult(outcomes, tuple(range(1, len(events) + 1))))
        return future


def put(hlc: int, digest: bytes) -> Event:
    return Event(hlc, hlc, "node-1", EventType.OBJECT_VERSION_PUT,
                 {"bucket": "b", "key": "k", "version": {"b": [[digest, 0, 5]]}})


def test_issue19_apply_adapter_reports_missing_blobs_then_applies_from_the_staged_table_and_releases_it() -> None:
    staged = StagedBlobs()
    applier = ReplicaApplier(Port(), staged)
    digest = b"\x01" * 32
    events = [put(10, digest), Event(11, 11, "node-1", EventType.BUCKET_CREATED, {"bucket": "c"})]

    async def main() -> None:
        first = await applier.apply_peer_events(events)
        assert (first.applied, first.already_had, first.missing_blobs) == (0, 0, (digest,))
        staged.add(BlobLocation(digest, "w1000-00000001.vol", 64, 5))  # fetched: PutBlob/GetBlob stage it
        second = await applier.apply_peer_events(events)
        assert (second.applied, second.already_had, second.missing_blobs) == (2, 0, ())
        assert staged.get(digest) is None  # committed: the blobs view owns it now
        again = await applier.apply_peer_events(events)
        assert (again.applied, again.already_had) == (0, 2)

    asyncio.run(main())


class Woken:
    def __init__(self) -> None:
        self.peers: list[str] = []

    def peer_alive(self, peer: str) -> None:
        self.peers.append(peer)


def test_issue19_a_live_peer_lagging_for_a_while_wakes_its_catch_up_but_writes_in_flight_do_not() -> None:
    """A peer's journal ahead of what this node pulled wakes catch-up once it has been so for LAG_WAKE_S (a write
    this node missed), not at once (the write path is sending those events now: pulling them too fetched their
    blobs twice and stalled large writes)."""
    from s4.cluster.config import build_cluster_config
    from s4.cluster.node import LAG_WAKE_S, ClusterNode

    pool = "node-1:127.0.0.1:7001,node-2:127.0.0.2:7002,node-3:127.0.0.3:7003"
    config = build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id="node-1", node_grpc_addr="127.0.0.1:7001",
        node_http_addr="127.0.0.1:9000", pool_name="pool-1", pool_nodes=pool, replication_factor=3, write_quorum=2,
        read_quorum=2, cluster_secret="a-long-shared-secret", max_clock_offset_s=60.0, hint_ttl_hours=1.0))
    now = [100.0]
    node = ClusterNode(config, lambda: (1, 0), clock=lambda: now[0])
    woken = Woken()
    node.catch_up = woken  # type: ignore[assignment]
    for peer in ("node-2", "node-3"):
        node.liveness.member(peer, "alive", 1)  # SWIM's verdict (issue 20)
    node.liveness.seen("node-2", 1, 7)  # alive, 7 events of which none applied
    node.liveness.seen("node-3", 1, 4)
    node.liveness.applied("node-3", 4)  # caught up with node-3
    node._wake_catch_up()
    assert woken.peers == []  # in flight, perhaps
    now[0] += LAG_WAKE_S / 2
    node.liveness.seen("node-2", 1, 8)
    node._wake_catch_up()
    assert woken.peers == []
    now[0] += LAG_WAKE_S / 2
    node.liveness.seen("node-2", 1, 8)
    node._wake_catch_up()
    assert woken.peers == ["node-2"]


def test_issue19_a_steady_lag_whose_heads_are_covered_in_time_does_not_wake_catch_up() -> None:
    """Under a steady write load some lag shows at every beat (the newest writes in flight, their claims riding on
    the next call), but each head seen is covered a beat later: no pass. A head still not covered LAG_WAKE_S after
    it was seen (a write this node missed, or a node-local event the claims skip) wakes one."""
    from s4.cluster.config import build_cluster_config
    from s4.cluster.node import LAG_WAKE_S, ClusterNode

    pool = "node-1:127.0.0.1:7001,node-2:127.0.0.2:7002,node-3:127.0.0.3:7003"
    config = build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id="node-1", node_grpc_addr="127.0.0.1:7001",
        node_http_addr="127.0.0.1:9000", pool_name="pool-1", pool_nodes=pool, replication_factor=3, write_quorum=2,
        read_quorum=2, cluster_secret="a-long-shared-secret", max_clock_offset_s=60.0, hint_ttl_hours=1.0))
    now = [100.0]
    node = ClusterNode(config, lambda: (1, 0), clock=lambda: now[0])
    woken = Woken()
    node.catch_up = woken  # type: ignore[assignment]
    node.liveness.member("node-2", "alive", 1)
    node.liveness.member("node-3", "alive", 1)
    node.liveness.seen("node-3", 1, 0)
    for beat in range(1, 20):  # a beat every LAG_WAKE_S / 4: head 10 * beat, covered up to the previous head
        node.liveness.seen("node-2", 1, 10 * beat)
        node.liveness.applied("node-2", 10 * (beat - 1))
        node._wake_catch_up()
        now[0] += LAG_WAKE_S / 4
    assert woken.peers == []
    for _ in range(5):  # the claims stop at seq 185 (a gap): the head 190 stays uncovered
        node.liveness.seen("node-2", 1, 200)
        node.liveness.applied("node-2", 185)
        node._wake_catch_up()
        now[0] += LAG_WAKE_S / 4
    assert woken.peers == ["node-2"]


def test_issue19_on_loop_hands_a_thread_completed_outcome_to_the_loop_and_a_waiter_may_give_up_first() -> None:
    from s4.cluster.wiring import on_loop

    async def main() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            assert await on_loop(pool.submit(lambda: 42)) == 42

            def fail() -> None:
                raise MissingBlobsError([b"h" * 32])

            with pytest.raises(MissingBlobsError):
                await on_loop(pool.submit(fail))
            gate = concurrent.futures.Future[int]()
            waiter = on_loop(gate)
            waiter.cancel()  # its caller gave up (a deadline): the commit's outcome arrives later, harmlessly
            gate.set_result(7)
            await asyncio.sleep(0.01)
            assert waiter.cancelled()
            cancelled = concurrent.futures.Future[int]()
            waiter = on_loop(cancelled)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        finally:
            pool.shutdown()

    asyncio.run(main())
