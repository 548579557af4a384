"""Quorum reads: the ``ReadKeys`` / ``ListRange`` server (``ReadsService``) and the client side that merges R replicas.

Server: answers from this node's views, in one LMDB read transaction per call, in a worker thread (never on the
event loop), with the raw replicated state (engine/reads.py, engine/listing.py) as msgpack: nothing is hidden or
decided here. Client: ``read_quorum`` asks R replicas for a key's state over ``call_quorum`` and merges them
(cluster/key_merge.py); ``WireSource`` feeds the listing merge (cluster/listing_merge.py) from the peers' stubs.
docs/architecture/replication.md, "Quorum reads and listing merge".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from s4.engine import listing, reads
from s4.engine.views.env import Views, pack, unpack
from s4.engine.views.records import Tx

from .key_merge import Merged, merge_bucket_states, merge_key_states, merge_upload_states
from .listing_merge import Page
from .quorum import call_quorum
from .wire.s4cluster.v1 import KeyRecord, ListRangeReply, ListRangeRequest, ReadKeysReply, ReadKeysRequest

R = TypeVar("R", bound=Hashable)
MAX_KEYS = 1000  # keys (or upload ids, bucket names) one ReadKeys may ask for
MAX_PAGE = 1000  # keys or uploads one ListRange page holds at most
MAX_PAGE_VERSIONS = 10_000  # versions one ListRange page holds at most (a key's versions are never split)
OBJECT, UPLOAD, BUCKET = "object", "upload", "bucket"
OBJECTS, UPLOADS = "objects", "uploads"


# -- server ----------------------------------------------------------------------------------------------------------
def read_states(views: Views, kind: str, bucket: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The replicated state of each id (object key, upload id or bucket name), from one read transaction."""
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        if kind == OBJECT:
            return [reads.key_state(tx, bucket, key) for key in ids]
        if kind == UPLOAD:
            return [reads.upload_state(tx, upload_id) for upload_id in ids]
        return [reads.bucket_state(tx, name) for name in ids]


def read_page(views: Views, kind: str, bucket: str, prefix: str, start: bytes, inclusive: bool, limit: int) -> Page:
    """One page of raw key states from ``start`` (see engine/listing.py ``key_states``), from one read transaction."""
    limit = max(1, min(limit or MAX_PAGE, MAX_PAGE))
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        life = reads.bucket_life(tx, bucket)
        b = tx.bucket(bucket)
        if b is None:
            return Page([], False, life)
        if kind == OBJECTS:
            states, more = listing.key_states(tx, b, prefix, start, inclusive, limit, MAX_PAGE_VERSIONS)
        else:
            states, more = listing.upload_key_states(tx, b, prefix, start, inclusive, limit)
        return Page(states, more, life)


def _found(state: dict[str, Any]) -> bool:
    return any(state.get(f) for f in ("i", "bt", "vs", "vt", "tc", "lkc", "u", "ps", "end", "b", "cfg"))


class ReadsService:
    """The ``ReadsHandler`` of cluster/grpc_server.py over this node's views."""

    def __init__(self, views: Views) -> None:
        self.views = views

    async def read_keys(self, caller: str, request: ReadKeysRequest) -> ReadKeysReply:
        if request.kind not in (OBJECT, UPLOAD, BUCKET):
            raise GRPCError(Status.INVALID_ARGUMENT, f"ReadKeys: unknown kind {request.kind!r}")
        if len(request.keys) > MAX_KEYS:
            raise GRPCError(Status.INVALID_ARGUMENT, f"ReadKeys: at most {MAX_KEYS} keys a call")
        states = await asyncio.to_thread(read_states, self.views, request.kind, request.bucket, list(request.keys))
        return ReadKeysReply(records=[KeyRecord(key=k, found=_found(s), record=pack(s))
                                      for k, s in zip(request.keys, states, strict=True)])

    async def list_range(self, caller: str, request: ListRangeRequest) -> ListRangeReply:
        if request.kind not in (OBJECTS, UPLOADS):
            raise GRPCError(Status.INVALID_ARGUMENT, f"ListRange: unknown kind {request.kind!r}")
        page = await asyncio.to_thread(read_page, self.views, request.kind, request.bucket, request.prefix,
                                       request.start, request.inclusive, request.limit)
        return ListRangeReply(records=[KeyRecord(key=s["k"], found=True, record=pack(s)) for s in page.states],
                              truncated=page.more, life=pack(page.life))


# -- client ----------------------------------------------------------------------------------------------------------
class ReadsStub(Protocol):
    """The two calls of the generated stub that the client uses (``PeerPool.stub(node)``)."""

    def read_keys(self, message: ReadKeysRequest, *, timeout: float | None = None) -> Awaitable[ReadKeysReply]: ...

    def list_range(self, message: ListRangeRequest, *, timeout: float | None = None) -> Awaitable[ListRangeReply]: ...


StubOf = Callable[[str], ReadsStub]


async def fetch_states(stub: ReadsStub, kind: str, bucket: str, ids: Sequence[str],
                       timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """One replica's states of ``ids`` (in calls of at most MAX_KEYS)."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), MAX_KEYS):
        chunk = list(ids[i:i + MAX_KEYS])
        reply = await stub.read_keys(ReadKeysRequest(kind=kind, bucket=bucket, keys=chunk), timeout=timeout)
        if [r.key for r in reply.records] != chunk:
            raise ValueError(f"ReadKeys answered {len(reply.records)} records for {len(chunk)} keys")
        out.update((r.key, unpack(r.record)) for r in reply.records)
    return out


MERGE = {OBJECT: merge_key_states, UPLOAD: merge_upload_states, BUCKET: merge_bucket_states}


async def read_quorum(stub_of: StubOf, replicas: Sequence[str], r: int, bucket: str, key: str, *,
                      kind: str = OBJECT, timeout: float | None = None) -> Merged[str]:
    """Ask every replica for ``key``'s state (``kind`` object, upload or bucket), merge the first ``r`` answers by
    the projection's rules: the merged state and, per answering replica, what it lacks (repair those before
    answering the client, so a later quorum read cannot go backwards). QuorumError when fewer than ``r`` answer."""
    async def one(replica: str) -> dict[str, Any]:
        return (await fetch_states(stub_of(replica), kind, bucket, [key], timeout))[key]

    result = await call_quorum(replicas, one, r, timeout=timeout)
    return MERGE[kind](result.successes)


@dataclass
class WireSource:
    """A listing merge ``Source`` over the peers' stubs for one listing (bucket, prefix, kind)."""

    stub_of: StubOf
    bucket: str
    prefix: str
    kind: str = OBJECTS
    limit: int = 256
    timeout: float | None = None

    async def page(self, replica: str, start: bytes, inclusive: bool) -> Page:
        reply = await self.stub_of(replica).list_range(ListRangeRequest(
            kind=self.kind, bucket=self.bucket, prefix=self.prefix, start=start, inclusive=inclusive,
            limit=self.limit), timeout=self.timeout)
        return Page([unpack(r.record) for r in reply.records], reply.truncated, unpack(reply.life) if reply.life
                    else {"i": None, "bt": None})

    async def fill(self, replica: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        kind = OBJECT if self.kind == OBJECTS else UPLOAD
        return await fetch_states(self.stub_of(replica), kind, self.bucket, ids, self.timeout)


class LocalReads:
    """This node's own replica as a ``ReadsStub``: the coordinator counts itself among the R without a network hop
    (as the CASPaxos transport does with its own acceptor)."""

    def __init__(self, service: ReadsService, node_id: str) -> None:
        self.service, self.node_id = service, node_id

    async def read_keys(self, message: ReadKeysRequest, *, timeout: float | None = None) -> ReadKeysReply:
        return await self.service.read_keys(self.node_id, message)

    async def list_range(self, message: ListRangeRequest, *, timeout: float | None = None) -> ListRangeReply:
        return await self.service.list_range(self.node_id, message)
