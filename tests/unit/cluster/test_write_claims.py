"""Issue 19, the catch-up claims the write path makes (cluster/replicator.py ``_Claims``), over a simulated transport
(the real coalescer in front of it) on simulated time.

A coordinator's writes go to two peers, each journaling what it did not hold at consecutive seqs, among events of
other coordinators and node-local ones, and answering one journal range per coalesced write
(cluster/catch_up.py ``reply_ranges``). From the replies the coordinator claims:

- to its own catch-up, a peer's range of a write once that write is durable here;
- to each peer, the other peer's range of a write that peer acknowledged too (``peer_ranges``).

What must hold, whatever the peers answer, however writes coalesce, whether a batch sent before its fsync is cut
(its seqs reused) or the coordinator crashes: a claimed range of a peer's journal holds only events the claimant
holds (own claims: in the coordinator's final journal; cross claims: applied on the told peer before it was told).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster import replicator as replicator_module
from s4.cluster.catch_up import reply_ranges
from s4.cluster.coalesce import CoalescingTransport
from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest
from s4.journal.codec import decode_event
from s4.journal.events import REPLICATED, Event, EventType

SETTINGS = ReplicationSettings(base_s=10.0, min_rate=1e9)
PEERS = ("p1", "p2")


class Refused(ConnectionError):
    pass


@dataclass
class Peer:
    """One receiver: its journal (per seq: ("ev", hlc) a replicated event, ("local", 0) a node-local one) and the
    replicated events it holds."""

    journal: list[tuple[str, int]] = field(default_factory=list)
    held: set[int] = field(default_factory=set)


@dataclass
class Sim:
    """Per call the next behaviour of ``script``: ok / lost (applied, reply lost) / fail / missing, a delay, and how
    many foreign events (another coordinator's, or node-local) the peer journals just before."""

    script: list[tuple[str, float, int]]
    peers: dict[str, Peer] = field(default_factory=lambda: {p: Peer() for p in PEERS})
    violations: list[str] = field(default_factory=list)
    told: list[tuple[str, str, int, int]] = field(default_factory=list)
    _next: itertools.count[int] = field(default_factory=itertools.count)
    _foreign: itertools.count[int] = field(default_factory=lambda: itertools.count(10**9))

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        how, delay, foreign = self.script[next(self._next) % len(self.script)] if self.script else ("ok", 0.0, 0)
        me = self.peers[peer]
        for r in request.peer_ranges:  # cross claims: checked as they arrive, before this request applies
            self.told.append((peer, r.node, r.after, r.through))
            other = self.peers[r.node].journal
            for seq in range(r.after + 1, r.through + 1):
                kind, hlc = other[seq - 1]
                if kind == "ev" and hlc not in me.held:
                    self.violations.append(f"{peer} told {r.node}'s seq {seq} (hlc {hlc}), which it lacks")
        await asyncio.sleep(delay)
        if how == "fail":
            raise Refused(f"{peer} refused")
        if how == "missing":
            return ApplyEventsReply(missing_blobs=[b"h" * 32])
        for n in range(foreign):  # other coordinators' events, and node-local ones, land first
            hlc = next(self._foreign)
            me.journal.append(("local", 0) if n % 2 else ("ev", hlc))
            if n % 2 == 0:
                me.held.add(hlc)
        seqs = []
        for envelope in request.events:
            hlc = decode_event(bytes(envelope)).hlc
            if hlc in me.held:
                seqs.append(0)
            else:
                me.journal.append(("ev", hlc))
                me.held.add(hlc)
                seqs.append(len(me.journal))
        ranges = reply_ranges(request, list(range(len(request.events))), seqs)
        if how == "lost":
            raise Refused(f"{peer}: the reply was lost")
        return ApplyEventsReply(applied=sum(1 for s in seqs if s), already_had=sum(1 for s in seqs if not s),
                                journal_ranges=ranges)

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("the write path never streams")


@dataclass
class MemHints:
    enabled: bool = True

    async def hint(self, peer: str, events: Sequence[Event]) -> None:
        pass

    def pending(self, peer: str) -> int:
        return 0

    async def deliver(self, peer: str) -> int:
        return 0


class Blobs:
    async def read_inline(self, digest: bytes, at: object = None) -> bytes | None:
        return b"x" * 10


def batch(first_seq: int, hlcs: itertools.count[int], shape: Sequence[bool]) -> list[Event]:
    out = []
    for i, local in enumerate(shape):
        hlc = next(hlcs)
        if local:
            out.append(Event(first_seq + i, hlc, "a", EventType.VOLUME_SEALED, {"volume": f"v{hlc}"}))
        else:
            out.append(Event(first_seq + i, hlc, "a", EventType.OBJECT_VERSION_PUT,
                             {"bucket": "b", "key": f"k{hlc}", "version": {"v": f"v{hlc}"}}))
    return out


def make(sim: Sim, claimed: list[tuple[str, int, int]], w: int = 2) -> Replicator:
    replicator = Replicator(list(PEERS), w, CoalescingTransport(sim), MemHints(),  # type: ignore[arg-type]
                            settings=SETTINGS, blobs=Blobs())
    replicator.claim = lambda peer, ranges: claimed.extend((peer, a, t) for a, t in ranges)
    return replicator


def own_violations(sim: Sim, claimed: list[tuple[str, int, int]], journal: list[Event]) -> list[str]:
    mine = {e.hlc for e in journal if e.type in REPLICATED}
    out = []
    for peer, after, through in claimed:
        for seq in range(after + 1, through + 1):
            kind, hlc = sim.peers[peer].journal[seq - 1]
            if kind == "ev" and hlc not in mine:
                out.append(f"claimed {peer}'s seq {seq} (hlc {hlc}), not in this node's journal")
    return out


steps = st.tuples(st.sampled_from(["durable", "durable", "durable", "cut", "crash"]),
                  st.lists(st.booleans(), min_size=1, max_size=3),  # the batch's shape (True: a node-local event)
                  st.sampled_from([0.0, 0.2, 1.0]))  # how long the local fsync takes
behaviours = st.tuples(st.sampled_from(["ok", "ok", "ok", "lost", "fail", "missing"]),
                       st.sampled_from([0.0, 0.5, 2.0]), st.sampled_from([0, 0, 1, 2]))


def run_history(history: list[tuple[str, list[bool], float]], script: list[tuple[str, float, int]], w: int,
                relay: bool = False) -> tuple[Sim, list[tuple[str, int, int]], list[Event]]:
    """Batches decided one after another (each sent early, then made durable, cut or lost with a crash), their
    ``replicate`` left running so later batches overlap and coalesce. ``relay``: every batch also reaches p2 by
    catch-up before its call (the reply then names nothing journaled: already held)."""
    sim = Sim(script)
    journal: list[Event] = []
    claimed: list[tuple[str, int, int]] = []

    async def main() -> None:
        hlcs = itertools.count(1000)
        replicator = make(sim, claimed, w)
        await replicator.start()
        running: list[asyncio.Task[None]] = []

        async def replicate(rep: Replicator, events: list[Event]) -> None:
            try:
                await rep.replicate(events)
            except QuorumNotReachedError:
                pass

        for outcome, shape, fsync_s in history:
            events = batch(len(journal) + 1, hlcs, shape)
            if relay:
                for e in events:
                    if e.type in REPLICATED:
                        sim.peers["p2"].journal.append(("ev", e.hlc))
                        sim.peers["p2"].held.add(e.hlc)
            replicator.send_early(events)
            await asyncio.sleep(fsync_s)
            if outcome == "durable":
                journal.extend(events)
                running.append(asyncio.get_running_loop().create_task(replicate(replicator, events)))
                await asyncio.sleep(0)
            elif outcome == "cut":
                replicator.not_durable(events)
            else:  # kill -9 before the fsync: a new process, its claims in memory gone; calls on the wire land
                replicator = make(sim, claimed, w)
                await replicator.start()
        await asyncio.sleep(60)
        await asyncio.gather(*running, return_exceptions=True)

    run_sim(main())
    return sim, claimed, journal


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=1, max_size=14), st.lists(behaviours, min_size=1, max_size=9),
       st.sampled_from([1, 2, 3]), st.booleans())
def test_issue19_claims_never_name_an_event_the_claimant_lacks(
        history: list[tuple[str, list[bool], float]], script: list[tuple[str, float, int]], w: int,
        relay: bool) -> None:
    sim, claimed, journal = run_history(history, script, w, relay)
    assert not sim.violations, sim.violations
    assert not own_violations(sim, claimed, journal)


def test_issue19_a_durable_write_is_claimed_to_the_coordinator_and_across_the_peers() -> None:
    sim, claimed, journal = run_history([("durable", [False], 1.0)] * 3, [("ok", 0.5, 0)], 2)
    # Each peer journaled the three writes at seqs 1..3: all claimed to the coordinator's cursors.
    assert sorted(claimed) == [(p, s - 1, s) for p in PEERS for s in (1, 2, 3)]
    # Each write's ranges were told to the other peer on the next call (built after its replies); the last
    # write's, with no call after it, went alone FLUSH_S later.
    told = {(peer, node, a, t) for peer, node, a, t in sim.told}
    assert told == {(p, q, s - 1, s) for p, q in (("p1", "p2"), ("p2", "p1")) for s in (1, 2, 3)}
    assert not sim.violations and not own_violations(sim, claimed, journal)


def test_issue19_an_early_batch_cut_here_is_never_claimed_even_coalesced_with_a_durable_one() -> None:
    """Batch 1 is sent early and cut (its seq goes to batch 2); batch 2 and 3 queue behind it at the peers and
    share one call; only the durable ones' ranges are claimed to the coordinator."""
    sim, claimed, journal = run_history([("cut", [False], 0.1), ("durable", [False], 0.1),
                                         ("durable", [False], 0.1)], [("ok", 1.0, 0)], 2)
    assert not own_violations(sim, claimed, journal)
    cut_seq = 1  # on each peer, the cut batch's event took seq 1
    assert all(not (a < cut_seq <= t) for _, a, t in claimed)
    assert {p for p, _, _ in claimed} == set(PEERS)  # the durable writes were claimed
    assert not sim.violations


def test_issue19_breaking_the_durability_condition_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative check: claim a reply's range whether or not the write became durable here, and the cut batch
    above is claimed (the model sees an event the coordinator's journal lacks)."""
    real = replicator_module._Claims.__init__

    def always_durable(self: replicator_module._Claims, durable: bool, own: list) -> None:  # type: ignore[type-arg]
        real(self, True, own)

    monkeypatch.setattr(replicator_module._Claims, "__init__", always_durable)
    sim, claimed, journal = run_history([("cut", [False], 0.1), ("durable", [False], 0.1),
                                         ("durable", [False], 0.1)], [("ok", 1.0, 0)], 2)
    assert own_violations(sim, claimed, journal)


def test_issue19_events_a_peer_already_held_are_not_in_its_reply_ranges() -> None:
    sim, claimed, journal = run_history([("durable", [False, False], 0.2)] * 2, [("ok", 0.5, 0)], 2, relay=True)
    assert all(peer == "p1" for peer, _, _ in claimed)  # p2 held everything already: it journaled nothing
    assert not sim.violations and not own_violations(sim, claimed, journal)
