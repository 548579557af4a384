"""Typed readers and writers over the named databases: buckets, versions, blobs, uploads, users.

Keys are built and split by engine/views/keys.py only (docs/architecture/views.md). Writers are called by the
projector only; readers by the projector, the deciders and the read path. A lookup by a key LMDB could never
hold (``keys.fits``) finds nothing instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..model import Bucket, ObjectVersion, Part, Upload
from . import keys, namespace
from .env import pack, unpack
from .keys import MAX_KEY_BYTES, MAX_U64, from_u64, u64

__all__ = ["MAX_U64", "Tx", "version_from_record"]


class Tx:
    """A transaction plus the database handles: the one argument every view function takes.

    ``replicated``: whether the projector keeps the last-writer-wins bookkeeping in these views (the views'
    flavour, ``Views.replicated``; docs/architecture/views.md, "Flavour"). Readers never look at it.

    The last bucket record read or written through this transaction is kept decoded (``bucket``): a command's
    decider reads its bucket, then the projection of each event it emits reads it again (two LMDB gets and two
    decodes per write before). Every write of the ``buckets`` database goes through this object (``put``,
    ``delete``, ``put_bucket``), which keeps the copy equal to the stored record; a caller that changes the
    returned ``Bucket`` writes it back with ``put_bucket`` in the same transaction (the projector does), or the
    transaction is abandoned.

    The same holds for what a decider looks up and the projection of its event looks up again a moment later
    (docs/performance.md, "the sequencer's second lookups"): the last key's object id (``find_object``), the last
    version found by id (``version_at``, which ``latest`` also answers from when that version is the latest) and
    the volume records read (``volume_stats``). Each copy is dropped by any write of its databases through this
    object; the namespace's writers are this object's methods (``ensure_object``, ``remove_object``,
    ``move_dir``), and nothing writes ``ns``, ``versions``, ``vidx`` or ``volumes`` through the raw transaction.
    A version record handed out is the kept one: a caller that changes it writes it back (``replace_version``) or
    abandons the transaction, as for the bucket."""

    __slots__ = ("txn", "dbs", "replicated", "_bucket", "_object", "_version", "_volumes")

    def __init__(self, txn: Any, dbs: dict[str, Any], replicated: bool = True) -> None:
        self.txn = txn
        self.dbs = dbs
        self.replicated = replicated
        self._bucket: Bucket | None = None  # the last bucket record read or written, decoded
        self._object: tuple[int, bytes, int | None] | None = None  # (root, key, object id) of the last lookup
        self._version: tuple[int, str, bytes, dict[str, Any]] | None = None  # (oid, version id, order, record)
        self._volumes: dict[str, dict[str, Any]] | None = None  # volume records read or written, decoded

    def get(self, db: str, key: bytes) -> bytes | None:
        if not 0 < len(key) <= MAX_KEY_BYTES:  # keys.fits, inlined: a few gets on every request
            return None  # never stored: every write goes through a layout that keeps keys in bounds
        value: bytes | None = self.txn.get(key, None, self.dbs[db])  # positional: py-lmdb's keywords cost ~700
        return value

    def put(self, db: str, key: bytes, value: bytes) -> None:
        if db in _KEPT:
            self._forget(db)
        self.txn.put(key, value, False, True, False, self.dbs[db])  # (dupdata, overwrite, append, db)

    def delete(self, db: str, key: bytes) -> None:
        if db in _KEPT:
            self._forget(db)
        self.txn.delete(key, b"", self.dbs[db])  # (value: any, db)

    def _forget(self, db: str) -> None:
        """Drop the decoded copies a write of ``db`` may make stale."""
        if db == "buckets":
            self._bucket = None
        elif db == "ns":
            self._object = None
        elif db == "volumes":
            self._volumes = None
        else:  # versions, vidx
            self._version = None

    def scan(self, db: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, from ``start`` (inclusive) on."""
        first = start if start is not None else prefix
        if len(first) > keys.MAX_KEY_BYTES:
            return
        cur = self.txn.cursor(self.dbs[db])
        ok = cur.set_range(first)
        while ok:
            key = cur.key()
            if not key.startswith(prefix):
                return
            yield key, cur.value()
            ok = cur.next()

    # -- meta ---------------------------------------------------------------------------------------------------
    def last_seq(self) -> int:
        raw = self.get("meta", keys.META_LAST_SEQ)
        return from_u64(raw) if raw else 0

    def set_last_seq(self, seq: int) -> None:
        self.put("meta", keys.META_LAST_SEQ, u64(seq))

    def alloc_node(self) -> int:
        raw = self.get("meta", keys.META_NEXT_NODE)
        node = from_u64(raw) if raw else 1
        self.put("meta", keys.META_NEXT_NODE, u64(node + 1))
        return node

    # -- the namespace (views/namespace.py): every writer of ``ns`` is here, so the kept object id stays true ---------
    def find_object(self, root: int, key: bytes) -> int | None:
        """The object id of ``key`` in the bucket rooted at ``root`` (None: no such key)."""
        kept = self._object
        if kept is not None and kept[1] == key and kept[0] == root:
            return kept[2]
        oid = namespace.find_object(self.txn, self.dbs["ns"], root, key)
        self._object = (root, key, oid)
        return oid

    def ensure_object(self, root: int, key: bytes, leaf_id: int | None = None) -> tuple[int, bool]:
        """``namespace.ensure_object`` in ``ns``: (object id, whether its leaf was created now)."""
        kept = self._object
        if kept is not None and kept[2] is not None and leaf_id is None and kept[1] == key and kept[0] == root:
            return kept[2], False
        self._object = None
        oid, created = namespace.ensure_object(self.txn, self.dbs["ns"], root, key, self.alloc_node, leaf_id)
        self._object = (root, key, oid)
        return oid, created

    def remove_object(self, root: int, key: bytes) -> None:
        self._object = None
        namespace.remove_object(self.txn, self.dbs["ns"], root, key)

    def move_dir(self, root: int, src: bytes, dst: bytes, on_conflict: Callable[[int], None] | None = None) -> bool:
        """``namespace.move_dir`` in ``ns`` (a prefix rename)."""
        self._object = None
        moved = namespace.move_dir(self.txn, self.dbs["ns"], root, src, dst, self.alloc_node, on_conflict)
        self._object = None  # ``on_conflict`` may have looked a key up meanwhile
        return moved

    # -- buckets ------------------------------------------------------------------------------------------------
    def bucket(self, name: str) -> Bucket | None:
        kept = self._bucket
        if kept is not None and kept.name == name:
            return kept
        raw = self.get("buckets", keys.bucket_key(name))
        if not raw:
            return None
        bucket = self._bucket = Bucket.from_record(name, unpack(raw))
        return bucket

    def put_bucket(self, bucket: Bucket) -> None:
        self.put("buckets", keys.bucket_key(bucket.name), pack(bucket.to_record()))
        self._bucket = bucket

    def buckets(self) -> list[Bucket]:
        return [Bucket.from_record(keys.decode_bucket_key(k), unpack(v)) for k, v in self.scan("buckets", b"")]

    def bucket_config(self, bucket: str, kind: str) -> Any:
        raw = self.get("bucket_cfg", keys.bucket_cfg_key(bucket, kind))
        return unpack(raw) if raw is not None else None

    # -- versions -----------------------------------------------------------------------------------------------
    def versions(self, oid: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(db key, record) of every version of an object, newest first."""
        for key, val in self.scan("versions", keys.versions_prefix(oid)):
            yield key, unpack(val)

    def latest(self, oid: int) -> dict[str, Any] | None:
        prefix = keys.versions_prefix(oid)
        with self.txn.cursor(self.dbs["versions"]) as cur:
            if not cur.set_range(prefix):
                return None
            key = cur.key()
            if key[:8] != prefix:
                return None
            kept = self._version
            if kept is not None and kept[0] == oid and key[8:] == kept[2]:
                return kept[3]  # the version last found by id is the latest: its record is decoded already
            return unpack(cur.value())  # type: ignore[no-any-return]

    def latest_reader(self) -> Callable[[int], dict[str, Any] | None]:
        """``latest`` for many objects in a row (a listing page): one cursor, repositioned per object."""
        cur = self.txn.cursor(self.dbs["versions"])

        def latest(oid: int) -> dict[str, Any] | None:
            prefix = keys.versions_prefix(oid)
            if not cur.set_range(prefix) or cur.key()[:8] != prefix:
                return None
            return unpack(cur.value())  # type: ignore[no-any-return]

        return latest

    def version(self, oid: int, version_id: str) -> dict[str, Any] | None:
        found = self.version_at(oid, version_id)
        return found[1] if found is not None else None

    def version_at(self, oid: int, version_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """A version's order suffix and record: what ``remove_version_at`` needs, so the projector looks a version
        up once when it replaces or removes it. The last one found is kept (a decider's lookup, then its event's
        projection)."""
        kept = self._version
        if kept is not None and kept[0] == oid and kept[1] == version_id:
            return kept[2], kept[3]
        order = self.get("vidx", keys.vidx_key(oid, version_id))
        if order is None:
            return None
        raw = self.get("versions", keys.versions_key(oid, order))
        if not raw:
            return None
        rec = unpack(raw)
        self._version = (oid, version_id, order, rec)
        return order, rec

    def remove_version_at(self, oid: int, version_id: str, order: bytes) -> None:
        """Delete a version found by ``version_at`` (its order suffix)."""
        self.delete("versions", keys.versions_key(oid, order))
        self.delete("vidx", keys.vidx_key(oid, version_id))

    def insert_version(self, oid: int, rec: dict[str, Any]) -> None:
        order = keys.version_order(rec["h"], rec.get("o", ""))
        self.put("versions", keys.versions_key(oid, order), pack(rec))
        self.put("vidx", keys.vidx_key(oid, rec["v"]), order)

    def replace_version(self, oid: int, rec: dict[str, Any]) -> None:
        """Rewrite a stored version in place (tags change); its order key stays."""
        order = self.get("vidx", keys.vidx_key(oid, rec["v"]))
        assert order is not None
        self.put("versions", keys.versions_key(oid, order), pack(rec))

    def delete_version(self, oid: int, version_id: str) -> dict[str, Any] | None:
        vkey = keys.vidx_key(oid, version_id)
        order = self.get("vidx", vkey)
        if order is None:
            return None
        raw = self.get("versions", keys.versions_key(oid, order))
        self.delete("versions", keys.versions_key(oid, order))
        self.delete("vidx", vkey)
        return unpack(raw) if raw else None

    # -- blobs --------------------------------------------------------------------------------------------------
    def blob(self, digest: bytes) -> list[Any] | None:
        raw = self.get("blobs", digest)
        return unpack(raw) if raw else None

    def volume_stats(self, name: str) -> dict[str, Any]:
        """A volume's record, the caller's own copy (its values are numbers and flags: a shallow copy is one)."""
        kept = self._volumes
        if kept is not None and name in kept:
            return dict(kept[name])
        raw = self.get("volumes", keys.text_key(name))
        stats = unpack(raw) if raw else {"live": 0, "dead": 0, "sealed": False, "rb": 0}
        if kept is None:
            kept = self._volumes = {}
        kept[name] = dict(stats)
        return stats

    def put_volume_stats(self, name: str, stats: dict[str, Any]) -> None:
        self.put("volumes", keys.text_key(name), pack(stats))  # drops the kept records
        self._volumes = {name: dict(stats)}

    # -- multipart ----------------------------------------------------------------------------------------------
    def upload(self, upload_id: str) -> Upload | None:
        raw = self.get("uploads", keys.upload_key(upload_id))
        return Upload.from_record(unpack(raw)) if raw else None

    def put_upload(self, upload: Upload) -> None:
        self.put("uploads", keys.upload_key(upload.upload_id), pack(upload.to_record()))

    def parts(self, upload_id: str, after: int = 0) -> Iterator[Part]:
        for _, val in self.scan("parts", keys.parts_prefix(upload_id), keys.parts_key(upload_id, after + 1)):
            yield Part.from_record(unpack(val))

    def part(self, upload_id: str, number: int) -> Part | None:
        raw = self.get("parts", keys.parts_key(upload_id, number))
        return Part.from_record(unpack(raw)) if raw else None

    # -- retries: rename tokens, completed uploads ----------------------------------------------------------------
    def rename_token(self, bucket: str, token: str) -> dict[str, Any] | None:
        raw = self.get("rename_tokens", keys.rename_token_key(bucket, token))
        return unpack(raw) if raw else None

    def put_rename_token(self, bucket: str, token: str, src: str, dst: str) -> None:
        self.put("rename_tokens", keys.rename_token_key(bucket, token), pack({"src": src, "dst": dst, "token": token}))

    def completed_upload(self, bucket: str, upload_id: str) -> dict[str, Any] | None:
        raw = self.get("completed_uploads", keys.completed_upload_key(bucket, upload_id))
        return unpack(raw) if raw else None

    def put_completed_upload(self, bucket: str, upload_id: str, result: dict[str, Any]) -> None:
        self.put("completed_uploads", keys.completed_upload_key(bucket, upload_id), pack(result))

    def drop_bucket_records(self, bucket: str) -> None:
        """A deleted bucket's configs, retry records, tombstones and clocks: a re-created bucket of that name starts
        with none (events of the old incarnation are ignored by their ``inc``, so its tombstones can go)."""
        for db in ("bucket_cfg", "rename_tokens", "completed_uploads", "vtombs", "tag_clocks", "cfg_clocks", "ae_keys",
                   "ae_leaves", "lock_clocks"):
            dropped = list(self.scan(db, keys.bucket_prefix(bucket)))
            for key, _ in dropped:
                self.delete(db, key)
            if db == "vtombs" and dropped:
                self.count_tombstones(-len(dropped))

    # -- last-writer-wins bookkeeping (replication.md) ------------------------------------------------------------
    def packed(self, db: str, key: bytes) -> Any:
        """The msgpack value stored at ``key`` in ``db``, or None."""
        raw = self.get(db, key)
        return unpack(raw) if raw is not None else None

    def tombstones(self) -> int:
        """How many version tombstones the views hold (a metric: they are kept until part 2's GC)."""
        raw = self.get("meta", keys.META_TOMBSTONES)
        return from_u64(raw) if raw else 0

    def count_tombstones(self, delta: int) -> None:
        self.put("meta", keys.META_TOMBSTONES, u64(max(0, self.tombstones() + delta)))

    def event_seq(self, origin: str, hlc: int) -> int | None:
        """The local seq of the event ``(hlc, origin)`` if this node holds it."""
        raw = self.get("event_ids", keys.event_id_key(origin, hlc))
        return from_u64(raw) if raw is not None else None

    def record_event(self, origin: str, hlc: int, seq: int) -> None:
        self.put("event_ids", keys.event_id_key(origin, hlc), u64(seq))

    # -- users --------------------------------------------------------------------------------------------------
    def user(self, user_id: str) -> dict[str, Any] | None:
        raw = self.get("users", keys.text_key(user_id))
        return unpack(raw) if raw else None

    def user_id_by_name(self, username: str) -> str | None:
        raw = self.get("user_names", keys.text_key(username))
        return raw.decode() if raw else None

    def credential(self, access_key: str) -> dict[str, Any] | None:
        raw = self.get("credentials", keys.text_key(access_key))
        return unpack(raw) if raw else None


#: The databases whose records ``Tx`` keeps decoded: a write of one through ``put``/``delete`` drops its copies.
_KEPT = frozenset(("buckets", "ns", "versions", "vidx", "volumes"))


def version_from_record(key: str, rec: dict[str, Any]) -> ObjectVersion:
    return ObjectVersion.from_record(key, rec)
