"""Lookups over the views: a bucket, a key's object id and versions, an upload, where a version's chunks live.

Pure functions of a transaction (``Tx``): they read records and raise S3's errors for what is missing, and never
emit events or touch volumes. The read path (engine.py, listing callers, the API through the Engine) runs them in
a read transaction; the deciders (commands.py) run the same ones inside their write transaction, so a read and
a write decide "missing" the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

from .errors import ErrorCode, S3Error
from .model import NULL_VERSION, BlobLocation, Bucket, ObjectVersion, Upload
from .views import keys, namespace
from .views.env import unpack
from .views.records import Tx


def require_bucket(tx: Tx, name: str) -> Bucket:
    bucket = tx.bucket(name)
    if bucket is None:
        raise S3Error(ErrorCode.NO_SUCH_BUCKET, resource=name, BucketName=name)
    return bucket


def object_id(tx: Tx, bucket: Bucket, key: str) -> int | None:
    return tx.find_object(bucket.root, key.encode())


def current_version(tx: Tx, bucket: Bucket, key: str) -> dict[str, Any] | None:
    """The latest version of ``key`` unless it is missing or a delete marker."""
    oid = object_id(tx, bucket, key)
    rec = tx.latest(oid) if oid is not None else None
    return None if rec is None or rec.get("dm") else rec


def require_upload(tx: Tx, bucket: str, key: str, upload_id: str) -> Upload:
    upload = tx.upload(upload_id)
    if upload is None or upload.bucket != bucket or upload.key != key:
        raise S3Error(ErrorCode.NO_SUCH_UPLOAD, resource=upload_id, UploadId=upload_id)
    return upload


def check_version_id(version_id: str) -> None:
    """S3 answers InvalidArgument for a version id it could never have issued (``null`` or a UUID here)."""
    if version_id == NULL_VERSION:
        return
    try:
        uuid.UUID(version_id)
    except ValueError:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=version_id) from None


def version_for_read(tx: Tx, b: Bucket, key: str, version_id: str | None) -> ObjectVersion:
    """The version a GET/HEAD serves, with S3's errors for missing keys, versions and delete markers."""
    # The namespace directly, not ``Tx.find_object``: nothing in a read's transaction asks for the key again, so
    # keeping its id would only add a call to every GET and HEAD.
    oid = namespace.find_object(tx.txn, tx.dbs["ns"], b.root, key.encode())
    latest: dict[str, Any] | None
    if version_id is None:
        rec = tx.latest(oid) if oid is not None else None
        if rec is None:  # "false" said outright (RGW does; s3-tests check it): no delete marker hides a version
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key, headers={"x-amz-delete-marker": "false"})
        if rec.get("dm"):
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key, headers={
                "x-amz-delete-marker": "true", "x-amz-version-id": rec["v"]})
        latest = rec
    else:
        rec = tx.version(oid, version_id) if oid is not None else None
        if rec is None:
            code = ErrorCode.NO_SUCH_VERSION if oid is not None else ErrorCode.NO_SUCH_KEY
            check_version_id(version_id)
            raise S3Error(code, resource=key, Key=key, VersionId=version_id)
        if rec.get("dm"):
            raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={
                "x-amz-delete-marker": "true", "x-amz-version-id": rec["v"], "allow": "DELETE"})
        latest = tx.latest(oid) if oid is not None else None
    version = ObjectVersion.from_record(key, rec)
    version.is_latest = latest is not None and latest["v"] == rec["v"]
    return version


def locations(tx: Tx, version: ObjectVersion) -> list[BlobLocation]:
    """Where each chunk of ``version`` lives now (a chunk missing from the index is an internal error)."""
    out = []
    for ref in version.blobs:
        rec = tx.blob(ref.hash)
        if rec is None:
            raise S3Error(ErrorCode.INTERNAL_ERROR, f"blob {ref.hash.hex()} of {version.key} is missing")
        out.append(BlobLocation(ref.hash, rec[0], rec[1], rec[2]))
    return out


# -- replicated state, for quorum reads (docs/architecture/replication.md, "Quorum reads and listing merge") --------
# Raw records with their (hlc, origin), as the projection keeps them, so a coordinator can merge R replicas' answers
# by the projector's own rules. Plain msgpack-able dicts: the cluster layer ships them as they are.

def bucket_life(tx: Tx, name: str) -> dict[str, Any]:
    """``{i: incarnation [hlc, origin] or None (no bucket here), bt: newest deleted incarnation or None}``."""
    bucket = tx.bucket(name)
    return {"i": bucket.incarnation if bucket is not None else None,
            "bt": tx.packed("bucket_tombs", keys.bucket_key(name))}


def key_state_at(tx: Tx, bucket: str, key: str, oid: int | None) -> dict[str, Any]:
    """One key's versions (newest first, with ``h``/``o``), version tombstones ``vt`` {version id: [hlc, origin]},
    tag clocks ``tc`` {version id: {h, o, tg}} and lock clocks ``lkc`` {version id: {h, o, k, r?, c?, g?}}; ``oid`` is
    the key's object id here (None: no leaf)."""
    state: dict[str, Any] = {"k": key, "vs": [rec for _, rec in tx.versions(oid)] if oid is not None else [],
                             "vt": {}, "tc": {}, "lkc": {}}
    prefix = keys.object_version_key(bucket, key, "")
    for _, val in tx.scan("vtombs", prefix):
        rec = unpack(val)
        state["vt"][rec["v"]] = [rec["h"], rec["o"]]
    for raw, val in tx.scan("tag_clocks", prefix):
        state["tc"][keys.decode_object_version_key(raw)[2]] = unpack(val)
    for raw, val in tx.scan("lock_clocks", prefix):
        state["lkc"][keys.decode_object_version_key(raw)[2]] = unpack(val)
    return state


def key_state(tx: Tx, bucket: str, key: str) -> dict[str, Any]:
    """``key_state_at`` plus the bucket's life (``bucket_life``) and its versioning clock ``vc`` ([hlc, origin] of
    the newest versioning change, or None): everything a replica holds that a write of one key is decided on."""
    life = bucket_life(tx, bucket)
    b = tx.bucket(bucket)
    oid = object_id(tx, b, key) if b is not None else None
    return {**life, "vc": tx.packed("cfg_clocks", keys.bucket_cfg_key(bucket, "versioning")),
            **key_state_at(tx, bucket, key, oid)}


def upload_state(tx: Tx, upload_id: str) -> dict[str, Any]:
    """``{u: upload record or None, ps: {part number: part record with h/o}, end: {h, o, st} or None}``."""
    raw = tx.get("uploads", keys.upload_key(upload_id))
    parts = {keys.decode_parts_key(k)[1]: unpack(v) for k, v in tx.scan("parts", keys.parts_prefix(upload_id))}
    return {"id": upload_id, "u": unpack(raw) if raw is not None else None, "ps": parts,
            "end": tx.packed("upload_ends", keys.upload_key(upload_id))}


def bucket_state(tx: Tx, name: str) -> dict[str, Any]:
    """The bucket record (without its node-local root), its life, and every config with its clock
    ``cfg`` {kind: [value or None, [hlc, origin] or None]} (versioning lives in the record, clocked here too)."""
    bucket = tx.bucket(name)
    rec = bucket.to_record() if bucket is not None else None
    if rec is not None:
        rec.pop("root")
    cfg: dict[str, list[Any]] = {}
    for raw, val in tx.scan("bucket_cfg", keys.bucket_prefix(name)):
        cfg[keys.decode_bucket_cfg_key(raw)[1]] = [unpack(val), None]
    for raw, val in tx.scan("cfg_clocks", keys.bucket_prefix(name)):
        cfg.setdefault(keys.decode_bucket_cfg_key(raw)[1], [None, None])[1] = unpack(val)
    if "versioning" in cfg and rec is not None:
        cfg["versioning"][0] = rec["v"] or None
    return {**bucket_life(tx, name), "b": rec, "cfg": cfg}
