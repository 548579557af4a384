"""SWIM membership (Das, Gupta, Motivala 2002) with Lifeguard's refinements: the protocol core, pure logic.

No sockets, no wall clock, no threads: the core sends through a ``Transport`` port, reads time from a ``Clock``
port and draws every random choice from the ``random.Random`` it is given, so a simulated network and clock drive
it in tests (tests/helpers/swim_sim.py) and a gRPC adapter drives it in a node, unchanged. It is tick-driven: the
driver calls ``receive`` for every message and ``tick`` no later than ``next_deadline()``; neither blocks.

Each protocol period a node probes one member (round-robin over a shuffled list, reshuffled every round): ping,
then, with no ack within the probe timeout, ping_req through k other members, and with no ack by the end of the
period the member becomes suspect. A suspicion becomes a death after a timeout that scales with log(n) and shrinks
as other members independently suspect the same incarnation (Lifeguard's dogpile), unless the member refutes it by
raising its own incarnation: only a node raises its own; everyone else records what it hears, by the precedence
of ``swim_messages.overrides``. Updates travel piggybacked on every message (``swim_gossip.GossipBuffer``).

Membership is liveness only: it steers routing, hints and health; nothing may depend on it for correctness.
docs/architecture/membership.md describes the protocol as built, its parameters and what the simulation proves.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from s4.cluster.swim_gossip import GossipBuffer
from s4.cluster.swim_messages import (
    ACK,
    ALIVE,
    DEAD,
    JOIN,
    JOIN_REPLY,
    LEAVE,
    NACK,
    PING,
    PING_REQ,
    STATES,
    SUSPECT,
    Message,
    Update,
    overrides,
)

log = logging.getLogger(__name__)


class Transport(Protocol):
    """Sends one message to an address, fire and forget (loss is the protocol's business, not the port's)."""

    def send(self, address: str, message: Message) -> None: ...


class Clock(Protocol):
    """Monotonic seconds (a wall clock set back must not stretch or skip protocol periods)."""

    def now(self) -> float: ...


@dataclass(frozen=True)
class SwimSettings:
    """The protocol's parameters; the defaults are documented in docs/architecture/membership.md."""

    period_s: float = 1.0  # one probe per period
    probe_timeout_s: float = 0.5  # direct ack awaited this long before ping_req
    indirect_checks: int = 3  # k: members asked to probe indirectly; also the confirmations that shorten suspicion
    suspicion_mult: float = 4.0  # suspicion timeout min = mult * max(1, log10(n)) * period
    suspicion_max_mult: float = 3.0  # with no confirmation the timeout starts at max_mult * min
    retransmit_mult: int = 4  # each update is piggybacked mult * ceil(log10(n + 1)) times
    piggyback_bytes: int = 1024  # estimated bytes of updates one message carries at most
    piggyback_count: int = 16  # and at most this many
    gossip_entries: int = 1024  # updates the buffer holds at most
    awareness_max: int = 8  # Lifeguard local health: timeouts and period stretch up to (max + 1) times
    nack_fraction: float = 0.8  # a relay answers nack after this fraction of the probe timeout
    reconnect_every: int = 2  # every this many periods: probe one dead member, or retry seeds when alone
    max_relays: int = 256  # ping_req relays in flight at most (older ones are forgotten)

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout_s < self.period_s:
            raise ValueError("probe_timeout_s must be positive and below period_s")
        if self.indirect_checks < 0 or self.awareness_max < 0 or self.reconnect_every < 1:
            raise ValueError("indirect_checks and awareness_max must be >= 0, reconnect_every >= 1")
        if self.suspicion_mult <= 0 or self.suspicion_max_mult < 1:
            raise ValueError("suspicion_mult must be positive and suspicion_max_mult >= 1")
        if self.retransmit_mult < 1 or self.piggyback_count < 1 or self.piggyback_bytes < 64:
            raise ValueError("retransmit_mult and piggyback_count must be >= 1, piggyback_bytes >= 64")
        if not 0 < self.nack_fraction < 1 or self.gossip_entries < 1 or self.max_relays < 1:
            raise ValueError("nack_fraction must be in (0, 1); gossip_entries and max_relays >= 1")


@dataclass(frozen=True)
class MemberState:
    """What this node believes of one member."""

    node_id: str
    address: str
    state: str
    incarnation: int


@dataclass(frozen=True)
class Change:
    """A member's record changed: ``old`` is None for a member heard of for the first time."""

    node_id: str
    address: str
    old: str | None
    new: str
    incarnation: int


@dataclass
class Counters:
    """Events since start, for metrics and tests."""

    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    suspicions: int = 0  # suspicions this node raised (its own probe failed)
    deaths: int = 0  # deaths this node declared (its own suspicion timed out)
    refutations: int = 0  # this node raised its own incarnation to answer a suspicion or death of itself
    foreign_dropped: int = 0  # messages of another cluster
    misdirected: int = 0  # pings meant for another node id at this address
    conflicts: int = 0  # updates claiming this node's id at another address
    malformed: int = 0  # unknown kinds or states, negative incarnations
    joins_sent: int = 0
    leaves: int = 0  # members that announced their own leave to this node directly


@dataclass
class _Member:
    node_id: str
    address: str
    state: str
    incarnation: int
    origin: str
    claimed: int = -1  # the incarnation the member last stated to this node itself (a message's sender_inc)


@dataclass
class _Suspicion:
    """Lifeguard's suspicion: the timeout falls from max_s toward min_s as independent confirmations arrive."""

    incarnation: int
    started: float
    min_s: float
    max_s: float
    expected: int  # confirmations that bring the timeout down to min_s
    confirmers: set[str] = field(default_factory=set)

    def deadline(self) -> float:
        confirmations = len(self.confirmers) - 1  # the first suspecter started it
        if self.expected < 1 or confirmations >= self.expected:
            return self.started + self.min_s
        fraction = math.log(confirmations + 1) / math.log(self.expected + 1)
        return self.started + max(self.min_s, self.max_s - (self.max_s - self.min_s) * fraction)


@dataclass
class _Probe:
    target_id: str
    seq: int
    timeout_at: float  # ping_req goes out then, if no ack came
    acked: bool = False
    indirect: bool = False
    expected_nacks: int = 0
    nackers: set[str] = field(default_factory=set)


@dataclass
class _Relay:
    requester_addr: str
    requester_seq: int
    target_id: str
    nack_at: float
    expires_at: float
    nacked: bool = False


class Swim:
    """One node's SWIM membership: call ``start()``, then ``receive`` every message and ``tick`` on time."""

    def __init__(self, *, cluster: str, node_id: str, address: str, incarnation: int, transport: Transport,
                 clock: Clock, rng: random.Random, seeds: Iterable[str] = (),
                 settings: SwimSettings | None = None) -> None:
        """``incarnation``: a start stamp above any this node used in an earlier life (the wall clock in ms: see
        membership.md "Incarnations"); ``seeds``: addresses to join through (this node's own is skipped)."""
        self.settings = settings or SwimSettings()
        self.cluster, self.node_id, self.address = cluster, node_id, address
        self._incarnation = incarnation
        self._transport, self._clock, self._rng = transport, clock, rng
        self.seeds = tuple(s for s in seeds if s != address)
        s = self.settings
        self._gossip = GossipBuffer(retransmit_mult=s.retransmit_mult, max_bytes=s.piggyback_bytes,
                                    max_count=s.piggyback_count, max_entries=s.gossip_entries)
        self._members: dict[str, _Member] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._relays: dict[int, _Relay] = {}
        self._order: list[str] = []
        self._cursor = 0
        self._dead_cursor = 0
        self._probe: _Probe | None = None
        self._next_period: float | None = None
        self._seq = 0
        self._awareness = 0
        self.periods = 0
        self.joined = not self.seeds  # a node with no seed starts a cluster of its own
        self.left = False  # leave() was called: this life neither probes, answers nor refutes any more
        self.counters = Counters()
        self._listeners: list[Callable[[Change], None]] = []

    # -- what others read -------------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard's local health score: 0 healthy; each step stretches the period and probe timeout once more."""
        return self._awareness

    def members(self) -> list[MemberState]:
        """Every member this node knows of (itself excluded), by node id."""
        return [MemberState(m.node_id, m.address, m.state, m.incarnation)
                for m in sorted(self._members.values(), key=lambda m: m.node_id)]

    def member(self, node_id: str) -> MemberState | None:
        m = self._members.get(node_id)
        return None if m is None else MemberState(m.node_id, m.address, m.state, m.incarnation)

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` after every accepted change of a member's record (state, incarnation or address)."""
        self._listeners.append(listener)

    def pending_gossip(self) -> list[Update]:
        return self._gossip.pending()

    # -- driving ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Announce this node and ask the seeds to let it in; the first period starts now."""
        now = self._clock.now()
        self._gossip.add(self._self_update())
        self._next_period = now
        self._send_joins()

    def leave(self) -> int:
        """Graceful leave: tell every member not known dead, directly, that this node is ``dead`` at its current
        incarnation (origin itself: only it may say so without a suspicion), then go silent. It will not be there
        to gossip it, so it tells them all itself; each re-gossips it, so one that missed the message learns it
        from the others (or suspects the silent node, as after a crash). A restart's start stamp (a higher
        incarnation) makes it alive everywhere again. Returns how many members were told."""
        if self.left:
            return 0
        death = Update(DEAD, self.node_id, self.address, self._incarnation, self.node_id)
        members = [m for m in sorted(self._members.values(), key=lambda m: m.node_id) if m.state != DEAD]
        for member in members:
            self._send(member.address, LEAVE, member.node_id, updates=(death,))
        self.left = True
        self._next_period, self._probe = None, None
        self._suspicions.clear()
        self._relays.clear()
        return len(members)

    def next_deadline(self) -> float:
        """The earliest time ``tick`` has something to do (``inf`` before ``start`` and after ``leave``)."""
        if self.left:
            return math.inf
        times = [self._next_period if self._next_period is not None else math.inf]
        if self._probe is not None and not self._probe.acked and not self._probe.indirect:
            times.append(self._probe.timeout_at)
        times.extend(s.deadline() for s in self._suspicions.values())
        times.extend(r.expires_at if r.nacked else r.nack_at for r in self._relays.values())
        return min(times)

    def tick(self) -> None:
        """Do everything due by now: nacks, suspicion timeouts, the indirect probe, the period's end."""
        if self._next_period is None:
            return
        now = self._clock.now()
        for seq, relay in list(self._relays.items()):
            if not relay.nacked and now >= relay.nack_at:
                relay.nacked = True
                self._send(relay.requester_addr, NACK, "", seq=relay.requester_seq, target_id=relay.target_id)
            if now >= relay.expires_at:
                del self._relays[seq]
        for node_id, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                member = self._members[node_id]
                self.counters.deaths += 1
                self._apply(Update(DEAD, node_id, member.address, suspicion.incarnation, self.node_id))
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect and now >= probe.timeout_at:
            self._probe_indirectly(probe)
        if now >= self._next_period:
            self._end_period()
            self._start_period(now)

    def receive(self, message: Message) -> None:
        """Handle one message from the network (already authenticated by the transport)."""
        if self.left:  # gone: answering (or refuting its own death) would make it look alive
            return
        if message.cluster != self.cluster:
            self.counters.foreign_dropped += 1
            return
        if message.sender_id == self.node_id:  # our own id from elsewhere: a misconfigured twin, or ourselves
            if message.sender_addr != self.address:
                self.counters.conflicts += 1
            return
        self._apply(Update(ALIVE, message.sender_id, message.sender_addr, message.sender_inc, message.sender_id))
        sender = self._members.get(message.sender_id)
        if sender is None:  # a malformed sender: counted by _apply
            return
        sender.claimed = message.sender_inc  # its latest word: lower than before means a new life
        for update in message.updates:
            self._apply(update)
        handler = self._handlers.get(message.kind)
        if handler is None:
            self.counters.malformed += 1
            return
        handler(self, message)

    # -- the failure detector ---------------------------------------------------------------------------------

    def _start_period(self, now: float) -> None:
        self.periods += 1
        stretch = self._awareness + 1
        self._next_period = now + self.settings.period_s * stretch
        self._probe = None
        target = self._next_target()
        if target is not None:
            member = self._members[target]
            self.counters.probes += 1
            seq = self._next_seq()
            self._probe = _Probe(target, seq, now + self.settings.probe_timeout_s * stretch)
            self._send(member.address, PING, target, seq=seq, target_id=target)
        if self.periods % self.settings.reconnect_every == 0:
            self._reconnect()

    def _end_period(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        if probe.acked:
            self._awareness = max(0, self._awareness - 1)
            return
        self.counters.probe_failures += 1
        # Lifeguard: relays that did not even nack suggest this node is the slow one; with no relay to ask there is
        # no telling whose fault it is, and the score stays.
        self._awareness = min(self.settings.awareness_max,
                              self._awareness + max(0, probe.expected_nacks - len(probe.nackers)))
        member = self._members.get(probe.target_id)
        if member is None or member.state == DEAD:
            return
        fresh = member.state == ALIVE  # of a suspect member it is an independent confirmation
        self._apply(Update(SUSPECT, member.node_id, member.address, member.incarnation, self.node_id))
        if fresh:
            # Tell the suspect at once (the buddy record leads the ping): a live one refutes within a round trip,
            # not when some member happens to probe it next.
            self.counters.suspicions += 1
            self._send(member.address, PING, member.node_id, seq=self._next_seq(), target_id=member.node_id)

    def _probe_indirectly(self, probe: _Probe) -> None:
        probe.indirect = True
        target = self._members.get(probe.target_id)
        if target is None or target.state == DEAD:
            return
        candidates = sorted(m.node_id for m in self._members.values()
                            if m.state == ALIVE and m.node_id != probe.target_id)
        relays = self._rng.sample(candidates, min(self.settings.indirect_checks, len(candidates)))
        probe.expected_nacks = len(relays)
        for relay in relays:
            self.counters.indirect_probes += 1
            self._send(self._members[relay].address, PING_REQ, relay, seq=probe.seq, target_id=target.node_id,
                       target_addr=target.address)

    def _next_target(self) -> str | None:
        """Round-robin over the members not dead, in an order reshuffled every round (at most two passes)."""
        for _ in range(2):
            while self._cursor < len(self._order):
                node_id = self._order[self._cursor]
                self._cursor += 1
                member = self._members.get(node_id)
                if member is not None and member.state != DEAD:
                    return node_id
            self._order = sorted(m.node_id for m in self._members.values() if m.state != DEAD)
            self._rng.shuffle(self._order)
            self._cursor = 0
        return None

    def _reconnect(self) -> None:
        """Heal partitions and rejoin: ping one dead member (carrying its death, so a live one refutes it), and
        when no member is known alive, ask the seeds again."""
        dead = sorted(m.node_id for m in self._members.values() if m.state == DEAD)
        if dead:
            node_id = dead[self._dead_cursor % len(dead)]
            self._dead_cursor += 1
            self._send(self._members[node_id].address, PING, node_id, seq=self._next_seq(), target_id=node_id)
        if self.seeds and not any(m.state != DEAD for m in self._members.values()):
            self._send_joins()

    def _send_joins(self) -> None:
        for seed in self.seeds:
            self.counters.joins_sent += 1
            self._send(seed, JOIN, "")

    # -- messages ---------------------------------------------------------------------------------------------

    def _on_ping(self, message: Message) -> None:
        if message.target_id != self.node_id:  # the address now belongs to another node: its silence is the truth
            self.counters.misdirected += 1
            return
        self._send(message.sender_addr, ACK, message.sender_id, seq=message.seq, target_id=self.node_id)

    def _on_ack(self, message: Message) -> None:
        probe = self._probe
        if probe is not None and probe.seq == message.seq and probe.target_id == message.target_id:
            probe.acked = True
            return
        relay = self._relays.pop(message.seq, None)
        if relay is not None and relay.target_id == message.target_id:
            self._send(relay.requester_addr, ACK, "", seq=relay.requester_seq, target_id=relay.target_id)
        elif relay is not None:
            self._relays[message.seq] = relay

    def _on_ping_req(self, message: Message) -> None:
        now, seq = self._clock.now(), self._next_seq()
        timeout = self.settings.probe_timeout_s
        self._relays[seq] = _Relay(message.sender_addr, message.seq, message.target_id,
                                   now + timeout * self.settings.nack_fraction, now + self.settings.period_s)
        while len(self._relays) > self.settings.max_relays:
            del self._relays[next(iter(self._relays))]
        self._send(message.target_addr, PING, message.target_id, seq=seq, target_id=message.target_id)

    def _on_nack(self, message: Message) -> None:
        probe = self._probe
        if probe is not None and probe.seq == message.seq and probe.target_id == message.target_id:
            probe.nackers.add(message.sender_id)

    def _on_join(self, message: Message) -> None:
        records = [self._self_update()] + [Update(m.state, m.node_id, m.address, m.incarnation, m.origin)
                                           for m in self._members.values()]
        self._send(message.sender_addr, JOIN_REPLY, message.sender_id, updates=tuple(records))

    def _on_join_reply(self, message: Message) -> None:
        self.joined = True

    def _on_leave(self, message: Message) -> None:
        """The sender's ``dead`` of itself came in the updates (applied, and re-gossiped, above)."""
        self.counters.leaves += 1

    _handlers: dict[str, Callable[[Swim, Message], None]] = {
        PING: _on_ping, ACK: _on_ack, PING_REQ: _on_ping_req, NACK: _on_nack, JOIN: _on_join,
        JOIN_REPLY: _on_join_reply, LEAVE: _on_leave,
    }

    def _send(self, address: str, kind: str, to_id: str, *, seq: int = 0, target_id: str = "", target_addr: str = "",
              updates: tuple[Update, ...] | None = None) -> None:
        """Send with piggybacked gossip: first the recipient's own record when it may not know it, that is when this
        node holds it suspect or dead (Lifeguard's buddy system: it learns at once and can refute) or at an
        incarnation above what it last stated itself (a restart with a clock set back: it must outbid its past
        life), then the least-sent updates."""
        if updates is None:
            piggyback: list[Update] = []
            budget = self.settings.piggyback_bytes
            member = self._members.get(to_id)
            if member is not None and (member.state != ALIVE or member.claimed < member.incarnation):
                buddy = Update(member.state, member.node_id, member.address, member.incarnation, member.origin)
                piggyback.append(buddy)
                budget -= buddy.size()
            piggyback += self._gossip.take(self._alive_count(), budget, self.settings.piggyback_count - len(piggyback),
                                           skip=to_id if piggyback else "")
            updates = tuple(piggyback)
        self._transport.send(address, Message(kind, self.cluster, self.node_id, self.address, self._incarnation,
                                              seq, target_id, target_addr, updates))

    # -- the membership table ---------------------------------------------------------------------------------

    def _apply(self, update: Update) -> None:
        """Take one update by the precedence rules; re-disseminate and announce what it changed."""
        if update.state not in STATES or update.incarnation < 0 or not update.node_id:
            self.counters.malformed += 1
            return
        if update.node_id == self.node_id:
            self._about_me(update)
            return
        member = self._members.get(update.node_id)
        old: str | None = None if member is None else member.state
        if member is None:  # any record of a new member counts (a seed's dead ones too: they get reconnect probes)
            member = _Member(update.node_id, update.address, update.state, update.incarnation, update.origin)
            self._members[update.node_id] = member
            self._order.insert(self._rng.randint(self._cursor, len(self._order)), update.node_id)
        elif overrides(update, member.state, member.incarnation):
            member.state, member.incarnation, member.origin = update.state, update.incarnation, update.origin
            if update.state == ALIVE:
                member.address = update.address
        else:
            self._confirm(update, member)
            return
        if update.state == SUSPECT:
            self._start_suspicion(member, update.origin)
        else:
            self._suspicions.pop(member.node_id, None)
        self._gossip.add(update)
        self._notify(member, old)

    def _confirm(self, update: Update, member: _Member) -> None:
        """Another member independently suspects the same incarnation: count it once and pass it on."""
        suspicion = self._suspicions.get(member.node_id)
        if (update.state == SUSPECT and suspicion is not None and update.incarnation == suspicion.incarnation
                and update.origin and update.origin not in suspicion.confirmers):
            suspicion.confirmers.add(update.origin)
            self._gossip.add(update)

    def _start_suspicion(self, member: _Member, origin: str) -> None:
        n = self._alive_count()
        min_s = self.settings.suspicion_mult * max(1.0, math.log10(n)) * self.settings.period_s
        self._suspicions[member.node_id] = _Suspicion(
            member.incarnation, self._clock.now(), min_s, min_s * self.settings.suspicion_max_mult,
            min(self.settings.indirect_checks, max(0, n - 2)), {origin})

    def _about_me(self, update: Update) -> None:
        """Only this node raises its incarnation: above a suspicion or death of it, or a past life's higher alive."""
        mine = self._incarnation
        if update.incarnation < mine or (update.state == ALIVE and update.incarnation == mine):
            return
        if update.address != self.address:  # another process claims this id: refuting would start a war
            self.counters.conflicts += 1
            log.warning("swim: %s claimed at %s (this node is at %s)", self.node_id, update.address, self.address)
            return
        self._incarnation = update.incarnation + 1
        self.counters.refutations += 1
        if update.state != ALIVE:
            self._awareness = min(self.settings.awareness_max, self._awareness + 1)
        self._gossip.add(self._self_update())

    def _self_update(self) -> Update:
        return Update(ALIVE, self.node_id, self.address, self._incarnation, self.node_id)

    def _alive_count(self) -> int:
        """Members not dead, this node included (the n of the log(n) timeouts and retransmissions)."""
        return 1 + sum(1 for m in self._members.values() if m.state != DEAD)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _notify(self, member: _Member, old: str | None) -> None:
        change = Change(member.node_id, member.address, old, member.state, member.incarnation)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the failure detector
                log.exception("swim: listener failed on %s", change)
