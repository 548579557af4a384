"""A bucket's settings page: lifecycle rules, CORS rules and tags, each read and written by its S3 operation
(Get/Put/DeleteBucketLifecycleConfiguration, ...Cors, ...Tagging) through ``s3bridge``: the same validation, errors
and journal events as over S3. Rules are edited as the S3 XML documents (what the AWS docs and CLIs show)."""

from __future__ import annotations

import re
from urllib.parse import quote

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError

from ..s3.xml_render import tagging_xml
from .app import Page, Route
from .s3bridge import text_of

#: kind -> (query parameter, Get, Put, Delete operation, the "none configured" error)
DOCUMENTS = {
    "lifecycle": ("lifecycle", "GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration",
                  "DeleteBucketLifecycle", ErrorCode.NO_SUCH_LIFECYCLE_CONFIGURATION),
    "cors": ("cors", "GetBucketCors", "PutBucketCors", "DeleteBucketCors", ErrorCode.NO_SUCH_CORS_CONFIGURATION),
}


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("GET", re.compile(rf"/buckets/{b}/settings"), settings_page, "user"),
        ("POST", re.compile(rf"/buckets/{b}/settings/(?P<kind>lifecycle|cors)"), save_document, "user"),
        ("POST", re.compile(rf"/buckets/{b}/settings/tags"), save_tags, "user"),
    ]


async def settings_page(page: Page) -> None:
    bucket = page.params["bucket"]
    documents = {}
    for kind, (param, get, *_rest) in DOCUMENTS.items():
        try:
            found = await page.console.s3.call(page.user, page.req, get, bucket, query={param: ""})
            documents[kind] = text_of(found)
        except S3Error as exc:
            if exc.code is not DOCUMENTS[kind][4]:
                raise
            documents[kind] = ""
    page.console.s3.authorize(page.user, page.req, "GetBucketTagging", bucket, query={"tagging": ""})
    tags = page.console.engine.get_bucket_config(bucket, "tagging") or {}
    page.render("bucket_settings.html", bucket=bucket, documents=documents,
                tags="\n".join(f"{k}={v}" for k, v in sorted(tags.items())))


def _back(page: Page) -> None:
    page.redirect(f"/buckets/{quote(page.params['bucket'], safe='')}/settings")


async def save_document(page: Page) -> None:
    """The document as given (S3 validates it), or none at all when the field is left empty."""
    bucket, kind = page.params["bucket"], page.params["kind"]
    param, _, put, delete, _ = DOCUMENTS[kind]
    document = page.arg("document").strip()
    if document:
        await page.console.s3.call(page.user, page.req, put, bucket, query={param: ""}, body=document.encode())
    else:
        await page.console.s3.call(page.user, page.req, delete, bucket, query={param: ""})
    _back(page)


async def save_tags(page: Page) -> None:
    bucket = page.params["bucket"]
    tags: dict[str, str] = {}
    for line in page.arg("tags").splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise IamError(400, f"a tag is name=value, one per line: {line.strip()[:64]!r}")
            tags[name.strip()] = value.strip()
    if tags:
        await page.console.s3.call(page.user, page.req, "PutBucketTagging", bucket, query={"tagging": ""},
                                   body=tagging_xml(tags))
    else:
        await page.console.s3.call(page.user, page.req, "DeleteBucketTagging", bucket, query={"tagging": ""})
    _back(page)
