"""The Merkle view of anti-entropy: per bucket, a digest of every key's replicated state, kept by the projector.

A key's replicated state is a set of *records*, each the work of one event: its versions ``(version id, hlc,
origin)``, its version tombstones, its tag clocks and its lock clocks (engine/projector.py keeps at most one of each
kind per version id). A record's digest (``atom``) hashes only those replicated facts and the key's name hash, never
anything node-local (object ids, blob locations, volumes), so two replicas holding the same records hold the same
digests. A key's digest is the XOR of its records' digests; a leaf's the XOR of its keys'. XOR makes both
order-independent and updatable in O(1) as the projector adds or removes one record (``toggle``: the same operation
either way).

    ae_keys    bucket \\0 sha256(key)   -> [key, digest, records]   (records: how many are XORed in)
    ae_leaves  bucket \\0 u16 leaf      -> digest                   (absent when all zero)

The tree above the leaves is computed on demand (``level``): ``FANOUT`` leaves under each of ``FANOUT`` inner
nodes under the root, whose digest also covers the bucket's own state (``bucket_atom``: its incarnation, deleted
incarnation and config clocks). docs/architecture/anti-entropy.md.

A prefix rename moves a whole subtree in O(1) (docs/architecture/rename.md) and is not followed here: the keys it
moved keep their old names' digests until ``rebuild_corrections`` (run by the anti-entropy loop periodically and
when a difference does not repair) recomputes the bucket from the key views. Incrementally kept digests can drift
for other reasons too (a bug, a restored file); the rebuild is what keeps them honest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import keys, namespace
from .env import pack, unpack
from .records import Tx

#: Databases derived from the other views rather than from the journal alone: the anti-entropy loop corrects them
#: after a prefix rename or drift (``apply_correction``), so views rebuilt by replay may differ from live ones in
#: them while every database they derive from agrees (tools/replay.py ``diff_views`` leaves them out).
DERIVED_DBS = ("ae_keys", "ae_leaves")
ZERO = bytes(32)
LEAVES = 1 << keys.MERKLE_LEAF_BITS
FANOUT = 32
assert FANOUT * FANOUT == LEAVES
VERSION, TOMBSTONE, TAGS, LOCK = b"V", b"T", b"G", b"L"
#: A lock clock is one record per part of the version's lock state (engine/object_lock.py ``join``): the newest
#: retention event (kind ``L``), the strongest COMPLIANCE one (``C``) and the newest legal hold event (``H``), so a
#: replica that lacks any of those events differs, even when it holds the newest of the others.
LOCK_PARTS = {"r": LOCK, "c": b"C", "g": b"H"}


def xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def atom(kind: bytes, bucket: str, khash: bytes, version_id: str, hlc: int, origin: str) -> bytes:
    """The digest of one record: what it is, whose, and the event that wrote it ``(hlc, origin)``."""
    h = hashlib.blake2b(digest_size=32, person=b"s4-ae-atom-v1")
    for part in (kind, bucket.encode(), khash, version_id.encode(), hlc.to_bytes(8, "big"), origin.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def record_atoms(kind: bytes, bucket: str, khash: bytes, version_id: str, value: Any) -> list[bytes]:
    """The digests of one stored clock or tombstone (a lock clock: one per part, ``LOCK_PARTS``)."""
    if kind == LOCK:
        return [atom(part_kind, bucket, khash, version_id, int(value[part][0]), str(value[part][1]))
                for part, part_kind in LOCK_PARTS.items() if value.get(part) is not None]
    return [atom(kind, bucket, khash, version_id, value["h"], value.get("o", ""))]


def toggle(tx: Tx, bucket: str, key: str, digest: bytes, delta: int, khash: bytes | None = None) -> None:
    """XOR one record's digest into its key and leaf: ``delta`` +1 when the record arrives, -1 when it leaves."""
    khash = khash if khash is not None else key_hash(key)
    kk = keys.ae_key_key(bucket, khash)
    rec = tx.packed("ae_keys", kk) or ["", ZERO, 0]
    rec[0] = rec[0] or key
    rec[1] = xor(rec[1], digest)
    rec[2] += delta
    if rec[2] <= 0 and rec[1] == ZERO:
        tx.delete("ae_keys", kk)
    else:
        tx.put("ae_keys", kk, pack(rec))
    lk = keys.ae_leaf_key(bucket, keys.leaf_of(khash))
    leaf = xor(tx.get("ae_leaves", lk) or ZERO, digest)
    if leaf == ZERO:
        tx.delete("ae_leaves", lk)
    else:
        tx.put("ae_leaves", lk, leaf)


# -- the projector's hooks ---------------------------------------------------------------------------------------
def version(tx: Tx, bucket: str, key: str, rec: dict[str, Any], delta: int) -> None:
    """A version record entered (+1) or left (-1) the key. Views of a single node's flavour keep no Merkle view
    (nothing compares them with a replica's: docs/architecture/views.md, "Flavour")."""
    if not tx.replicated:
        return
    toggle(tx, bucket, key, atom(VERSION, bucket, key_hash(key), rec["v"], rec["h"], rec.get("o", "")), delta)


def clock(tx: Tx, kind: bytes, bucket: str, key: str, version_id: str, old: Any, new: Any) -> None:
    """A tombstone, tag clock or lock clock of ``version_id`` replaced ``old`` (None: there was none) by ``new``."""
    if not tx.replicated:
        return
    khash = key_hash(key)
    for value, delta in ((old, -1), (new, 1)):
        if value is not None:
            for digest in record_atoms(kind, bucket, khash, version_id, value):
                toggle(tx, bucket, key, digest, delta, khash)


# -- reading the tree --------------------------------------------------------------------------------------------
def leaves(tx: Tx, bucket: str) -> list[bytes]:
    """All ``LEAVES`` leaf digests of a bucket (zero where empty)."""
    out = [ZERO] * LEAVES
    for k, v in tx.scan("ae_leaves", keys.bucket_prefix(bucket)):
        out[keys.decode_ae_leaf_key(k)[1]] = bytes(v)
    return out


def _node(children: list[bytes]) -> bytes:
    if not any(c != ZERO for c in children):
        return ZERO
    return hashlib.blake2b(b"".join(children), digest_size=32, person=b"s4-ae-node-v1").digest()


def inner(all_leaves: list[bytes]) -> list[bytes]:
    """The ``FANOUT`` inner nodes, each over ``FANOUT`` consecutive leaves."""
    return [_node(all_leaves[i * FANOUT:(i + 1) * FANOUT]) for i in range(FANOUT)]


def bucket_atom(tx: Tx, bucket: str) -> bytes:
    """The digest of a bucket's own replicated state: live incarnation, newest deleted incarnation, config clocks."""
    b = tx.bucket(bucket)
    dead = tx.packed("bucket_tombs", keys.bucket_key(bucket))
    clocks = sorted((keys.decode_bucket_cfg_key(k)[1], list(unpack(v)[:2]))
                    for k, v in tx.scan("cfg_clocks", keys.bucket_prefix(bucket)))
    state = [list(b.incarnation) if b is not None and b.incarnation else None,
             list(dead[:2]) if dead is not None else None, clocks]
    return hashlib.blake2b(pack(state), digest_size=32, person=b"s4-ae-bucket-v1").digest()


def root(tx: Tx, bucket: str) -> bytes:
    return hashlib.blake2b(bucket_atom(tx, bucket) + b"".join(inner(leaves(tx, bucket))), digest_size=32,
                           person=b"s4-ae-root-v1").digest()


def bucket_names(tx: Tx) -> list[str]:
    """Every bucket name this node knows: live ones and deleted ones (their tombstones)."""
    names = {keys.decode_bucket_key(k) for k, _ in tx.scan("buckets", b"")}
    names.update(keys.decode_bucket_key(k) for k, _ in tx.scan("bucket_tombs", b""))
    return sorted(names)


def leaf_keys(tx: Tx, bucket: str, leaf: int) -> Iterator[tuple[bytes, str, bytes]]:
    """(sha256(key), key, digest) of every key in one leaf, in hash order."""
    start, end = keys.leaf_range(bucket, leaf)
    for k, v in tx.scan("ae_keys", keys.bucket_prefix(bucket), start):
        if k >= end:
            return
        rec = unpack(v)
        yield keys.decode_ae_key_key(k)[1], rec[0], bytes(rec[1])


# -- rebuilding from the key views -------------------------------------------------------------------------------
@dataclass
class Rebuilt:
    """A bucket's digests recomputed from the key views: per key hash ``[key, digest, records]``."""

    keys: dict[bytes, list[Any]] = field(default_factory=dict)

    def add(self, khash: bytes, key: str, digest: bytes) -> None:
        rec = self.keys.setdefault(khash, [key, ZERO, 0])
        rec[0] = rec[0] or key
        rec[1] = xor(rec[1], digest)
        rec[2] += 1


def recompute(tx: Tx, bucket: str) -> Rebuilt:
    """The bucket's key digests from scratch: its namespace's versions, its tombstones, its tag and lock clocks."""
    out = Rebuilt()
    b = tx.bucket(bucket)
    if b is None:
        return out
    for raw, oid in namespace.walk(tx.txn, tx.dbs["ns"], b.root, b"", None, True):
        key = raw.decode()
        khash = key_hash(key)
        for _, rec in tx.versions(oid):
            out.add(khash, key, atom(VERSION, bucket, khash, rec["v"], rec["h"], rec.get("o", "")))
    for kind, db in ((TOMBSTONE, "vtombs"), (TAGS, "tag_clocks"), (LOCK, "lock_clocks")):
        for k, v in tx.scan(db, keys.bucket_prefix(bucket)):
            _, khash, version_id = keys.decode_object_version_key(k)
            rec = unpack(v)
            for digest in record_atoms(kind, bucket, khash, version_id, rec):
                out.add(khash, rec.get("k", ""), digest)
    return out


@dataclass
class Correction:
    """What to XOR into the stored digests so they equal the recomputed ones (``rebuild_corrections``)."""

    keys: dict[bytes, list[Any]] = field(default_factory=dict)  # khash -> [key, xor delta, records delta]
    leaves: dict[int, bytes] = field(default_factory=dict)  # leaf -> xor delta

    def __bool__(self) -> bool:
        return bool(self.keys)


def rebuild_corrections(tx: Tx, bucket: str) -> Correction:
    """In one read snapshot: the difference between the stored digests and the ones recomputed from the key views.

    XOR is linear, so the difference stays right after later events: each changes the stored digests and the true
    ones by the same record digests. Applying it later (``apply_correction``, in a write transaction) makes the
    stored view exact as of then, however many events committed in between."""
    fresh = recompute(tx, bucket).keys
    stored = {keys.decode_ae_key_key(k)[1]: unpack(v) for k, v in tx.scan("ae_keys", keys.bucket_prefix(bucket))}
    fix = Correction()
    for khash in fresh.keys() | stored.keys():
        new = fresh.get(khash, ["", ZERO, 0])
        old = stored.get(khash, ["", ZERO, 0])
        delta = xor(bytes(new[1]), bytes(old[1]))
        if delta == ZERO and new[2] == old[2] and (new[0] or old[0]) == old[0]:
            continue
        fix.keys[khash] = [new[0] or old[0], delta, new[2] - old[2]]
        leaf = keys.leaf_of(khash)
        fix.leaves[leaf] = xor(fix.leaves.get(leaf, ZERO), delta)
    return fix


def apply_correction(tx: Tx, bucket: str, fix: Correction) -> None:
    for khash, (key, delta, count) in fix.keys.items():
        kk = keys.ae_key_key(bucket, khash)
        rec = tx.packed("ae_keys", kk) or ["", ZERO, 0]
        rec = [rec[0] or key, xor(bytes(rec[1]), delta), rec[2] + count]
        if rec[2] <= 0 and rec[1] == ZERO:
            tx.delete("ae_keys", kk)
        else:
            tx.put("ae_keys", kk, pack(rec))
    for leaf, delta in fix.leaves.items():
        lk = keys.ae_leaf_key(bucket, leaf)
        value = xor(tx.get("ae_leaves", lk) or ZERO, delta)
        if value == ZERO:
            tx.delete("ae_leaves", lk)
        else:
            tx.put("ae_leaves", lk, value)
