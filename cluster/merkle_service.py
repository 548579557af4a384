"""This node's side of Merkle anti-entropy: its Merkle view level by level, and its events by identity.

The same functions answer a peer (``MerkleService``, the ``anti_entropy`` area of cluster/grpc_server.py) and this
node's own exchange (cluster/anti_entropy.py reads its side locally), so both sides are read by one code. Each call
reads one LMDB snapshot in a worker thread, never on the event loop. docs/architecture/anti-entropy.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from s4.engine import kms, reads
from s4.engine.views import merkle
from s4.engine.views.env import Views, pack
from s4.engine.views.records import Tx
from s4.journal.codec import encode_event
from s4.journal.events import REPLICATED

from .catch_up import JournalReader
from .wire.s4cluster.v1 import (
    GetEventsReply,
    GetEventsRequest,
    MerkleBucket,
    MerkleKey,
    MerkleTreeReply,
    MerkleTreeRequest,
)

BUCKETS, INNER, LEAVES, KEYS, KMS = "buckets", "inner", "leaves", "keys", "kms"
MAX_EVENTS = 512  # ids one GetEvents may ask for
MAX_LEAVES = 64  # leaves one "keys" request may name
#: Journal seqs further apart than this are read as separate ranges (each read starts at its segment's beginning).
READ_GAP = 4096


def bucket_roots(views: Views) -> MerkleTreeReply:
    """Every bucket's root and state, and the KMS keys' root (one snapshot)."""
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        return MerkleTreeReply(buckets=[MerkleBucket(name=name, root=merkle.root(tx, name),
                                                     state=pack(reads.bucket_state(tx, name)))
                                        for name in merkle.bucket_names(tx)],
                               kms_root=kms.ae_root(kms.ae_state(tx)))


def kms_state(views: Views) -> MerkleTreeReply:
    with views.read() as txn:
        return MerkleTreeReply(kms=pack(kms.ae_state(Tx(txn, views.dbs))))


def inner_digests(views: Views, bucket: str) -> list[bytes]:
    with views.read() as txn:
        return merkle.inner(merkle.leaves(Tx(txn, views.dbs), bucket))


def leaf_digests(views: Views, bucket: str, inner: Iterable[int]) -> list[bytes]:
    """The ``FANOUT`` leaves under each inner node named, in that order."""
    with views.read() as txn:
        all_leaves = merkle.leaves(Tx(txn, views.dbs), bucket)
    return [d for i in inner for d in all_leaves[i * merkle.FANOUT:(i + 1) * merkle.FANOUT]]


def leaf_keys(views: Views, bucket: str, leaves: Iterable[int]) -> list[MerkleKey]:
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        return [MerkleKey(key_hash=h, key=k, digest=d) for leaf in leaves for h, k, d in merkle.leaf_keys(tx, bucket,
                                                                                                           leaf)]


def tree(views: Views, request: MerkleTreeRequest) -> MerkleTreeReply:
    """One level of the Merkle view (see the proto's MerkleTreeRequest)."""
    indexes = list(request.indexes)
    if request.what == BUCKETS:
        return bucket_roots(views)
    if request.what == KMS:
        return kms_state(views)
    if request.what == INNER:
        return MerkleTreeReply(digests=inner_digests(views, request.bucket))
    if request.what == LEAVES:
        if any(i >= merkle.FANOUT for i in indexes):
            raise ValueError(f"inner node index out of range (< {merkle.FANOUT})")
        return MerkleTreeReply(digests=leaf_digests(views, request.bucket, indexes))
    if request.what == KEYS:
        if len(indexes) > MAX_LEAVES or any(i >= merkle.LEAVES for i in indexes):
            raise ValueError(f"at most {MAX_LEAVES} leaves, each < {merkle.LEAVES}")
        return MerkleTreeReply(keys=leaf_keys(views, request.bucket, indexes))
    raise ValueError(f"unknown level {request.what!r}")


def events_by_id(views: Views, journal: JournalReader, ids: Sequence[tuple[int, str]]) -> list[bytes]:
    """The envelopes of the replicated events this node holds among ``ids``, in its journal order (unknown ids
    left out). ``event_ids`` gives each one's local seq; the journal is read in ranges of nearby seqs."""
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        seqs = sorted({seq for hlc, origin in ids if (seq := tx.event_seq(origin, hlc)) is not None})
    wanted = set(seqs)
    out: list[bytes] = []
    start = 0
    for i in range(1, len(seqs) + 1):
        if i == len(seqs) or seqs[i] - seqs[i - 1] > READ_GAP:
            for event in journal.read(seqs[start], seqs[i - 1]):
                if event.seq in wanted and event.type in REPLICATED:
                    out.append(encode_event(event))
            start = i
    return out


class MerkleService:
    """The ``anti_entropy`` area of the gRPC server (cluster/grpc_server.py ``AntiEntropyHandler``)."""

    def __init__(self, views: Views, journal: JournalReader) -> None:
        self.views, self.journal = views, journal

    async def merkle_tree(self, caller: str, request: MerkleTreeRequest) -> MerkleTreeReply:
        try:
            return await asyncio.to_thread(tree, self.views, request)
        except ValueError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"MerkleTree: {exc}") from None

    async def get_events(self, caller: str, request: GetEventsRequest) -> GetEventsReply:
        if len(request.ids) > MAX_EVENTS:
            raise GRPCError(Status.INVALID_ARGUMENT, f"GetEvents: at most {MAX_EVENTS} ids a call")
        ids = [(i.hlc, i.origin) for i in request.ids]
        return GetEventsReply(events=await asyncio.to_thread(events_by_id, self.views, self.journal, ids))

