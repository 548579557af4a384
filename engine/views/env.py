"""The LMDB environment that holds every view, opened once per process.

Named databases (key layouts: engine/views/keys.py, the one owner of every layout; docs/architecture/views.md):

    meta              b"last_seq" / b"next_node" / b"layout" -> u64 BE          (projection bookkeeping)
                      b"flavour" -> b"single" | b"replicated"                 (what the projector keeps: views.md)
    buckets           bucket name -> msgpack Bucket record
    bucket_cfg        bucket \\0 kind -> msgpack config document (versioning lives in the bucket record)
    ns                parent node id (u64 BE) + entry name or name piece -> b"D"|b"F"|b"C" + u64 id
    versions          object id (u64 BE) + (2^64-1 - hlc) (u64 BE) -> msgpack version record (newest first)
    vidx              object id (u64 BE) + version id -> the 8-byte order suffix used in ``versions``
    uploads           upload id -> msgpack Upload record
    upload_ns         the tree of keys with uploads in flight, laid out like ``ns`` (same root id per bucket)
    upload_keys       key id (u64 BE) + initiated ms (u64 BE) + upload id -> b""
    parts             upload id \\0 part number (u32 BE) -> msgpack Part record
    blobs             sha256 (32 bytes) -> msgpack [volume, offset, size, refcount]
    volumes           volume name -> msgpack {"live", "rb", "dead", "sealed", "size"} (volumes.md)
    users             user id -> msgpack user record;  user_names: username -> user id
    credentials       access key -> msgpack {"user": id, "secret": ...}
    rename_tokens     bucket \\0 sha256(client token) -> msgpack {"src", "dst", "token"}  (RenameObject retries)
    completed_uploads bucket \\0 upload id -> msgpack result of a completed upload (CompleteMultipartUpload retries)

Last-writer-wins bookkeeping (docs/architecture/replication.md, "Applying a peer's events"):

    event_ids         origin \\0 hlc (u64 BE) -> local seq: every event this node holds, by identity
    vtombs            bucket \\0 sha256(key) version id -> msgpack {k, v, h, o}: a removed version's tombstone
    tag_clocks        bucket \\0 sha256(key) version id -> msgpack {h, o, tg}: the newest tags_set of a version
    lock_clocks       bucket \\0 sha256(key) version id -> msgpack {h, o, k, r?, c?, g?}: a version's joined lock_sets
    cfg_clocks        bucket \\0 kind -> msgpack [h, o]: the newest config_set of a kind (a deleted config included)
    bucket_tombs      bucket name -> msgpack [h, o, dh, do]: the newest deleted incarnation of the name, its deletion
    upload_ends       upload id -> msgpack {h, o, st}: an upload completed or aborted
    user_clocks       user id -> msgpack {f, c, u, ep, d}: per-field winners of a user (and its deletion)
    cred_tombs        access key -> msgpack [h, o]: a deleted credential

Anti-entropy (docs/architecture/anti-entropy.md, engine/views/merkle.py):

    ae_keys           bucket \\0 sha256(key) -> msgpack [key, digest (32 B), atoms]: XOR of the key's record digests
    ae_leaves         bucket \\0 u16 leaf -> digest (32 B): XOR of the digests of the leaf's keys

Durability: the node's writer opens the views with ``sync=False`` where the platform has a boot id: commits reach
the page cache only, and a machine crash is answered by rebuilding the views from the journal (views/unsynced.py).
With ``sync=True`` the data file is synced on commit but not the meta page separately (MDB_NOMETASYNC): a system
crash may undo the last LMDB transaction, never corrupt it, and replay from the journal redoes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from s4.journal.codec import packb

from .keys import (
    FLAVOUR_REPLICATED,
    FLAVOUR_SINGLE,
    LAYOUT_VERSION,
    META_FLAVOUR,
    META_LAST_SEQ,
    META_LAYOUT,
    fits,
    from_u64,
    u64,
)

log = logging.getLogger(__name__)

DB_NAMES = ("meta", "buckets", "bucket_cfg", "ns", "versions", "vidx", "uploads", "upload_ns", "upload_keys", "parts",
            "blobs", "volumes", "users", "user_names", "credentials", "rename_tokens", "completed_uploads",
            "event_ids", "vtombs", "tag_clocks", "cfg_clocks", "bucket_tombs", "upload_ends", "user_clocks",
            "cred_tombs", "ae_keys", "ae_leaves", "lock_clocks",
            "kms_keys")
DEFAULT_MAP_SIZE = 1 << 40  # address space only; the file grows with the data
MapFullError = lmdb.MapFullError  # the writer grows the map and retries (``Views.grow``)
ViewsError = lmdb.Error  # any LMDB failure: the only names of lmdb's that leave the views layer


def pack(value: Any) -> bytes:
    return packb(value)  # msgpack.packb's bytes through a Packer kept per thread (journal/codec.py)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


__all__ = ["DB_NAMES", "Views", "from_u64", "pack", "u64", "unpack"]


class Views:
    """Owner of the LMDB environment and its named databases."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 sync: bool = True, replicated: bool = True) -> None:
        """``replicated``: the projection's flavour for views that hold nothing yet (docs/architecture/views.md,
        "Flavour"); existing views keep the one they were built in (``self.replicated``)."""
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=len(DB_NAMES) + 2, sync=sync,
                             metasync=False, max_readers=1024, readahead=False, mode=0o600)
        self.dbs = {name: self.env.open_db(name.encode()) for name in DB_NAMES}
        self._stamp_layout(replicated)
        self.replicated = self._read_flavour()

    def _stamp_layout(self, replicated: bool) -> None:
        """Record the layout version and the flavour in views that hold nothing yet (new or just discarded for a
        rebuild)."""
        meta = self.dbs["meta"]
        with self.env.begin() as txn:
            if txn.get(META_LAYOUT, db=meta) is not None or txn.get(META_LAST_SEQ, db=meta) is not None:
                return
        with self.env.begin(write=True) as txn:
            if txn.get(META_LAYOUT, db=meta) is None and txn.get(META_LAST_SEQ, db=meta) is None:
                txn.put(META_LAYOUT, u64(LAYOUT_VERSION), db=meta)
                txn.put(META_FLAVOUR, FLAVOUR_REPLICATED if replicated else FLAVOUR_SINGLE, db=meta)

    def _read_flavour(self) -> bool:
        """Whether these views hold the last-writer-wins bookkeeping. Views without a flavour stamp were written
        before it existed, always with the bookkeeping."""
        if "meta" not in self.dbs:
            return True
        with self.read() as txn:
            return txn.get(META_FLAVOUR, db=self.dbs["meta"]) != FLAVOUR_SINGLE

    def layout_stale(self) -> bool:
        """True if these views were written in another key layout (an older S4): they must be rebuilt from the
        journal, never read, as their keys would be misread. Views from before layout stamps count as version 1."""
        if "meta" not in self.dbs:
            return False
        with self.read() as txn:
            raw = txn.get(META_LAYOUT, db=self.dbs["meta"])
        return (from_u64(raw) if raw else 1) != LAYOUT_VERSION

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> Views:
        """Existing views opened without write access, so a tool can never change them (or block the writer).

        Databases never written to are absent from ``dbs`` (they compare as empty). FileNotFoundError if the
        directory holds no views.
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        if not (self.path / "data.mdb").exists():
            raise FileNotFoundError(f"no LMDB views at {self.path}")
        self.env = lmdb.open(str(self.path), readonly=True, max_dbs=len(DB_NAMES) + 2, max_readers=1024,
                             readahead=False)
        self.dbs = {}
        for name in DB_NAMES:
            try:
                self.dbs[name] = self.env.open_db(name.encode(), create=False)
            except lmdb.NotFoundError:
                continue
        self.replicated = self._read_flavour()
        return self

    def db(self, name: str) -> Any:
        return self.dbs[name]

    # The per-request reads below call py-lmdb positionally and end their transaction with ``abort`` in a
    # ``finally``: ``begin()``'s defaults are a read transaction without buffers (``buffers=False`` spelt out cost
    # ~900 instructions), ``get(key, default, db)`` (``db=`` ~700 a get), and ``with`` ~700 more than the
    # ``finally`` (docs/performance.md, "Issue 18's last bar").
    def read(self) -> lmdb.Transaction:
        """A read transaction, used as a context manager (``with views.read() as txn``): lmdb's own ``__exit__``
        ends it. No generator-based wrapper: this runs a few times per GET."""
        return self.env.begin()

    def get(self, db: str, key: bytes) -> bytes | None:
        """One value read in a transaction of its own, without ``Tx``: for a single lookup made on every request
        (access control's bucket policy), where the wrapper's cost shows. Absent database or unstorable key: None."""
        handle = self.dbs.get(db)
        if handle is None or not fits(key):
            return None
        txn = self.env.begin()
        try:
            return txn.get(key, None, handle)
        finally:
            txn.abort()

    def get_pair(self, first: tuple[str, bytes], second: tuple[str, bytes]) -> tuple[bytes | None, bytes | None]:
        """Two values read in one transaction (access control's bucket record and policy: one snapshot, one
        transaction's cost)."""
        if not fits(first[1]) or not fits(second[1]):
            return None, None
        txn = self.env.begin()
        try:
            return txn.get(first[1], None, self.dbs[first[0]]), txn.get(second[1], None, self.dbs[second[0]])
        finally:
            txn.abort()

    def get_many(self, wanted: list[tuple[str, bytes]]) -> list[bytes | None]:
        """Several values read in one transaction (a request's bucket record and configurations: one snapshot, one
        transaction's cost instead of one per value)."""
        found: list[bytes | None] = []
        dbs = self.dbs
        txn = self.env.begin()
        try:
            for db, key in wanted:
                found.append(txn.get(key, None, dbs[db]) if fits(key) else None)
        finally:
            txn.abort()
        return found

    def get_three(self, first: tuple[str, bytes], second: tuple[str, bytes],
                  third: tuple[str, bytes]) -> tuple[bytes | None, bytes | None, bytes | None]:
        """``get_pair`` plus one value (access control's object reads also ask the bucket's object ownership)."""
        if not fits(first[1]) or not fits(second[1]) or not fits(third[1]):
            return None, None, None
        txn = self.env.begin()
        try:
            return (txn.get(first[1], None, self.dbs[first[0]]), txn.get(second[1], None, self.dbs[second[0]]),
                    txn.get(third[1], None, self.dbs[third[0]]))
        finally:
            txn.abort()

    def begin_write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    def grow(self) -> None:
        """Double the map size after MapFullError (called by the single writer between transactions)."""
        new_size = self.env.info()["map_size"] * 2
        log.warning("LMDB map full: growing map to %d bytes", new_size)
        self.env.set_mapsize(new_size)

    def last_seq(self) -> int:
        if "meta" not in self.dbs:
            return 0
        with self.read() as txn:
            raw = txn.get(META_LAST_SEQ, db=self.dbs["meta"])
        return from_u64(raw) if raw else 0

    def close(self) -> None:
        self.env.close()
