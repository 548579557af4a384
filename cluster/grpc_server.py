"""This node's gRPC server for the other nodes of its pool (grpclib on asyncio, at S4_NODE_GRPC_ADDR).

Every method goes through the authentication wrapper first (cluster/auth.py): a refused call gets
``UNAUTHENTICATED`` with the reason, is logged (at most once a minute per caller and reason), and never reaches a
handler. ``Ping`` is answered here from the node's ``LocalStatus``. The replication RPCs are delegated to a
``ReplicationHandler`` (the replication code implements it); without one they answer ``UNIMPLEMENTED``, never
made-up data.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from .auth import AuthError, Verifier
from .config import ClusterConfig
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    BlobHeader,
    CasAcceptReply,
    CasAcceptRequest,
    CasPrepareReply,
    CasPrepareRequest,
    CatchUpBatch,
    CatchUpRequest,
    GetBlobChunk,
    GetBlobRequest,
    ListRangeReply,
    ListRangeRequest,
    PingReply,
    PingRequest,
    PutBlobChunk,
    PutBlobReply,
    ReadKeysReply,
    ReadKeysRequest,
    S4ClusterBase,
)

log = logging.getLogger("s4.cluster")

#: The authenticated caller's node id, set for the duration of one call.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("s4_cluster_caller")
_LOG_EVERY_S = 60.0


class LocalStatus(Protocol):
    """What Ping tells and learns: this node's clock and journal head, and a peer's."""

    def status(self) -> tuple[int, int]:
        """(HLC now, highest journal seq)."""
        ...

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int) -> None:
        """A peer proved alive, with its HLC and journal head."""
        ...


class ReplicationHandler(Protocol):
    """The replication RPCs, each given the authenticated caller's node id."""

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply: ...

    async def put_blob(self, caller: str, header: BlobHeader, data: AsyncIterator[bytes]) -> PutBlobReply:
        """Store one blob; must check ``header.content_hash`` and ``header.size`` before it counts as stored."""
        ...

    def get_blob(self, caller: str, request: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        """A BlobHeader chunk, then data chunks."""
        ...

    async def read_keys(self, caller: str, request: ReadKeysRequest) -> ReadKeysReply: ...

    async def list_range(self, caller: str, request: ListRangeRequest) -> ListRangeReply: ...

    def catch_up(self, caller: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]: ...

    async def cas_prepare(self, caller: str, request: CasPrepareRequest) -> CasPrepareReply: ...

    async def cas_accept(self, caller: str, request: CasAcceptRequest) -> CasAcceptReply: ...


class ClusterService(S4ClusterBase):
    """The S4Cluster service: Ping here, the rest delegated."""

    def __init__(self, config: ClusterConfig, local: LocalStatus, handler: ReplicationHandler | None = None) -> None:
        self.config, self.local, self.handler = config, local, handler

    def _handler(self) -> ReplicationHandler:
        if self.handler is None:
            raise GRPCError(Status.UNIMPLEMENTED, f"node {self.config.node_id} does not serve replication yet")
        return self.handler

    async def ping(self, message: PingRequest) -> PingReply:
        caller = CALLER.get()
        if message.node_id != caller:
            raise GRPCError(Status.INVALID_ARGUMENT, f"Ping names node {message.node_id!r}, the caller is {caller!r}")
        self.local.peer_seen(caller, message.hlc, message.journal_seq)
        hlc, seq = self.local.status()
        return PingReply(node_id=self.config.node_id, cluster=self.config.cluster_name, pool=self.config.pool_name,
                         hlc=hlc, journal_seq=seq)

    async def apply_events(self, message: ApplyEventsRequest) -> ApplyEventsReply:
        return await self._handler().apply_events(CALLER.get(), message)

    async def put_blob(self, messages: AsyncIterator[PutBlobChunk]) -> PutBlobReply:
        handler = self._handler()
        first = await anext(messages, None)
        if first is None or first.header is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "PutBlob: the first message must be the BlobHeader")
        return await handler.put_blob(CALLER.get(), first.header, _data_chunks(messages))

    async def get_blob(self, message: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        async for chunk in self._handler().get_blob(CALLER.get(), message):
            yield chunk

    async def read_keys(self, message: ReadKeysRequest) -> ReadKeysReply:
        return await self._handler().read_keys(CALLER.get(), message)

    async def list_range(self, message: ListRangeRequest) -> ListRangeReply:
        return await self._handler().list_range(CALLER.get(), message)

    async def catch_up(self, message: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        async for batch in self._handler().catch_up(CALLER.get(), message):
            yield batch

    async def cas_prepare(self, message: CasPrepareRequest) -> CasPrepareReply:
        return await self._handler().cas_prepare(CALLER.get(), message)

    async def cas_accept(self, message: CasAcceptRequest) -> CasAcceptReply:
        return await self._handler().cas_accept(CALLER.get(), message)


async def _data_chunks(messages: AsyncIterator[PutBlobChunk]) -> AsyncIterator[bytes]:
    async for message in messages:
        if message.data is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "PutBlob: only the first message may be a BlobHeader")
        yield message.data


class Authenticated:
    """Wraps a service's handlers so that every call is verified before it runs (grpclib's ``__mapping__``)."""

    def __init__(self, service: Any, verifier: Verifier) -> None:
        self.service, self.verifier = service, verifier
        self._logged: dict[tuple[str, str], float] = {}

    def __mapping__(self) -> dict[str, Handler]:
        return {name: Handler(self._wrap(name, h.func), h.cardinality, h.request_type, h.reply_type)
                for name, h in self.service.__mapping__().items()}

    def _wrap(self, method: str, func: Callable[[Stream[Any, Any]], Awaitable[None]]
              ) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        async def call(stream: Stream[Any, Any]) -> None:
            try:
                caller = self.verifier.verify(stream.metadata or {}, method)
            except AuthError as exc:
                self._log_refusal(stream, method, str(exc))
                raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None
            token = CALLER.set(caller)
            try:
                await func(stream)
            finally:
                CALLER.reset(token)
        return call

    def _log_refusal(self, stream: Stream[Any, Any], method: str, why: str) -> None:
        peer = stream.peer.addr() if stream.peer is not None else None
        now = time.monotonic()
        key = (str(peer[0]) if peer else "?", why)
        if now - self._logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[key] = now
            if len(self._logged) > 1024:  # bounded: forget the oldest callers
                self._logged.pop(next(iter(self._logged)))
            log.warning("refused inter-node call %s from %s: %s", method, peer, why)


class ClusterServer:
    """The gRPC server's lifetime: ``await start()`` binds S4_NODE_GRPC_ADDR, ``await stop()`` closes it."""

    def __init__(self, config: ClusterConfig, local: LocalStatus, handler: ReplicationHandler | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        verifier = Verifier(cluster=config.cluster_name, key=config.key, members=[n.node_id for n in config.pool],
                            max_clock_offset_s=config.max_clock_offset_s, clock=clock)
        self.service = ClusterService(config, local, handler)
        self._server = Server([Authenticated(self.service, verifier)])
        self._started = False

    async def start(self) -> None:
        addr = self.config.grpc_addr
        await self._server.start(addr.host, addr.port)
        self._started = True
        log.info("cluster %s node %s: gRPC on %s", self.config.cluster_name, self.config.node_id, addr)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self._server.close()
            await self._server.wait_closed()
