"""This node's gRPC server for the other nodes of its pool (grpclib on asyncio, at S4_NODE_GRPC_ADDR).

Every method goes through the authentication wrapper first (cluster/auth.py): a refused call gets
``UNAUTHENTICATED`` with the reason, is logged (at most once a minute per caller and reason), and never reaches a
handler. ``Ping`` is answered here from the node's ``LocalStatus``. The replication RPCs and SWIM are delegated by
area (``Handlers``: events, blobs, reads, cas, leases, swim; each a small Protocol the code behind it implements);
an area without an implementation answers ``UNIMPLEMENTED``, never made-up data.
"""

from __future__ import annotations

import contextvars
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Handler as GrpcHandler
from grpclib.server import Server, Stream

from . import (
    h2_tuning,  # also installs hyperframe's O(1) frame repr in the serving process
    proto_tuning,  # noqa: F401 - installs betterproto2's field defaults without a warnings context
)
from .auth import AuthError, Verifier
from .buckets_register import KEY_PREFIXES
from .config import ClusterConfig
from .errors import GrpcBindError
from .event_stream import APPLY_EVENTS_STREAM, serve_messages, serve_stream
from .pre_encoded import BlobCodec
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    ApplyEventsStreamReply,
    ApplyEventsStreamRequest,
    BlobHeader,
    CasAcceptReply,
    CasAcceptRequest,
    CasListReply,
    CasListRequest,
    CasPrepareReply,
    CasPrepareRequest,
    CatchUpBatch,
    CatchUpFromReply,
    CatchUpFromRequest,
    CatchUpRequest,
    DrainReply,
    DrainRequest,
    GetBlobChunk,
    GetBlobRequest,
    GetEventsReply,
    GetEventsRequest,
    ListRangeReply,
    ListRangeRequest,
    MerkleTreeReply,
    MerkleTreeRequest,
    PingReply,
    PingRequest,
    PutBlobChunk,
    PutBlobReply,
    ReadKeysReply,
    ReadKeysRequest,
    S4ClusterBase,
    SwimAck,
    SwimMessage,
)

log = logging.getLogger("s4.cluster")

#: The authenticated caller's node id, set for the duration of one call.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("s4_cluster_caller")
_LOG_EVERY_S = 60.0
#: What a caller outside the pool may call (cluster/auth.py guest methods): a gateway's Ping, read-only.
PING_METHOD = "/s4cluster.v1.S4Cluster/Ping"
#: What nodes of the cluster's other pools may call on the registry pool's nodes (docs/architecture/pools.md).
REGISTRY_METHODS = ("/s4cluster.v1.S4Cluster/CasPrepare", "/s4cluster.v1.S4Cluster/CasAccept",
                    "/s4cluster.v1.S4Cluster/CasList", "/s4cluster.v1.S4Cluster/IamFeed")


class LocalStatus(Protocol):
    """What Ping tells and learns: this node's clock and journal head, and a peer's."""

    def status(self) -> tuple[int, int]:
        """(HLC now, highest journal seq)."""
        ...

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        """A peer proved alive, with its HLC, journal head and the S3 address it serves ("" if it sent none)."""
        ...


# The replication RPCs by area, each a small port of its own so that the code behind each area (events, blobs, quorum
# reads, the CASPaxos acceptor) is written and plugged in independently. Every method is given the authenticated
# caller's node id; an area without an implementation answers UNIMPLEMENTED.


class EventsHandler(Protocol):
    """Journal events: apply a batch from a peer, and stream this node's journal to a peer catching up."""

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply: ...

    def catch_up(self, caller: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]: ...

    async def catch_up_from(self, caller: str, request: CatchUpFromRequest) -> CatchUpFromReply: ...

    def iam_feed(self, caller: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]: ...


class BlobsHandler(Protocol):
    """Blob transfer between replicas."""

    async def put_blob(self, caller: str, header: BlobHeader, data: AsyncIterator[bytes]) -> PutBlobReply:
        """Store one blob; must check ``header.content_hash`` and ``header.size`` before it counts as stored."""
        ...

    def get_blob(self, caller: str, request: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        """A BlobHeader chunk, then data chunks."""
        ...


class ReadsHandler(Protocol):
    """Quorum reads: current records of keys, and one replica's page of a listing."""

    async def read_keys(self, caller: str, request: ReadKeysRequest) -> ReadKeysReply: ...

    async def list_range(self, caller: str, request: ListRangeRequest) -> ListRangeReply: ...


class CasHandler(Protocol):
    """The CASPaxos acceptor."""

    async def cas_prepare(self, caller: str, request: CasPrepareRequest) -> CasPrepareReply: ...

    async def cas_accept(self, caller: str, request: CasAcceptRequest) -> CasAcceptReply: ...

    async def cas_list(self, caller: str, request: CasListRequest) -> CasListReply: ...


class LeaseHandler(Protocol):
    """Read leases (cluster/read_leases.py), asked for and granted on Ping."""

    def on_ping(self, caller: str, request: PingRequest) -> tuple[int, int, int]:
        """(lease granted in ms or 0, the seq the caller must have applied for one, this node's settled HLC)."""
        ...


class AntiEntropyHandler(Protocol):
    """Merkle anti-entropy (cluster/anti_entropy.py): this node's Merkle view, and its events by identity."""

    async def merkle_tree(self, caller: str, request: MerkleTreeRequest) -> MerkleTreeReply: ...

    async def get_events(self, caller: str, request: GetEventsRequest) -> GetEventsReply: ...
class TombstoneHandler(Protocol):
    """Tombstone GC and the rejoin rule (cluster/tombstone_gc.py), told and answered on Ping."""

    def on_ping(self, caller: str, request: PingRequest) -> tuple[bool, int]:
        """(whether the caller's data life must not rejoin, this node's data life)."""
        ...


class SwimHandler(Protocol):
    """SWIM membership (cluster/swim_node.py): one message from the authenticated caller, handled at once."""

    def receive(self, caller: str, message: SwimMessage) -> None: ...


class DrainHandler(Protocol):
    """Operations (cluster/drain.py): the Drain RPC, and the draining state and hints told both ways in Ping."""

    async def rpc_drain(self, caller: str, request: DrainRequest) -> DrainReply: ...

    def on_ping(self, caller: str, request: PingRequest) -> tuple[bool, int]: ...


@dataclass(frozen=True)
class Handlers:
    """The areas this node serves; None: that area's RPCs answer UNIMPLEMENTED (Ping grants no lease)."""

    events: EventsHandler | None = None
    blobs: BlobsHandler | None = None
    reads: ReadsHandler | None = None
    cas: CasHandler | None = None
    leases: LeaseHandler | None = None
    swim: SwimHandler | None = None
    anti_entropy: AntiEntropyHandler | None = None
    tombstones: TombstoneHandler | None = None
    drain: DrainHandler | None = None


_T = TypeVar("_T")


class ClusterService(S4ClusterBase):
    """The S4Cluster service: Ping here, the rest delegated to the area's handler."""

    def __init__(self, config: ClusterConfig, local: LocalStatus, handlers: Handlers | None = None) -> None:
        self.config, self.local, self.handlers = config, local, handlers or Handlers()

    def _area(self, handler: _T | None, area: str) -> _T:
        if handler is None:
            raise GRPCError(Status.UNIMPLEMENTED, f"node {self.config.node_id} does not serve replication ({area}) "
                                                  "yet")
        return handler

    async def ping(self, message: PingRequest) -> PingReply:
        caller = CALLER.get()
        if message.node_id != caller:
            raise GRPCError(Status.INVALID_ARGUMENT, f"Ping names node {message.node_id!r}, the caller is {caller!r}")
        if self.config.member(caller) is None:  # a gateway (a guest): told this node's status, nothing recorded
            hlc, seq = self.local.status()
            return PingReply(node_id=self.config.node_id, cluster=self.config.cluster_name,
                             pool=self.config.pool_name, hlc=hlc, journal_seq=seq, http_addr=self.config.http_addr)
        self.local.peer_seen(caller, message.hlc, message.journal_seq, message.http_addr)
        lease_ms = need_seq = settled = 0
        if self.handlers.leases is not None:
            lease_ms, need_seq, settled = self.handlers.leases.on_ping(caller, message)
        refused, life = False, 0
        if self.handlers.tombstones is not None:
            refused, life = self.handlers.tombstones.on_ping(caller, message)
        draining, hints = self.handlers.drain.on_ping(caller, message) if self.handlers.drain else (False, 0)
        hlc, seq = self.local.status()
        return PingReply(node_id=self.config.node_id, cluster=self.config.cluster_name, pool=self.config.pool_name,
                         hlc=hlc, journal_seq=seq, http_addr=self.config.http_addr, lease_ms=lease_ms,
                         lease_need_seq=need_seq, settled_hlc=settled, rejoin_refused=refused, data_life=life,
                         draining=draining, hints_pending=hints)

    async def drain(self, message: DrainRequest) -> DrainReply:
        return await self._area(self.handlers.drain, "drain").rpc_drain(CALLER.get(), message)

    async def apply_events(self, message: ApplyEventsRequest) -> ApplyEventsReply:
        return await self._area(self.handlers.events, "events").apply_events(CALLER.get(), message)

    async def apply_events_stream(self, messages: AsyncIterator[ApplyEventsStreamRequest]
                                  ) -> AsyncIterator[ApplyEventsStreamReply]:
        async for reply in serve_stream(CALLER.get(), self._area(self.handlers.events, "events"), messages):
            yield reply

    def __mapping__(self) -> dict[str, Handler]:
        """betterproto2's handlers, but ApplyEventsStream's: served on grpclib's stream itself (``serve_messages``),
        each reply written by the task that handled its request; betterproto2's would pass it through a queue, an
        async generator and a second task first (a loop iteration and ~4 frames per message)."""
        mapping: dict[str, Handler] = super().__mapping__()
        base = mapping[APPLY_EVENTS_STREAM]
        mapping[APPLY_EVENTS_STREAM] = Handler(self._apply_events_stream, base.cardinality, base.request_type,
                                               base.reply_type)
        return mapping

    async def _apply_events_stream(self, stream: Stream[ApplyEventsStreamRequest, ApplyEventsStreamReply]) -> None:
        await serve_messages(CALLER.get(), self._area(self.handlers.events, "events"), stream, stream.send_message)

    async def catch_up(self, message: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        async for batch in self._area(self.handlers.events, "events").catch_up(CALLER.get(), message):
            yield batch

    async def catch_up_from(self, message: CatchUpFromRequest) -> CatchUpFromReply:
        return await self._area(self.handlers.events, "events").catch_up_from(CALLER.get(), message)

    async def iam_feed(self, message: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        async for batch in self._area(self.handlers.events, "events").iam_feed(CALLER.get(), message):
            yield batch

    async def put_blob(self, messages: AsyncIterator[PutBlobChunk]) -> PutBlobReply:
        handler = self._area(self.handlers.blobs, "blobs")
        first = await anext(messages, None)
        if first is None or first.header is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "PutBlob: the first message must be the BlobHeader")
        return await handler.put_blob(CALLER.get(), first.header, _data_chunks(messages))

    async def get_blob(self, message: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        async for chunk in self._area(self.handlers.blobs, "blobs").get_blob(CALLER.get(), message):
            yield chunk

    async def read_keys(self, message: ReadKeysRequest) -> ReadKeysReply:
        return await self._area(self.handlers.reads, "reads").read_keys(CALLER.get(), message)

    async def list_range(self, message: ListRangeRequest) -> ListRangeReply:
        return await self._area(self.handlers.reads, "reads").list_range(CALLER.get(), message)

    async def cas_prepare(self, message: CasPrepareRequest) -> CasPrepareReply:
        return await self._area(self.handlers.cas, "cas").cas_prepare(self._cas_caller(message.key), message)

    async def cas_accept(self, message: CasAcceptRequest) -> CasAcceptReply:
        return await self._area(self.handlers.cas, "cas").cas_accept(self._cas_caller(message.key), message)

    async def cas_list(self, message: CasListRequest) -> CasListReply:
        handler = self._area(self.handlers.cas, "cas")
        caller = self._cas_caller(message.prefix)
        if message.fence is not None and self.config.member(caller) is None:
            raise GRPCError(Status.PERMISSION_DENIED, f"node {caller!r} of another pool may not fence this acceptor")
        return await handler.cas_list(caller, message)

    def _cas_caller(self, key: str) -> str:
        """A node of another pool (admitted by the verifier only here, on the registry pool) touches names only,
        never this pool's own registers (its job leases)."""
        caller = CALLER.get()
        if self.config.member(caller) is None and not key.startswith(tuple(KEY_PREFIXES.values())):
            raise GRPCError(Status.PERMISSION_DENIED, f"node {caller!r} of another pool may only propose names")
        return caller

    async def swim(self, message: SwimMessage) -> SwimAck:
        caller = CALLER.get()
        if message.sender_id != caller:  # only a member speaks for itself (its implicit alive, its incarnation)
            raise GRPCError(Status.INVALID_ARGUMENT, f"Swim names sender {message.sender_id!r}, the caller is "
                                                     f"{caller!r}")
        self._area(self.handlers.swim, "swim").receive(caller, message)
        return SwimAck()

    async def merkle_tree(self, message: MerkleTreeRequest) -> MerkleTreeReply:
        return await self._area(self.handlers.anti_entropy, "anti-entropy").merkle_tree(CALLER.get(), message)

    async def get_events(self, message: GetEventsRequest) -> GetEventsReply:
        return await self._area(self.handlers.anti_entropy, "anti-entropy").get_events(CALLER.get(), message)


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


class _ClosingServer(Server):
    """grpclib's Server, remembering the connections it accepted so that ``close`` ends them too.

    grpclib's ``close`` stops the listener and cancels running calls, but a connection already open keeps being
    served: a peer's channel would go on getting answers from a node that has stopped. The protocols come from
    ``_protocol_factory`` (grpclib 0.4's one place that makes them; tests/unit/cluster/test_catch_up_server.py fails
    if that changes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        # grpclib's Server._protocol_factory, with a protocol taking 1 MiB DATA frames (cluster/h2_tuning.py)
        self.__gc_step__()
        handler = GrpcHandler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        protocol = h2_tuning.large_frames_protocol(handler, self._config, self._h2_config)
        self._protocols.add(protocol)
        return protocol

    def close(self) -> None:
        super().close()
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)  # absent until the connection was made
            if processor is not None:
                processor.close("the server is stopping")  # closes the transport and ends its streams


class ClusterServer:
    """The gRPC server's lifetime: ``await start()`` binds S4_NODE_GRPC_ADDR, ``await stop()`` closes it."""

    def __init__(self, config: ClusterConfig, local: LocalStatus, handlers: Handlers | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        registry = config.registry_pool.name == config.pool_name  # other pools propose bucket names here
        others = [n.node_id for p in config.other_pools for n in p.nodes] if registry else []
        verifier = Verifier(cluster=config.cluster_name, key=config.key, members=[n.node_id for n in config.pool],
                            max_clock_offset_s=config.max_clock_offset_s, clock=clock, guest_methods=(PING_METHOD,),
                            cluster_nodes=others, cluster_methods=REGISTRY_METHODS if others else ())
        self.service = ClusterService(config, local, handlers)
        self._authenticated = Authenticated(self.service, verifier)
        self._server: Server | None = None  # made in start(): grpclib's Server takes the running loop

    async def start(self) -> None:
        """Listen on S4_NODE_GRPC_ADDR; GrpcBindError (naming the setting) when the address cannot be bound."""
        addr = self.config.grpc_addr
        server = _ClosingServer([self._authenticated], codec=BlobCodec())  # blob pieces parsed with one copy
        try:
            await server.start(addr.host, addr.port)
        except OSError as exc:
            raise GrpcBindError(f"S4_NODE_GRPC_ADDR={addr}: cannot listen for the other nodes: "
                                f"{exc.strerror or exc} (another process holds the port, or the address is not "
                                "this machine's)") from None
        self._server = server
        log.info("cluster %s node %s: gRPC on %s", self.config.cluster_name, self.config.node_id, addr)

    async def stop(self) -> None:
        """Stop listening, cancel running calls and close every open connection (a peer's channel then gets an
        error, never an answer from a stopped node)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
