"""Clients for the other nodes of the pool: one grpclib channel per peer, every call signed and bounded in time.

``PeerPool.stub(node_id)`` gives the generated async stub for a peer (its channel opened on first use and kept);
every request it sends carries the auth headers (cluster/auth.py ``Signer``) and, unless the caller gives one, the
pool's default timeout. ``close()`` closes every channel; the pool is an async context manager for that.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from grpclib.client import Channel
from grpclib.events import SendRequest, listen
from grpclib.protocol import H2Protocol
from multidict import MultiDict

from . import proto_tuning  # noqa: F401 - betterproto2's field defaults without a warnings context
from .auth import Signer
from .config import ClusterConfig, PoolNode
from .h2_tuning import BulkChannel
from .wire.s4cluster.v1 import PingReply, PingRequest, S4ClusterStub

DEFAULT_TIMEOUT_S = 5.0


def source_address(own_host: str, peer_host: str) -> str | None:
    """The address this node's calls to a peer leave from: its own pool address, so the peer, its logs and any
    firewall between them see the node by the address the pool knows it by (on loopback the kernel would pick
    127.0.0.1 for every node; on a multi-homed host, whichever interface routes first). None (the kernel chooses)
    unless both are IP literals of one family and scope: a hostname, a wildcard, or a loopback address calling a
    routable one cannot be bound sensibly."""
    try:
        own, peer = ipaddress.ip_address(own_host), ipaddress.ip_address(peer_host)
    except ValueError:
        return None
    if own.version != peer.version or own.is_unspecified or own.is_loopback != peer.is_loopback:
        return None
    return own_host


class BoundChannel(Channel):
    """A grpclib channel whose connections leave from a given local address (``source_address``)."""

    def __init__(self, host: str, port: int, *, local_host: str | None) -> None:
        super().__init__(host, port)
        self.local_host = local_host

    async def _create_connection(self) -> H2Protocol:
        if self.local_host is None:
            return await super()._create_connection()
        _, protocol = await self._loop.create_connection(self._protocol_factory, self._host, self._port,
                                                   local_addr=(self.local_host, 0))
        return protocol


class BoundBulkChannel(BoundChannel, BulkChannel):
    """The bulk connection (1 MiB frames: cluster/h2_tuning.py), also leaving from this node's own address."""


class PeerMismatch(Exception):
    """The address of a pool entry answered as another node or cluster (a wrong S4_POOL_NODES entry)."""


class PeerPool:
    def __init__(self, config: ClusterConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.time, nodes: tuple[PoolNode, ...] | None = None) -> None:
        """``nodes``: whom to call (default: this node's pool); another pool's nodes for the bucket registry's
        proposer of a node outside the registry pool (docs/architecture/pools.md)."""
        self.config = config
        self.timeout_s = timeout_s
        self.signer = Signer(cluster=config.cluster_name, node_id=config.node_id, key=config.key, clock=clock)
        self._peers = {n.node_id: n for n in (config.peers if nodes is None else nodes) if n.node_id != config.node_id}
        me = config.member(config.node_id)
        self._own_host = me.grpc.host if me is not None else None
        self._channels: dict[str, Channel] = {}
        self._stubs: dict[str, S4ClusterStub] = {}
        self._closed = False

    @property
    def peers(self) -> tuple[PoolNode, ...]:
        return tuple(self._peers.values())

    def stub(self, node_id: str) -> S4ClusterStub:
        """The stub for one peer; its channel connects lazily (grpclib) and is reused for every call."""
        return self._stub(node_id, node_id)

    def bulk_stub(self, node_id: str) -> S4ClusterStub:
        """A stub on a second connection to the peer, for blob transfers: HTTP/2 multiplexes one TCP connection,
        so megabytes of blob data queued on it would hold the small calls (Ping, ReadKeys, ApplyEvents) behind
        them; on their own connection those keep their latency while a large object streams."""
        return self._stub(node_id, f"{node_id}#bulk")

    def _stub(self, node_id: str, slot: str) -> S4ClusterStub:
        if self._closed:
            raise RuntimeError("PeerPool is closed")
        stub = self._stubs.get(slot)
        if stub is None:
            peer = self._peers.get(node_id)
            if peer is None:
                raise KeyError(f"{node_id!r} is not a peer in pool {self.config.pool_name}")
            local = source_address(self._own_host, peer.grpc.host) if self._own_host else None
            # blob data arrives in frames of up to 1 MiB on the bulk connection (cluster/h2_tuning.py)
            kind = BoundBulkChannel if slot != node_id else BoundChannel
            channel = kind(peer.grpc.host, peer.grpc.port, local_host=local)
            listen(channel, SendRequest, self._sign)
            self._channels[slot] = channel
            stub = self._stubs[slot] = S4ClusterStub(channel, timeout=self.timeout_s)
        return stub

    async def _sign(self, event: SendRequest) -> None:
        existing = event.metadata.items() if hasattr(event.metadata, "items") else (event.metadata or ())
        event.metadata = cast(Any, MultiDict([*existing, *self.signer.headers(event.method_name)]))

    async def ping(self, node_id: str, hlc: int, journal_seq: int, *, timeout_s: float | None = None,
                   lease_applied: int | None = None, settled_hlc: int = 0, applied_your_journal: int = 0,
                   data_life: int = 0, release_lease: bool = False, draining: bool = False,
                   hints_pending: int = 0) -> PingReply:
        """Ping a peer with this node's clock and journal head (and a read-lease request); checks that the right
        node answered."""
        request = PingRequest(node_id=self.config.node_id, cluster=self.config.cluster_name,
                              pool=self.config.pool_name, hlc=hlc, journal_seq=journal_seq,
                              http_addr=self.config.http_addr, lease_applied=lease_applied or 0,
                              want_lease=lease_applied is not None, settled_hlc=settled_hlc,
                              applied_your_journal=applied_your_journal, data_life=data_life,
                              release_lease=release_lease, draining=draining, hints_pending=hints_pending)
        reply = await self.stub(node_id).ping(request, timeout=timeout_s or self.timeout_s)
        if reply.node_id != node_id or reply.cluster != self.config.cluster_name:
            raise PeerMismatch(f"{self._peers[node_id].grpc} answered as node {reply.node_id!r} of cluster "
                               f"{reply.cluster!r}, expected {node_id!r} of {self.config.cluster_name!r} "
                               "(check S4_POOL_NODES)")
        return reply

    def forget(self, node_id: str) -> None:
        """Close and drop one peer's channel (the next ``stub`` opens a fresh one), e.g. after it restarted."""
        for slot in (node_id, f"{node_id}#bulk"):
            channel = self._channels.pop(slot, None)
            self._stubs.pop(slot, None)
            if channel is not None:
                channel.close()

    def close(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    async def __aenter__(self) -> PeerPool:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
