"""Object operations: Put/Get/Head/Delete/Copy object, DeleteObjects, object tagging and ACL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import falcon.asgi

from s4.engine import OpenVersion
from s4.engine.errors import ErrorCode, S3Error, StoredDataDamagedError
from s4.engine.model import NULL_VERSION, ObjectVersion
from s4.engine.names import MAX_PART_NUMBER

from .. import disconnect
from ..errors import ResponseAborted
from ..inputs import header_value, parse_int, parse_query, unquote_strict
from . import sse
from .acl import new_object_acl
from .bucket_reads import ObjectReads
from .call import Call, checksum_headers
from .headers import (
    RESPONSE_OVERRIDES,
    check_read,
    delete_conditions,
    metadata_header,
    parse_range,
    preconditions,
    stored_headers,
    user_metadata,
)
from .imports import import_stamp
from .lifecycle import set_expiration_header
from .object_lock import bypass_governance, lock_from_headers, require_lock_bucket, set_lock_headers
from .xml import (
    copy_object_result_xml,
    delete_result_xml,
    http_date,
    parse_delete_objects,
    parse_tagging,
    tagging_xml,
)
from .xml_render import checksum_type

log = logging.getLogger(__name__)
MAX_OBJECT_TAGS = 10
INLINE_BODY_BYTES = 256 * 1024  # GET bodies up to this size are read inline and sent in one piece


def parse_tagging_header(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    tags = parse_query(value, code=ErrorCode.INVALID_ARGUMENT, what="x-amz-tagging")
    if len(tags) > MAX_OBJECT_TAGS:
        raise S3Error(ErrorCode.INVALID_TAG, "Object tags cannot be greater than 10")
    for k, v in tags.items():
        if len(k) > 128 or len(v) > 256:
            raise S3Error(ErrorCode.INVALID_TAG, "The TagKey or TagValue you have provided is too long")
    return tags


def version_headers(call: Call, version: ObjectVersion, resp: falcon.asgi.Response,
                    versioning: str | None = None, *, report_null: bool = True) -> None:
    """ETag, Last-Modified and x-amz-version-id. As S3 does: a real version id always; ``null`` only when
    ``report_null`` (reads and copies, not PutObject/CompleteMultipartUpload) and versioning was ever set on the
    bucket. ``versioning`` is the bucket's state when the caller already read it."""
    resp.set_header("ETag", f'"{version.etag}"')
    resp.set_header("Last-Modified", http_date(version.last_modified_ms))
    if version.version_id != NULL_VERSION or (report_null and (
            versioning if versioning is not None else call.engine.get_bucket(call.bucket).versioning)):
        resp.set_header("x-amz-version-id", version.version_id)


async def put_object(call: Call, resp: falcon.asgi.Response) -> None:
    tags = parse_tagging_header(call.headers.get("x-amz-tagging"))
    if not call.has_body:  # with a body, check_before_body found the bucket already (app.py)
        call.engine.check_bucket(call.bucket)  # NoSuchBucket before reading a byte
    metadata = user_metadata(call.headers)
    lock = lock_from_headers(call.headers)  # a bad lock header is refused before the body is read
    if lock:
        require_lock_bucket(call)  # (the decider checks again, atomically with the write)
    acl = new_object_acl(call)  # an ACL the bucket refuses fails before the body is read
    imported = import_stamp(call)  # s4-admin import's source time (api/s3/imports.py), before the body too
    sealing = sse.for_write(call)  # before a byte is read: a bad key is a 400 that stores nothing
    stored, checksums = await call.ingest_body(sealing.sealer if sealing else None)
    version = await call.engine.put_object(
        call.bucket, call.key, stored, content_type=call.headers.get("content-type", ""), metadata=metadata,
        headers=stored_headers(call.headers), checksums=checksums, tags=tags,
        if_match=call.headers.get("if-match"), if_none_match=call.headers.get("if-none-match"),
        etag=sealing.etag(stored) if sealing else None, encryption=sealing.version_record() if sealing else None,
        actor=call.actor, lock=lock, acl=acl, imported=imported,
        s3op="PostObject" if call.req.method == "POST" else "")
    version_headers(call, version, resp, report_null=False)
    set_expiration_header(call, version, resp, written=True)
    sse.set_headers(call, resp, version.encryption)
    for name, value in checksum_headers(checksums).items():
        resp.set_header(name, value)
    if checksums:
        resp.set_header("x-amz-checksum-type", "FULL_OBJECT")  # a single PUT's checksum covers the whole body


async def _select_version(call: Call) -> ObjectVersion:
    await call.engine.settle_key(call.bucket, call.key)
    return call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))


def _object_headers(call: Call, opened: OpenVersion, resp: falcon.asgi.Response, *, whole: bool) -> None:
    """GET/HEAD headers; whole-object checksums only when the whole object is returned (as S3 does). The
    ``response-*`` overrides are checked first: a refused one must not leave the object's headers on the error."""
    overrides = _response_overrides(call)
    version = opened.version
    version_headers(call, version, resp, opened.versioning)
    resp.set_header("Accept-Ranges", "bytes")
    resp.content_type = version.content_type
    for name, value in version.headers.items():
        resp.set_header(name, value)
    for name, value in version.metadata.items():
        resp.set_header(f"x-amz-meta-{name}", metadata_header(value))
    if version.tags:
        resp.set_header("x-amz-tagging-count", str(len(version.tags)))
    set_expiration_header(call, version, resp, opened.lifecycle)
    set_lock_headers(version, resp)
    if whole and version.checksums and call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        for name, value in checksum_headers(version.checksums).items():
            resp.set_header(name, value)
        resp.set_header("x-amz-checksum-type", checksum_type(version.checksums))
    for header, value in overrides:
        resp.set_header(header, value)


def _response_overrides(call: Call) -> list[tuple[str, str]]:
    """(header, value) of the ``response-*`` query parameters, each a safe header value (no CR/LF/NUL)."""
    if not call.query:  # most GETs: no parameter at all
        return []
    overrides = []
    for param, header in RESPONSE_OVERRIDES.items():
        if param in call.query:
            if call.auth is None:
                raise S3Error(ErrorCode.INVALID_REQUEST, "Request specific response headers cannot be used for "
                              "anonymous GET requests.")
            overrides.append((header, header_value(call.query[param], name=param)))
    return overrides


def _part_range(version: ObjectVersion, part_number: str) -> tuple[int, int, int]:
    """(start, length, parts count) of one part of an object, for GET/HEAD ?partNumber=N."""
    number = parse_int(part_number, "partNumber", minimum=1, maximum=MAX_PART_NUMBER,
                       message="Part number must be an integer between 1 and 10000, inclusive")
    sizes = version.part_sizes or [version.size]
    if number > len(sizes):  # 400 InvalidPart, as ceph/s3-tests checks (docs/compatibility.md)
        raise S3Error(ErrorCode.INVALID_PART, f"The object has {len(sizes)} part(s); part {number} does not exist.",
                      PartNumber=str(number))
    return sum(sizes[: number - 1]), sizes[number - 1], len(sizes)


async def _serve(call: Call, resp: falcon.asgi.Response, *, body: bool) -> None:
    if call.engine.key_reads is not None:  # a pool (a single node settles nothing: no coroutine per GET)
        await call.engine.settle_key(call.bucket, call.key)
    reads = call.bucket_reads  # a single node: the snapshot access control read from (s3/bucket_reads.py)
    opened = reads.open_version(call.key, call.query.get("versionId")) if isinstance(reads, ObjectReads) else \
        call.engine.open_version(call.bucket, call.key, call.query.get("versionId"))
    version = opened.version
    check_read(call.headers, version)
    sse.refuse_write_headers(call)
    start, length, partial, parts_count = 0, version.size, False, None
    if "partNumber" in call.query:
        start, length, parts_count = _part_range(version, call.query["partNumber"])
        partial = bool(version.part_sizes)
    else:
        ranged = parse_range(call.headers.get("range"), version.size)
        if ranged is not None:
            start, length = ranged
            partial = True
    keys = sse.keys_for_serving(call, version, body=body)  # SSE-C: the right key, or no byte of the object
    # Read before any header is set: a chunk that fails its checksum must be an error response, not headers
    # of the object. Small bodies are read whole; a large one's first piece (the rest streams after them).
    data, stream = b"", None
    if body and length:
        if length <= INLINE_BODY_BYTES:  # small bodies: one pread, one send, no stream machinery
            try:
                data = call.engine.read_small(version, start, length, opened.locations, keys)
            except (StoredDataDamagedError, FileNotFoundError):
                if call.engine.blob_repair is None:
                    raise
                data = await call.engine.read_failover(version, start, length, keys)  # a pool: heal from a replica
        else:
            pieces = call.engine.read_object(version, start, length, opened.locations, keys)
            stream = _stream(call, await anext(pieces), pieces)
    # Headers only once nothing can fail any more: an error response must not carry the object's headers.
    _object_headers(call, opened, resp, whole=not partial)
    sse.set_headers(call, resp, version.encryption)
    if parts_count is not None:
        resp.set_header("x-amz-mp-parts-count", str(parts_count))
        number = int(call.query["partNumber"])  # a part's own checksums and the object's type (as RGW answers
        if number <= len(version.part_checksums) and version.checksums:  # ?partNumber=N, checksum mode or not)
            for name, value in checksum_headers(version.part_checksums[number - 1]).items():
                resp.set_header(name, value)
            resp.set_header("x-amz-checksum-type", checksum_type(version.checksums))
    if partial:
        resp.status = falcon.HTTP_206
        resp.set_header("Content-Range", f"bytes {start}-{start + length - 1}/{version.size}")
    resp.set_header("Content-Length", str(length))
    if stream is not None:
        # Pieces read from the page cache are bytearrays (engine/volumes/reads.py, ``read_cached``): falcon hands
        # each to the ASGI send as is, and uvicorn writes any buffer.
        resp.stream = stream  # type: ignore[assignment]
    elif body:
        resp.data = data


async def _stream(call: Call, first: bytes | bytearray,
                  rest: AsyncIterator[bytes | bytearray]) -> AsyncIterator[bytes | bytearray]:
    """The body after the headers. A later piece that fails its checksum aborts the response: the error
    propagates, the server closes the connection short of Content-Length, and the client sees a broken transfer
    (never a complete-looking body with wrong bytes)."""
    gone = disconnect.watch_request(call.req)
    try:
        yield first
        async for piece in rest:
            await asyncio.sleep(0)  # the loop takes the client's disconnect in (a send to it returns at once)
            if gone.done():
                log.info("request %s: GET /%s/%s stopped mid-body: the client went away", call.request_id,
                         call.bucket, call.key)
                return
            yield piece
    except S3Error as exc:
        log.error("request %s: aborting GET /%s/%s mid-body: %s", call.request_id, call.bucket, call.key,
                  exc.message)
        raise ResponseAborted(exc.message) from exc
    finally:
        gone.cancel()
        close = getattr(rest, "aclose", None)
        if close is not None:  # the reads behind the pieces end now, not when the generator is collected
            await close()


async def get_object(call: Call, resp: falcon.asgi.Response) -> None:
    await _serve(call, resp, body=True)


async def head_object(call: Call, resp: falcon.asgi.Response) -> None:
    await _serve(call, resp, body=False)


async def delete_object(call: Call, resp: falcon.asgi.Response) -> None:
    imported = import_stamp(call)
    if imported and call.query.get("versionId") is not None:
        raise S3Error(ErrorCode.INVALID_REQUEST, "An import stamp applies to a new delete marker, not to removing a "
                      "version.")
    result = await call.engine.delete_object(call.bucket, call.key, call.query.get("versionId"), actor=call.actor,
                                             conditions=delete_conditions(call.headers),
                                             bypass_governance=bypass_governance(call), imported=imported)
    if result["delete_marker"]:
        resp.set_header("x-amz-delete-marker", "true")
    if result["version_id"] is not None:
        resp.set_header("x-amz-version-id", result["version_id"])
    resp.status = falcon.HTTP_204


async def delete_objects(call: Call, resp: falcon.asgi.Response) -> None:
    body = await call.read_body()
    quiet, targets = parse_delete_objects(body)
    call.engine.get_bucket(call.bucket)
    deleted, errors = [], []
    for key, version_id, conditions in targets:
        try:
            call.authorize("s3:DeleteObjectVersion" if version_id else "s3:DeleteObject", call.bucket, key)
            result = await call.engine.delete_object(call.bucket, key, version_id, actor=call.actor,
                                                     conditions=conditions,
                                                     bypass_governance=bypass_governance(call, key))
        except S3Error as exc:
            errors.append((key, version_id, exc.code.aws_code, exc.message))
            continue
        marker_id = result["version_id"] if result["delete_marker"] else None
        deleted.append((key, version_id, result["delete_marker"], marker_id))
    resp.content_type = "application/xml"
    resp.data = delete_result_xml(deleted, errors, quiet)


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """``/bucket/key?versionId=v`` (URL-encoded) -> (bucket, key, version id); bytes that are not UTF-8 are
    InvalidArgument, never replaced."""
    path, _, query = value.partition("?")
    path = unquote_strict(path, what="x-amz-copy-source", code=ErrorCode.INVALID_ARGUMENT).lstrip("/")
    bucket, _, key = path.partition("/")
    version_id = None
    if query.startswith("versionId="):
        version_id = unquote_strict(query[len("versionId="):], what="x-amz-copy-source",
                                    code=ErrorCode.INVALID_ARGUMENT)
    if not bucket or not key:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Copy Source must mention the source bucket and key: "
                      "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source", ArgumentValue=value)
    return bucket, key, version_id


async def copy_source_version(call: Call) -> ObjectVersion:
    src_bucket, src_key, src_version = parse_copy_source(call.headers["x-amz-copy-source"])
    call.authorize("s3:GetObjectVersion" if src_version else "s3:GetObject", src_bucket, src_key)
    await call.engine.settle_key(src_bucket, src_key)
    try:
        source = call.engine.head_object(src_bucket, src_key, src_version)
    except S3Error as exc:
        if exc.code is ErrorCode.METHOD_NOT_ALLOWED:  # a delete marker named by its version id
            raise S3Error(ErrorCode.INVALID_REQUEST, "The source of a copy request may not specifically refer to "
                          "a delete marker by version id.") from None
        raise
    check_read(call.headers, source, prefix="x-amz-copy-source-")
    return source


async def copy_object(call: Call, resp: falcon.asgi.Response) -> None:
    source = await copy_source_version(call)
    directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Unknown metadata directive.")
    tag_directive = call.headers.get("x-amz-tagging-directive", "COPY").upper()
    tags = parse_tagging_header(call.headers.get("x-amz-tagging")) if tag_directive == "REPLACE" else None
    src_bucket, src_key, _ = parse_copy_source(call.headers["x-amz-copy-source"])
    if (src_bucket, src_key) == (call.bucket, call.key) and directive == "COPY" and \
            "x-amz-version-id" not in call.headers and tags is None and sse.SSE_HEADER not in call.headers and \
            sse.CUSTOMER_PREFIX + "algorithm" not in call.headers and \
            not call.engine.get_bucket(call.bucket).versioning:
        raise S3Error(ErrorCode.INVALID_REQUEST, "This copy request is illegal because it is trying to copy an "
                      "object to itself without changing the object's metadata, storage class, website redirect "
                      "location or encryption attributes.")
    source_keys = sse.read_keys(call, source, sse.COPY_SOURCE_PREFIX)
    sealing = sse.for_write(call)
    rewritten, encryption = None, None
    if sealing is not None or source_keys is not None:  # new bytes under the destination's own key (or none)
        rewritten = await call.engine.ingest(call.engine.read_object(source, keys=source_keys),
                                             sealer=sealing.sealer if sealing else None)
        if sealing is not None:
            rewritten.etag_override = sealing.etag(rewritten) or ""
            encryption = sealing.version_record()
    version = await call.engine.copy_object(
        source, call.bucket, call.key, replace_metadata=directive == "REPLACE",
        content_type=call.headers.get("content-type", ""), metadata=user_metadata(call.headers),
        headers=stored_headers(call.headers), tags=tags, if_match=call.headers.get("if-match"),
        if_none_match=call.headers.get("if-none-match"), rewritten=rewritten, encryption=encryption,
        actor=call.actor, lock=lock_from_headers(call.headers), acl=new_object_acl(call))
    set_expiration_header(call, version, resp, written=True)
    sse.set_headers(call, resp, version.encryption)
    if source.version_id != NULL_VERSION:
        resp.set_header("x-amz-copy-source-version-id", source.version_id)
    if version.version_id != NULL_VERSION or call.engine.get_bucket(call.bucket).versioning:
        resp.set_header("x-amz-version-id", version.version_id)
    resp.content_type = "application/xml"
    resp.data = copy_object_result_xml(version.etag, version.last_modified_ms, version.checksums)


async def put_object_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    tags = parse_tagging(await call.read_body(), max_tags=MAX_OBJECT_TAGS)
    version_id = await call.engine.put_object_tags(call.bucket, call.key, call.query.get("versionId"), tags,
                                                   actor=call.actor)
    resp.set_header("x-amz-version-id", version_id)


async def delete_object_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    version_id = await call.engine.put_object_tags(call.bucket, call.key, call.query.get("versionId"), {},
                                                   actor=call.actor)
    resp.set_header("x-amz-version-id", version_id)
    resp.status = falcon.HTTP_204


async def get_object_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    version = await _select_version(call)
    resp.set_header("x-amz-version-id", version.version_id)
    resp.content_type = "application/xml"
    resp.data = tagging_xml(version.tags)


RENAME_MERGE_HEADER = "x-amz-s4-rename-merge"


async def rename_object(call: Call, resp: falcon.asgi.Response) -> None:
    """RenameObject; a key and source both ending in '/' rename a whole prefix (S4 extension)."""
    source = call.headers.get("x-amz-rename-source")
    if not source:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-rename-source is required", ArgumentName="x-amz-rename-source")
    path = unquote_strict(source, what="x-amz-rename-source", code=ErrorCode.INVALID_ARGUMENT).lstrip("/")
    src_bucket, _, src_key = path.partition("/")
    if src_bucket != call.bucket or not src_key:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The rename source must be /<bucket>/<key> in the same bucket.",
                      ArgumentName="x-amz-rename-source", ArgumentValue=source)
    call.authorize("s3:DeleteObject", call.bucket, src_key)  # the destination's s3:PutObject was checked first
    merge = call.headers.get(RENAME_MERGE_HEADER, "").lower() == "true"
    await call.engine.rename(call.bucket, src_key, call.key, merge=merge,
                             src_cond=preconditions(call.headers, "x-amz-rename-source-"),
                             dst_cond=preconditions(call.headers), client_token=call.headers.get("x-amz-client-token"),
                             actor=call.actor)
