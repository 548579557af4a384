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
from .views import namespace
from .views.records import Tx


def require_bucket(tx: Tx, name: str) -> Bucket:
    bucket = tx.bucket(name)
    if bucket is None:
        raise S3Error(ErrorCode.NO_SUCH_BUCKET, resource=name, BucketName=name)
    return bucket


def object_id(tx: Tx, bucket: Bucket, key: str) -> int | None:
    return namespace.find_object(tx.txn, tx.dbs["ns"], bucket.root, key.encode())


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
    oid = object_id(tx, b, key)
    latest: dict[str, Any] | None
    if version_id is None:
        rec = tx.latest(oid) if oid is not None else None
        if rec is None:
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key)
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
