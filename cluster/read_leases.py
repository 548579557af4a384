"""Read leases: when a pool node may answer reads from its own copy, without asking R replicas.

A quorum read asks another replica for every read (cluster/key_reads.py). Read leases make the common case local
(after Moraru, Andersen and Kaminsky, "Paxos Quorum Leases", 2014): a node that serves reads asks every peer for a
lease on each heartbeat; a peer that grants one promises to acknowledge no write of its own until the holder has
applied it or the lease has run out. A node holding unexpired leases from every peer therefore holds every
acknowledged write, and answers from its views (docs/architecture/replication.md, "Local reads under read leases").
As in the paper, leases go only to the nodes that read: a node asks while its reads consulted the read gate within
``idle_s`` (the gate's ``wanted_at``, stamped by every process of the node), so a grantor's writes wait only for the
copies of the nodes that read through them, and with W - 1 peers otherwise:

* ``LeaseGrants``, the grantor's side: a lease is granted only to a peer that has applied this node's journal up
  to every write this node acknowledged without it (``missed``: the peer sends how far it has applied), and a write
  is acknowledged only once every peer holding a lease has it or its lease ran out (``cover``). A peer whose copy
  of a write failed loses its lease from then on (``missed`` rises at once) and the write waits for the old grant
  to run out. A node that starts counts every peer as holding a lease for one lease time: its grants of before a
  crash are not remembered. A peer that stops asking is waited for until its last grant runs out, then not.
* ``ReadLeases``, the holder's side: a lease counts from the moment the request was sent (before the grantor's
  own clock started it), less a margin, on the monotonic clock; the node is current until the first of its
  peers' leases runs out. It asks only while its reads want leases (``wanted``).
* ``Unsettled``, for the reads that races writes: an event of a write still in flight (not yet acknowledged or
  refused by its coordinator) may be visible here and not yet on another node. Its key stays on the quorum path
  until its coordinator's *settled watermark* passes the event's HLC (every write of that coordinator with a lower
  HLC has been acknowledged or refused). Each node sends its watermark with every Ping and ApplyEvents.

Clocks: only durations on each node's own monotonic clock are compared, never two nodes' clocks; the margin covers
clock-rate drift and scheduling delay between the checks.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s4.engine.read_gate import ReadGate, slots_of
from s4.journal.events import REPLICATED, Event

from .wire.s4cluster.v1 import PingRequest

log = logging.getLogger("s4.cluster")


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    lease_s: float = 3.0  # how long a grant holds (heartbeats renew it every second)
    margin_s: float = 0.3  # the holder stops counting on a lease this long before it runs out
    revoke_after_s: float = 1.0  # a lease holder that has not acknowledged a write by then loses its lease
    forget_own_s: float = 120.0  # an own event still unsettled after this (its command failed to replicate): dropped
    idle_s: float = 30.0  # S4_READ_LEASE_IDLE_SECS: no read consulted the gate for this long: stop asking for leases


class LeaseGrants:
    """The grantor's side (runs on the node's event loop).

    Per peer: ``granted`` (until when a lease this node granted may hold), ``held`` (until when its writes wait for
    the peer's copy: a leaseholder, or a peer asking for one), ``missed`` (the highest seq of a write acknowledged
    without the peer whose copy failed: it must catch up that far first) and ``outstanding`` (writes acknowledged
    without the peer while their copy to it was still running). A peer asking for a lease is *held* from then on, so
    no new write is acknowledged without it, and granted one once nothing is outstanding: a node that joins or
    returns under a steady write load gets its lease after one heartbeat."""

    def __init__(self, peers: Sequence[str], head: int, settings: LeaseSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or LeaseSettings()
        self._clock = clock
        start = clock()
        # Grants of this node's previous life may still hold, for writes it acknowledged up to ``head``.
        self._granted = {p: start + self.settings.lease_s for p in peers}
        self._held = dict(self._granted)
        self._missed = {p: head for p in peers}
        self._outstanding: dict[str, set[int]] = {p: set() for p in peers}

    def missed(self, peer: str) -> int:
        return self._missed.get(peer, 0)

    def holding(self, peer: str) -> bool:
        """Whether ``peer`` may hold a lease of this node now (granted, or asking: held), so that a write or a read
        answered here must reach it first (``cover``)."""
        if peer not in self._granted:
            return False
        return max(self._held[peer], self._granted[peer]) > self._clock()

    def grant(self, peer: str, applied: int) -> float:
        """A peer asks for a lease, having applied this node's journal through ``applied``: the lease in seconds,
        or 0 (it lacks a write this node acknowledged without it, or such a write's copy is still on its way)."""
        if peer not in self._missed or applied < self._missed[peer]:
            return 0.0
        now = self._clock()
        self._held[peer] = max(self._held[peer], now + self.settings.lease_s)
        if self._outstanding[peer]:
            return 0.0
        self._granted[peer] = max(self._granted[peer], now + self.settings.lease_s)
        return self.settings.lease_s

    def release(self, peer: str) -> None:
        """``peer`` gave its lease back (it drains or stops, and reads no more from its own copy: it stopped
        counting on the lease before it said so): writes stop waiting for its copy now instead of when the last
        grant runs out. It is held again, and granted again, only when it asks for a lease anew."""
        if peer in self._granted:
            now = self._clock()
            self._granted[peer] = min(self._granted[peer], now)
            self._held[peer] = min(self._held[peer], now)

    def lost(self, peer: str, seq: int) -> float:
        """``peer`` did not get this node's write ending at ``seq`` (failed, not sent, or too slow): no lease for
        it until it applied that far. Returns when the leases granted to it before run out."""
        if seq > self._missed.get(peer, seq):
            self._missed[peer] = seq
        return self._granted.get(peer, 0.0)

    def _outstanding_copy(self, peer: str, seq: int, copy: asyncio.Future[Any]) -> None:
        self._outstanding[peer].add(seq)

        def finished(done: asyncio.Future[Any]) -> None:
            self._outstanding[peer].discard(seq)
            if not _succeeded(done):
                self.lost(peer, seq)

        copy.add_done_callback(finished)

    async def cover(self, seq: int, acked: Iterable[str], running: Mapping[str, asyncio.Future[Any]]) -> None:
        """Before this node acknowledges its write ending at ``seq``: every peer whose lease holds must have
        applied it. ``acked``: the peers that did; ``running``: the calls still carrying it to others (a peer in
        neither never got it). A held peer's running copy is waited for up to ``revoke_after_s``; then, or when
        a copy fails, the peer loses its lease and the write waits for its last grant to run out instead."""
        done = set(acked)
        now = self._clock()
        revoke_at = now + self.settings.revoke_after_s
        until: dict[str, float | None] = {}  # held peers: when the write stops waiting (None: for its copy)
        for peer in self._granted:
            if peer in done:
                continue
            copy = running.get(peer)
            if max(self._held[peer], self._granted[peer]) > now:
                until[peer] = None
            elif copy is not None and not copy.done():  # not held: its copy need not be waited for
                self._outstanding_copy(peer, seq, copy)
            elif copy is None or not _succeeded(copy):
                self.lost(peer, seq)
        while until:
            now = self._clock()
            for peer, wait_until in list(until.items()):
                copy = running.get(peer)
                if copy is not None and copy.done() and _succeeded(copy):
                    del until[peer]
                elif wait_until is None:
                    if copy is None or copy.done() or now >= revoke_at:  # never sent, failed, or too slow
                        until[peer] = self.lost(peer, seq)  # no new lease without it; the old ones run out
                        if copy is not None and not copy.done():
                            self._outstanding_copy(peer, seq, copy)
                elif wait_until <= now:
                    del until[peer]
            if not until:
                return
            timeout = max(0.0, min(revoke_at if u is None else u for u in until.values()) - now)
            waiting = [c for p in until if (c := running.get(p)) is not None and not c.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(timeout)


def _succeeded(copy: asyncio.Future[Any]) -> bool:
    return not copy.cancelled() and copy.exception() is None


class ReadLeases:
    """The holder's side: leases from each peer, published as the gate's ``current_until``; asked for only while
    reads want them (``wanted``)."""

    def __init__(self, peers: Iterable[str], gate: ReadGate | None, settings: LeaseSettings | None = None) -> None:
        self.settings = settings or LeaseSettings()
        self._valid_until = {p: 0.0 for p in peers}
        self._gate = gate
        self.released = False  # given back (draining or stopping): no local read, no new lease counted

    def granted(self, peer: str, sent_at: float, lease_s: float) -> None:
        """``peer`` answered a lease request sent at ``sent_at`` (monotonic) with ``lease_s`` (0: refused; an
        earlier grant still holds until it runs out)."""
        if lease_s > 0 and peer in self._valid_until and not self.released:
            self._valid_until[peer] = max(self._valid_until[peer], sent_at + lease_s - self.settings.margin_s)
        self._publish()

    def wanted(self, now: float) -> bool:
        """Whether the heartbeat asks for leases now: a read of this node consulted the gate less than ``idle_s``
        ago (always without a gate). Not asking changes nothing of what is held: a lease granted counts until it
        runs out, and its grantor keeps waiting for this node's copies until then (``LeaseGrants.cover``)."""
        if self._gate is None:
            return not self.released
        read_at = self._gate.wanted_at
        return not self.released and read_at > 0 and now - read_at < self.settings.idle_s

    def release(self) -> None:
        """Stop counting on every lease, before telling the grantors (``Ping.release_lease``): from now on every
        read takes the quorum path, so the grantors may stop waiting for this node's copy of their writes."""
        self.released = True
        self._valid_until = dict.fromkeys(self._valid_until, 0.0)
        self._publish()

    def resume(self) -> None:
        """Draining cancelled: ask for leases again (the heartbeat does; a grant counts from its next answer)."""
        self.released = False

    @property
    def current_until(self) -> float:
        return min(self._valid_until.values(), default=float("inf"))

    def _publish(self) -> None:
        if self._gate is not None:
            self._gate.set_current_until(self.current_until)


class Unsettled:
    """Events visible here whose writes are still in flight, by coordinator, counted in the read gate's slots.

    ``before_visible`` runs on the sequencer thread (engine/sequencer.py), the rest on the event loop: one lock.
    This node's own writes are in flight from their commit until ``Replicator.replicate`` returns or fails
    (``own_done``); a peer's, until its watermark passes them."""

    def __init__(self, node_id: str, gate: ReadGate, settled_hlc: int = 0, *,
                 clock: Callable[[], float] = time.monotonic, settings: LeaseSettings | None = None,
                 members: Collection[str] | None = None) -> None:
        """``members``: this pool's node ids (None: any origin). An event coordinated outside the pool (the
        registry pool's IAM events a node of another pool follows: cluster/iam_feed.py) is settled when it arrives:
        its coordinator sends this node no watermark, so counting it would keep every read off the local path."""
        self.node_id, self.gate, self._clock = node_id, gate, clock
        self.members = None if members is None else frozenset(members)
        self.settings = settings or LeaseSettings()
        self._lock = threading.Lock()
        self._watermarks: dict[str, int] = {}  # peer -> HLC below which its writes are settled
        self._peer_events: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}  # heap of (hlc, n, slots)
        self._own: dict[int, tuple[float, tuple[int, ...]]] = {}  # hlc -> (registered at, slots)
        # The highest HLC of an own event known settled or registered: at start, the clock's (every write of this
        # node before is settled: acknowledged, refused, or left by a crash).
        self._own_high = settled_hlc
        self._n = 0
        self.tracking_own = False  # set once the replicator runs: before that no own write is in flight

    def before_visible(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                if event.type not in REPLICATED or (self.members is not None and event.origin not in self.members):
                    continue
                if event.origin == self.node_id:
                    self._own_high = max(self._own_high, event.hlc)
                    if not self.tracking_own:
                        continue
                    slots = slots_of(event)
                    self._own[event.hlc] = (self._clock(), slots)
                elif event.hlc >= self._watermarks.get(event.origin, 0):
                    slots = slots_of(event)
                    self._n += 1
                    heapq.heappush(self._peer_events.setdefault(event.origin, []), (event.hlc, self._n, slots))
                else:
                    continue
                self.gate.add(slots, 1)

    def own_done(self, events: Iterable[Event]) -> None:
        """This node's write settled (acknowledged, or refused with 503)."""
        with self._lock:
            for event in events:
                entry = self._own.pop(event.hlc, None) if event.origin == self.node_id else None
                if entry is not None:
                    self.gate.add(entry[1], -1)

    def watermark(self) -> int:
        """This node's settled watermark: every own write with a lower HLC is acknowledged or refused."""
        with self._lock:
            return min(self._own, default=self._own_high + 1)

    def peer_watermark(self, peer: str, hlc: int) -> None:
        """``peer`` says its writes below ``hlc`` are settled."""
        if hlc <= 0:
            return
        with self._lock:
            if hlc <= self._watermarks.get(peer, 0):
                return
            self._watermarks[peer] = hlc
            heap = self._peer_events.get(peer)
            while heap and heap[0][0] < hlc:
                self.gate.add(heapq.heappop(heap)[2], -1)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._own) + sum(len(heap) for heap in self._peer_events.values())

    def forget_stale(self) -> None:
        """Own events whose command never reached the replicator (a failed commit): settled by age."""
        with self._lock:
            cutoff = self._clock() - self.settings.forget_own_s
            for hlc in [h for h, (at, _) in self._own.items() if at < cutoff]:
                self.gate.add(self._own.pop(hlc)[1], -1)


class LeaseService:
    """The Ping side of read leases (cluster/grpc_server.py ``LeaseHandler``): learn the caller's watermark and
    grant it a lease when it asks and has applied what it must."""

    def __init__(self, grants: LeaseGrants, unsettled: Unsettled) -> None:
        self.grants, self.unsettled = grants, unsettled

    def on_ping(self, caller: str, request: PingRequest) -> tuple[int, int, int]:
        self.unsettled.peer_watermark(caller, request.settled_hlc)
        if request.release_lease:
            self.grants.release(caller)
        lease_s = self.grants.grant(caller, request.lease_applied) if request.want_lease else 0.0
        return int(lease_s * 1000), self.grants.missed(caller), self.unsettled.watermark()
