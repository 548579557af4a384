"""Uploads from the browser (static/uploader.js), made by the server through the S3 API's own operations.

Small files are one PutObject. Bigger ones are a multipart upload the browser drives part by part: it asks for an
upload (CreateMultipartUpload), sends each part (UploadPart, one request per part, so a proxy's body limit or a
dropped connection costs one part, which the browser retries), then completes it (CompleteMultipartUpload with the
ETags it got) or cancels it (AbortMultipartUpload: nothing is left behind). Every call carries the CSRF token.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

import falcon

from s4.engine.iam import IamError

from .app import Page, Route
from .s3bridge import etag_of, text_of

PART_SIZE = 8 * 1024 * 1024  # the uploader's part size (S3's minimum is 5 MiB; the last part may be smaller)
SINGLE_PUT_LIMIT = PART_SIZE  # at most this many bytes: one PutObject
MAX_PARTS_JSON = 1024 * 1024  # the completion's part list (10,000 parts fit)
_UPLOAD_ID = re.compile(r"<UploadId>([^<]+)</UploadId>")


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("PUT", re.compile(rf"/api/buckets/{b}/object"), put_object, "user"),
        ("POST", re.compile(rf"/api/buckets/{b}/uploads"), create_upload, "user"),
        ("PUT", re.compile(rf"/api/buckets/{b}/uploads/part"), upload_part, "user"),
        ("POST", re.compile(rf"/api/buckets/{b}/uploads/complete"), complete_upload, "user"),
        ("DELETE", re.compile(rf"/api/buckets/{b}/uploads"), abort_upload, "user"),
    ]


def _json(page: Page, doc: dict[str, Any], status: int = 200) -> None:
    page.resp.status = falcon.code_to_http_status(status)
    page.resp.content_type = "application/json"
    page.resp.data = json.dumps(doc).encode()


def _key(page: Page) -> str:
    key = page.arg("key")
    if not key:
        raise IamError(400, "key is required")
    return key


def _type(page: Page) -> dict[str, str]:
    content_type = page.req.get_header("X-Object-Content-Type") or ""
    return {"content-type": content_type} if content_type else {}


async def put_object(page: Page) -> None:
    found = await page.console.s3.call(page.user, page.req, "PutObject", page.params["bucket"], _key(page),
                                       headers=_type(page), stream=True)
    _json(page, {"etag": etag_of(found)})


async def create_upload(page: Page) -> None:
    found = await page.console.s3.call(page.user, page.req, "CreateMultipartUpload", page.params["bucket"],
                                       _key(page), query={"uploads": ""}, headers=_type(page))
    m = _UPLOAD_ID.search(text_of(found))
    if m is None:
        raise IamError(500, "CreateMultipartUpload answered no upload id")
    _json(page, {"upload_id": m.group(1)})


async def upload_part(page: Page) -> None:
    query = {"uploadId": page.arg("upload_id"), "partNumber": page.arg("part")}
    found = await page.console.s3.call(page.user, page.req, "UploadPart", page.params["bucket"], _key(page),
                                       query=query, stream=True)
    _json(page, {"etag": etag_of(found)})


async def complete_upload(page: Page) -> None:
    raw = await page.req.bounded_stream.read(MAX_PARTS_JSON + 1)
    if len(raw) > MAX_PARTS_JSON:
        raise IamError(400, "part list too large")
    try:
        doc = json.loads(raw or b"{}")
        parts = [(int(p["part"]), str(p["etag"])) for p in doc["parts"]]
    except (ValueError, KeyError, TypeError):
        raise IamError(400, "the body is {\"parts\": [{\"part\": n, \"etag\": \"...\"}, ...]}") from None
    body = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>" for n, etag in parts) + \
        "</CompleteMultipartUpload>"
    found = await page.console.s3.call(page.user, page.req, "CompleteMultipartUpload", page.params["bucket"],
                                       _key(page), query={"uploadId": page.arg("upload_id")}, body=body.encode())
    _json(page, {"etag": etag_of(found)})


async def abort_upload(page: Page) -> None:
    await page.console.s3.call(page.user, page.req, "AbortMultipartUpload", page.params["bucket"], _key(page),
                               query={"uploadId": page.arg("upload_id")})
    _json(page, {"aborted": True})
