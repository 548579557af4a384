"""Bucket operations: create/head/delete/list buckets, location, versioning, CORS, tagging, listings."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import falcon.asgi

from s4.engine.accounts import DEFAULT_ACCOUNT
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import Bucket

from ..inputs import parse_int
from .acl import create_bucket_settings, listing_owners, record_bucket_settings
from .call import Call
from .xml import (
    cors_from_record,
    cors_to_record,
    cors_xml,
    list_buckets_xml,
    list_object_versions_xml,
    list_objects_v1_xml,
    list_objects_v2_xml,
    location_xml,
    parse_cors,
    parse_create_bucket,
    parse_tagging,
    parse_versioning,
    tagging_xml,
    versioning_xml,
)

MAX_BUCKET_TAGS = 50


def _xml(resp: falcon.asgi.Response, body: bytes) -> None:
    resp.content_type = "application/xml"
    resp.data = body


def max_keys(call: Call, name: str = "max-keys", default: int = 1000) -> int:
    value = call.query.get(name)
    if value is None or value == "":
        return default
    number = parse_int(value, name, maximum=2**31 - 1,
                       message=f"Provided {name} not an integer or within integer range")
    return min(number, 1000)


def encoding_type(call: Call) -> str:
    value = call.query.get("encoding-type", "")
    if value and value != "url":
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=value)
    return value


MAX_BUCKETS = 10000


async def list_buckets(call: Call, resp: falcon.asgi.Response) -> None:
    """ListBuckets, in name order; ``prefix`` filters, and ``max-buckets`` pages with an opaque continuation
    token (the last name returned) that a later call resumes after."""
    q = call.query
    prefix = q.get("prefix", "")
    limit = MAX_BUCKETS if q.get("max-buckets") is None else parse_int(
        q["max-buckets"], "max-buckets", minimum=1, maximum=MAX_BUCKETS,
        message=f"max-buckets must be an integer between 1 and {MAX_BUCKETS}")
    token = q.get("continuation-token")
    after = _token_decode(token) if token else ""
    every = await _cluster_buckets(call) if call.settings.pool_name else call.engine.list_buckets()
    mine = call.account  # the caller's account's buckets only (a pool's registry has no owners: all of them)
    buckets = [b for b in sorted(every, key=lambda b: b.name) if b.name.startswith(prefix) and b.name > after
               and (call.settings.pool_name or (b.account or DEFAULT_ACCOUNT.id) == mine.id)]
    next_token = None
    if len(buckets) > limit:
        buckets = buckets[:limit]
        next_token = _token_encode(buckets[-1].name)
    _xml(resp, list_buckets_xml(buckets, mine.canonical_id, mine.name, prefix=prefix or None,
                                continuation_token=next_token))


async def _cluster_buckets(call: Call) -> list[Bucket]:
    """Several pools: every pool's buckets, from the cluster's bucket registry (docs/architecture/pools.md). The
    creation date is the registry's; a record from before pools has none: this node's own, else unknown (epoch)."""
    names: Any = call.engine.names
    here = {b.name: b for b in call.engine.list_buckets()}
    return [Bucket(r["name"], r["created_ms"] or (here[r["name"]].created_ms if r["name"] in here else 0),
                   region=call.settings.region) for r in await names.list_buckets("")]


#: The region where CreateBucket of a bucket its caller already owns answers 200 (S3's legacy behaviour).
LEGACY_REGION = "us-east-1"


async def create_bucket(call: Call, resp: falcon.asgi.Response) -> None:
    location = parse_create_bucket(await call.read_body())
    if location and location == call.settings.pool_name:  # several pools: this one (api/pool_router.py chose it)
        location = None
    region = location or call.settings.region
    if location is not None and location != call.settings.region and not (
            location == "US" and call.settings.region == "us-east-1"):
        raise S3Error(ErrorCode.INVALID_LOCATION_CONSTRAINT,
                      f"The {location} location constraint is incompatible for the region specific endpoint "
                      "this request was sent to.", LocationConstraint=location)
    mode, acl = create_bucket_settings(call)
    try:
        await call.engine.create_bucket(call.bucket, region, actor=call.actor, object_lock=call.headers.get(
            "x-amz-bucket-object-lock-enabled", "").strip().lower() == "true", account=call.account)
        await record_bucket_settings(call, mode, acl)
    except S3Error as err:
        # us-east-1's legacy rule, which S3 keeps: re-creating a bucket you own there is 200 and changes nothing;
        # every other region answers 409 BucketAlreadyOwnedByYou, and so does a create asking for another pool than
        # the one holding the bucket (several pools: the name is the cluster's, this node does not hold it)
        if err.code is not ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU or call.settings.region != LEGACY_REGION or (
                call.settings.pool_name and not call.engine.holds_bucket(call.bucket)):
            raise
    resp.set_header("Location", f"/{call.bucket}")


async def head_bucket(call: Call, resp: falcon.asgi.Response) -> None:
    bucket = call.engine.get_bucket(call.bucket)
    resp.set_header("x-amz-bucket-region", bucket.region)


async def delete_bucket(call: Call, resp: falcon.asgi.Response) -> None:
    await call.engine.delete_bucket(call.bucket, actor=call.actor)
    resp.status = falcon.HTTP_204


async def get_bucket_location(call: Call, resp: falcon.asgi.Response) -> None:
    """The region; with several pools the bucket's pool (a request for it is served by its pool's nodes only)."""
    bucket = call.engine.get_bucket(call.bucket)
    _xml(resp, location_xml(call.settings.pool_name or bucket.region))


async def put_bucket_versioning(call: Call, resp: falcon.asgi.Response) -> None:
    status = parse_versioning(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, "versioning", status, actor=call.actor)


async def get_bucket_versioning(call: Call, resp: falcon.asgi.Response) -> None:
    _xml(resp, versioning_xml(call.engine.get_bucket(call.bucket).versioning))


async def put_bucket_cors(call: Call, resp: falcon.asgi.Response) -> None:
    rules = parse_cors(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, "cors", cors_to_record(rules), actor=call.actor)


async def get_bucket_cors(call: Call, resp: falcon.asgi.Response) -> None:
    record = call.engine.get_bucket_config(call.bucket, "cors")
    if not record:
        raise S3Error(ErrorCode.NO_SUCH_CORS_CONFIGURATION, BucketName=call.bucket)
    _xml(resp, cors_xml(cors_from_record(record)))


async def delete_bucket_cors(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    await call.engine.set_bucket_config(call.bucket, "cors", None, actor=call.actor)
    resp.status = falcon.HTTP_204


async def put_bucket_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    tags = parse_tagging(await call.read_body(), max_tags=MAX_BUCKET_TAGS)
    await call.engine.set_bucket_config(call.bucket, "tagging", tags, actor=call.actor)
    resp.status = falcon.HTTP_204


async def get_bucket_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    tags = call.engine.get_bucket_config(call.bucket, "tagging")
    if not tags:
        raise S3Error(ErrorCode.NO_SUCH_TAG_SET, BucketName=call.bucket)
    _xml(resp, tagging_xml(tags))


async def delete_bucket_tagging(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    await call.engine.set_bucket_config(call.bucket, "tagging", None, actor=call.actor)
    resp.status = falcon.HTTP_204


def _absent(code: ErrorCode):  # type: ignore[no-untyped-def]
    """Handler for bucket configurations S4 does not store: S3's "not configured" answer."""
    async def handler(call: Call, resp: falcon.asgi.Response) -> None:
        call.engine.get_bucket(call.bucket)
        raise S3Error(code, BucketName=call.bucket)

    return handler


def _token_encode(resume_after: str) -> str:
    return base64.urlsafe_b64encode(resume_after.encode()).decode()


def _token_decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from exc


def check_unordered(call: Call) -> None:
    """``allow-unordered=true`` (an RGW extension S3 clients send): S4 always lists in order, which an unordered
    listing may be, but like RGW it refuses the combination with a delimiter."""
    if call.query.get("allow-unordered", "").lower() == "true" and call.query.get("delimiter"):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "allow-unordered cannot be combined with a delimiter",
                      ArgumentName="allow-unordered", ArgumentValue="true")


async def list_objects(call: Call, resp: falcon.asgi.Response) -> None:
    q = call.query
    check_unordered(call)
    enc, limit = encoding_type(call), max_keys(call)
    page = await call.engine.list_objects(call.bucket, q.get("prefix", ""), q.get("delimiter", ""),
                                          q.get("marker", ""), limit)
    owner = call.bucket_owner()
    _xml(resp, list_objects_v1_xml(page, bucket=call.bucket, prefix=q.get("prefix", ""),
                                   delimiter=q.get("delimiter", ""), marker=q.get("marker", ""), max_keys=limit,
                                   encoding_type=enc, owner_id=owner.canonical_id,
                                   owner_name=owner.name, owner_of=listing_owners(call)))


async def list_objects_v2(call: Call, resp: falcon.asgi.Response) -> None:
    q = call.query
    if q.get("list-type") != "2":
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid List Type specified in Request", ArgumentName="list-type")
    check_unordered(call)
    enc, limit = encoding_type(call), max_keys(call)
    token = q.get("continuation-token")
    start = _token_decode(token) if token else q.get("start-after", "")
    page = await call.engine.list_objects(call.bucket, q.get("prefix", ""), q.get("delimiter", ""), start, limit)
    next_token = _token_encode(page.next_marker) if page.is_truncated else None
    owner = call.bucket_owner()
    fetch_owner = q.get("fetch-owner", "").lower() == "true"
    _xml(resp, list_objects_v2_xml(page, bucket=call.bucket, prefix=q.get("prefix", ""),
                                   delimiter=q.get("delimiter", ""), max_keys=limit,
                                   start_after=q.get("start-after"), continuation_token=token,
                                   next_continuation_token=next_token,
                                   fetch_owner=fetch_owner, encoding_type=enc, owner_id=owner.canonical_id,
                                   owner_name=owner.name, owner_of=listing_owners(call) if fetch_owner else None))


async def list_object_versions(call: Call, resp: falcon.asgi.Response) -> None:
    q = call.query
    enc, limit = encoding_type(call), max_keys(call)
    key_marker, vid_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    if vid_marker and not key_marker:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "A version-id marker cannot be specified without a key marker.",
                      ArgumentName="version-id-marker", ArgumentValue=vid_marker)
    page = await call.engine.list_object_versions(call.bucket, q.get("prefix", ""), q.get("delimiter", ""),
                                                  key_marker, vid_marker, limit)
    owner = call.bucket_owner()
    _xml(resp, list_object_versions_xml(page, bucket=call.bucket, prefix=q.get("prefix", ""),
                                        delimiter=q.get("delimiter", ""), key_marker=key_marker,
                                        version_id_marker=vid_marker, max_keys=limit, encoding_type=enc,
                                        owner_id=owner.canonical_id, owner_name=owner.name,
                                        owner_of=listing_owners(call)))
