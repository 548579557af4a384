"""A bucket's settings page: lifecycle rules, CORS rules and tags, each read and written by its S3 operation
(Get/Put/DeleteBucketLifecycleConfiguration, ...Cors, ...Tagging) through ``s3bridge``: the same validation, errors
and journal events as over S3. Rules are added and removed with forms (``rules.py`` edits the document's tree); the
raw S3 XML documents stay editable as an advanced option."""

from __future__ import annotations

import re
from urllib.parse import quote
from xml.etree.ElementTree import Element

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError

from ..s3.xml_render import tagging_xml
from . import rules
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
        ("POST", re.compile(rf"/buckets/{b}/settings/(?P<kind>lifecycle|cors)/add"), add_rule, "user"),
        ("POST", re.compile(rf"/buckets/{b}/settings/(?P<kind>lifecycle|cors)/remove"), remove_rule, "user"),
    ]


async def settings_page(page: Page) -> None:
    bucket = page.params["bucket"]
    documents = {kind: await _current(page, kind) for kind in DOCUMENTS}
    views = {kind: rules.views(kind, rules.parse(kind, documents[kind])) for kind in DOCUMENTS}
    page.console.s3.authorize(page.user, page.req, "GetBucketTagging", bucket, query={"tagging": ""})
    tags = page.console.engine.get_bucket_config(bucket, "tagging") or {}
    page.render("bucket_settings.html", bucket=bucket, documents=documents, views=views, methods=rules.CORS_METHODS,
                tags="\n".join(f"{k}={v}" for k, v in sorted(tags.items())))


async def _current(page: Page, kind: str) -> str:
    """The bucket's document of ``kind`` through its Get operation ("" when none is configured)."""
    param, get, *_rest = DOCUMENTS[kind]
    try:
        return text_of(await page.console.s3.call(page.user, page.req, get, page.params["bucket"],
                                                  query={param: ""}))
    except S3Error as exc:
        if exc.code is not DOCUMENTS[kind][4]:
            raise
        return ""


async def _store(page: Page, kind: str, root: Element) -> None:
    """Put the edited document, or delete it when no rule is left (S3 refuses an empty configuration)."""
    param, _, put, delete, _ = DOCUMENTS[kind]
    if rules.rules_of(kind, root):
        await page.console.s3.call(page.user, page.req, put, page.params["bucket"], query={param: ""},
                                   body=rules.serialize(root))
    else:
        await page.console.s3.call(page.user, page.req, delete, page.params["bucket"], query={param: ""})


async def add_rule(page: Page) -> None:
    """One rule from the form appended to the current document (the form is checked before anything is read)."""
    kind = page.params["kind"]
    if kind == "lifecycle":
        rule = rules.lifecycle_rule(page.arg("id"), page.arg("prefix"), page.arg("expiration_days"),
                                    page.arg("noncurrent_days"), page.arg("abort_days"))
    else:
        rule = rules.cors_rule(page.arg("id"), page.arg("origins"), page.args("methods"), page.arg("headers"),
                               page.arg("max_age"))
    root = rules.parse(kind, await _current(page, kind))
    root.append(rule)
    await _store(page, kind, root)
    _back(page)


async def remove_rule(page: Page) -> None:
    kind = page.params["kind"]
    try:
        index = int(page.arg("index"))
    except ValueError:
        raise IamError(400, "index is the rule's position") from None
    root = rules.parse(kind, await _current(page, kind))
    rules.remove(kind, root, index, page.arg("id"))
    await _store(page, kind, root)
    _back(page)


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
