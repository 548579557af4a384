"""The CASPaxos register over the wire (docs/architecture/replication.md, "Over the wire").

Server side: ``CasAcceptorService.cas_prepare`` / ``cas_accept`` are what ``ClusterServer`` delegates the
``CasPrepare`` / ``CasAccept`` RPCs to. They run this node's ``Acceptor`` over its durable ``CasStore``
(cluster/cas_store.py: LMDB and fsync in worker threads, a lock per key) and reply only once the new state is on
disk. The acceptor is value-agnostic: values stay the bytes that came over the wire.

Client side: ``GrpcAcceptorTransport`` is the ``AcceptorTransport`` the proposer uses. A peer is called through its
signed ``PeerPool`` stub with a deadline; this node's own acceptor is called directly (the same object the server
uses, so its key locks cover both). Any failure to get an answer (refused connection, deadline, a gRPC error, a
reply that does not decode) raises, which ``call_quorum`` counts as a failed vote: nothing escapes the proposer.
``ValueCodec`` turns the proposer's values into bytes and back (``BUCKET_CODEC`` for bucket records).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import msgpack
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .cas_store import MAX_KEY_BYTES, CasStoreFailed
from .caspaxos import (
    LINEAGE,
    ZERO,
    Accepted,
    Acceptor,
    AcceptorNotReady,
    Ballot,
    BucketRecord,
    BucketStatus,
    Promise,
    Reject,
)
from .peers import PeerPool
from .wire.s4cluster.v1 import Ballot as WireBallot
from .wire.s4cluster.v1 import (
    CasAcceptReply,
    CasAcceptRequest,
    CasListEntry,
    CasListReply,
    CasListRequest,
    CasPrepareReply,
    CasPrepareRequest,
)

V = TypeVar("V")

MAX_VALUE_BYTES = 64 * 1024
MAX_LIST = 1000
"""Registers one CasList answer holds at most (a page: the caller asks again after the last key)."""
"""A register value is a small record; anything larger is refused before it reaches the disk."""


class ValueCodec(Protocol[V]):
    def encode(self, value: V) -> bytes: ...

    def decode(self, data: bytes) -> V: ...


class BucketRecordCodec:
    """A BucketRecord as the msgpack array ``[1, status, owner, incarnation, token]``, or, once it names a pool or a
    creation time (several pools: docs/architecture/pools.md), ``[2, status, owner, incarnation, token, pool,
    created_ms]``. A record with neither stays format 1, so a one-pool cluster's records stay readable by nodes of
    the version before pools during a rolling upgrade; format 1 decodes with the defaults (pool "": the first)."""

    FORMAT = 1
    FORMAT_POOL = 2

    def encode(self, value: BucketRecord) -> bytes:
        fields: list[object] = [self.FORMAT, value.status.value, value.owner, value.incarnation, value.token]
        if value.pool or value.created_ms:
            fields[0] = self.FORMAT_POOL
            fields += [value.pool, value.created_ms]
        return bytes(msgpack.packb(fields, use_bin_type=True))

    def decode(self, data: bytes) -> BucketRecord:
        fields = msgpack.unpackb(data, raw=False)
        fmt = fields[0] if isinstance(fields, list) and fields else None
        if fmt == self.FORMAT and len(fields) == 5:
            fields = [*fields, "", 0]
        elif fmt != self.FORMAT_POOL or len(fields) != 7:
            raise ValueError(f"not a bucket record (format {fmt!r})")
        _, status, owner, incarnation, token, pool, created_ms = fields
        if not isinstance(owner, str) or not isinstance(token, str) or not isinstance(incarnation, int) \
                or not isinstance(pool, str) or not isinstance(created_ms, int):
            raise ValueError(f"not a bucket record (format {fmt!r})")
        return BucketRecord(BucketStatus(status), owner, incarnation, token, pool, created_ms)


BUCKET_CODEC = BucketRecordCodec()


def ballot_to_wire(ballot: Ballot) -> WireBallot:
    return WireBallot(counter=ballot.counter, node_id=ballot.node, incarnation=ballot.incarnation)


def ballot_from_wire(ballot: WireBallot | None) -> Ballot:
    """An absent ballot is ZERO (below every real one)."""
    return ZERO if ballot is None else Ballot(ballot.counter, ballot.node_id, ballot.incarnation)


# --- server side ------------------------------------------------------------------------------------------------


class CasAcceptorService:
    """This node's acceptor, answering other nodes' proposers (the cas part of ClusterServer's handler).

    A ballot must be the caller's own (its node id is the authenticated caller): a node that proposed with another
    node's ballots could reuse one of them with a different value."""

    def __init__(self, acceptor: Acceptor[bytes]) -> None:
        self.acceptor = acceptor

    def _ballot(self, caller: str, ballot: WireBallot | None) -> Ballot:
        if ballot is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "a CAS request needs a ballot")
        if ballot.node_id != caller:
            raise GRPCError(Status.INVALID_ARGUMENT, f"ballot of node {ballot.node_id!r} sent by {caller!r}")
        return ballot_from_wire(ballot)

    @staticmethod
    def _key(key: str) -> str:
        if not 0 < len(key.encode()) <= MAX_KEY_BYTES:
            raise GRPCError(Status.INVALID_ARGUMENT, f"register key must be 1-{MAX_KEY_BYTES} bytes")
        return key

    async def cas_prepare(self, caller: str, request: CasPrepareRequest) -> CasPrepareReply:
        key, ballot = self._key(request.key), self._ballot(caller, request.ballot)
        try:
            answer = await self.acceptor.prepare(key, ballot)
        except (CasStoreFailed, AcceptorNotReady) as exc:
            raise GRPCError(Status.UNAVAILABLE, f"acceptor store: {exc}") from None
        if isinstance(answer, Reject):
            return CasPrepareReply(promised=False, conflict=ballot_to_wire(answer.seen))
        return CasPrepareReply(promised=True, accepted_ballot=ballot_to_wire(answer.accepted), value=answer.value,
                               lineage=[ballot_to_wire(b) for b in answer.lineage])

    async def cas_accept(self, caller: str, request: CasAcceptRequest) -> CasAcceptReply:
        key, ballot = self._key(request.key), self._ballot(caller, request.ballot)
        if request.value is not None and len(request.value) > MAX_VALUE_BYTES:
            raise GRPCError(Status.INVALID_ARGUMENT, f"register value over {MAX_VALUE_BYTES} bytes")
        if len(request.lineage) > LINEAGE:
            raise GRPCError(Status.INVALID_ARGUMENT, f"lineage of {len(request.lineage)} ballots (at most {LINEAGE})")
        lineage = tuple(ballot_from_wire(b) for b in request.lineage)
        if any(b >= ballot for b in lineage) or any(a <= b for a, b in zip(lineage, lineage[1:], strict=False)):
            raise GRPCError(Status.INVALID_ARGUMENT, "lineage must be strictly decreasing and below the ballot")
        try:
            answer = await self.acceptor.accept(key, ballot, request.value, lineage)
        except (CasStoreFailed, AcceptorNotReady) as exc:
            raise GRPCError(Status.UNAVAILABLE, f"acceptor store: {exc}") from None
        if isinstance(answer, Reject):
            return CasAcceptReply(accepted=False, conflict=ballot_to_wire(answer.seen))
        return CasAcceptReply(accepted=True)


    async def cas_list(self, caller: str, request: CasListRequest) -> CasListReply:
        """The registers under a prefix, whole (read-only): ListBuckets, and a replaced node's restore
        (cluster/cas_restore.py). A refusing acceptor does not answer: its state is incomplete."""
        store = getattr(self.acceptor.store, "scan", None)
        if store is None:
            raise GRPCError(Status.UNIMPLEMENTED, "this acceptor's store cannot be listed")
        limit = min(request.limit or MAX_LIST, MAX_LIST)
        if self.acceptor.refusing is not None:  # its state is incomplete: a listing (or a restore) must not use it
            raise GRPCError(Status.UNAVAILABLE, f"acceptor store: {self.acceptor.refusing}")
        fence = None if request.fence is None else self._ballot(caller, request.fence)
        raise_floor = getattr(self.acceptor.store, "raise_floor_async", None)
        if fence is not None and raise_floor is None:
            raise GRPCError(Status.UNIMPLEMENTED, "this acceptor's store cannot be fenced")
        try:
            if fence is not None and raise_floor is not None:  # first: every later save is at or above it
                await raise_floor(fence)
            found, truncated = await store(request.prefix, request.after, limit)
        except (CasStoreFailed, AcceptorNotReady) as exc:
            raise GRPCError(Status.UNAVAILABLE, f"acceptor store: {exc}") from None
        floor = getattr(self.acceptor.store, "floor", ZERO)
        return CasListReply(entries=[
            CasListEntry(key=key, accepted_ballot=ballot_to_wire(slot.accepted), value=slot.value,
                         promised_ballot=ballot_to_wire(slot.promised),
                         lineage=[ballot_to_wire(b) for b in slot.lineage]) for key, slot in found],
            truncated=truncated, floor=ballot_to_wire(floor) if floor > ZERO else None)


# --- client side ------------------------------------------------------------------------------------------------


class GrpcAcceptorTransport(Generic[V]):
    """The proposer's AcceptorTransport: ``node_id`` is this node (its acceptor called in process), every other
    peer through ``peers`` with a ``timeout_s`` deadline per call. Raising means "no answer" (a failed vote)."""

    def __init__(self, node_id: str, local: Acceptor[bytes], peers: PeerPool, codec: ValueCodec[V], *,
                 timeout_s: float = 2.0) -> None:
        self.node_id = node_id
        self.local = local
        self.peers = peers
        self.codec = codec
        self.timeout_s = timeout_s

    def _decode(self, value: bytes | None) -> V | None:
        return None if value is None else self.codec.decode(value)

    async def prepare(self, peer: str, key: str, ballot: Ballot) -> Promise[V] | Reject:
        if peer == self.node_id:
            answer = await self.local.prepare(key, ballot)
            if isinstance(answer, Reject):
                return answer
            return Promise(answer.ballot, answer.accepted, self._decode(answer.value), answer.lineage)
        reply = await self.peers.stub(peer).cas_prepare(
            CasPrepareRequest(key=key, ballot=ballot_to_wire(ballot)), timeout=self.timeout_s)
        if not reply.promised:
            return Reject(_conflict(peer, reply.conflict, ballot))
        return Promise(ballot, ballot_from_wire(reply.accepted_ballot), self._decode(reply.value),
                       tuple(ballot_from_wire(b) for b in reply.lineage))

    async def accept(self, peer: str, key: str, ballot: Ballot, value: V | None,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject:
        data = None if value is None else self.codec.encode(value)
        if peer == self.node_id:
            return await self.local.accept(key, ballot, data, lineage)
        reply = await self.peers.stub(peer).cas_accept(
            CasAcceptRequest(key=key, ballot=ballot_to_wire(ballot), value=data,
                             lineage=[ballot_to_wire(b) for b in lineage]), timeout=self.timeout_s)
        if not reply.accepted:
            return Reject(_conflict(peer, reply.conflict, ballot))
        return Accepted(ballot)


    async def list(self, peer: str, prefix: str, after: str) -> tuple[list[tuple[str, Ballot, bytes | None]], bool]:
        """One page of ``peer``'s registers under ``prefix`` after ``after``: (key, accepted ballot, value)."""
        if peer == self.node_id:
            if self.local.refusing is not None:
                raise AcceptorNotReady(self.local.refusing)
            found, truncated = await self.local.store.scan(prefix, after, MAX_LIST)  # type: ignore[attr-defined]
            return [(key, slot.accepted, slot.value) for key, slot in found], truncated
        reply = await self.peers.stub(peer).cas_list(CasListRequest(prefix=prefix, after=after, limit=MAX_LIST),
                                                     timeout=self.timeout_s)
        return [(e.key, ballot_from_wire(e.accepted_ballot), e.value) for e in reply.entries], reply.truncated


def _conflict(peer: str, conflict: WireBallot | None, ours: Ballot) -> Ballot:
    """A refusal must name a ballot at least ours (the proposer moves past it); anything else is a broken reply."""
    seen = ballot_from_wire(conflict)
    if seen < ours:
        raise ValueError(f"{peer} refused ballot {tuple(ours)} naming the lower {tuple(seen)}")
    return seen
