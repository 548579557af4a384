"""Share links: presigned GETs on the S3 port, signed with the user's own S3 key (so a link outlives the console
session that made it, and dies when that key is deleted or the user is deactivated)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon.asgi

from s4.engine.iam import IamError

from .session import Session

if TYPE_CHECKING:
    from .app import Console

MAX_EXPIRY_S = 7 * 24 * 3600  # SigV4's longest presigned lifetime


def signing_key(console: Console, session: Session) -> tuple[str, str]:
    """(access key, secret): IAM off, the S3 key pair; IAM on, the user's own credential."""
    if session.record is None:
        return console.settings.access_key, console.settings.secret_key
    user = console.engine.get_user(session.subject)
    access_key = user.get("access_key")
    found = console.engine.secret_for(access_key) if access_key else None
    if found is None:
        raise IamError(409, "share links are signed with your S3 key: create one on the Users page first")
    return str(access_key), found[0]


def endpoint(console: Console, req: falcon.asgi.Request) -> str:
    """The S3 API's URL as this browser reaches it: the console's host name with the S3 port (a wildcard bind is
    reached through whatever name the browser used)."""
    site = console.site
    host = site.s3_host
    if host in ("0.0.0.0", "::", ""):
        host = (req.host or "127.0.0.1").strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if site.s3_tls else 'http'}://{host}:{site.s3_port}"


def presign_get(console: Console, session: Session, req: falcon.asgi.Request, bucket: str, key: str,
                seconds: int) -> str:
    import boto3  # noqa: PLC0415 - botocore's signer, loaded on the first share link only
    from botocore.config import Config  # noqa: PLC0415

    access_key, secret = signing_key(console, session)
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint(console, req), aws_access_key_id=access_key, aws_secret_access_key=secret,
        region_name=console.settings.region, config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    try:
        return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                 ExpiresIn=seconds))
    finally:
        client.close()
