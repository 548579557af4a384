"""Issue 19, the coordinator's quorum write (cluster/replicator.py) over a simulated transport on simulated time.

Per peer a scripted behaviour (answers, raises, answers ``missing_blobs``, stays silent until the deadline, answers
only after it, or is ``dead`` in liveness) and W in 1..N (hypothesis): ``replicate`` returns iff at least W-1 live
peers acknowledged before the deadline, as soon as they did; otherwise it raises QuorumNotReachedError (503 with
Retry-After) and counts it; once the stragglers ran to completion every peer that did not acknowledge is hinted;
a dead peer is never called; node-local events are never sent nor hinted; W=1 answers without waiting. The
deadline given to the transport grows with the blobs' bytes. No processes, no sockets, no wall clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.feed_sim import MemJournal, Reporter, Transport, new_store
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.hints import Hints
from s4.cluster.liveness import DEAD
from s4.cluster.replicator import NotReadyError, QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest, BlobTransfer
from s4.engine.errors import RETRY_AFTER_S, ErrorCode, ServiceUnavailableError
from s4.journal.codec import decode_event
from s4.journal.events import Event, EventType

SETTINGS = ReplicationSettings(base_s=10.0, min_rate=1000.0)
BLOB = 4000  # bytes of the one blob the test write references: 4 s more at min_rate
TIMEOUT = SETTINGS.deadline_s(BLOB)


def write_events(origin: str = "a") -> list[Event]:
    """What one command might commit: logical events with node-local ones (blob.*, volume.*) among them."""
    version = {"v": "v1", "b": [[b"h" * 32, BLOB]]}
    return [
        Event(1, 1001, origin, EventType.VOLUME_SEALED, {"volume": "a-00000001.vol"}),
        Event(2, 1002, origin, EventType.BUCKET_CREATED, {"bucket": "b", "region": "us-east-1"}),
        Event(3, 1003, origin, EventType.BLOB_MOVED, {"hash": b"h" * 32}),
        Event(4, 1004, origin, EventType.OBJECT_VERSION_PUT, {"bucket": "b", "key": "k", "version": version}),
    ]


LOGICAL_IDS = [2, 4]


class Refused(ConnectionError):
    pass


@dataclass
class Peer:
    """How one peer behaves: ``ok``/``fail``/``missing`` after ``delay`` s, ``hang`` (silent until the caller's
    deadline, then the transport's timeout error, as gRPC does), ``late`` (acknowledges 1.5 deadlines later),
    ``dead`` (liveness says so: it must never be called)."""

    how: str
    delay: float = 0.0


@dataclass
class SimTransport:
    """The ApplyEvents side of an EventsTransport, scripted per peer; records every call and what it delivered."""

    plan: dict[str, Peer]
    calls: list[tuple[str, float, float | None]] = field(default_factory=list)  # (peer, loop time, timeout)
    applied: dict[str, list[Event]] = field(default_factory=dict)  # what each peer acknowledged
    threads: set[int] = field(default_factory=set)  # the threads the calls ran on

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        loop = asyncio.get_running_loop()
        self.calls.append((peer, loop.time(), timeout))
        self.threads.add(threading.get_ident())
        assert request.blobs == BlobTransfer.FETCH and not request.hinted_for
        behaviour = self.plan[peer]
        assert behaviour.how != "dead", f"{peer} is dead and must not be called"
        assert timeout is not None
        if behaviour.how == "hang":
            await asyncio.sleep(timeout)
            raise TimeoutError(f"{peer}: deadline exceeded")
        await asyncio.sleep(timeout * 1.5 if behaviour.how == "late" else behaviour.delay)
        if behaviour.how == "fail":
            raise Refused(f"{peer} refused")
        if behaviour.how == "missing":
            return ApplyEventsReply(missing_blobs=[b"h" * 32])
        self.applied[peer] = [decode_event(bytes(e)) for e in request.events]
        return ApplyEventsReply(applied=len(request.events))

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("the write path never streams")


@dataclass
class MemHints:
    """A ``Hints`` stand-in that keeps what it is given in memory (no thread, so it runs on simulated time)."""

    hinted: dict[str, list[Event]] = field(default_factory=dict)
    fail: bool = False
    reachable: set[str] = field(default_factory=set)  # deliver() succeeds for these peers
    enabled: bool = True

    async def hint(self, peer: str, events: Sequence[Event]) -> None:
        if self.fail:
            raise OSError("the feed store cannot write")
        self.hinted.setdefault(peer, []).extend(events)

    def pending(self, peer: str) -> int:
        return len(self.hinted.get(peer, ()))

    async def deliver(self, peer: str) -> int:
        if peer not in self.reachable:
            raise ConnectionRefusedError(f"{peer} is down")
        return len(self.hinted.pop(peer, ()))


def make(plan: dict[str, Peer], w: int, hints: MemHints | None = None) -> tuple[Replicator, SimTransport, MemHints]:
    transport, hints = SimTransport(plan), hints or MemHints()
    replicator = Replicator(list(plan), w, transport, hints,  # type: ignore[arg-type]
                            state=lambda p: DEAD if plan[p].how == "dead" else "alive", settings=SETTINGS)
    return replicator, transport, hints


behaviours = st.one_of(
    st.builds(Peer, st.sampled_from(["ok", "fail", "missing"]), st.sampled_from([0.0, 0.5, 1.0, 3.0, 13.0])),
    st.builds(Peer, st.sampled_from(["hang", "late", "dead"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(behaviours, min_size=1, max_size=5), st.data())
def test_replicate_returns_iff_w_minus_1_live_peers_acknowledged_and_hints_every_other(
        peers: list[Peer], data: st.DataObject) -> None:
    plan = {f"p{i}": peer for i, peer in enumerate(peers)}
    w = data.draw(st.integers(1, len(plan) + 1), label="W")
    need = w - 1
    acked_in_time = sorted(p.delay for p in plan.values() if p.how == "ok")
    expect_ok = need == 0 or len(acked_in_time) >= need
    events = write_events()
    replicator, transport, hints = make(plan, w)

    async def main() -> tuple[BaseException | None, float]:
        loop = asyncio.get_running_loop()
        error: BaseException | None = None
        try:
            await replicator.replicate(events)
        except QuorumNotReachedError as exc:
            error = exc
        answered_at = loop.time()
        await asyncio.sleep(3 * TIMEOUT)  # the stragglers and the background sends run to completion
        assert not replicator._tasks
        return error, answered_at

    error, answered_at = run_sim(main())
    logical = [e for e in events if e.seq in LOGICAL_IDS]
    if expect_ok:
        assert error is None, f"W={w}: {error}"
        assert replicator.quorum_failures == 0
        assert answered_at == (0.0 if need == 0 else acked_in_time[need - 1])  # as soon as W copies exist
    else:
        assert isinstance(error, QuorumNotReachedError)
        assert error.status == 503 and error.code is ErrorCode.SERVICE_UNAVAILABLE
        assert error.headers == {"Retry-After": str(RETRY_AFTER_S)}
        assert replicator.quorum_failures == 1
        assert answered_at <= TIMEOUT
    called = {peer for peer, _, _ in transport.calls}
    assert called == {p for p, b in plan.items() if b.how != "dead"}  # every live peer, once; never a dead one
    assert len(transport.calls) == len(called)
    assert all(timeout == TIMEOUT for _, _, timeout in transport.calls)
    for peer, got in transport.applied.items():  # node-local events are never sent
        assert got == logical, peer
    for peer, got in hints.hinted.items():  # ... nor hinted
        assert got == logical, peer
    not_acked = set(plan) - set(transport.applied)
    assert not_acked <= set(hints.hinted), f"W={w}: {not_acked - set(hints.hinted)} never hinted"
    if expect_ok:  # a peer that acknowledged needs no hint (on a failed write a straggler may get one anyway)
        assert set(hints.hinted) == not_acked


def test_w1_answers_without_waiting_and_the_peers_get_the_write_in_the_background() -> None:
    plan = {"b": Peer("ok", 5.0), "c": Peer("fail", 1.0), "d": Peer("dead")}
    replicator, transport, hints = make(plan, 1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await replicator.replicate(write_events())
        assert loop.time() == 0.0 and transport.calls == []  # nothing awaited but the dead peer's hint
        assert set(hints.hinted) == {"d"}
        await asyncio.sleep(2 * TIMEOUT)

    run_sim(main())
    assert set(transport.applied) == {"b"} and set(hints.hinted) == {"c", "d"}
    assert replicator.quorum_failures == 0


def test_node_local_events_alone_are_not_sent_even_with_every_peer_dead() -> None:
    plan = {"b": Peer("dead"), "c": Peer("dead")}
    replicator, transport, hints = make(plan, 3)
    local = [e for e in write_events() if e.seq not in LOGICAL_IDS]

    async def main() -> None:
        await replicator.replicate(local)
        await replicator.replicate([])

    run_sim(main())
    assert transport.calls == [] and hints.hinted == {} and replicator.quorum_failures == 0


@pytest.mark.parametrize("how", ["ok", "fail"])
def test_too_few_live_peers_fails_at_once_and_still_reaches_the_live_ones(how: str) -> None:
    """W=3 of 3 with one peer dead: 503 without waiting for anything; the dead peer is hinted and the live one is
    still sent the write (hinted if it fails), as on every other failed write: the local commit stays, so the
    write's outcome is unknown and the pool must converge on it either way. (The original code sent the live
    peer nothing and did not hint it.)"""
    plan = {"b": Peer(how, 1.0), "c": Peer("dead")}
    replicator, transport, hints = make(plan, 3)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(QuorumNotReachedError):
            await replicator.replicate(write_events())
        assert loop.time() == 0.0
        await asyncio.sleep(2 * TIMEOUT)

    run_sim(main())
    assert replicator.quorum_failures == 1
    assert [p for p, _, _ in transport.calls] == ["b"]
    assert set(hints.hinted) == {"b", "c"}  # both kept before the answer: the write is not on W replicas


def test_the_deadline_grows_with_the_bytes_a_peer_may_fetch() -> None:
    assert SETTINGS.deadline_s(0) == 10.0 and SETTINGS.deadline_s(BLOB) == 14.0
    plan = {"b": Peer("ok", 0.0)}
    replicator, transport, _ = make(plan, 2)
    no_blobs = [e for e in write_events() if e.type is EventType.BUCKET_CREATED]
    run_sim(replicator.replicate(no_blobs))
    run_sim(replicator.replicate(write_events()))
    assert [timeout for _, _, timeout in transport.calls] == [10.0, 14.0]


def test_a_hint_that_cannot_be_kept_does_not_fail_the_write() -> None:
    plan = {"b": Peer("ok", 0.0), "c": Peer("fail", 0.0), "d": Peer("dead")}
    replicator, _, hints = make(plan, 2, MemHints(fail=True))

    async def main() -> None:
        await replicator.replicate(write_events())
        await asyncio.sleep(2 * TIMEOUT)

    run_sim(main())
    assert replicator.quorum_failures == 0 and hints.hinted == {}


def test_admit_refuses_while_catching_up_with_503() -> None:
    ready = [False]
    replicator = Replicator(["b"], 2, SimTransport({}), None, ready=lambda: ready[0])  # type: ignore[arg-type]
    with pytest.raises(NotReadyError) as err:
        replicator.admit()
    assert isinstance(err.value, ServiceUnavailableError) and err.value.status == 503
    assert err.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
    ready[0] = True
    replicator.admit()


@pytest.mark.parametrize("w", [0, 4])
def test_an_impossible_write_quorum_is_refused(w: int) -> None:
    with pytest.raises(ValueError, match="write quorum"):
        Replicator(["b", "c"], w, SimTransport({}), None)  # type: ignore[arg-type]


def test_replicate_sync_runs_on_the_nodes_loop_and_is_a_no_op_before_start() -> None:
    """The background jobs' threads: the call is handed to the node's loop and its outcome comes back (a quorum
    failure included); before ``start`` and after ``stop`` the local commit spreads by catch-up only."""
    plan = {"b": Peer("ok", 0.01), "c": Peer("fail", 0.0)}
    replicator, transport, hints = make(plan, 2)
    replicator.replicate_sync(write_events())  # not started: nothing sent
    assert transport.calls == []

    async def main() -> None:
        await replicator.start()
        loop_thread = threading.get_ident()
        await asyncio.to_thread(replicator.replicate_sync, write_events())
        assert {p for p, _, _ in transport.calls} == {"b", "c"} and "c" in hints.hinted
        assert transport.threads == {loop_thread}
        plan["b"].how = "fail"
        with pytest.raises(QuorumNotReachedError):
            await asyncio.to_thread(replicator.replicate_sync, write_events())
        await replicator.stop()
        calls = len(transport.calls)
        await asyncio.to_thread(replicator.replicate_sync, write_events())
        assert len(transport.calls) == calls

    asyncio.run(main())
    assert replicator.quorum_failures == 1


def test_failed_and_straggling_peers_are_hinted_durably_in_the_feed_store(tmp_path: Path) -> None:
    """The real ``Hints`` over a FeedStore: a peer that refused and one that answered after the quorum with an
    error both have the write's logical events pending; the peer that acknowledged has none."""
    plan = {"b": Peer("ok", 0.0), "c": Peer("fail", 0.0), "d": Peer("fail", 0.05)}

    async def main() -> None:
        transport = SimTransport(plan)
        hints = Hints(list(plan), new_store(tmp_path), Transport({p: MemJournal(p) for p in plan}), Reporter(), 1.0)
        replicator = Replicator(list(plan), 2, transport, hints, settings=SETTINGS)  # type: ignore[arg-type]
        try:
            await replicator.replicate(write_events())
            for _ in range(200):  # bounded: d's failure arrives after the quorum, then its hint is written
                if hints.pending("d"):
                    break
                await asyncio.sleep(0.01)
            assert (hints.pending("b"), hints.pending("c"), hints.pending("d")) == (0, 2, 2)
        finally:
            await replicator.stop()
            hints.store.close()

    asyncio.run(main())


def test_after_a_failed_write_no_later_write_is_acknowledged_until_w_replicas_hold_it() -> None:
    """W=2 of 3, both peers unreachable: the write is answered 503 and hinted to both (it is committed here). A later
    write that commits no event at all (a retried DELETE finding nothing to delete) is refused too, as long as the
    hints cannot be delivered; once one peer takes its hints (W copies), later writes are acknowledged again."""
    plan = {"b": Peer("fail"), "c": Peer("fail")}
    replicator, transport, hints = make(plan, 2)

    async def main() -> None:
        with pytest.raises(QuorumNotReachedError):
            await replicator.replicate(write_events())
        assert set(hints.hinted) == {"b", "c"}
        with pytest.raises(QuorumNotReachedError) as refused:
            await replicator.replicate([])
        assert "not yet on" in refused.value.reason
        hints.reachable = {"c"}
        await replicator.replicate([])  # c took its hints: the earlier write is on two replicas now
        assert set(hints.hinted) == {"b"}

    run_sim(main())
    assert replicator.quorum_failures == 2


def test_with_hints_off_a_failed_write_is_sent_again_before_the_next_one() -> None:
    """S4_HINT_TTL_HOURS=0: the unconfirmed write is kept in memory and sent to the peers again before any later
    write is acknowledged; refused while that cannot reach the quorum."""
    plan = {"b": Peer("fail"), "c": Peer("fail")}
    replicator, transport, hints = make(plan, 2, MemHints(enabled=False))

    async def main() -> None:
        with pytest.raises(QuorumNotReachedError):
            await replicator.replicate(write_events())
        with pytest.raises(QuorumNotReachedError):
            await replicator.replicate([])
        plan["c"] = Peer("ok")
        await replicator.replicate([])
        assert [e.seq for e in transport.applied["c"]] == sorted(LOGICAL_IDS)

    run_sim(main())
    assert not hints.hinted


def test_issue19_a_write_names_its_journal_range_only_when_its_seqs_are_consecutive() -> None:
    from s4.cluster.replicator import _journal_range

    events = write_events()
    assert [(r.after, r.through) for r in _journal_range(events)] == [(0, 4)]  # node-local events included
    assert _journal_range([events[0], events[3]]) == []  # a gap: the range would claim events it does not carry
    assert _journal_range([]) == []
