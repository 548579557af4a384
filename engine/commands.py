"""Deciders: validate a command against the current views, then emit the events that record it.

Each runs on the sequencer thread inside the batch's write transaction (see sequencer.py), so checks and the
resulting events are atomic with respect to every other writer: a conditional PUT, a bucket delete racing a PUT,
or two completions of one upload cannot interleave. Deciders never touch volumes or the clock; anything random
(version ids) is chosen here and stored in the event, so replay is deterministic. The lookups they share with
the read path (a bucket, a key's versions, an upload) live in reads.py.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from s4.journal import EventType

from . import iam, imports, kms_commands, object_lock, tombstones
from .checksums import multipart_checksums
from .conditions import DeleteConditions, Preconditions
from .errors import ErrorCode, S3Error
from .model import NULL_VERSION, Bucket, stamped, version_record
from .policy.principals import DEFAULT_ACCOUNT_ID
from .reads import check_version_id, current_version, object_id, require_bucket, require_upload
from .sequencer import Decider, Decision
from .views import namespace, upload_index
from .views.blobs import damaged_locations, is_damaged
from .views.records import Tx

MIN_PART_BYTES = 5 * 1024 * 1024


def check_write_conditions(tx: Tx, bucket: Bucket, key: str, args: dict[str, Any]) -> None:
    """``If-None-Match: *`` and ``If-Match: etag`` on writes, evaluated atomically with the write."""
    if_none, if_match = args.get("if_none_match"), args.get("if_match")
    if not if_none and not if_match:
        return
    current = current_version(tx, bucket, key)
    Preconditions(if_match, if_none).check(current["e"] if current else None, current["t"] if current else 0,
                                           not_modified=ErrorCode.PRECONDITION_FAILED)


def new_version_id(bucket: Bucket) -> str:
    return str(uuid.uuid4()) if bucket.versioning == "Enabled" else NULL_VERSION


# -- buckets ------------------------------------------------------------------------------------------------------
def create_bucket(d: Decision, args: dict[str, Any]) -> None:
    """CreateBucket. In a cluster the pool's name register decided first (engine/bucket_names.py) and ``ri`` is the
    incarnation it granted: a bucket this node still holds is then an older life whose delete has not arrived here
    (the register only grants a later incarnation after that delete was committed), which the new life replaces
    (projector.py ``apply_bucket_created``), unless the register grants its first incarnation: then the bucket
    predates the register, and is kept."""
    existing = d.tx.bucket(args["bucket"])
    registered = args.get("ri") or 0
    if existing is not None and registered <= 1:
        if (existing.account or DEFAULT_ACCOUNT_ID) != (args.get("account") or DEFAULT_ACCOUNT_ID):
            raise S3Error(ErrorCode.BUCKET_ALREADY_EXISTS, resource=args["bucket"], BucketName=args["bucket"])
        raise S3Error(ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU, resource=args["bucket"], BucketName=args["bucket"])
    payload = {"bucket": args["bucket"], "region": args["region"], "owner": d.actor}
    if args.get("account") and args["account"] != DEFAULT_ACCOUNT_ID:  # the owning account (engine/accounts.py)
        payload["account"], payload["account_name"] = args["account"], args["account_name"]
    if registered:
        payload["ri"] = registered  # which life of the name the register granted (recorded in the journal)
    d.emit(EventType.BUCKET_CREATED, payload)
    if args.get("object_lock"):  # x-amz-bucket-object-lock-enabled: versioning on for good, in the same batch
        for kind, value in (("versioning", "Enabled"), (object_lock.CONFIG_KIND, {"enabled": True})):
            d.emit(EventType.BUCKET_CONFIG_SET, {"bucket": args["bucket"], "kind": kind, "value": value})


def delete_bucket(d: Decision, args: dict[str, Any]) -> None:
    """DeleteBucket: refused while any key or version exists; in-flight multipart uploads are aborted with it
    (as S3 does), so their parts' space is released."""
    bucket = require_bucket(d.tx, args["bucket"])
    if namespace.has_children(d.tx.txn, d.tx.dbs["ns"], bucket.root):
        raise S3Error(ErrorCode.BUCKET_NOT_EMPTY, resource=bucket.name, BucketName=bucket.name)
    for _, upload_id in list(upload_index.walk(d.tx, bucket.root, b"", True)):
        d.emit(EventType.MULTIPART_ABORTED, {"bucket": bucket.name, "upload_id": upload_id})
    d.emit(EventType.BUCKET_DELETED, {"bucket": bucket.name})


def set_bucket_config(d: Decision, args: dict[str, Any]) -> None:
    bucket = require_bucket(d.tx, args["bucket"])
    if args["kind"] == "versioning" and args["value"] == "Suspended" and not bucket.versioning:
        pass  # AWS accepts suspending a never-versioned bucket; it becomes Suspended
    lock = d.tx.bucket_config(bucket.name, object_lock.CONFIG_KIND)
    if args["kind"] == "versioning" and args["value"] != "Enabled" and object_lock.enabled(lock):
        raise S3Error(ErrorCode.INVALID_BUCKET_STATE, "An Object Lock configuration is present on this bucket, so "
                      "the versioning state cannot be changed.", BucketName=bucket.name)
    if args["kind"] == object_lock.CONFIG_KIND:
        if not args["value"] or not args["value"].get("enabled"):
            raise S3Error(ErrorCode.MALFORMED_XML)  # Object Lock cannot be turned off once on
        if not object_lock.enabled(lock) and bucket.versioning != "Enabled":
            raise S3Error(ErrorCode.INVALID_BUCKET_STATE, "Versioning must be 'Enabled' on the bucket to apply a "
                          "Object Lock configuration", BucketName=bucket.name)
        object_lock.validate_rule(args["value"].get("rule"))
    d.emit(EventType.BUCKET_CONFIG_SET, {"bucket": bucket.name, "kind": args["kind"], "value": args["value"]})


# -- objects ------------------------------------------------------------------------------------------------------
def check_locations(tx: Tx, blobs_at: list[list[Any]]) -> None:
    """Refuse a write whose new blob would point into a volume compaction has retired (its file is gone), or
    that names a location of its blob known to be damaged.

    Only possible in narrow races: a chunk deduplicated against a blob that was then freed and its volume
    compacted, or found damaged, before this command ran. The client retries (503) and the retry stores the
    bytes afresh.
    """
    for loc in blobs_at:
        rec = tx.blob(loc[0])
        if rec is None and tx.volume_stats(loc[1]).get("retired"):
            raise S3Error(ErrorCode.SLOW_DOWN, "A stored chunk moved during the upload; please retry.")
        if rec is not None and [loc[1], loc[2]] in damaged_locations(rec):
            # Deduplicated onto a copy found damaged since: the retry stores the bytes afresh (docs/dedup.md).
            raise S3Error(ErrorCode.SLOW_DOWN, "A stored chunk was found damaged during the upload; please retry.")


def put_object(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    bucket = require_bucket(d.tx, args["bucket"])
    check_locations(d.tx, args["blobs_at"])
    check_write_conditions(d.tx, bucket, args["key"], args)
    prior = imports.check(d, bucket, args["key"], imports.of(args["version"]))
    if prior is not None:
        return prior  # this source version was imported already (engine/imports.py): nothing is written again
    version = dict(args["version"], v=new_version_id(bucket))
    version.update(_new_version_lock(d, bucket, args["key"], args.get("lock")))
    payload = {"bucket": bucket.name, "key": args["key"], "version": version, "blobs_at": args["blobs_at"],
               "written": args.get("written", [])}
    if args.get("s3op"):  # CopyObject / PostObject: the notification's event name (engine/notify/messages.py)
        payload["s3op"] = args["s3op"]
    event = d.emit(EventType.OBJECT_VERSION_PUT, payload, bucket)
    return stamped(version, event.hlc)


def _new_version_lock(d: Decision, bucket: Bucket, key: str, asked: dict[str, Any] | None) -> dict[str, Any]:
    """The lock a new version starts with: what the request asked (``x-amz-object-lock-*``), else the bucket's
    default retention; InvalidRequest when the bucket has no Object Lock. A version that would replace a locked
    one in place (the ``null`` version of a bucket not versioning) is refused (engine/object_lock.py)."""
    config = d.tx.bucket_config(bucket.name, object_lock.CONFIG_KIND)
    if not object_lock.enabled(config):
        if asked:
            raise S3Error(ErrorCode.INVALID_REQUEST, object_lock.MISSING_CONFIG)
        return {}
    now = d.now_ms()
    if bucket.versioning != "Enabled":  # defensive: an Object Lock bucket cannot stop versioning
        oid = object_id(d.tx, bucket, key)
        replaced = d.tx.version(oid, NULL_VERSION) if oid is not None else None
        if replaced is not None:
            object_lock.check_removable(replaced, now, False)
    lock = {k: v for k, v in (asked or {}).items() if v}
    if lock.get("lk"):
        object_lock.check_new_retention(lock["lk"], now)
    else:  # a legal hold alone still gets the bucket's default retention
        retention = object_lock.default_lock(config, now)
        if retention:
            lock["lk"] = retention
    return lock


def delete_object(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    """DeleteObject semantics for every versioning state; returns what the response headers report. Conditions
    (``cond``, a DeleteConditions record) are checked here, against the version the delete acts on. Removing a
    version under Object Lock is AccessDenied (a GOVERNANCE retention yields to ``bypass``, the caller's permitted
    x-amz-bypass-governance-retention); a delete marker is always added, as S3 does."""
    bucket = require_bucket(d.tx, args["bucket"])
    key, version_id = args["key"], args.get("version_id")
    oid = object_id(d.tx, bucket, key)
    conditions = DeleteConditions.from_record(args.get("cond"))
    if version_id is not None:
        check_version_id(version_id)
        rec = d.tx.version(oid, version_id) if oid is not None else None
        if rec is None:
            return {"version_id": version_id, "delete_marker": False}
        conditions.check(rec)
        if "lk" in rec or "lh" in rec:
            object_lock.check_removable(rec, d.now_ms(), bool(args.get("bypass")))
        d.emit(EventType.OBJECT_VERSION_REMOVED, {"bucket": bucket.name, "key": key, "version_id": version_id}, bucket)
        return {"version_id": version_id, "delete_marker": bool(rec.get("dm"))}
    if conditions:
        conditions.check(_delete_target(d.tx, oid))
    if not bucket.versioning:
        null = d.tx.version(oid, NULL_VERSION) if oid is not None else None
        if null is not None:
            if "lk" in null or "lh" in null:
                object_lock.check_removable(null, d.now_ms(), bool(args.get("bypass")))
            d.emit(EventType.OBJECT_VERSION_REMOVED, {"bucket": bucket.name, "key": key,
                                                      "version_id": NULL_VERSION}, bucket)
        return {"version_id": None, "delete_marker": False}
    imported = args.get("import") or {}
    prior = imports.check(d, bucket, key, imported)
    if prior is not None:  # an imported delete marker already here (engine/imports.py)
        return {"version_id": prior["v"], "delete_marker": bool(prior.get("dm"))}
    marker_id = new_version_id(bucket)
    d.emit(EventType.DELETE_MARKER_PUT, {"bucket": bucket.name, "key": key, "version_id": marker_id, **imported},
           bucket)
    return {"version_id": marker_id, "delete_marker": True}


def _delete_target(tx: Tx, oid: int | None) -> dict[str, Any] | None:
    """What a DeleteObject without a version id is conditioned on: the latest version, a delete marker included,
    unless the key holds no object data at all (only delete markers, or nothing): then the object does not exist
    and the delete's conditions pass, as for a missing key (S3's 204 for an absent object)."""
    if oid is None:
        return None
    latest = tx.latest(oid)
    if latest is None or not latest.get("dm"):
        return latest
    return latest if any(not rec.get("dm") for _, rec in tx.versions(oid)) else None


def set_object_tags(d: Decision, args: dict[str, Any]) -> str:
    bucket = require_bucket(d.tx, args["bucket"])
    oid = object_id(d.tx, bucket, args["key"])
    rec = None
    if oid is not None:
        rec = d.tx.version(oid, args["version_id"]) if args.get("version_id") else d.tx.latest(oid)
    if rec is None or (rec.get("dm") and not args.get("version_id")):
        raise S3Error(ErrorCode.NO_SUCH_KEY, resource=args["key"], Key=args["key"])
    if rec.get("dm"):
        raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={"x-amz-delete-marker": "true"})
    payload = {"bucket": bucket.name, "key": args["key"], "version_id": rec["v"], "tags": args["tags"]}
    if rec.get("acl"):  # the event carries the version's whole mutable state: last writer wins for both
        payload["acl"] = rec["acl"]
    d.emit(EventType.OBJECT_TAGS_SET, payload)
    return str(rec["v"])


def set_object_acl(d: Decision, args: dict[str, Any]) -> str:
    """PutObjectAcl: an ``object.tags_set`` event carrying the version's tags unchanged and its new ``acl``
    (None: the bucket owner's private ACL), so the ACL replicates, merges and anti-entropies with the tags."""
    bucket = require_bucket(d.tx, args["bucket"])
    oid = object_id(d.tx, bucket, args["key"])
    rec = None
    if oid is not None:
        rec = d.tx.version(oid, args["version_id"]) if args.get("version_id") else d.tx.latest(oid)
    if rec is None or (rec.get("dm") and not args.get("version_id")):
        raise S3Error(ErrorCode.NO_SUCH_KEY, resource=args["key"], Key=args["key"])
    if rec.get("dm"):
        raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={"x-amz-delete-marker": "true"})
    d.emit(EventType.OBJECT_TAGS_SET, {"bucket": bucket.name, "key": args["key"], "version_id": rec["v"],
                                       "tags": rec.get("tg") or {}, "acl": args["acl"],
                                       "s3op": "PutObjectAcl"})  # not a tagging change (engine/notify)
    return str(rec["v"])


def rename(d: Decision, args: dict[str, Any]) -> None:
    """RenameObject: one key, or every key under a prefix (both names end in '/'), as one event.

    Semantics (docs/architecture/rename.md): a prefix rename refuses a destination that holds objects unless
    ``merge``; a key rename overwrites an existing destination in an unversioned bucket and refuses it in a
    versioned one (its history would be lost); version histories and in-flight uploads move with their keys.
    """
    bucket = require_bucket(d.tx, args["bucket"])
    src, dst = args["src"], args["dst"]
    token = args.get("client_token")
    if token:
        prior = d.tx.rename_token(bucket.name, token)
        if prior is not None:
            if (prior["src"], prior["dst"]) == (src, dst):
                return  # a retry of a rename that already happened
            raise S3Error(ErrorCode.IDEMPOTENCY_PARAMETER_MISMATCH, ClientToken=token)
    if src.endswith("/") != dst.endswith("/"):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Source and destination must both be prefixes (end in '/') "
                      "or both be keys", ArgumentName="x-amz-rename-source", ArgumentValue=src)
    if src == dst:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The source and destination of a rename are the same.")
    if object_lock.enabled(d.tx.bucket_config(bucket.name, object_lock.CONFIG_KIND)):
        raise S3Error(ErrorCode.INVALID_REQUEST, "Rename is not allowed in a bucket with Object Lock: it would "
                      "move locked versions.")
    src_cond = Preconditions.from_record(args.get("src_cond"))
    dst_cond = Preconditions.from_record(args.get("dst_cond"))
    if src.endswith("/"):
        _check_prefix_rename(d.tx, bucket, src, dst, src_cond, dst_cond, bool(args.get("merge")))
    else:
        _check_key_rename(d.tx, bucket, src, dst, src_cond, dst_cond)
    d.emit(EventType.PREFIX_RENAMED, {"bucket": bucket.name, "src": src, "dst": dst,
                                      "merge": bool(args.get("merge")), "client_token": token})


def _check_prefix_rename(tx: Tx, bucket: Bucket, src: str, dst: str, src_cond: Preconditions,
                         dst_cond: Preconditions, merge: bool) -> None:
    if src_cond or (dst_cond and dst_cond != Preconditions(if_none_match="*")):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Only 'If-None-Match: *' applies to a prefix rename.")
    if dst.startswith(src):
        raise S3Error(ErrorCode.INVALID_REQUEST, f"Cannot rename prefix {src} into its own subtree {dst}.")
    ns = tx.dbs["ns"]
    dirs, _ = namespace.split_key(src.encode())
    if namespace.find_dir(tx.txn, ns, bucket.root, dirs) is None:
        raise S3Error(ErrorCode.NO_SUCH_KEY, f"No objects under prefix {src}.", resource=src, Key=src)
    dst_dirs, _ = namespace.split_key(dst.encode())
    if namespace.find_dir(tx.txn, ns, bucket.root, dst_dirs) is not None and (not merge or dst_cond):
        raise S3Error(ErrorCode.DESTINATION_EXISTS, f"Destination prefix {dst} already holds objects; delete them "
                      "or ask for a merge (x-amz-s4-rename-merge: true).", Key=dst)


def _check_key_rename(tx: Tx, bucket: Bucket, src: str, dst: str, src_cond: Preconditions,
                      dst_cond: Preconditions) -> None:
    source = current_version(tx, bucket, src)
    if source is None:
        raise S3Error(ErrorCode.NO_SUCH_KEY, resource=src, Key=src)
    src_cond.check(source["e"], source["t"], not_modified=ErrorCode.PRECONDITION_FAILED)
    dst_oid = object_id(tx, bucket, dst)
    target = current_version(tx, bucket, dst)
    dst_cond.check(target["e"] if target else None, target["t"] if target else 0,
                   not_modified=ErrorCode.PRECONDITION_FAILED)
    if dst_oid is not None and bucket.versioning:
        raise S3Error(ErrorCode.DESTINATION_EXISTS, f"Destination key {dst} has versions in this versioned bucket; "
                      "delete them first so no history is lost.", Key=dst)


def set_object_lock(d: Decision, args: dict[str, Any]) -> str:
    """PutObjectRetention (``retention``: ``{"m", "u"}`` or None to remove) or PutObjectLegalHold (``legal_hold``):
    one ``object.lock_set`` event naming the field it changes, after engine/object_lock.py's rules."""
    bucket = require_bucket(d.tx, args["bucket"])
    if not object_lock.enabled(d.tx.bucket_config(bucket.name, object_lock.CONFIG_KIND)):
        raise S3Error(ErrorCode.INVALID_REQUEST, object_lock.MISSING_CONFIG)
    rec = _lock_target(d.tx, bucket, args["key"], args.get("version_id"))
    lock = {k: rec[k] for k in ("lk", "lh") if k in rec}
    now = d.now_ms()
    if "retention" in args:
        object_lock.check_retention_change(rec.get("lk"), args["retention"], now, bool(args.get("bypass")))
        object_lock.check_new_retention(args["retention"], now)
        lock["lk"] = args["retention"]
    if "legal_hold" in args:
        lock["lh"] = bool(args["legal_hold"])
    payload = {"bucket": bucket.name, "key": args["key"], "version_id": rec["v"], "lk": lock.get("lk")}
    if "lh" in lock:
        payload["lh"] = bool(lock["lh"])
    # the field this request changes: a replica joins only that one (object-lock.md, "Concurrent lock changes");
    # the payload still carries the whole state as decided, which is what a peer of an older release applies
    payload["f"] = object_lock.RETENTION if "retention" in args else object_lock.LEGAL_HOLD
    d.emit(EventType.OBJECT_LOCK_SET, payload, bucket)
    return str(rec["v"])


def _lock_target(tx: Tx, bucket: Bucket, key: str, version_id: str | None) -> dict[str, Any]:
    """The version a retention or legal hold request names (the latest without a version id)."""
    oid = object_id(tx, bucket, key)
    if version_id is not None:
        check_version_id(version_id)
    rec = None
    if oid is not None:
        rec = tx.version(oid, version_id) if version_id is not None else tx.latest(oid)
    if rec is None:
        if version_id is not None and oid is not None:
            raise S3Error(ErrorCode.NO_SUCH_VERSION, resource=key, Key=key, VersionId=version_id)
        raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key)
    if rec.get("dm"):
        raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={"x-amz-delete-marker": "true"})
    return rec


# -- multipart ----------------------------------------------------------------------------------------------------
def create_multipart(d: Decision, args: dict[str, Any]) -> str:
    bucket = require_bucket(d.tx, args["bucket"])
    if args["upload"].get("lock"):  # refused now rather than at completion, as S3 does
        if not object_lock.enabled(d.tx.bucket_config(bucket.name, object_lock.CONFIG_KIND)):
            raise S3Error(ErrorCode.INVALID_REQUEST, object_lock.MISSING_CONFIG)
        object_lock.check_new_retention(args["upload"]["lock"].get("lk"), d.now_ms())
    upload = dict(args["upload"], u=uuid.uuid4().hex + uuid.uuid4().hex[:8], bk=bucket.name, o=d.actor)
    d.emit(EventType.MULTIPART_CREATED, {"bucket": bucket.name, "key": upload["k"], "upload": upload})
    return str(upload["u"])


def store_part(d: Decision, args: dict[str, Any]) -> None:
    require_bucket(d.tx, args["bucket"])
    require_upload(d.tx, args["bucket"], args["key"], args["upload_id"])
    check_locations(d.tx, args["blobs_at"])
    d.emit(EventType.PART_STORED, {"bucket": args["bucket"], "upload_id": args["upload_id"], "part": args["part"],
                                   "blobs_at": args["blobs_at"], "written": args.get("written", [])})


def complete_multipart(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    """Check the client's part list against the stored parts and assemble the object from their blobs."""
    bucket = require_bucket(d.tx, args["bucket"])
    result = d.tx.completed_upload(bucket.name, args["upload_id"])
    if result is not None and d.tx.upload(args["upload_id"]) is None:
        # a retried completion: S3 answers with the original result
        if result.get("k") == args["key"] and result.get("parts") == args["parts"]:
            return dict(result["version"], part_checksums=[])
    upload = require_upload(d.tx, bucket.name, args["key"], args["upload_id"])
    check_write_conditions(d.tx, bucket, args["key"], args)
    imported = args.get("import") or {}
    prior = imports.check(d, bucket, args["key"], imported)
    if prior is not None:  # this source version was imported already: the upload that resent it ends unused
        d.emit(EventType.MULTIPART_ABORTED, {"bucket": bucket.name, "upload_id": upload.upload_id})
        return dict(prior, part_checksums=[])
    listed: list[list[Any]] = args["parts"]
    numbers = [n for n, _ in listed]
    if numbers != sorted(numbers):
        raise S3Error(ErrorCode.INVALID_PART_ORDER, UploadId=upload.upload_id)
    # A part number listed more than once (a client that re-sent a part while its first copy was still uploading
    # lists both answers): the last entry names the copy it means, which must be the stored one (the last to finish).
    claims: list[dict[str, str]] = args.get("part_claims") or [{} for _ in listed]
    kept = [i for i, after in enumerate([*numbers[1:], None]) if listed[i][0] != after]
    wanted = [listed[i] for i in kept]
    md5s: list[bytes] = []
    blobs: list[Any] = []
    sizes: list[int] = []
    part_checksums: list[Any] = []
    prefixes: list[Any] = []
    for index, (number, etag) in enumerate(wanted):
        part = d.tx.part(upload.upload_id, number)
        if part is None or part.etag != etag.strip('"') or bool(upload.encryption) != bool(part.encryption):
            raise S3Error(ErrorCode.INVALID_PART, UploadId=upload.upload_id, PartNumber=str(number),
                          ETag=etag)
        if part.size < args.get("min_part_bytes", MIN_PART_BYTES) and index < len(wanted) - 1:
            raise S3Error(ErrorCode.ENTITY_TOO_SMALL, ProposedSize=str(part.size),
                          MinSizeAllowed=str(MIN_PART_BYTES), PartNumber=str(number), ETag=part.etag)
        md5s.append(bytes.fromhex(part.etag))
        blobs.extend([b.hash, b.size] for b in part.blobs)
        sizes.append(part.size)
        part_checksums.append(part.checksums)
        prefixes.append(part.encryption.get("n"))
    checksums = multipart_checksums(upload.checksum_algorithm, upload.checksum_type,
                                    [(n, c, size) for (n, _), c, size in zip(wanted, part_checksums, sizes,
                                                                              strict=True)],
                                    [claims[i] for i in kept], args.get("checksums") or {},
                                    args.get("checksum_type") or "", upload.upload_id)
    etag = f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(wanted)}"
    # an encrypted upload: the object's ``se`` lists each part's nonce prefix in order (engine/crypto/objects.py)
    encryption = dict(upload.encryption, pn=prefixes) if upload.encryption else None
    version = version_record(new_version_id(bucket), sum(sizes), etag, content_type=upload.content_type,
                             blobs=blobs, metadata=upload.metadata, headers=upload.headers,
                             checksums=checksums, tags=upload.tags, part_sizes=sizes,
                             part_checksums=part_checksums, acl=upload.acl, encryption=encryption,
                             imported=imported)
    version.update(_new_version_lock(d, bucket, upload.key, upload.lock or None))
    event = d.emit(EventType.MULTIPART_COMPLETED, {"bucket": bucket.name, "key": upload.key,
                                                   "upload_id": upload.upload_id, "version": version,
                                                   "parts": listed})
    return dict(stamped(version, event.hlc), part_checksums=part_checksums)


def abort_multipart(d: Decision, args: dict[str, Any]) -> None:
    require_bucket(d.tx, args["bucket"])
    require_upload(d.tx, args["bucket"], args["key"], args["upload_id"])
    d.emit(EventType.MULTIPART_ABORTED, {"bucket": args["bucket"], "upload_id": args["upload_id"]})


# -- volumes ------------------------------------------------------------------------------------------------------
def seal_volume(d: Decision, args: dict[str, Any]) -> None:
    d.emit(EventType.VOLUME_SEALED, {"volume": args["volume"], "size": args["size"]})


def move_blobs(d: Decision, args: dict[str, Any]) -> int:
    """Compaction: record copies ``[hash, old volume, old offset, new volume, new offset]`` made durable.

    Each move is re-checked: a blob freed or moved since it was copied is skipped (its copy is dead bytes)."""
    moved = 0
    for digest, old_volume, old_offset, volume, offset in args["moves"]:
        rec = d.tx.blob(digest)
        if rec is None or rec[0] != old_volume or rec[1] != old_offset:
            continue
        d.emit(EventType.BLOB_MOVED, {"hash": digest, "volume": volume, "offset": offset})
        moved += 1
    return moved


def mark_blob_damaged(d: Decision, args: dict[str, Any]) -> bool:
    """A read, copy, compaction or the scrubber found the blob's bytes at ``volume``/``offset`` failing their
    checksums. Recorded only while the index still puts the blob there and it is not already marked (a blob
    moved, re-stored or freed since was read at a stale place); True if ``blob.damaged`` was emitted."""
    rec = d.tx.blob(args["hash"])
    if rec is None or [rec[0], rec[1]] != [args["volume"], args["offset"]] or is_damaged(rec):
        return False
    d.emit(EventType.BLOB_DAMAGED, {"hash": args["hash"], "volume": args["volume"], "offset": args["offset"],
                                    "problem": str(args.get("problem", ""))[:200]})
    return True


def retire_volume(d: Decision, args: dict[str, Any]) -> bool:
    """Compaction: a volume no blob lives in any more is retired; False (nothing emitted) if one still does."""
    stats = d.tx.volume_stats(args["volume"])
    if stats.get("retired"):
        return True
    if stats["live"] > 0:
        return False
    d.emit(EventType.VOLUME_RETIRED, {"volume": args["volume"]})
    return True


def lifecycle_expire(d: Decision, args: dict[str, Any]) -> dict[str, Any] | None:
    """A lifecycle action, re-checked against the views at decision time so a key written since the job
    looked is never expired by mistake; then the ordinary DeleteObject semantics apply."""
    bucket = require_bucket(d.tx, args["bucket"])
    oid = object_id(d.tx, bucket, args["key"])
    if oid is None:
        return None
    latest = d.tx.latest(oid)
    kind, expected = args["kind"], args["version_id"]
    if kind == "expire_current":
        if latest is None or latest["v"] != expected or latest.get("dm"):
            return None
        return delete_object(d, {"bucket": bucket.name, "key": args["key"], "version_id": None})
    if kind == "remove_marker":
        versions = [rec for _, rec in d.tx.versions(oid)]
        if len(versions) != 1 or versions[0]["v"] != expected or not versions[0].get("dm"):
            return None
    elif latest is None or latest["v"] == expected or d.tx.version(oid, expected) is None:
        return None  # expire_noncurrent: the version must still exist and still be noncurrent
    return delete_object(d, {"bucket": bucket.name, "key": args["key"], "version_id": expected})


DECIDERS: dict[str, Decider] = {
    "create_bucket": create_bucket,
    "delete_bucket": delete_bucket,
    "set_bucket_config": set_bucket_config,
    "put_object": put_object,
    "delete_object": delete_object,
    "set_object_tags": set_object_tags,
    "set_object_acl": set_object_acl,
    "rename": rename,
    "create_multipart": create_multipart,
    "store_part": store_part,
    "complete_multipart": complete_multipart,
    "abort_multipart": abort_multipart,
    "seal_volume": seal_volume,
    "move_blobs": move_blobs,
    "retire_volume": retire_volume,
    "mark_blob_damaged": mark_blob_damaged,
    "lifecycle_expire": lifecycle_expire,
    "set_object_lock": set_object_lock,
    **iam.DECIDERS,
    **tombstones.DECIDERS,
    **kms_commands.DECIDERS,
}
