"""A simulated network and clock for cluster/swim.py: discrete events, deterministic for a seed.

Time only moves to the next event (a message delivery or a node's ``next_deadline``), so hundreds of protocol
periods of dozens of nodes run in well under a second and never read the wall clock. The network loses each
message with a probability (global, or per node for a "flaky" one), delays it uniformly within bounds (plus a
per-node extra for a "slow" one), and drops what crosses a partition. Nodes crash (their messages and timers stop)
and restart (a fresh ``Swim`` at the same address, a new start-stamp incarnation, joining through its seeds).

Every message sent is checked against the invariants no run may break, so every test that drives the simulation
checks them too:
- nobody raises another member's incarnation: any incarnation a message states for a node is at most the highest
  that node ever held itself;
- the piggybacked updates of a message stay within the byte budget (the join reply carries the member list).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from s4.cluster.swim import Swim, SwimSettings
from s4.cluster.swim_messages import JOIN_REPLY, Message

CLUSTER = "sim"
#: The start stamp of the simulated wall clock, in ms (incarnation = stamp + simulated ms at start).
EPOCH_MS = 1_700_000_000_000
#: A run stops with an error after this many events: a livelock fails instead of hanging.
MAX_EVENTS = 5_000_000


@dataclass
class _Node:
    swim: Swim
    up: bool = True
    life: int = 0
    seeds: tuple[str, ...] = ()
    cluster: str = CLUSTER


@dataclass
class Stats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0  # dropped by a partition
    foreign: dict[str, int] = field(default_factory=dict)  # node id -> messages of another cluster delivered to it
    max_piggyback_bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class _Port:
    def __init__(self, net: SimNet, address: str, life: int) -> None:
        self.net, self.address, self.life = net, address, life

    def send(self, address: str, message: Message) -> None:
        self.net._send(self.address, self.life, address, message)


class SimNet:
    """Nodes addressed "<id>:7946", a seeded random source for everything, and the invariant checks."""

    def __init__(self, seed: int, *, settings: SwimSettings | None = None, loss: float = 0.0,
                 delay: tuple[float, float] = (0.001, 0.02)) -> None:
        self.rng = random.Random(seed)
        self.settings = settings or SwimSettings()
        self.loss, self.delay = loss, delay
        self.time = 0.0
        self.nodes: dict[str, _Node] = {}  # by address
        self.node_loss: dict[str, float] = {}  # extra loss of messages from or to a node, by address
        self.node_delay: dict[str, float] = {}  # extra delay of messages from or to a node, by address
        self.groups: dict[str, int] = {}  # partition: address -> group (no entry: group 0); empty: none
        self.max_incarnation: dict[str, int] = {}  # node id -> the highest incarnation it ever held itself
        self.stats = Stats()
        self._events: list[tuple[float, int, str, str, int, Message | None]] = []
        self._order = 0
        self._scheduled: dict[str, float] = {}
        self.events_run = 0

    # -- the clock port ---------------------------------------------------------------------------------------

    def now(self) -> float:
        return self.time

    # -- the cluster ------------------------------------------------------------------------------------------

    @staticmethod
    def address(node_id: str) -> str:
        return f"{node_id}:7946"

    def add(self, node_id: str, seeds: Iterable[str] = (), *, cluster: str = CLUSTER,
            incarnation: int | None = None) -> Swim:
        """Start a node that joins through the nodes ``seeds`` (ids)."""
        address = self.address(node_id)
        seed_addrs = tuple(self.address(s) for s in seeds)
        previous = self.nodes.get(address)
        life = previous.life + 1 if previous else 0
        inc = EPOCH_MS + int(self.time * 1000) if incarnation is None else incarnation
        swim = Swim(cluster=cluster, node_id=node_id, address=address, incarnation=inc,
                    transport=_Port(self, address, life), clock=self, rng=random.Random(self.rng.random()),
                    seeds=seed_addrs, settings=self.settings)
        self.nodes[address] = _Node(swim, True, life, seed_addrs, cluster)
        self._scheduled.pop(address, None)
        self._note_incarnation(swim)
        swim.start()
        self._after(address)
        return swim

    def cluster(self, n: int, *, seeds: int = 1, prefix: str = "n") -> list[str]:
        """Start ``n`` nodes that all join through the first ``seeds`` of them; returns the ids."""
        ids = [f"{prefix}{i:02d}" for i in range(n)]
        for node_id in ids:
            self.add(node_id, [s for s in ids[:seeds] if s != node_id])
        return ids

    def swim(self, node_id: str) -> Swim:
        return self.nodes[self.address(node_id)].swim

    def is_up(self, node_id: str) -> bool:
        return self.nodes[self.address(node_id)].up

    def live(self, cluster: str = CLUSTER) -> list[str]:
        return sorted(n.swim.node_id for n in self.nodes.values() if n.up and n.cluster == cluster)

    def crash(self, node_id: str) -> None:
        self.nodes[self.address(node_id)].up = False

    def leave(self, node_id: str) -> int:
        """A graceful stop: the node announces its leave (its messages go out now), then stops like a crash."""
        told = self.swim(node_id).leave()
        self.crash(node_id)
        return told

    def restart(self, node_id: str, *, incarnation: int | None = None) -> Swim:
        node = self.nodes[self.address(node_id)]
        return self.add(node_id, [s.split(":")[0] for s in node.seeds], cluster=node.cluster, incarnation=incarnation)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between the groups (ids); nodes in no group form group 0."""
        self.groups = {self.address(n): i + 1 for i, group in enumerate(groups) for n in group}

    def heal(self) -> None:
        self.groups = {}

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, seconds: float) -> None:
        """Process every event up to now + ``seconds``."""
        self.run_until(self.time + seconds)

    def run_until(self, end: float) -> None:
        while self._events and self._events[0][0] <= end:
            self.events_run += 1
            if self.events_run > MAX_EVENTS:
                raise RuntimeError("simulation did not settle (livelock?)")
            at, _, kind, address, life, message = heapq.heappop(self._events)
            self.time = max(self.time, at)
            node = self.nodes.get(address)
            if node is None or not node.up or node.life != life:
                continue
            if kind == "tick":
                if self._scheduled.get(address) == at:
                    del self._scheduled[address]
                node.swim.tick()
            else:
                assert message is not None
                self.stats.delivered += 1
                if message.cluster != node.cluster:
                    self.stats.foreign[node.swim.node_id] = self.stats.foreign.get(node.swim.node_id, 0) + 1
                node.swim.receive(message)
            self._note_incarnation(node.swim)
            self._after(address)
        self.time = max(self.time, end)

    def periods(self, n: float) -> None:
        self.run(n * self.settings.period_s)

    def first_time(self, condition: object, *, within: float, step: float | None = None) -> float | None:
        """Run in steps (a tenth of a period) until ``condition()`` holds; the simulated time it took, or None."""
        assert callable(condition)
        step = step or self.settings.period_s / 10
        start = self.time
        for _ in range(int(math.ceil(within / step)) + 1):
            if condition():
                return self.time - start
            self.run(step)
        return None

    # -- views ------------------------------------------------------------------------------------------------

    def view(self, observer: str, subject: str) -> str | None:
        m = self.swim(observer).member(subject)
        return None if m is None else m.state

    def all_see(self, subject: str, state: str, observers: Iterable[str] | None = None) -> bool:
        observers = [o for o in (observers if observers is not None else self.live()) if o != subject]
        return all(self.view(o, subject) == state for o in observers)

    def converged(self, ids: Iterable[str] | None = None) -> bool:
        """Every live node sees every other live node alive at that node's current incarnation."""
        ids = list(ids if ids is not None else self.live())
        for observer in ids:
            for subject in ids:
                if observer == subject:
                    continue
                m = self.swim(observer).member(subject)
                if m is None or m.state != "alive" or m.incarnation != self.swim(subject).incarnation:
                    return False
        return True

    # -- internals --------------------------------------------------------------------------------------------

    def _note_incarnation(self, swim: Swim) -> None:
        if swim.incarnation > self.max_incarnation.get(swim.node_id, -1):
            self.max_incarnation[swim.node_id] = swim.incarnation

    def _check(self, message: Message) -> None:
        claims = [(message.sender_id, message.sender_inc)] + [(u.node_id, u.incarnation) for u in message.updates]
        for node_id, incarnation in claims:
            held = self.max_incarnation.get(node_id)
            assert held is not None and incarnation <= held, (
                f"{message.sender_id} states incarnation {incarnation} for {node_id}, which never held above {held}")
        if message.kind != JOIN_REPLY:
            size = sum(u.size() for u in message.updates)
            assert size <= self.settings.piggyback_bytes, f"piggyback of {size} bytes"
            assert len(message.updates) <= self.settings.piggyback_count
            self.stats.max_piggyback_bytes = max(self.stats.max_piggyback_bytes, size)

    def _send(self, source: str, life: int, to: str, message: Message) -> None:
        sender = self.nodes[source]
        if not sender.up or sender.life != life:
            return
        self._note_incarnation(sender.swim)
        self._check(message)
        self.stats.sent += 1
        self.stats.by_kind[message.kind] = self.stats.by_kind.get(message.kind, 0) + 1
        if self.groups and self.groups.get(source, 0) != self.groups.get(to, 0):
            self.stats.cut += 1
            return
        loss = 1 - (1 - self.loss) * (1 - self.node_loss.get(source, 0.0)) * (1 - self.node_loss.get(to, 0.0))
        if loss and self.rng.random() < loss:
            self.stats.lost += 1
            return
        delay = self.rng.uniform(*self.delay) + self.node_delay.get(source, 0.0) + self.node_delay.get(to, 0.0)
        target = self.nodes.get(to)
        self._push(self.time + delay, "msg", to, target.life if target else -1, message)

    def _after(self, address: str) -> None:
        node = self.nodes[address]
        deadline = max(node.swim.next_deadline(), self.time)
        if math.isinf(deadline):
            return
        pending = self._scheduled.get(address)
        if pending is None or deadline < pending:
            self._scheduled[address] = deadline
            self._push(deadline, "tick", address, node.life, None)

    def _push(self, at: float, kind: str, address: str, life: int, message: Message | None) -> None:
        self._order += 1
        heapq.heappush(self._events, (at, self._order, kind, address, life, message))
