"""Public access block (bucket level): Put/Get/DeletePublicAccessBlock and what each flag does (AWS semantics).

    BlockPublicAcls        PutBucketAcl, PutObjectAcl and object writes carrying a public ACL (a grant to AllUsers
                           or AuthenticatedUsers) are AccessDenied                       (api/s3/acl.py)
    IgnorePublicAcls       grants to AllUsers/AuthenticatedUsers allow nothing            (api/s3/access.py acl_grant)
    BlockPublicPolicy      PutBucketPolicy of a public policy is AccessDenied             (api/s3/policy.py)
    RestrictPublicBuckets  while the bucket's policy is public, its Allow statements reach the bucket owner's
                           account only (no anonymous, no other account)                 (api/s3/access.py check)

Stored as the bucket configuration ``public_access_block`` (a ``bucket.config_set`` event: replays, replicates and
merges like every bucket configuration); absent: no flag set, GetPublicAccessBlock answers
NoSuchPublicAccessBlockConfiguration.
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon.asgi

from s4.engine import Engine
from s4.engine.errors import ErrorCode, S3Error

from .call import Call
from .xml_parse import local_name, parse_root

KIND = "public_access_block"
FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass(frozen=True, slots=True)
class PublicAccessBlock:
    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False


NONE = PublicAccessBlock()


def block(engine: Engine, bucket: str) -> PublicAccessBlock:
    """The bucket's flags (one get; no configuration or no bucket: none set)."""
    rec = engine.bucket_config_if_any(bucket, KIND) if bucket else None
    if not rec:
        return NONE
    return PublicAccessBlock(*(bool(rec.get(flag)) for flag in FLAGS))


def parse(body: bytes) -> dict[str, bool]:
    root = parse_root(body, "PublicAccessBlockConfiguration")
    flags: dict[str, bool] = {}
    for child in root:
        name, text = local_name(child), (child.text or "").strip().lower()
        if name not in FLAGS or text not in ("true", "false") or name in flags:
            raise S3Error(ErrorCode.MALFORMED_XML)
        flags[name] = text == "true"
    return {flag: flags.get(flag, False) for flag in FLAGS}


async def put_public_access_block(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    flags = parse(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, KIND, flags, actor=call.actor)


async def get_public_access_block(call: Call, resp: falcon.asgi.Response) -> None:
    rec = call.engine.get_bucket_config(call.bucket, KIND)  # NoSuchBucket first
    if not rec:
        raise S3Error(ErrorCode.NO_SUCH_PUBLIC_ACCESS_BLOCK, BucketName=call.bucket)
    body = "".join(f"<{flag}>{'true' if rec.get(flag) else 'false'}</{flag}>" for flag in FLAGS)
    resp.content_type = "application/xml"
    resp.data = ('<?xml version="1.0" encoding="UTF-8"?>\n<PublicAccessBlockConfiguration '
                 f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{body}</PublicAccessBlockConfiguration>').encode()


async def delete_public_access_block(call: Call, resp: falcon.asgi.Response) -> None:
    if call.engine.get_bucket_config(call.bucket, KIND):
        await call.engine.set_bucket_config(call.bucket, KIND, None, actor=call.actor)
    resp.status = falcon.HTTP_204
