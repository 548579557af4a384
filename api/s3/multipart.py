"""Multipart upload operations: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts, ListMultipartUploads."""

from __future__ import annotations

import re

import falcon.asgi

from s4.engine.checksums import new_checksum, normalize_algorithm, upload_checksum_type
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import Upload
from s4.engine.names import MAX_PART_NUMBER

from ..inputs import digits_value, parse_int
from . import sse
from .acl import new_object_acl, owner_of
from .buckets import encoding_type, max_keys
from .call import Call, checksum_headers
from .headers import stored_headers, user_metadata
from .object_lock import lock_from_headers
from .objects import copy_source_version, parse_tagging_header, version_headers
from .xml import (
    complete_multipart_xml,
    copy_part_result_xml,
    initiate_multipart_xml,
    list_multipart_uploads_xml,
    list_parts_xml,
    parse_complete_multipart,
)

PART_NUMBER_MESSAGE = "Part number must be an integer between 1 and 10000, inclusive"


def part_number(value: str) -> int:
    """A part number (query or XML): 1..10000 in ASCII digits, else InvalidArgument naming partNumber."""
    return parse_int(value.strip(), "partNumber", minimum=1, maximum=MAX_PART_NUMBER, message=PART_NUMBER_MESSAGE)


def _part_number(call: Call) -> int:
    return part_number(call.query.get("partNumber", ""))


def _copy_range(value: str, size: int) -> tuple[int, int]:
    """``bytes=first-last`` within the source, both ends required (stricter than a GET Range, as S3 is)."""
    m = re.fullmatch(r"bytes=([0-9]+)-([0-9]+)", value.strip())
    first, last = (digits_value(m.group(1)), digits_value(m.group(2))) if m else (None, None)
    if first is None or last is None or first > last:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The x-amz-copy-source-range value must be of the form "
                      "bytes=first-last where first and last are the zero-based offsets of the first and last "
                      "bytes to copy", ArgumentName="x-amz-copy-source-range", ArgumentValue=value[:64])
    if last >= size:
        raise S3Error(ErrorCode.INVALID_RANGE, f"Range specified is not valid for source object of size: {size}",
                      ActualObjectSize=str(size))
    return first, last - first + 1


async def create_multipart_upload(call: Call, resp: falcon.asgi.Response) -> None:
    raw = call.headers.get("x-amz-checksum-algorithm") or ""
    algorithm = normalize_algorithm(raw) if raw.strip() else ""
    kind = upload_checksum_type(algorithm, call.headers.get("x-amz-checksum-type", ""))
    sealing = sse.for_write(call)  # the upload's data key; each part gets its own nonce prefix
    upload_id = await call.engine.create_multipart_upload(
        call.bucket, call.key, content_type=call.headers.get("content-type", ""),
        metadata=user_metadata(call.headers), headers=stored_headers(call.headers), checksum_algorithm=algorithm,
        tags=parse_tagging_header(call.headers.get("x-amz-tagging")), actor=call.actor, checksum_type=kind,
        lock=lock_from_headers(call.headers), acl=new_object_acl(call),
        encryption=sealing.keys.record if sealing else None)
    if sealing is not None:
        sse.set_headers(call, resp, sealing.keys.record)
    if algorithm:
        resp.set_header("x-amz-checksum-algorithm", algorithm)
        resp.set_header("x-amz-checksum-type", kind)
    resp.content_type = "application/xml"
    resp.data = initiate_multipart_xml(call.bucket, call.key, upload_id)


async def upload_part(call: Call, resp: falcon.asgi.Response) -> None:
    number = _part_number(call)
    upload_id = call.upload_id()
    upload = await call.engine.require_upload(call.bucket, call.key, upload_id)  # NoSuchUpload before the body
    _check_part_algorithm(call, upload.checksum_algorithm)
    sealing = sse.for_part(call, upload)  # an encrypted upload: every part with the upload's key
    stored, checksums = await call.ingest_body(sealing.sealer if sealing else None, also=upload.checksum_algorithm)
    etag = await call.engine.upload_part(call.bucket, call.key, upload_id, number, stored, checksums,
                                         encryption=sealing.part_record() if sealing else None,
                                         etag=sealing.etag(stored) if sealing else None, actor=call.actor)
    resp.set_header("ETag", f'"{etag}"')
    sse.set_headers(call, resp, upload.encryption)
    for name, value in checksum_headers(checksums).items():
        resp.set_header(name, value)


def _check_part_algorithm(call: Call, algorithm: str) -> None:
    """A part of an upload created with a checksum algorithm may carry only that algorithm's checksum (S3's
    InvalidRequest); the server computes it for every part whatever the client sends (``ingest_body(also=)``)."""
    if not algorithm:
        return
    named = call.named_algorithms()
    if any(alg != algorithm for alg in named):
        other = next(alg for alg in named if alg != algorithm)
        raise S3Error(ErrorCode.INVALID_REQUEST, f"Checksum Type mismatch occurred, expected checksum Type: "
                      f"{algorithm.lower()}, actual checksum Type: {other.lower()}")


async def upload_part_copy(call: Call, resp: falcon.asgi.Response) -> None:
    number = _part_number(call)
    upload_id = call.upload_id()
    upload = await call.engine.require_upload(call.bucket, call.key, upload_id)
    source = await copy_source_version(call)
    source_keys = sse.read_keys(call, source, sse.COPY_SOURCE_PREFIX)
    sealing = sse.for_part(call, upload)
    start, length = 0, source.size
    copy_range = call.headers.get("x-amz-copy-source-range")
    if copy_range:
        start, length = _copy_range(copy_range, source.size)
    algorithm = upload.checksum_algorithm
    checksums: dict[str, str] = {}
    if not copy_range and "-" not in source.etag and source_keys is None and sealing is None and (
            not algorithm or algorithm in source.checksums):
        stored = await call.engine.reference(source)  # whole single-part source: share its chunks, copy no bytes
        checksums = {algorithm: source.checksums[algorithm]} if algorithm else {}
    else:  # the upload's checksum of the copied bytes is computed as they are read (Complete needs each part's)
        hasher = new_checksum(algorithm) if algorithm else None
        stored = await call.engine.ingest(call.engine.read_object(source, start, length, keys=source_keys),
                                          hashers=[hasher] if hasher else None,
                                          sealer=sealing.sealer if sealing else None)
        checksums = {algorithm: hasher.b64digest()} if hasher else {}
    etag = await call.engine.upload_part(call.bucket, call.key, upload_id, number, stored, checksums,
                                         encryption=sealing.part_record() if sealing else None,
                                         etag=sealing.etag(stored) if sealing else None, actor=call.actor)
    sse.set_headers(call, resp, upload.encryption)
    resp.content_type = "application/xml"
    resp.data = copy_part_result_xml(etag, source.last_modified_ms, checksums)


async def complete_multipart_upload(call: Call, resp: falcon.asgi.Response) -> None:
    upload_id = call.upload_id()
    parts = parse_complete_multipart(await call.read_body())
    await sse.check_completion_key(call, upload_id)
    for part in parts:
        if not 1 <= part.part_number <= MAX_PART_NUMBER:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, PART_NUMBER_MESSAGE, ArgumentName="partNumber",
                          ArgumentValue=str(part.part_number))
    claimed = call.claimed_checksums()
    version = await call.engine.complete_multipart_upload(
        call.bucket, call.key, upload_id, [(p.part_number, p.etag) for p in parts], checksums=claimed,
        part_checksums=[p.checksums for p in parts], checksum_type=call.headers.get("x-amz-checksum-type", ""),
        if_match=call.headers.get("if-match"), if_none_match=call.headers.get("if-none-match"), actor=call.actor)
    version_headers(call, version, resp, report_null=False)
    sse.set_headers(call, resp, version.encryption)
    resp.content_type = "application/xml"
    resp.data = complete_multipart_xml(f"/{call.bucket}/{call.key}", call.bucket, call.key, version.etag,
                                       version.checksums)


async def abort_multipart_upload(call: Call, resp: falcon.asgi.Response) -> None:
    await call.engine.settle_missing_upload(call.bucket, call.key, call.upload_id())
    await call.engine.abort_multipart_upload(call.bucket, call.key, call.upload_id(), actor=call.actor)
    resp.status = falcon.HTTP_204


async def list_parts(call: Call, resp: falcon.asgi.Response) -> None:
    marker = parse_int(call.query.get("part-number-marker", "0") or "0", "part-number-marker",
                       maximum=MAX_PART_NUMBER, message="Invalid part-number-marker")
    limit = max_keys(call, "max-parts")
    await call.engine.settle_upload(call.bucket, call.upload_id())  # every part acknowledged anywhere
    upload, page = call.engine.list_parts(call.bucket, call.key, call.upload_id(), marker, limit)
    owner = owner_of(call, upload.acl)  # the initiator's account, when another account's (ObjectWriter)
    resp.content_type = "application/xml"
    resp.data = list_parts_xml(page, upload, part_number_marker=marker, max_parts=limit,
                               owner_id=owner.canonical_id, owner_name=owner.name)


async def list_multipart_uploads(call: Call, resp: falcon.asgi.Response) -> None:
    q = call.query
    enc, limit = encoding_type(call), max_keys(call, "max-uploads")
    page = await call.engine.list_uploads(call.bucket, q.get("prefix", ""), q.get("delimiter", ""),
                                          q.get("key-marker", ""), q.get("upload-id-marker", ""), limit)
    owner = call.bucket_owner()

    def upload_owner(upload: Upload) -> tuple[str, str] | None:
        """Another account's upload (ObjectWriter) is its initiator's, as ListParts shows it."""
        if not upload.acl or upload.acl[0] == owner.canonical_id:
            return None
        account = owner_of(call, upload.acl)
        return account.canonical_id, account.name

    resp.content_type = "application/xml"
    resp.data = list_multipart_uploads_xml(page, bucket=call.bucket, prefix=q.get("prefix", ""),
                                           delimiter=q.get("delimiter", ""), key_marker=q.get("key-marker", ""),
                                           upload_id_marker=q.get("upload-id-marker", ""), max_uploads=limit,
                                           encoding_type=enc, owner_id=owner.canonical_id,
                                           owner_name=owner.name, upload_owner=upload_owner)
