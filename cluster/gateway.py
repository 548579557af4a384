"""A gateway's view of the pool it fronts (S4_MODE=gateway): which nodes answer, at which S3 address.

A gateway is no pool member (docs/architecture/gateway.md): it runs no SWIM and no gRPC server. It pings every node
of S4_POOL_NODES every ``interval_s`` with the nodes' own ``Ping`` RPC, signed with the cluster key (the nodes admit
a key holder outside their pool for Ping only, and record nothing of it: cluster/auth.py guest methods). A reply
proves the node alive and tells its S3 address (S4_NODE_HTTP_ADDR), which is where requests are forwarded.

The states are the part 1 heartbeat's function of the silence (cluster/liveness.py without ``follow_membership``):
alive if a Ping was answered within 3 s, suspect after that, dead after 10 s. Liveness only steers which node is
tried first; a request forwarded to a node that has died fails over only when it was certainly not sent
(api/gateway.py), so no correctness depends on these states.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from grpclib.client import Channel
from grpclib.events import SendRequest, listen
from multidict import MultiDict

from .auth import Signer
from .config import GatewayConfig, PoolNode, PoolSpec
from .liveness import ALIVE, SUSPECT, Liveness, LivenessSettings
from .peers import BoundChannel, source_address
from .wire.s4cluster.v1 import PingRequest, S4ClusterStub

log = logging.getLogger("s4.gateway")

#: The order in which nodes are tried: alive first, then alive but draining (it still serves, but its operator is
#: taking it out: cluster/drain.py), then suspect (it may still serve); dead nodes never.
DRAINING = "draining"
TRY_ORDER = {ALIVE: 0, DRAINING: 1, SUSPECT: 2}


def forwarding_order(states: list[tuple[str, str, str]], turn: int) -> list[tuple[str, str]]:
    """``(node id, S3 address)`` to try, from ``(node id, state, S3 address)`` in pool order: nodes with an address
    and not dead, alive before draining before suspect, each group rotated by ``turn`` (round robin over requests). A
    node never heard from has no address yet and cannot be tried."""
    order: list[tuple[str, str]] = []
    for state in TRY_ORDER:
        group = [(node, addr) for node, s, addr in states if s == state and addr]
        if group:
            k = turn % len(group)
            order.extend(group[k:] + group[:k])
    return order


class PoolWatch:
    """Pings the pool's nodes and answers which to forward to; ``start``/``stop`` on the gateway's event loop."""

    def __init__(self, config: GatewayConfig, own_host: str | None, settings: LivenessSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 pool: PoolSpec | None = None) -> None:
        """``pool``: the pool to watch (default: the first of ``config.pools``)."""
        self.config = config
        self.pool = pool or config.pools[0]
        self.settings = settings or LivenessSettings()
        self.liveness = Liveness([n.node_id for n in self.pool.nodes], self.settings, clock=clock, wall=wall)
        self.signer = Signer(cluster=config.cluster_name, node_id=config.gateway_id, key=config.key, clock=wall)
        self._own_host = own_host
        self._wall = wall
        self._stubs: dict[str, S4ClusterStub] = {}
        self._channels: list[Channel] = []
        self._turns = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.draining: set[str] = set()  # nodes whose last Ping answer said they drain

    # -- forwarding ----------------------------------------------------------------------------------------------
    def candidates(self) -> list[tuple[str, str]]:
        """The nodes to try for one request, in order (api/gateway.py ``Backends``)."""
        states = [(record.node_id, DRAINING if state == ALIVE and record.node_id in self.draining else state,
                   record.http_addr) for record, state in self.liveness.snapshot()]
        return forwarding_order(states, next(self._turns))

    def health_document(self) -> dict[str, Any]:
        """The gateway's part of GET /api/admin/cluster/health: its pool as its Pings see it."""
        nodes = []
        grpc = {n.node_id: n.grpc for n in self.pool.nodes}
        for record, state in self.liveness.snapshot():
            nodes.append({"id": record.node_id, "pool": self.pool.name, "http_addr": record.http_addr or None,
                          "grpc_addr": str(grpc[record.node_id]), "state": state, "last_seen": record.last_seen_ms,
                          "last_error": record.last_error or None, "draining": record.node_id in self.draining})
        return {"cluster": self.config.cluster_name, "node_id": self.config.gateway_id, "mode": "gateway",
                "nodes": nodes, "pools": [{"name": self.pool.name, "nodes": [n.node_id for n in self.pool.nodes]}],
                "liveness": {"protocol": "ping", "interval_s": self.settings.interval_s, "rounds": self.rounds}}

    def node_states(self) -> list[tuple[str, str]]:
        """(node id, state) in pool order, for the metrics."""
        return [(record.node_id, state) for record, state in self.liveness.snapshot()]

    # -- pinging -------------------------------------------------------------------------------------------------
    def _stub(self, node: PoolNode) -> S4ClusterStub:
        stub = self._stubs.get(node.node_id)
        if stub is None:
            local = source_address(self._own_host, node.grpc.host) if self._own_host else None
            channel = BoundChannel(node.grpc.host, node.grpc.port, local_host=local)
            listen(channel, SendRequest, self._sign)
            self._channels.append(channel)
            stub = self._stubs[node.node_id] = S4ClusterStub(channel, timeout=self.settings.ping_timeout_s)
        return stub

    async def _sign(self, event: SendRequest) -> None:
        existing = event.metadata.items() if hasattr(event.metadata, "items") else (event.metadata or ())
        event.metadata = MultiDict([*existing, *self.signer.headers(event.method_name)])  # type: ignore[assignment]

    async def ping(self, node: PoolNode) -> None:
        """One Ping; its answer (or why it failed) goes into the liveness records."""
        request = PingRequest(node_id=self.config.gateway_id, cluster=self.config.cluster_name, pool=self.pool.name)
        try:
            reply = await asyncio.wait_for(self._stub(node).ping(request), self.settings.ping_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure is a missed Ping; the state follows from the silence
            self.liveness.missed(node.node_id, f"{type(exc).__name__}: {exc}"[:200])
            return
        if reply.node_id != node.node_id or reply.cluster != self.config.cluster_name:
            self.liveness.missed(node.node_id, f"{node.grpc} answered as node {reply.node_id!r} of cluster "
                                               f"{reply.cluster!r} (check S4_POOL_NODES)")
            return
        self.liveness.seen(node.node_id, reply.hlc, reply.journal_seq, reply.http_addr)
        if reply.draining:
            self.draining.add(node.node_id)
        else:
            self.draining.discard(node.node_id)

    async def ping_all(self) -> None:
        await asyncio.gather(*(self.ping(node) for node in self.pool.nodes))
        self.rounds += 1

    async def _run(self) -> None:
        states: dict[str, str] = {}
        while True:
            started = asyncio.get_running_loop().time()
            await self.ping_all()
            for node_id, state in self.node_states():
                if states.get(node_id) != state:
                    log.log(logging.INFO if state == ALIVE else logging.WARNING, "gateway: node %s of pool %s is %s",
                            node_id, self.pool.name, state)
                    states[node_id] = state
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self.settings.interval_s - elapsed))

    async def start(self) -> None:
        """One round at once (so requests can be forwarded as soon as the nodes answer), then one per interval."""
        await self.ping_all()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="s4-gateway-pings")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._stubs.clear()


class PoolSet:
    """Several pools' watches (S4_CLUSTER_POOLS): the gateway's Backends over every pool, and a node's over the
    other pools (docs/architecture/pools.md). ``of(pool)`` is one pool's watch; ``candidates`` (a request that names
    no bucket, or one whose pool is not known yet) tries every pool's nodes, pool by pool in turn."""

    def __init__(self, watches: list[PoolWatch]) -> None:
        self.watches = {w.pool.name: w for w in watches}
        self._turns = itertools.count()
        self._starting: asyncio.Future[Any] | None = None

    @classmethod
    def for_pools(cls, config: GatewayConfig, own_host: str | None, pools: tuple[PoolSpec, ...],
                  settings: LivenessSettings | None = None) -> PoolSet:
        return cls([PoolWatch(config, own_host, settings, pool=pool) for pool in pools])

    def of(self, pool: str) -> PoolWatch | None:
        return self.watches.get(pool)

    def candidates(self) -> list[tuple[str, str]]:
        watches = list(self.watches.values())
        k = next(self._turns) % len(watches)
        return [c for w in watches[k:] + watches[:k] for c in w.candidates()]

    def health_document(self) -> dict[str, Any]:
        documents = [w.health_document() for w in self.watches.values()]
        first = documents[0]
        return {**first, "nodes": [n for d in documents for n in d["nodes"]],
                "pools": [p for d in documents for p in d["pools"]],
                "liveness": {**first["liveness"], "rounds": min(d["liveness"]["rounds"] for d in documents)}}

    def node_states(self) -> list[tuple[str, str]]:
        return [state for w in self.watches.values() for state in w.node_states()]

    async def start(self) -> None:
        """Start every watch (one round of Pings first); callers arriving meanwhile wait for that same round."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(asyncio.gather(*(w.start() for w in self.watches.values())))
        await asyncio.shield(self._starting)

    async def stop(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting
            for watch in self.watches.values():
                await watch.stop()
