"""S3 operations made by the console on the signed-in user's behalf, in process, through the S3 API's own code.

Each action is the S3 API's operation (``api.app.HANDLERS``): the same access check (``AccessControl.authorize``
with the session's principal: bucket policy, ACLs, role), the same security-header and framing checks, the same
handler (default encryption, object lock defaults, checksums, ETags), and the same engine commands. Only the
authentication differs: the console's session instead of a signature. So a console action can do nothing the user
could not do with their S3 keys, and it is journaled like the S3 request (the actor is ``user:<name>``).

Listings read the views directly after the same ``authorize`` (as the admin API's bucket browsing does): they need
rows, not XML.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import falcon.asgi

from s4.engine import Engine

from ..app import HANDLERS
from ..s3.access import AccessControl, RequestFacts
from ..s3.call import Call
from ..s3.security import check_security_headers
from ..settings import ApiSettings
from .session import Session


@dataclass
class ConsoleCall(Call):
    """A ``Call`` whose caller is a console session, not a signature (``auth`` None)."""

    console_actor: str = ""

    @property
    def actor(self) -> str:
        return self.console_actor


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class S3Bridge:
    def __init__(self, engine: Engine, settings: ApiSettings, access: AccessControl) -> None:
        self.engine = engine
        self.settings = settings
        self.access = access

    def facts(self, req: falcon.asgi.Request, query: dict[str, str] | None = None) -> RequestFacts:
        client = req.scope.get("client")
        return RequestFacts(dict(req.headers), query or {}, str(client[0]) if client else "",
                            req.scheme == "https", None, time.time())

    def authorize(self, session: Session, req: falcon.asgi.Request, operation: str, bucket: str, key: str = "",
                  query: dict[str, str] | None = None) -> None:
        """AccessDenied (S3Error) unless ``session``'s user may do ``operation`` (s3/access.py decides)."""
        self.access.authorize(session.principal, operation, bucket, key, self.facts(req, query))

    async def call(self, session: Session, req: falcon.asgi.Request, operation: str, bucket: str, key: str = "",
                   *, query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                   body: bytes | None = None, stream: bool = False) -> falcon.asgi.Response:
        """Run one S3 operation; its response (status, headers, data or stream) for the console to translate.
        ``headers``: the S3 request's headers (the browser's are not passed on); ``body``: a small document, or
        ``stream``: the browser's request body is the object data (its Content-Length passed on)."""
        query = dict(query or {})
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        if body is not None:
            sent["content-length"] = str(len(body))
        elif stream:
            length = req.get_header("Content-Length")
            if length is not None:
                sent["content-length"] = length
        facts = RequestFacts(sent, query, self.facts(req).source_ip, req.scheme == "https", None, time.time())
        who = session.principal
        self.access.authorize(who, operation, bucket, key, facts)
        call = ConsoleCall(self.engine, self.settings, req, _method(operation), bucket, key, query, sent, None,
                           "console", authorize=self.access.guard(who, facts, operation), who=who,
                           body=_once(body) if body is not None else None, console_actor=session.actor)
        check_security_headers(operation, sent)
        call.check_framing(operation)
        if call.has_body:
            await call.check_before_body(operation)
        elif bucket and operation != "CreateBucket":
            await self.engine.settle_missing_bucket(bucket)
        resp = falcon.asgi.Response()
        await HANDLERS[operation](call, resp)
        return resp


_METHODS: dict[str, str] = {"GetObject": "GET", "HeadObject": "HEAD", "PutObject": "PUT", "UploadPart": "PUT",
                            "CreateBucket": "PUT", "PutBucketVersioning": "PUT", "DeleteObject": "DELETE",
                            "DeleteBucket": "DELETE", "AbortMultipartUpload": "DELETE", "RenameObject": "PUT",
                            "CopyObject": "PUT", "PutObjectTagging": "PUT", "PutBucketLifecycleConfiguration": "PUT",
                            "PutBucketCors": "PUT", "PutBucketTagging": "PUT", "DeleteBucketLifecycle": "DELETE",
                            "DeleteBucketCors": "DELETE", "DeleteBucketTagging": "DELETE",
                            "SelectObjectContent": "POST"}


def _method(operation: str) -> str:
    return _METHODS.get(operation, "POST" if operation in ("CreateMultipartUpload", "CompleteMultipartUpload")
                        else "GET")


def response_header(resp: falcon.asgi.Response, name: str) -> str:
    return str(resp.get_header(name) or "")


def etag_of(resp: falcon.asgi.Response) -> str:
    return response_header(resp, "ETag")


def text_of(resp: falcon.asgi.Response) -> str:
    data: Any = resp.data if resp.data is not None else (resp.text or "")
    return data.decode() if isinstance(data, bytes) else str(data)
