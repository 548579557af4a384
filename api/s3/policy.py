"""Bucket policy operations: Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

The policy is a bucket configuration like CORS or tagging: PutBucketPolicy validates the document
(engine/policy/document.py: MalformedPolicy otherwise) and records the text the client sent as a
``bucket.config_set`` event of kind ``policy``; it replicates, replays and merges (last writer wins) like every
bucket configuration. Evaluation: api/s3/access.py and engine/policy/evaluate.py.
"""

from __future__ import annotations

import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import is_public, parse_policy

from . import public_access
from .access import POLICY_KIND
from .acl import refused
from .call import Call

#: Read one byte past the limit so an oversized document is MalformedPolicy, not a generic body error.
_READ_LIMIT = 64 * 1024


async def put_bucket_policy(call: Call, resp: falcon.asgi.Response) -> None:
    body = await call.read_body(limit=_READ_LIMIT)
    policy = parse_policy(body, call.bucket)  # MalformedPolicy, before anything is recorded
    if is_public(policy) and public_access.block(call.engine, call.bucket).block_public_policy:
        refused(call, "BlockPublicPolicy (a public policy)")
        raise S3Error(ErrorCode.ACCESS_DENIED, "Access Denied: BlockPublicPolicy is set on this bucket")
    await call.engine.set_bucket_config(call.bucket, POLICY_KIND, body.decode("utf-8"), actor=call.actor)
    resp.status = falcon.HTTP_204


def _stored(call: Call) -> str:
    text = call.engine.get_bucket_config(call.bucket, POLICY_KIND)  # NoSuchBucket first
    if not text:
        raise S3Error(ErrorCode.NO_SUCH_BUCKET_POLICY, BucketName=call.bucket)
    return str(text)


async def get_bucket_policy(call: Call, resp: falcon.asgi.Response) -> None:
    resp.content_type = "application/json"
    resp.data = _stored(call).encode("utf-8")


async def delete_bucket_policy(call: Call, resp: falcon.asgi.Response) -> None:
    """204 whether or not a policy was set, as S3 answers."""
    if call.engine.get_bucket_config(call.bucket, POLICY_KIND):
        await call.engine.set_bucket_config(call.bucket, POLICY_KIND, None, actor=call.actor)
    resp.status = falcon.HTTP_204


async def get_bucket_policy_status(call: Call, resp: falcon.asgi.Response) -> None:
    public = is_public(parse_policy(_stored(call), call.bucket))
    resp.content_type = "application/xml"
    resp.data = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                 '<PolicyStatus xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                 f"<IsPublic>{'true' if public else 'false'}</IsPublic></PolicyStatus>").encode()
