"""Typed readers and writers over the named databases: buckets, versions, blobs, uploads, users.

These are the only functions that know the key layouts of those databases (docs/architecture/views.md).
Writers are called by the projector only; readers by the projector, the deciders and the read path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..model import Bucket, ObjectVersion, Part, Upload
from .env import from_u64, pack, u64, unpack

MAX_U64 = (1 << 64) - 1


class Tx:
    """A transaction plus the database handles: the one argument every view function takes."""

    __slots__ = ("txn", "dbs")

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self.txn = txn
        self.dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.dbs[db])

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: str, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[db])

    def scan(self, db: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, from ``start`` (inclusive) on."""
        cur = self.txn.cursor(self.dbs[db])
        ok = cur.set_range(start if start is not None else prefix)
        while ok:
            key = cur.key()
            if not key.startswith(prefix):
                return
            yield key, cur.value()
            ok = cur.next()

    # -- meta ---------------------------------------------------------------------------------------------------
    def last_seq(self) -> int:
        raw = self.get("meta", b"last_seq")
        return from_u64(raw) if raw else 0

    def set_last_seq(self, seq: int) -> None:
        self.put("meta", b"last_seq", u64(seq))

    def alloc_node(self) -> int:
        raw = self.get("meta", b"next_node")
        node = from_u64(raw) if raw else 1
        self.put("meta", b"next_node", u64(node + 1))
        return node

    # -- buckets ------------------------------------------------------------------------------------------------
    def bucket(self, name: str) -> Bucket | None:
        raw = self.get("buckets", name.encode())
        return Bucket.from_record(name, unpack(raw)) if raw else None

    def put_bucket(self, bucket: Bucket) -> None:
        self.put("buckets", bucket.name.encode(), pack(bucket.to_record()))

    def buckets(self) -> list[Bucket]:
        return [Bucket.from_record(k.decode(), unpack(v)) for k, v in self.scan("buckets", b"")]

    def bucket_config(self, bucket: str, kind: str) -> Any:
        raw = self.get("bucket_cfg", f"{bucket}\0{kind}".encode())
        return unpack(raw) if raw is not None else None

    # -- versions -----------------------------------------------------------------------------------------------
    def versions(self, oid: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(db key, record) of every version of an object, newest first."""
        for key, val in self.scan("versions", u64(oid)):
            yield key, unpack(val)

    def latest(self, oid: int) -> dict[str, Any] | None:
        return self.latest_reader()(oid)

    def latest_reader(self) -> Callable[[int], dict[str, Any] | None]:
        """``latest`` for many objects in a row (a listing page): one cursor, repositioned per object."""
        cur = self.txn.cursor(self.dbs["versions"])

        def latest(oid: int) -> dict[str, Any] | None:
            prefix = u64(oid)
            if not cur.set_range(prefix) or cur.key()[:8] != prefix:
                return None
            return unpack(cur.value())  # type: ignore[no-any-return]

        return latest

    def version(self, oid: int, version_id: str) -> dict[str, Any] | None:
        order = self.get("vidx", u64(oid) + version_id.encode())
        if order is None:
            return None
        raw = self.get("versions", u64(oid) + order)
        return unpack(raw) if raw else None

    def insert_version(self, oid: int, rec: dict[str, Any]) -> None:
        order = u64(MAX_U64 - rec["h"])
        self.put("versions", u64(oid) + order, pack(rec))
        self.put("vidx", u64(oid) + rec["v"].encode(), order)

    def replace_version(self, oid: int, rec: dict[str, Any]) -> None:
        """Rewrite a stored version in place (tags change); its order key stays."""
        order = self.get("vidx", u64(oid) + rec["v"].encode())
        assert order is not None
        self.put("versions", u64(oid) + order, pack(rec))

    def delete_version(self, oid: int, version_id: str) -> dict[str, Any] | None:
        vkey = u64(oid) + version_id.encode()
        order = self.get("vidx", vkey)
        if order is None:
            return None
        raw = self.get("versions", u64(oid) + order)
        self.delete("versions", u64(oid) + order)
        self.delete("vidx", vkey)
        return unpack(raw) if raw else None

    # -- blobs --------------------------------------------------------------------------------------------------
    def blob(self, digest: bytes) -> list[Any] | None:
        raw = self.get("blobs", digest)
        return unpack(raw) if raw else None

    def volume_stats(self, name: str) -> dict[str, Any]:
        raw = self.get("volumes", name.encode())
        return unpack(raw) if raw else {"live": 0, "dead": 0, "sealed": False, "rb": 0}

    def put_volume_stats(self, name: str, stats: dict[str, Any]) -> None:
        self.put("volumes", name.encode(), pack(stats))

    # -- multipart ----------------------------------------------------------------------------------------------
    def upload(self, upload_id: str) -> Upload | None:
        raw = self.get("uploads", upload_id.encode())
        return Upload.from_record(unpack(raw)) if raw else None

    def parts(self, upload_id: str, after: int = 0) -> Iterator[Part]:
        prefix = upload_id.encode() + b"\0"
        for _, val in self.scan("parts", prefix, prefix + (after + 1).to_bytes(4, "big")):
            yield Part.from_record(unpack(val))

    def part(self, upload_id: str, number: int) -> Part | None:
        raw = self.get("parts", upload_id.encode() + b"\0" + number.to_bytes(4, "big"))
        return Part.from_record(unpack(raw)) if raw else None

    # -- users --------------------------------------------------------------------------------------------------
    def user(self, user_id: str) -> dict[str, Any] | None:
        raw = self.get("users", user_id.encode())
        return unpack(raw) if raw else None

    def user_id_by_name(self, username: str) -> str | None:
        raw = self.get("user_names", username.encode())
        return raw.decode() if raw else None

    def credential(self, access_key: str) -> dict[str, Any] | None:
        raw = self.get("credentials", access_key.encode())
        return unpack(raw) if raw else None


def version_from_record(key: str, rec: dict[str, Any]) -> ObjectVersion:
    return ObjectVersion.from_record(key, rec)
