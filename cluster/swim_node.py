"""SWIM on a running node: the gRPC transport, the driver task and the RPC handler around the pure core.

cluster/swim.py is tick-driven and sends through a port; this module is what drives it in a node
(docs/architecture/membership.md, "Wiring as built"):

* ``to_wire``/``from_wire`` map ``swim_messages.Message`` to the ``SwimMessage`` proto field by field (an unknown
  kind or state becomes "", which the core counts as malformed);
* ``PoolTransport.send`` resolves the address to a pool member and schedules one ``Swim`` call on the node's
  ``PeerPool`` as a task: bounded in time (the send timeout) and in number (``max_in_flight``); a failure is a lost
  message, counted and otherwise ignored (loss is the protocol's business, it probes again);
* ``SwimMembership`` owns the core (start stamp = the wall clock in ms, clock = the node's monotonic clock), the
  driver task (``tick`` at ``next_deadline()``, woken early by every received message) and ``receive``, which the
  gRPC service calls with the authenticated caller.

Members are the static pool (S4_POOL_NODES): the verifier refuses callers outside it (cluster/auth.py), a message
whose sender address is not the caller's pool entry is dropped, and updates about nodes outside the pool are
dropped (``outside_pool``), so the table never holds a node the transport could not reach. Seeds are the S4_SEEDS
entries that are pool members; with none (unset, or only this node), every peer of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import ClusterConfig
from .liveness import LivenessSettings
from .swim import Change, Swim, SwimSettings
from .swim_messages import ACK, ALIVE, DEAD, JOIN, JOIN_REPLY, LEAVE, NACK, PING, PING_REQ, SUSPECT, Message, Update
from .wake import wait_event
from .wire.s4cluster.v1 import SwimKind, SwimMessage, SwimState, SwimUpdate

log = logging.getLogger("s4.cluster")

_KINDS = {PING: SwimKind.PING, ACK: SwimKind.ACK, PING_REQ: SwimKind.PING_REQ, NACK: SwimKind.NACK,
          JOIN: SwimKind.JOIN, JOIN_REPLY: SwimKind.JOIN_REPLY, LEAVE: SwimKind.LEAVE}
_STATES = {ALIVE: SwimState.ALIVE, SUSPECT: SwimState.SUSPECT, DEAD: SwimState.DEAD}
_KIND_OF = {wire: kind for kind, wire in _KINDS.items()}
_STATE_OF = {wire: state for state, wire in _STATES.items()}

#: Calls in flight at most; a send beyond is dropped and counted (a peer that hangs must not pile up tasks).
MAX_IN_FLIGHT = 64
#: The driver never sleeps less than this between ticks (a deadline already past cannot make it spin).
MIN_SLEEP_S = 0.001


def to_wire(message: Message) -> SwimMessage:
    return SwimMessage(kind=_KINDS.get(message.kind, SwimKind.UNSPECIFIED), cluster=message.cluster,
                       sender_id=message.sender_id, sender_addr=message.sender_addr, sender_inc=message.sender_inc,
                       seq=message.seq, target_id=message.target_id, target_addr=message.target_addr,
                       updates=[SwimUpdate(state=_STATES.get(u.state, SwimState.UNSPECIFIED), node_id=u.node_id,
                                           address=u.address, incarnation=u.incarnation, origin=u.origin)
                                for u in message.updates])


def from_wire(wire: SwimMessage) -> Message:
    return Message(_KIND_OF.get(wire.kind, ""), wire.cluster, wire.sender_id, wire.sender_addr, wire.sender_inc,
                   wire.seq, wire.target_id, wire.target_addr,
                   tuple(Update(_STATE_OF.get(u.state, ""), u.node_id, u.address, u.incarnation, u.origin)
                         for u in wire.updates))


def swim_settings(liveness: LivenessSettings) -> SwimSettings:
    """The protocol period is the heartbeat's interval (1 s), the probe timeout half of it (or the Ping timeout if
    shorter); the rest are SwimSettings' defaults, in periods (membership.md, "Parameters and defaults")."""
    period = liveness.interval_s
    return SwimSettings(period_s=period, probe_timeout_s=min(liveness.ping_timeout_s, period / 2))


@dataclass
class TransportCounters:
    sent: int = 0  # calls the peer answered
    failed: int = 0  # refused, unreachable, timed out, unauthenticated: lost messages
    unroutable: int = 0  # addressed to no member of this node's pool
    overflow: int = 0  # dropped because MAX_IN_FLIGHT calls were pending


class PoolTransport:
    """swim.Transport over gRPC: ``send`` schedules the call and returns at once (call it on the event loop)."""

    def __init__(self, stub_of: Callable[[str], Any], routes: Mapping[str, str], *, timeout_s: float,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        """``stub_of``: node id -> its S4Cluster stub (PeerPool.stub); ``routes``: gRPC address -> node id."""
        self._stub_of, self._routes = stub_of, dict(routes)
        self.timeout_s, self.max_in_flight = timeout_s, max_in_flight
        self.counters = TransportCounters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def send(self, address: str, message: Message) -> None:
        node_id = self._routes.get(address)
        if node_id is None:
            self.counters.unroutable += 1
            return
        if self._closed or len(self._tasks) >= self.max_in_flight:
            self.counters.overflow += 1
            return
        task = asyncio.get_running_loop().create_task(self._call(node_id, to_wire(message)), name="s4-swim-send")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, node_id: str, wire: SwimMessage) -> None:
        try:
            await asyncio.wait_for(self._stub_of(node_id).swim(wire, timeout=self.timeout_s), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost message: the protocol probes again
            self.counters.failed += 1
            log.debug("swim: message to %s lost: %s", node_id, type(exc).__name__)
        else:
            self.counters.sent += 1

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the calls in flight to end (a leave's messages must go out before close)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def close(self) -> None:
        """Cancel the calls in flight and wait for them (each ends at once when cancelled)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _Clock:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.now = clock


class SwimMembership:
    """One node's SWIM over its pool: ``await start()`` on the node's loop, ``receive`` per call, ``await stop()``."""

    def __init__(self, config: ClusterConfig, stub_of: Callable[[str], Any], *, settings: SwimSettings,
                 send_timeout_s: float, clock: Callable[[], float], wall: Callable[[], float],
                 rng: random.Random | None = None) -> None:
        me = config.member(config.node_id)
        assert me is not None  # build_cluster_config checked it
        self.address = str(me.grpc)
        self._pool = {p.node_id: str(p.grpc) for p in config.peers}
        self.transport = PoolTransport(stub_of, {a: n for n, a in self._pool.items()}, timeout_s=send_timeout_s)
        self._clock = clock
        self.swim = Swim(cluster=config.cluster_name, node_id=config.node_id, address=self.address,
                         incarnation=int(wall() * 1000), transport=self.transport, clock=_Clock(clock),
                         rng=rng or random.Random(), seeds=self._seeds(config.seeds), settings=settings)
        self.outside_pool = 0  # messages or updates naming a node or address outside this node's pool
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def _seeds(self, seeds: Iterable[object]) -> tuple[str, ...]:
        wanted = [str(s) for s in seeds]
        known = set(self._pool.values())
        usable = [s for s in wanted if s in known]
        strangers = [s for s in wanted if s not in known and s != self.address]
        if strangers:
            log.warning("S4_SEEDS: %s not in S4_POOL_NODES; ignored (members are the pool's nodes)",
                        ", ".join(strangers))
        return tuple(usable) if usable else tuple(self._pool.values())

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        self.swim.subscribe(listener)

    async def start(self) -> None:
        self.swim.start()
        self._task = asyncio.get_running_loop().create_task(self._drive(), name="s4-swim")

    async def stop(self) -> None:
        """Stop the driver and the calls in flight; messages arriving later (the server closes after) are ignored."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()

    async def leave(self) -> int:
        """Graceful leave (``Swim.leave``): every member is told this node is dead at its current incarnation, so
        peers stop counting on it at once instead of after a suspicion; waits (bounded by the send timeout) for
        those messages to be answered. Returns how many members were told. Call ``stop`` after."""
        told = self.swim.leave()
        await self.transport.flush(self.transport.timeout_s)
        return told

    def receive(self, caller: str, wire: SwimMessage) -> None:
        """One message from ``caller`` (authenticated, and the message's sender: cluster/grpc_server.py checks)."""
        if self._stopped:
            return
        if self._pool.get(caller) != wire.sender_addr:  # a pool list that differs between nodes
            self.outside_pool += 1
            return
        message = from_wire(wire)
        updates = tuple(u for u in message.updates if self._in_pool(u))
        if len(updates) != len(message.updates):
            self.outside_pool += len(message.updates) - len(updates)
            message = Message(message.kind, message.cluster, message.sender_id, message.sender_addr,
                              message.sender_inc, message.seq, message.target_id, message.target_addr, updates)
        self.swim.receive(message)
        self._wake.set()  # the message may have brought a deadline forward (a relay's nack, a suspicion)

    def _in_pool(self, update: Update) -> bool:
        """Updates about this node always reach the core (it refutes them, or counts a conflict)."""
        return update.node_id == self.swim.node_id or self._pool.get(update.node_id) == update.address

    async def _drive(self) -> None:
        """Tick at every deadline; a received message wakes it early. A bug in one tick is logged, not fatal."""
        while True:
            delay = self.swim.settings.period_s
            try:
                self.swim.tick()
                delay = self.swim.next_deadline() - self._clock()
            except Exception:  # noqa: BLE001 - membership must keep running; the log says what broke
                log.exception("swim: tick failed")
            self._wake.clear()
            await wait_event(self._wake, max(MIN_SLEEP_S, delay))  # not asyncio.wait_for: cluster/wake.py

    def counters(self) -> dict[str, int]:
        """For the health document and the metrics: the core's counters, the transport's and the local health."""
        c, t = self.swim.counters, self.transport.counters
        return {"probes": c.probes, "probe_failures": c.probe_failures, "indirect_probes": c.indirect_probes,
                "suspicions": c.suspicions, "deaths": c.deaths, "refutations": c.refutations,
                "foreign_dropped": c.foreign_dropped, "misdirected": c.misdirected, "conflicts": c.conflicts,
                "malformed": c.malformed, "outside_pool": self.outside_pool, "leaves": c.leaves,
                "messages_sent": t.sent,
                "messages_lost": t.failed + t.overflow + t.unroutable}
