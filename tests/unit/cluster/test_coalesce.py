"""Issue 19, concurrent replicated writes coalesced into one ApplyEvents per peer (cluster/coalesce.py), on simulated
time over a scripted transport: N concurrent writes make fewer calls and each gets its own outcome; a failing
batch fails each of its writes (and the replicator hints each); ``missing_blobs`` goes to the writes referencing
those blobs while the others are sent again; a write's own deadline holds while it waits in the queue; a lone
write is sent at once (no timer); large (FETCH) writes and hint deliveries are never held behind a batch."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import pytest
from helpers.simloop import run_sim

from s4.cluster.coalesce import CoalesceLimits, CoalescingTransport
from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest, BlobTransfer, InlineBlob
from s4.engine.replica import referenced_hashes
from s4.journal.codec import decode_event, encode_event
from s4.journal.events import Event, EventType

SETTINGS = ReplicationSettings(base_s=10.0, min_rate=1000.0)
DELAY = 1.0  # simulated seconds a peer takes to answer one call


def digest(i: int) -> bytes:
    return hashlib.sha256(b"blob %d" % i).digest()


def write(i: int, origin: str = "a") -> list[Event]:
    """One small write: a version put referencing its own 4-byte blob, plus a node-local event."""
    version = {"v": f"v{i}", "b": [[digest(i), 4]]}
    return [Event(2 * i + 1, 1000 + i, origin, EventType.BLOB_MOVED, {"hash": digest(i)}),
            Event(2 * i + 2, 1000 + i, origin, EventType.OBJECT_VERSION_PUT,
                  {"bucket": "b", "key": f"k{i}", "version": version})]


def request(i: int) -> ApplyEventsRequest:
    return ApplyEventsRequest(events=[encode_event(write(i)[1])], blobs=BlobTransfer.INLINE,
                              inline_blobs=[InlineBlob(content_hash=digest(i), size=4, data=b"%4d" % i)])


@dataclass
class Peer:
    """A scripted receiver: answers after ``DELAY``; ``fail`` raises; blobs in ``lacks`` are missing (nothing of
    a call referencing one is applied, as EventsService answers)."""

    fail: bool = False
    lacks: set[bytes] = field(default_factory=set)


@dataclass
class Inner:
    plan: dict[str, Peer]
    calls: list[tuple[str, float, float | None, ApplyEventsRequest]] = field(default_factory=list)
    applied: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # (hlc, origin) per peer

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        self.calls.append((peer, asyncio.get_running_loop().time(), timeout, request))
        return await self.reply(peer, request)

    async def reply(self, peer: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        await asyncio.sleep(DELAY)
        behaviour = self.plan[peer]
        if behaviour.fail:
            raise ConnectionResetError(f"{peer} reset the call")
        events = [decode_event(bytes(e)) for e in request.events]
        missing = sorted({d for e in events for d in referenced_hashes(e)} & behaviour.lacks)
        if missing:
            return ApplyEventsReply(missing_blobs=missing)
        self.applied.setdefault(peer, []).extend((e.hlc, e.origin) for e in events)
        return ApplyEventsReply(applied=len(events))

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("not used")

    def calls_to(self, peer: str) -> int:
        return sum(1 for p, _, _, _ in self.calls if p == peer)


@dataclass
class Source:
    """The coordinator's blobs: every test blob readable (``read_inline``)."""

    async def read_inline(self, d: bytes, at: object = None) -> bytes | None:
        return b"data"


@dataclass
class MemHints:
    hinted: dict[str, list[Event]] = field(default_factory=dict)
    enabled: bool = True

    async def hint(self, peer: str, events: list[Event]) -> None:
        self.hinted.setdefault(peer, []).extend(events)

    def pending(self, peer: str) -> int:
        return len(self.hinted.get(peer, ()))

    async def deliver(self, peer: str) -> int:
        raise ConnectionRefusedError(peer)


def make(plan: dict[str, Peer], w: int) -> tuple[Replicator, CoalescingTransport, Inner, MemHints]:
    inner, hints = Inner(plan), MemHints()
    transport = CoalescingTransport(inner)  # type: ignore[arg-type]
    replicator = Replicator(list(plan), w, transport, hints, settings=SETTINGS,  # type: ignore[arg-type]
                            blobs=Source())
    return replicator, transport, inner, hints


def ids(events: list[Event]) -> list[tuple[int, str]]:
    return [(e.hlc, e.origin) for e in events if e.type is EventType.OBJECT_VERSION_PUT]


def test_issue19_concurrent_writes_share_apply_events_calls_and_each_gets_its_result() -> None:
    """16 writes, W=2 of 3: the first goes alone; the other 15 arrive while its calls run, wait for them and go in
    one call per peer; every write is acknowledged, and every peer holds every write exactly once."""
    n = 16
    replicator, transport, inner, hints = make({"b": Peer(), "c": Peer()}, 2)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()

        async def one(i: int) -> float:
            await replicator.replicate(write(i))
            return loop.time()

        first = asyncio.ensure_future(one(0))
        await asyncio.sleep(0.1)
        done = await asyncio.gather(first, *(one(i) for i in range(1, n)))
        await asyncio.sleep(3 * DELAY)
        return done

    answered = run_sim(main())
    assert inner.calls_to("b") == inner.calls_to("c") == 2  # instead of 16 each
    assert sorted(answered) == [DELAY] + [2 * DELAY] * (n - 1)
    expected = sorted(ids([e for i in range(n) for e in write(i)]))
    assert sorted(inner.applied["b"]) == sorted(inner.applied["c"]) == expected  # each write once
    assert transport.coalesced == 2 * (n - 2) and hints.hinted == {}
    second = [r for p, _, _, r in inner.calls if p == "b"][1]
    assert len(second.inline_blobs) == n - 1 and second.blobs == BlobTransfer.INLINE


def test_issue19_a_lone_write_is_sent_at_once_one_call_per_write() -> None:
    """c=1: no timer, no added latency: each write is one call and is answered after one peer round trip."""
    replicator, transport, inner, _ = make({"b": Peer(), "c": Peer()}, 2)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        out = []
        for i in range(5):
            start = loop.time()
            await replicator.replicate(write(i))
            out.append(loop.time() - start)
            await asyncio.sleep(2 * DELAY)  # the straggler's call too is over
        return out

    assert run_sim(main()) == [DELAY] * 5
    assert inner.calls_to("b") == inner.calls_to("c") == 5 and transport.coalesced == 0


def test_issue19_a_failing_coalesced_call_fails_each_of_its_writes_and_each_is_hinted() -> None:
    """Peer c resets every call: with W=2 every write is still acknowledged (through b), and c is hinted each
    write's events; with W=3 every write of the batch answers 503."""
    n = 8
    replicator, _, inner, hints = make({"b": Peer(), "c": Peer(fail=True)}, 2)

    async def main() -> None:
        await asyncio.gather(*(replicator.replicate(write(i)) for i in range(n)))
        await asyncio.sleep(3 * DELAY)

    run_sim(main())
    assert inner.calls_to("c") == 1  # all eight in one call
    assert sorted(ids(hints.hinted["c"])) == sorted(ids([e for i in range(n) for e in write(i)]))
    assert "b" not in hints.hinted

    replicator, _, inner, hints = make({"b": Peer(), "c": Peer(fail=True)}, 3)

    async def all_of_them() -> list[BaseException | None]:
        return await asyncio.gather(*(replicator.replicate(write(i)) for i in range(n)), return_exceptions=True)

    outcomes = run_sim(all_of_them())
    assert inner.calls_to("c") == 1
    assert all(isinstance(o, QuorumNotReachedError) for o in outcomes)


def test_issue19_missing_blobs_go_to_the_writes_referencing_them_and_the_others_are_sent_again() -> None:
    """The receiver applies nothing of a call that lacks a blob: the write referencing it gets its own
    missing_blobs, the others of the batch are sent again (and applied) instead of being told they lack it."""
    inner = Inner({"b": Peer(lacks={digest(3)})})
    transport = CoalescingTransport(inner)  # type: ignore[arg-type]

    async def main() -> list[ApplyEventsReply]:
        return await asyncio.gather(*(transport.apply_events("b", request(i), timeout=10.0) for i in range(6)))

    replies = run_sim(main())
    assert [list(r.missing_blobs) for r in replies] == [[], [], [], [digest(3)], [], []]
    assert sorted(inner.applied["b"]) == sorted(ids([e for i in range(6) if i != 3 for e in write(i)]))
    # all six in one call (3 lacks its blob: nothing applied); then 0, 1, 2, 4, 5 again
    assert [len(r.events) for _, _, _, r in inner.calls] == [6, 5]


def test_issue19_a_write_waiting_behind_a_call_keeps_its_own_deadline() -> None:
    """A write queued behind a slow call times out at its own deadline, like a call of its own, and is not sent
    afterwards; the batch call's deadline is the latest of its writes'."""
    inner = Inner({"b": Peer()})
    transport = CoalescingTransport(inner)  # type: ignore[arg-type]

    async def main() -> tuple[object, float]:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(transport.apply_events("b", request(0), timeout=10.0))
        await asyncio.sleep(0.1)  # its call is under way
        with pytest.raises(TimeoutError, match="not answered within 0.5s"):
            await transport.apply_events("b", request(1), timeout=0.5)
        timed_out_at = loop.time()
        late = [asyncio.ensure_future(transport.apply_events("b", request(i), timeout=t))
                for i, t in ((2, 3.0), (3, 7.0))]
        await asyncio.gather(first, *late)
        return first.result(), timed_out_at

    _, timed_out_at = run_sim(main())
    assert timed_out_at == pytest.approx(0.6)
    # the second call at t=1.0 carries writes 2 and 3, until the later of their deadlines (0.6 + 7.0)
    assert [(len(r.events), t) for _, _, t, r in inner.calls] == [(1, 10.0), (2, pytest.approx(6.6))]
    assert (1001, "a") not in inner.applied["b"]  # the write that gave up was never sent


def test_issue19_large_writes_and_hint_deliveries_are_not_queued_behind_a_batch() -> None:
    inner = Inner({"b": Peer()})
    transport = CoalescingTransport(inner, CoalesceLimits(in_flight=1))  # type: ignore[arg-type]
    fetch = ApplyEventsRequest(events=request(7).events, blobs=BlobTransfer.FETCH)
    hinted = ApplyEventsRequest(events=request(8).events, blobs=BlobTransfer.FETCH, hinted_for="b")

    async def main() -> None:
        await asyncio.gather(transport.apply_events("b", request(0), timeout=10.0),
                             transport.apply_events("b", fetch, timeout=10.0),
                             transport.apply_events("b", hinted, timeout=10.0))

    run_sim(main())
    assert [t for _, t, _, _ in inner.calls] == [0.0, 0.0, 0.0]  # all three at once


def test_issue19_batches_stay_within_their_bounds() -> None:
    inner = Inner({"b": Peer()})
    transport = CoalescingTransport(inner, CoalesceLimits(events=3))  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.gather(*(transport.apply_events("b", request(i), timeout=30.0) for i in range(9)))

    run_sim(main())
    assert [len(r.events) for _, _, _, r in inner.calls] == [3, 3, 3]


def test_issue19_stopping_the_coalescer_closes_the_streams_of_its_transport() -> None:
    """The replicator stops its transport at shutdown; the coalescer passes that on to the streamed transport under
    it (cluster/event_stream.py), whose streams would otherwise outlive the node."""

    @dataclass
    class Closing:
        stopped: int = 0

        async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                               timeout: float | None = None) -> ApplyEventsReply:
            return ApplyEventsReply()

        def catch_up(self, peer: str, request: object) -> object:
            raise NotImplementedError

        async def stop(self) -> None:
            self.stopped += 1

    inner = Closing()

    async def main() -> None:
        await CoalescingTransport(inner).stop()  # type: ignore[arg-type]

    run_sim(main())
    assert inner.stopped == 1


@dataclass
class DirectInner(Inner):
    """``Inner`` whose stream can take a write at once (``send_now``, cluster/event_stream.py), as an open idle
    lane does: the call is made (recorded) before ``send_now`` returns."""

    def send_now(self, peer: str, request: ApplyEventsRequest,
                 timeout: float | None) -> asyncio.Future[ApplyEventsReply]:
        self.calls.append((peer, asyncio.get_running_loop().time(), timeout, request))
        return asyncio.ensure_future(self.reply(peer, request))


def test_issue19_a_write_started_at_an_idle_peer_is_sent_before_start_returns_and_the_next_ones_queue_behind_it(
) -> None:
    """``start`` (the replicator's early sends): at an idle peer the write is the wrapped call, made before
    ``start`` returns (no sender task between); writes arriving while it runs wait and share the next call, as
    ever; a busy peer, or a wrapped transport that cannot send at once, gets None (the caller uses
    ``apply_events``)."""
    inner = DirectInner({"b": Peer(lacks={digest(9)})})
    transport = CoalescingTransport(inner)  # type: ignore[arg-type]
    plain = CoalescingTransport(Inner({"b": Peer()}))  # type: ignore[arg-type]

    async def main() -> None:
        assert plain.start("b", request(0), timeout=10.0) is None
        started = transport.start("b", request(0), timeout=10.0)
        assert started is not None and len(inner.calls) == 1  # sent already
        assert transport.start("b", request(1), timeout=10.0) is None  # one call in flight (in_flight=1)
        later = [asyncio.ensure_future(transport.apply_events("b", request(i), timeout=10.0)) for i in (1, 2, 3)]
        assert (await started).applied == 1
        assert [(await w).applied for w in later] == [3, 3, 3]
        assert [len(r.events) for _, _, _, r in inner.calls] == [1, 3] and transport.coalesced == 2
        lacking = transport.start("b", request(9), timeout=10.0)  # idle again: sent at once, its blob missing
        assert lacking is not None and list((await lacking).missing_blobs) == [digest(9)]
        assert transport.calls == 3 and transport._running["b"] == 0

    run_sim(main())
