"""Issue 19, sending a batch to the peers while the coordinator's own fsync runs (cluster/replicator.py
``send_early`` / ``not_durable``), over a simulated transport on simulated time.

The sequencer hands a batch's events to ``send_early`` before it makes them durable, and ``not_durable`` when the
batch then fails (its seqs are reused by the next batch); ``replicate`` is called only once the batch is durable
here. What must hold, whatever the peers do and whether the batch is cut or the coordinator crashes after the send:

- a journal range is claimed to a peer (``journal_ranges``: the peer moves its catch-up cursor for this node across
  it without streaming it) only if every replicated event this node's journal finally holds in that range is
  applied on that peer: never for a batch that was cut, whose seqs the next batch takes;
- a write is acknowledged (``replicate`` returns) only when it is in this node's journal and W - 1 peers applied it;
- an early-sent batch is not sent a second time by ``replicate``, and a batch given up (``not_durable``) is never
  claimed by a later ``replicate``.

No processes, no sockets, no wall clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest
from s4.journal.codec import decode_event
from s4.journal.events import REPLICATED, Event, EventType

SETTINGS = ReplicationSettings(base_s=10.0, min_rate=1e9)
PEERS = ("p1", "p2")


class Refused(ConnectionError):
    pass


@dataclass
class Receiver:
    """One peer: the events it applied (by hlc) and the ranges of the coordinator's journal it moved its cursor
    across (what ``EventsService.apply_events`` hands ``CatchUp.pushed`` after applying a request)."""

    applied: set[int] = field(default_factory=set)
    claimed: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ScriptedTransport:
    """Per call, the next behaviour of ``script`` (cycled): ``ok`` / ``lost`` (applied, the reply lost) / ``fail`` /
    ``missing`` (nothing applied), after ``delay`` simulated seconds."""

    script: list[tuple[str, float]]
    receivers: dict[str, Receiver] = field(default_factory=lambda: {p: Receiver() for p in PEERS})
    requests: list[tuple[str, ApplyEventsRequest]] = field(default_factory=list)
    _next: itertools.count[int] = field(default_factory=itertools.count)

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        self.requests.append((peer, request))
        how, delay = self.script[next(self._next) % len(self.script)] if self.script else ("ok", 0.0)
        await asyncio.sleep(delay)
        if how == "fail":
            raise Refused(f"{peer} refused")
        if how == "missing":
            return ApplyEventsReply(missing_blobs=[b"h" * 32])
        receiver = self.receivers[peer]
        receiver.applied.update(decode_event(bytes(e)).hlc for e in request.events)
        receiver.claimed.extend((r.after, r.through) for r in request.journal_ranges)
        if how == "lost":
            raise Refused(f"{peer}: the reply was lost")
        return ApplyEventsReply(applied=len(request.events))

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("the write path never streams")


class StartingTransport(ScriptedTransport):
    """``ScriptedTransport`` that also takes a write at once (``start``, cluster/coalesce.py): the replicator's
    early sends go through it, the rest through ``apply_events``."""

    def start(self, peer: str, request: ApplyEventsRequest, *,
              timeout: float | None = None) -> asyncio.Future[ApplyEventsReply]:
        return asyncio.ensure_future(self.apply_events(peer, request, timeout=timeout))


@dataclass
class MemHints:
    hinted: dict[str, list[Event]] = field(default_factory=dict)
    enabled: bool = True

    async def hint(self, peer: str, events: Sequence[Event]) -> None:
        self.hinted.setdefault(peer, []).extend(events)

    def pending(self, peer: str) -> int:
        return 0  # delivered at once: the model is about claims and acknowledgements, not hint delivery

    async def deliver(self, peer: str) -> int:
        return len(self.hinted.pop(peer, ()))


def batch(first_seq: int, hlcs: itertools.count[int], shape: Sequence[bool]) -> list[Event]:
    """One batch's events at consecutive seqs: logical puts, with a node-local event where ``shape`` says so."""
    out = []
    for i, local in enumerate(shape):
        hlc = next(hlcs)
        if local:
            out.append(Event(first_seq + i, hlc, "a", EventType.VOLUME_SEALED, {"volume": f"v{hlc}"}))
        else:
            out.append(Event(first_seq + i, hlc, "a", EventType.OBJECT_VERSION_PUT,
                             {"bucket": "b", "key": f"k{hlc}", "version": {"v": f"v{hlc}"}}))
    return out


class Blobs:
    """This node's verified reader (``InlineSource``): every blob readable but those in ``unreadable``."""

    def __init__(self, unreadable: frozenset[bytes] = frozenset()) -> None:
        self.unreadable = unreadable

    async def read_inline(self, digest: bytes, at: object = None) -> bytes | None:
        return None if digest in self.unreadable else b"x" * 10


def make(transport: ScriptedTransport, w: int = 2, blobs: Blobs | None = None) -> Replicator:
    return Replicator(list(PEERS), w, transport, MemHints(), settings=SETTINGS,  # type: ignore[arg-type]
                      blobs=blobs or Blobs())


def put_referencing(seq: int, hlc: int, digest: bytes, size: int) -> Event:
    return Event(seq, hlc, "a", EventType.OBJECT_VERSION_PUT,
                 {"bucket": "b", "key": "big", "version": {"v": "v", "b": [[digest, size]]},
                  "blobs_at": [[digest, "vol-1", 0, size]]})


def test_an_early_batch_is_sent_once_before_replicate_and_replicate_waits_for_its_calls() -> None:
    transport = ScriptedTransport([("ok", 1.0)])

    async def main() -> None:
        replicator = make(transport)
        await replicator.start()
        events = batch(1, itertools.count(100), [False, True])
        replicator.send_early(events)
        await asyncio.sleep(0.5)  # the local fsync: the peers' calls run meanwhile
        assert [p for p, _ in transport.requests] == list(PEERS)
        assert all(not r.journal_ranges for _, r in transport.requests)  # not durable here: nothing claimed
        loop = asyncio.get_running_loop()
        start = loop.time()
        await replicator.replicate(events)
        assert loop.time() - start == 0.5  # waited for the calls started before, did not send again
        assert len(transport.requests) == 2 and replicator.early_sends == 1
        await asyncio.sleep(0.5)  # (within FLUSH_S: the claims wait for the next write)
        # Durable here and applied there: the next ApplyEvents to each peer claims the range.
        later = batch(3, itertools.count(200), [False])
        replicator.send_early(later)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await replicator.replicate(later)
        claims = {p: [(x.after, x.through) for x in r.journal_ranges] for p, r in transport.requests[2:]}
        assert claims == {"p1": [(0, 2)], "p2": [(0, 2)]}

    run_sim(main())


def test_issue19_a_batch_cut_after_its_early_send_is_never_claimed_and_its_seqs_go_to_the_next_batch() -> None:
    transport = ScriptedTransport([("ok", 0.1)])

    async def main() -> None:
        replicator = make(transport)
        await replicator.start()
        hlcs = itertools.count(100)
        cut = batch(1, hlcs, [False, False])
        replicator.send_early(cut)
        await asyncio.sleep(1)  # both peers applied it
        replicator.not_durable(cut)  # its volume sync failed: cut from the journal, its commands failed
        again = batch(1, hlcs, [False])  # the next batch takes seq 1
        replicator.send_early(again)
        await asyncio.sleep(1)
        await replicator.replicate(again)
        final = batch(2, hlcs, [False])
        replicator.send_early(final)
        await asyncio.sleep(1)
        await replicator.replicate(final)
        await asyncio.sleep(3)  # past FLUSH_S: the last claims went alone
        for name, receiver in transport.receivers.items():
            # The durable batches' seqs, each claimed once applied (the last one's alone, FLUSH_S later).
            assert receiver.claimed == [(0, 1), (1, 2)], name
            assert again[0].hlc in receiver.applied

    run_sim(main())


def test_a_batch_given_up_before_replicate_is_not_taken_by_it() -> None:
    transport = ScriptedTransport([("ok", 0.1)])

    async def main() -> None:
        replicator = make(transport)
        await replicator.start()
        events = batch(1, itertools.count(100), [False])
        replicator.send_early(events)
        replicator.not_durable(events)
        await asyncio.sleep(1)
        assert transport.requests == []  # given up before its calls started: never sent
        assert replicator._claim_early([e for e in events if e.type in REPLICATED]) is None

    run_sim(main())


steps = st.tuples(st.sampled_from(["durable", "durable", "durable", "cut", "crash"]),
                  st.lists(st.booleans(), min_size=1, max_size=3),  # the batch's shape (True: a node-local event)
                  st.sampled_from([0.0, 0.2, 1.0, 3.0]))  # how long the local fsync takes
behaviours = st.tuples(st.sampled_from(["ok", "ok", "lost", "fail", "missing"]), st.sampled_from([0.0, 0.5, 2.0]))


@pytest.mark.parametrize("starting", [False, True])
@settings(max_examples=250, deadline=None)
@given(st.lists(steps, min_size=1, max_size=12), st.lists(behaviours, min_size=1, max_size=9),
       st.sampled_from([1, 2, 3]))
def test_issue19_early_send_model_claims_only_what_a_peer_holds_and_acks_only_durable_quorum_writes(
        starting: bool, history: list[tuple[str, list[bool], float]], script: list[tuple[str, float]],
        w: int) -> None:
    """Batches sent before their fsync, then made durable, cut (the next batch reuses their seqs) or lost in a crash
    of the coordinator (a new Replicator: what it kept in memory is gone; its calls still on the wire land).
    ``starting``: the early sends are started from ``_launch`` itself (the transport's ``start``)."""
    transport = (StartingTransport if starting else ScriptedTransport)(script)
    journal: list[Event] = []  # the coordinator's durable journal
    acked: list[list[Event]] = []

    async def main() -> None:
        hlcs = itertools.count(1000)  # the clock never repeats a stamp (its restart: test_early_send_restart.py)
        replicator = make(transport, w)
        await replicator.start()
        for outcome, shape, fsync_s in history:
            events = batch(len(journal) + 1, hlcs, shape)
            replicator.send_early(events)
            await asyncio.sleep(fsync_s)
            if outcome == "durable":
                journal.extend(events)
                try:
                    await replicator.replicate(events)
                except QuorumNotReachedError:
                    continue
                acked.append(events)
            elif outcome == "cut":
                replicator.not_durable(events)
            else:  # kill -9 before the fsync: a new process, the calls already sent still arrive
                replicator = make(transport, w)
                await replicator.start()
        await asyncio.sleep(60)  # stragglers land

    run_sim(main())
    by_seq = {e.seq: e for e in journal}
    for name, receiver in transport.receivers.items():
        for after, through in receiver.claimed:
            for seq in range(after + 1, through + 1):
                event = by_seq.get(seq)
                assert event is not None, f"{name} claimed seq {seq}, which the journal does not hold"
                if event.type in REPLICATED:
                    assert event.hlc in receiver.applied, f"{name} claimed seq {seq} without its event"
    for events in acked:
        assert all(e in journal for e in events)
        logical = {e.hlc for e in events if e.type in REPLICATED}
        holders = [n for n, r in transport.receivers.items() if logical <= r.applied]
        assert len(holders) >= w - 1


def test_issue19_a_write_whose_peers_would_fetch_its_blobs_is_sent_only_after_its_commit() -> None:
    """A peer fetches a blob it was not sent (GetBlob), and the coordinator's GetBlob finds a new chunk only once its
    batch is committed: sent before, a large write's peers answered missing_blobs and the write failed its quorum."""
    transport = ScriptedTransport([("ok", 0.1)])
    replicator_settings = ReplicationSettings(base_s=10.0, min_rate=1e9, inline_bytes=1000)

    async def main() -> None:
        replicator = Replicator(list(PEERS), 2, transport, MemHints(), settings=replicator_settings,  # type: ignore[arg-type]
                                blobs=Blobs(unreadable=frozenset({b"u" * 32})))
        await replicator.start()
        for n, (digest, size) in enumerate([(b"L" * 32, 5000), (b"u" * 32, 10)]):  # too large; unreadable here
            events = [put_referencing(n + 1, 100 + n, digest, size)]
            replicator.send_early(events)
            await asyncio.sleep(1)
            assert transport.requests == [], digest  # nothing sent before the commit
            await replicator.replicate(events)
            assert len(transport.requests) == 2
            assert replicator.early_sends == 0
            transport.requests.clear()

    run_sim(main())


def test_claims_due_to_a_peer_that_died_are_dropped_not_kept_for_its_return() -> None:
    """A peer dead when its claims fall due may return with its data directory replaced (same node id, an empty
    journal): claims kept for it would move its cursor over events it no longer holds."""
    transport = ScriptedTransport([("ok", 0.1)])
    states = {peer: "alive" for peer in PEERS}

    async def main() -> None:
        replicator = Replicator(list(PEERS), 2, transport, MemHints(), settings=SETTINGS,  # type: ignore[arg-type]
                                blobs=Blobs(), state=lambda peer: states[peer])
        await replicator.start()
        hlcs = itertools.count(100)
        first = batch(1, hlcs, [False])
        replicator.send_early(first)
        await asyncio.sleep(0.5)
        await replicator.replicate(first)  # durable here and applied on both: its claims are due
        states["p1"] = "dead"
        await asyncio.sleep(3)  # past FLUSH_S: p2 is sent its claim alone, p1's is dropped
        states["p1"] = "alive"
        second = batch(2, hlcs, [False])
        replicator.send_early(second)
        await asyncio.sleep(0.5)
        await replicator.replicate(second)
        await asyncio.sleep(3)
        assert transport.receivers["p2"].claimed == [(0, 1), (1, 2)]
        assert transport.receivers["p1"].claimed == [(1, 2)]  # the claim due while it was dead never reached it

    run_sim(main())


def test_issue19_an_early_batch_goes_to_every_peer_from_its_launch_when_the_transport_starts_it() -> None:
    """With a transport that takes a write at once (``start``), both peers' copies are handed to it by ``_launch``
    itself, back to back, before the loop runs anything else; the write is acknowledged by their replies."""
    transport = StartingTransport([("ok", 1.0)])
    started: list[str] = []
    start = transport.start

    def recording(peer: str, request: ApplyEventsRequest, *, timeout: float | None = None) -> Any:
        started.append(peer)
        return start(peer, request, timeout=timeout)

    transport.start = recording  # type: ignore[method-assign]

    async def main() -> None:
        replicator = make(transport)
        await replicator.start()
        events = batch(1, itertools.count(100), [False])
        replicator.send_early(events)
        entry = replicator._early[events[0].hlc]
        await asyncio.sleep(0)  # _start_early: the launch task is created
        assert entry.started is not None
        await asyncio.wait([entry.started])
        assert started == list(PEERS) and set(entry.tasks) == set(PEERS)
        await replicator.replicate(events)
        assert [p for p, _ in transport.requests] == list(PEERS)  # sent once, not again by replicate

    run_sim(main())


def test_coord19_a_started_copy_is_answered_by_a_callback_and_a_caller_giving_up_leaves_it_running() -> None:
    """``_launch``'s copies written by ``start`` are followed by a callback of their reply (no task per peer): the
    write is acknowledged by the quorum's replies, a reply naming missing blobs is that peer's failure (hinted),
    and cancelling ``replicate`` (its caller gone) neither cancels the calls nor loses their claims."""
    transport = StartingTransport([("ok", 1.0), ("missing", 1.0)])

    async def main() -> None:
        replicator = make(transport)
        hints = replicator.hints
        await replicator.start()
        events = batch(1, itertools.count(100), [False])
        replicator.send_early(events)
        entry = replicator._early[events[0].hlc]
        await asyncio.sleep(0)
        assert entry.started is not None
        await asyncio.wait([entry.started])
        assert not any(isinstance(t, asyncio.Task) for t in entry.tasks.values())
        await replicator.replicate(events)  # p1 applied it: W = 2 with this node's copy
        await asyncio.sleep(0.1)
        assert isinstance(entry.tasks["p2"].exception(), Exception)  # p2 lacked the blobs: a failure
        assert hints.hinted.get("p2") == [e for e in events]  # type: ignore[union-attr]
        # The next write: its caller gives up while both copies are still in flight.
        later = batch(2, itertools.count(200), [False])
        transport.script[:] = [("ok", 1.0)]
        replicator.send_early(later)
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(replicator.replicate(later))
        await asyncio.sleep(0.5)
        waiting.cancel()
        await asyncio.sleep(1.0)
        entry2_calls = [r for p, r in transport.requests[2:]]
        assert len(entry2_calls) == 2
        assert all(replicator.transport.receivers[p].applied >= {later[0].hlc}  # type: ignore[attr-defined]
                   for p in PEERS)
        # both applied it after it was durable here: its range is due to each, for its next ApplyEvents
        assert {p: [(r.after, r.through) for r in replicator._due[p]] for p in PEERS} == {"p1": [(1, 2)],
                                                                                           "p2": [(1, 2)]}

    run_sim(main())
