"""Events -> views. Deterministic and idempotent: the same events in the same order give the same views.

``apply(tx, event)`` skips events at or below the views' ``last_seq`` and records the new ``last_seq`` in the
same LMDB transaction as the view changes, so a crash can never leave a view half-updated or an event applied
twice. Handlers never consult the clock or randomness: every value they store comes from the event (times come
from its HLC). The dispatch table is the event catalogue's "views touched" column (docs/architecture/events.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s4.journal import Event, EventType
from s4.journal.hlc import physical_ms

from .model import Bucket, Upload, stamped, version_record
from .views import blobs, keys, namespace, upload_index
from .views.env import pack, unpack
from .views.records import Tx
from .volumes.record import record_bytes

Handler = Callable[[Tx, Event], None]


class ProjectionError(RuntimeError):
    """An event that cannot apply to the current views: the log and views disagree (a bug or corruption)."""


def _event_ms(event: Event) -> int:
    return physical_ms(event.hlc)


def _root(tx: Tx, bucket: str) -> int:
    b = tx.bucket(bucket)
    if b is None:
        raise ProjectionError(f"event for missing bucket {bucket!r}")
    return b.root


# -- blobs --------------------------------------------------------------------------------------------------------
def _count_bad(stats: dict[str, Any], blobs: int, size: int) -> None:
    """Damaged blobs located in a volume (keys absent while 0, so undamaged volumes' records are unchanged)."""
    for key, delta in (("bad_blobs", blobs), ("bad_bytes", size)):
        value = stats.get(key, 0) + delta
        if value:
            stats[key] = value
        else:
            stats.pop(key, None)


def _count_live(stats: dict[str, Any], size: int, sign: int) -> None:
    """A blob of ``size`` data bytes entered (``sign`` 1) or left (-1) a volume. ``rb`` counts the live records'
    whole bytes (header and block table included); a record that leaves turns dead whole: ``dead`` is what
    compaction can reclaim (docs/architecture/volumes.md, "Garbage")."""
    stats["live"] += sign * size
    stats["rb"] = max(0, stats.get("rb", 0) + sign * record_bytes(size))
    if sign < 0:
        stats["dead"] += record_bytes(size)
    _settle_dead(stats)


def _settle_dead(stats: dict[str, Any]) -> None:
    """In a sealed volume (size known) dead bytes are exactly the bytes outside live records."""
    if "size" in stats:
        stats["dead"] = max(0, stats["size"] - stats.get("rb", 0))


def _leave(tx: Tx, rec: list[Any]) -> None:
    """The blob's bytes at its current location stop being live there (freed, moved or repointed)."""
    stats = tx.volume_stats(rec[0])
    _count_live(stats, rec[2], -1)
    if blobs.is_damaged(rec):
        _count_bad(stats, -1, -rec[2])
    tx.put_volume_stats(rec[0], stats)


def _arrive(tx: Tx, rec: list[Any]) -> None:
    stats = tx.volume_stats(rec[0])
    _count_live(stats, rec[2], 1)
    tx.put_volume_stats(rec[0], stats)


def incref(tx: Tx, digest: bytes, locations: dict[bytes, list[Any]]) -> None:
    """One more reference. A blob whose current copy is damaged is repointed to the event's location when that is
    another place not known to be bad: the writer stored the bytes afresh (ingest skips damaged blobs)."""
    rec = tx.blob(digest)
    loc = locations.get(digest)
    if rec is not None:
        if loc is not None and blobs.is_damaged(rec) and [loc[1], loc[2]] not in blobs.damaged_locations(rec):
            _leave(tx, rec)
            rec[0], rec[1] = loc[1], loc[2]
            _arrive(tx, rec)
        rec[3] += 1
    else:
        if loc is None:
            raise ProjectionError(f"blob {digest.hex()} referenced without a location")
        rec = [loc[1], loc[2], loc[3], 1]
        _arrive(tx, rec)
    tx.put("blobs", digest, pack(rec))


def decref(tx: Tx, digest: bytes) -> None:
    rec = tx.blob(digest)
    if rec is None:
        raise ProjectionError(f"blob {digest.hex()} released but not in the index")
    rec[3] -= 1
    if rec[3] > 0:
        tx.put("blobs", digest, pack(rec))
        return
    tx.delete("blobs", digest)
    _leave(tx, rec)


def _locations(payload: dict[str, Any]) -> dict[bytes, list[Any]]:
    return {loc[0]: loc for loc in payload.get("blobs_at", ())}


# -- objects ------------------------------------------------------------------------------------------------------
def _store_version(tx: Tx, event: Event, rec: dict[str, Any]) -> None:
    """Insert a version as the newest of its key (replacing a same-id version, e.g. ``null``)."""
    p = event.payload
    bucket = tx.bucket(p["bucket"])
    if bucket is None:
        raise ProjectionError(f"version for missing bucket {p['bucket']!r}")
    rec = stamped(rec, event.hlc)
    oid, _ = namespace.ensure_object(tx.txn, tx.dbs["ns"], bucket.root, p["key"].encode(), tx.alloc_node)
    before = tx.latest(oid)
    was_live = before is not None and not before.get("dm")
    locations = _locations(p)
    for digest, _size in rec.get("b", ()):
        incref(tx, digest, locations)
    replaced = tx.delete_version(oid, rec["v"])
    if replaced is not None:
        _release(tx, bucket, replaced)
    tx.insert_version(oid, rec)
    bucket.bytes_stored += rec.get("s", 0)
    bucket.object_count += int(not rec.get("dm")) - int(was_live)
    tx.put_bucket(bucket)


def _release(tx: Tx, bucket: Any, rec: dict[str, Any]) -> None:
    for digest, _size in rec.get("b", ()):
        decref(tx, digest)
    bucket.bytes_stored -= rec.get("s", 0)


def apply_object_version_put(tx: Tx, event: Event) -> None:
    _store_version(tx, event, event.payload["version"])


def apply_delete_marker_put(tx: Tx, event: Event) -> None:
    _store_version(tx, event, version_record(event.payload["version_id"], 0, "", delete_marker=True))


def apply_object_version_removed(tx: Tx, event: Event) -> None:
    p = event.payload
    bucket = tx.bucket(p["bucket"])
    if bucket is None:
        raise ProjectionError(f"version removal for missing bucket {p['bucket']!r}")
    key = p["key"].encode()
    oid = namespace.find_object(tx.txn, tx.dbs["ns"], bucket.root, key)
    if oid is None:
        return
    before = tx.latest(oid)
    was_live = before is not None and not before.get("dm")
    removed = tx.delete_version(oid, p["version_id"])
    if removed is None:
        return
    _release(tx, bucket, removed)
    after = tx.latest(oid)
    if after is None:
        namespace.remove_object(tx.txn, tx.dbs["ns"], bucket.root, key)
    bucket.object_count += int(after is not None and not after.get("dm")) - int(was_live)
    tx.put_bucket(bucket)


def apply_object_tags_set(tx: Tx, event: Event) -> None:
    p = event.payload
    oid = namespace.find_object(tx.txn, tx.dbs["ns"], _root(tx, p["bucket"]), p["key"].encode())
    if oid is None:
        return
    rec = tx.version(oid, p["version_id"])
    if rec is None:
        return
    if p["tags"]:
        rec["tg"] = p["tags"]
    else:
        rec.pop("tg", None)
    tx.replace_version(oid, rec)


def _drop_object(tx: Tx, bucket: Bucket, oid: int) -> None:
    """Release every version of an object being overwritten by a rename."""
    before = tx.latest(oid)
    for _, rec in list(tx.versions(oid)):
        tx.delete_version(oid, rec["v"])
        _release(tx, bucket, rec)
    if before is not None and not before.get("dm"):
        bucket.object_count -= 1


def _retarget_uploads(tx: Tx, bucket: Bucket, src: str, dst: str, whole_prefix: bool) -> None:
    """In-flight multipart uploads follow their key to its new name."""
    if whole_prefix:
        ids = [upload_id for _, upload_id in upload_index.under(tx, bucket.root, src.encode())]
    else:
        ids = upload_index.of_key(tx, bucket.root, src.encode())
    for upload_id in ids:
        upload = tx.upload(upload_id)
        if upload is None:
            continue
        upload_index.remove(tx, bucket.root, upload)
        upload.key = dst + upload.key[len(src):]
        upload_index.add(tx, bucket.root, upload)
        tx.put_upload(upload)


def apply_prefix_renamed(tx: Tx, event: Event) -> None:
    p = event.payload
    bucket = tx.bucket(p["bucket"])
    if bucket is None:
        raise ProjectionError(f"rename in missing bucket {p['bucket']!r}")
    src, dst = p["src"].encode(), p["dst"].encode()
    ns = tx.dbs["ns"]
    if src.endswith(b"/"):
        def drop(oid: int) -> None:
            _drop_object(tx, bucket, oid)

        namespace.move_dir(tx.txn, ns, bucket.root, src, dst, tx.alloc_node, on_conflict=drop)
    else:
        oid = namespace.find_object(tx.txn, ns, bucket.root, src)
        if oid is None:
            return
        existing = namespace.find_object(tx.txn, ns, bucket.root, dst)
        if existing is not None:
            _drop_object(tx, bucket, existing)
            namespace.remove_object(tx.txn, ns, bucket.root, dst)
        namespace.remove_object(tx.txn, ns, bucket.root, src)
        namespace.ensure_object(tx.txn, ns, bucket.root, dst, tx.alloc_node, leaf_id=oid)
    tx.put_bucket(bucket)
    _retarget_uploads(tx, bucket, p["src"], p["dst"], src.endswith(b"/"))
    if p.get("client_token"):
        tx.put_rename_token(bucket.name, p["client_token"], p["src"], p["dst"])


# -- buckets ------------------------------------------------------------------------------------------------------
def apply_bucket_created(tx: Tx, event: Event) -> None:
    p = event.payload
    if tx.bucket(p["bucket"]) is not None:
        return
    tx.put_bucket(Bucket(p["bucket"], _event_ms(event), p.get("region", "us-east-1"), "", tx.alloc_node(),
                         p.get("owner", "")))


def apply_bucket_deleted(tx: Tx, event: Event) -> None:
    name = event.payload["bucket"]
    tx.delete("buckets", keys.bucket_key(name))
    tx.drop_bucket_records(name)


def apply_bucket_config_set(tx: Tx, event: Event) -> None:
    p = event.payload
    if p["kind"] == "versioning":
        bucket = tx.bucket(p["bucket"])
        if bucket is None:
            raise ProjectionError(f"config for missing bucket {p['bucket']!r}")
        bucket.versioning = p["value"] or ""
        tx.put_bucket(bucket)
        return
    key = keys.bucket_cfg_key(p["bucket"], p["kind"])
    if p["value"] is None:
        tx.delete("bucket_cfg", key)
    else:
        tx.put("bucket_cfg", key, pack(p["value"]))


# -- multipart ----------------------------------------------------------------------------------------------------
def apply_multipart_created(tx: Tx, event: Event) -> None:
    upload = Upload.from_record(dict(event.payload["upload"], t=_event_ms(event)))
    upload_index.add(tx, _root(tx, upload.bucket), upload)
    tx.put_upload(upload)


def apply_part_stored(tx: Tx, event: Event) -> None:
    p = event.payload
    if tx.upload(p["upload_id"]) is None:
        raise ProjectionError(f"part for missing upload {p['upload_id']}")
    part = dict(p["part"], t=_event_ms(event))
    locations = _locations(p)
    for digest, _size in part["b"]:
        incref(tx, digest, locations)
    old = tx.part(p["upload_id"], part["n"])
    if old is not None:
        for blob in old.blobs:
            decref(tx, blob.hash)
    tx.put("parts", keys.parts_key(p["upload_id"], part["n"]), pack(part))


def _drop_upload(tx: Tx, upload_id: str) -> None:
    upload = tx.upload(upload_id)
    if upload is None:
        return
    for part in list(tx.parts(upload_id)):
        for blob in part.blobs:
            decref(tx, blob.hash)
        tx.delete("parts", keys.parts_key(upload_id, part.part_number))
    tx.delete("uploads", keys.upload_key(upload_id))
    bucket = tx.bucket(upload.bucket)
    if bucket is not None:
        upload_index.remove(tx, bucket.root, upload)


def apply_multipart_completed(tx: Tx, event: Event) -> None:
    p = event.payload
    _store_version(tx, event, p["version"])  # takes its own refs on the parts' blobs first
    _drop_upload(tx, p["upload_id"])
    # Remember the outcome so a retried CompleteMultipartUpload gets the same answer (S3 does this too).
    summary = {k: v for k, v in p["version"].items() if k != "b"}
    tx.put_completed_upload(p["bucket"], p["upload_id"], {
        "bk": p["bucket"], "k": p["key"], "parts": p.get("parts"),
        "version": stamped(summary, event.hlc)})


def apply_multipart_aborted(tx: Tx, event: Event) -> None:
    _drop_upload(tx, event.payload["upload_id"])


# -- users --------------------------------------------------------------------------------------------------------
def apply_user_created(tx: Tx, event: Event) -> None:
    p = event.payload
    rec = {"id": p["user_id"], "username": p["username"], "role": p["role"], "password_hash": p["password_hash"],
           "active": True, "created_ms": _event_ms(event), "updated_ms": _event_ms(event), "epoch": 0}
    tx.put("users", p["user_id"].encode(), pack(rec))
    tx.put("user_names", p["username"].encode(), p["user_id"].encode())


def apply_user_updated(tx: Tx, event: Event) -> None:
    p = event.payload
    rec = tx.user(p["user_id"])
    if rec is None:
        return
    for field in ("role", "password_hash", "active"):
        if field in p:
            rec[field] = p[field]
    if "password_hash" in p or p.get("active") is False:
        rec["epoch"] = rec.get("epoch", 0) + 1  # invalidates tokens issued before
    rec["updated_ms"] = _event_ms(event)
    tx.put("users", p["user_id"].encode(), pack(rec))


def apply_user_deleted(tx: Tx, event: Event) -> None:
    rec = tx.user(event.payload["user_id"])
    if rec is None:
        return
    tx.delete("users", rec["id"].encode())
    tx.delete("user_names", rec["username"].encode())
    for key, val in list(tx.scan("credentials", b"")):
        if unpack(val)["user"] == rec["id"]:
            tx.delete("credentials", key)


def apply_credential_created(tx: Tx, event: Event) -> None:
    """``secret_key`` is ciphertext (engine/keyring.py); the view keeps it encrypted too."""
    p = event.payload
    user = tx.user(p["user_id"])
    if user is None:
        return
    tx.put("credentials", p["access_key"].encode(),
           pack({"user": p["user_id"], "secret": p["secret_key"], "created_ms": _event_ms(event)}))
    user["access_key"] = p["access_key"]  # the user's one key pair, shown in the admin API
    tx.put("users", user["id"].encode(), pack(user))


def apply_credential_deleted(tx: Tx, event: Event) -> None:
    key = event.payload["access_key"]
    raw = tx.get("credentials", key.encode())
    if raw is None:
        return
    tx.delete("credentials", key.encode())
    user = tx.user(unpack(raw)["user"])
    if user is not None and user.get("access_key") == key:
        user["access_key"] = None
        tx.put("users", user["id"].encode(), pack(user))


# -- volumes ------------------------------------------------------------------------------------------------------
def apply_blob_moved(tx: Tx, event: Event) -> None:
    p = event.payload
    rec = tx.blob(p["hash"])
    if rec is None:
        return
    _leave(tx, rec)
    rec[0], rec[1] = p["volume"], p["offset"]
    _arrive(tx, rec)
    tx.put("blobs", p["hash"], pack(rec))


def apply_blob_damaged(tx: Tx, event: Event) -> None:
    """The blob's bytes at ``volume``/``offset`` failed their checksums: remembered on its index record (no write
    deduplicates onto a damaged copy) and counted on the volume while the blob still lives there."""
    p = event.payload
    rec = tx.blob(p["hash"])
    if rec is None:
        return
    if blobs.mark_damaged(rec, p["volume"], p["offset"]):
        stats = tx.volume_stats(rec[0])
        _count_bad(stats, 1, rec[2])
        tx.put_volume_stats(rec[0], stats)
    tx.put("blobs", p["hash"], pack(rec))


def apply_blob_freed(tx: Tx, event: Event) -> None:
    """Compaction dropped the bytes of an unreferenced blob; nothing in the index points at them."""


def apply_volume_sealed(tx: Tx, event: Event) -> None:
    """A sealed volume's size is final: from now on every byte not in a live record counts as dead, which takes
    in the garbage no event ever named (failed or killed uploads, duplicate copies of a race, torn writes)."""
    stats = tx.volume_stats(event.payload["volume"])
    stats["sealed"] = True
    stats["size"] = event.payload["size"]
    _settle_dead(stats)
    tx.put_volume_stats(event.payload["volume"], stats)


def apply_volume_retired(tx: Tx, event: Event) -> None:
    """The record stays as a tombstone: a late write naming the volume must be refused (commands.py)."""
    tx.put_volume_stats(event.payload["volume"], {"live": 0, "dead": 0, "sealed": True, "retired": True})


HANDLERS: dict[EventType, Handler] = {
    EventType.BUCKET_CREATED: apply_bucket_created,
    EventType.BUCKET_DELETED: apply_bucket_deleted,
    EventType.BUCKET_CONFIG_SET: apply_bucket_config_set,
    EventType.OBJECT_VERSION_PUT: apply_object_version_put,
    EventType.DELETE_MARKER_PUT: apply_delete_marker_put,
    EventType.OBJECT_VERSION_REMOVED: apply_object_version_removed,
    EventType.OBJECT_TAGS_SET: apply_object_tags_set,
    EventType.MULTIPART_CREATED: apply_multipart_created,
    EventType.PART_STORED: apply_part_stored,
    EventType.MULTIPART_COMPLETED: apply_multipart_completed,
    EventType.MULTIPART_ABORTED: apply_multipart_aborted,
    EventType.PREFIX_RENAMED: apply_prefix_renamed,
    EventType.USER_CREATED: apply_user_created,
    EventType.USER_UPDATED: apply_user_updated,
    EventType.USER_DELETED: apply_user_deleted,
    EventType.CREDENTIAL_CREATED: apply_credential_created,
    EventType.CREDENTIAL_DELETED: apply_credential_deleted,
    EventType.BLOB_MOVED: apply_blob_moved,
    EventType.BLOB_FREED: apply_blob_freed,
    EventType.BLOB_DAMAGED: apply_blob_damaged,
    EventType.VOLUME_SEALED: apply_volume_sealed,
    EventType.VOLUME_RETIRED: apply_volume_retired,
}


def apply(tx: Tx, event: Event) -> bool:
    """Apply one event if it is new to these views; returns whether it was applied."""
    if event.seq <= tx.last_seq():
        return False
    handler = HANDLERS.get(event.type)
    if handler is None:
        raise ProjectionError(f"no projection for event type {event.type!r} (seq {event.seq})")
    handler(tx, event)
    tx.set_last_seq(event.seq)
    return True
