"""Bucket management for the web console: ``/api/admin/buckets/{name}`` (create, delete) and ``.../objects``.

Everything goes through the engine's ordinary commands, so a console action is journaled, replicated and audited
exactly like the same action over S3 (the actor is ``user:<name>``). S3 refusals (invalid name, bucket exists,
not empty, no such bucket) reach the client as ``{"error": message}`` with S3's status (router.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from s4.engine import accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError

from ..s3.access import RequestFacts, client_address
from .call import AdminCall, Result
from .tokens import rfc3339

MAX_KEYS = 1000
PAGE = 1000  # versions or uploads removed per round while force-emptying
CONCURRENCY = 64  # deletes in flight at once: the sequencer group-commits them
EMPTY_ATTEMPTS = 3  # writers racing a force delete get this many chances to lose


async def create_bucket(call: AdminCall) -> Result:
    name = call.params["id"]
    _authorize(call, "CreateBucket", name)
    owner = accounts.of_user(call.user) if call.user is not None else accounts.DEFAULT_ACCOUNT
    await call.engine.create_bucket(name, call.api.settings.region, actor=call.actor, account=owner)
    return 200, {"name": name}


async def delete_bucket(call: AdminCall) -> Result:
    name = call.params["id"]
    _authorize(call, "DeleteBucket", name)
    if _flag(call, "force"):
        try:
            for _ in range(EMPTY_ATTEMPTS - 1):
                await _empty(call, name)
                try:
                    await call.engine.delete_bucket(name, actor=call.actor)
                    return 204, None
                except S3Error as exc:  # a write landed between emptying and deleting: empty again
                    if exc.code is not ErrorCode.BUCKET_NOT_EMPTY:
                        raise
            await _empty(call, name)
        except S3Error as exc:  # a version under Object Lock: nobody, not even an admin, removes it
            if exc.code is not ErrorCode.ACCESS_DENIED:
                raise
            raise S3Error(ErrorCode.ACCESS_DENIED, f"Bucket {name} holds versions under Object Lock (WORM "
                          f"retention or legal hold) that cannot be removed before they expire: {exc.message}") \
                from None
    await call.engine.delete_bucket(name, actor=call.actor)
    return 204, None


async def list_objects(call: AdminCall) -> Result:
    name, limit = call.params["id"], _max_keys(call)
    _authorize(call, "ListObjects", name)
    page = await call.engine.list_objects(name, _param(call, "prefix"), _param(call, "delimiter", "/"),
                                          _param(call, "continuation-token"), limit)
    objects = [{"key": e.key, "size": e.size, "content_type": e.version.content_type,
                "last_modified": rfc3339(e.last_modified_ms), "etag": e.etag}
               for e in page.entries]
    return 200, {"objects": objects, "common_prefixes": page.common_prefixes, "is_truncated": page.is_truncated,
                 "next_continuation_token": page.next_marker if page.is_truncated else None}


def _authorize(call: AdminCall, operation: str, bucket: str) -> None:
    """The console user (a SuperUser) is still refused what the bucket's policy explicitly denies it."""
    access = call.api.access
    if access is None or call.user is None:
        return
    facts = RequestFacts(dict(call.req.headers), call.query, client_address(call.req.scope), call.req.scheme == "https",
                         None, time.time())
    access.authorize(access.user(call.user), operation, bucket, "", facts)


async def _empty(call: AdminCall, name: str) -> None:
    """Remove every version and delete marker, then abort every multipart upload: one journaled command each."""
    engine, actor = call.engine, call.actor
    while True:
        page = await engine.list_object_versions(name, max_keys=PAGE)
        if not page.versions:
            break
        await _bounded([engine.delete_object(name, v.key, v.version_id, actor=actor) for v in page.versions])
    while True:
        uploads = engine.list_multipart_uploads(name, max_uploads=PAGE).uploads
        if not uploads:
            break
        await _bounded([engine.abort_multipart_upload(name, u.key, u.upload_id, actor=actor) for u in uploads])


async def _bounded(calls: list[Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(call: Awaitable[Any]) -> None:
        async with gate:
            try:
                await call
            except S3Error as exc:  # already gone (a concurrent delete or abort): that is what we wanted
                if exc.code not in (ErrorCode.NO_SUCH_UPLOAD, ErrorCode.NO_SUCH_KEY, ErrorCode.NO_SUCH_VERSION):
                    raise

    await asyncio.gather(*(run(c) for c in calls))


def _param(call: AdminCall, name: str, default: str = "") -> str:
    value = call.query.get(name, default)
    if not isinstance(value, str):  # repeated in the query string
        raise IamError(400, f"{name} must be given once")
    return value


def _flag(call: AdminCall, name: str) -> bool:
    raw = _param(call, name).lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise IamError(400, f"{name} must be true or false")


def _max_keys(call: AdminCall) -> int:
    raw = _param(call, "max-keys")
    if raw == "":
        return MAX_KEYS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise IamError(400, "max-keys must be a non-negative integer")
    return min(value, MAX_KEYS)
