"""Bucket lifecycle handlers (``?lifecycle``) and the ``x-amz-expiration`` header of GET/HEAD."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.lifecycle import expiration_header
from s4.engine.model import ObjectVersion

from .call import Call
from .lifecycle_xml import expiration_header_value, lifecycle_xml, parse_lifecycle

KIND = "lifecycle"
_UNREAD: Any = object()


async def put_bucket_lifecycle(call: Call, resp: falcon.asgi.Response) -> None:
    config = parse_lifecycle(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, KIND, config, actor=call.actor)


async def get_bucket_lifecycle(call: Call, resp: falcon.asgi.Response) -> None:
    config = call.engine.get_bucket_config(call.bucket, KIND)
    if not config:
        raise S3Error(ErrorCode.NO_SUCH_LIFECYCLE_CONFIGURATION, BucketName=call.bucket)
    resp.content_type = "application/xml"
    resp.data = lifecycle_xml(config)


async def delete_bucket_lifecycle(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    await call.engine.set_bucket_config(call.bucket, KIND, None, actor=call.actor)
    resp.status = falcon.HTTP_204


def set_expiration_header(call: Call, version: ObjectVersion, resp: falcon.asgi.Response,
                          config: Any = _UNREAD, *, written: bool = False) -> None:
    """S3 tells a reader (and the writer of a new version: ``written``) when a current version will expire under
    the bucket's lifecycle rules (``config``: the bucket's lifecycle record when the caller already read it). A
    bucket gone since the write has no rules left, so no header (the write itself succeeded)."""
    if not (version.is_latest or written):
        return
    if config is _UNREAD:  # after a write: one get, not a transaction that also decodes the bucket record
        config = call.engine.bucket_config_if_any(call.bucket, KIND)
    if not config:
        return
    found = expiration_header(config, version.key, version.size, version.tags, version.last_modified_ms)
    if found is not None:
        resp.set_header("x-amz-expiration", expiration_header_value(*found))
