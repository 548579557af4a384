"""Sign-in, buckets, the object browser and the dashboard."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import falcon

from s4.engine import accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError
from s4.engine.jobs.service import for_engine
from s4.engine.ports import SingleNodeStatus

from ..s3.xml_render import versioning_xml  # the document PutBucketVersioning parses
from .app import Page, Route
from .session import PRE_COOKIE, check_csrf
from .share import MAX_EXPIRY_S, presign_get
from .uploads import PART_SIZE, SINGLE_PUT_LIMIT

JOBS = ("lifecycle", "compaction", "scrubber")
PAGE_SIZE = 100  # keys and prefixes per page of the object browser
DELETE_CONCURRENCY = 32  # deletes in flight at once: the sequencer group-commits them
EMPTY_ROUNDS = 1000  # force delete: pages of versions removed before giving up (bounded loop)


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("GET", re.compile(r"/"), home, "open"),
        ("GET", re.compile(r"/login"), login_form, "open"),
        ("POST", re.compile(r"/login"), login, "open"),
        ("POST", re.compile(r"/logout"), logout, "user"),
        ("GET", re.compile(r"/buckets"), buckets_page, "user"),
        ("POST", re.compile(r"/buckets"), create_bucket, "user"),
        ("POST", re.compile(rf"/buckets/{b}/delete"), delete_bucket, "user"),
        ("POST", re.compile(rf"/buckets/{b}/versioning"), set_versioning, "user"),
        ("GET", re.compile(rf"/buckets/{b}"), browse, "user"),
        ("GET", re.compile(rf"/buckets/{b}/download"), download, "user"),
        ("POST", re.compile(rf"/buckets/{b}/delete-objects"), delete_objects, "user"),
        ("POST", re.compile(rf"/buckets/{b}/share"), share, "user"),
        ("GET", re.compile(r"/dashboard"), dashboard, "user"),
        ("POST", re.compile(r"/jobs/(?P<job>lifecycle|compaction|scrubber)/run"), run_job, "super"),
    ]


# -- sign-in ------------------------------------------------------------------------------------------------------
async def home(page: Page) -> None:
    page.redirect("/buckets" if page.session is not None else "/login")


async def login_form(page: Page, error: str = "", status: int = 200) -> None:
    if page.session is not None and not error:
        page.redirect("/buckets")
        return
    token = page.console.sign_in_token(page.req, page.resp)
    page.render("login.html", status, signin_token=token, error=error,
                iam=page.console.settings.iam_enabled)


async def login(page: Page) -> None:
    if not check_csrf(page.req.cookies.get(PRE_COOKIE) or "", page.arg("csrf_token")):
        raise IamError(403, "the sign-in form expired: reload the page")
    client = page.req.remote_addr or ""
    try:
        token = await page.console.sessions.sign_in(page.arg("username"), page.arg("password"), client)
    except IamError as exc:
        if exc.status not in (400, 401):
            raise
        await login_form(page, exc.message, exc.status)
        return
    page.console.set_session_cookie(page.req, page.resp, token)
    page.resp.status = falcon.HTTP_303
    page.resp.set_header("Location", "/buckets")


async def logout(page: Page) -> None:
    page.console.clear_session_cookie(page.resp)
    page.redirect("/login")


# -- buckets ------------------------------------------------------------------------------------------------------
async def buckets_page(page: Page) -> None:
    page.console.s3.authorize(page.user, page.req, "ListBuckets", "")
    mine = page.user.principal.account or accounts.DEFAULT_ACCOUNT.id  # the account's own buckets, as ListBuckets
    rows = [b for b in sorted(page.console.engine.list_buckets(), key=lambda b: b.name)
            if (b.account or accounts.DEFAULT_ACCOUNT.id) == mine or page.console.settings.pool_name]
    page.render("buckets.html", buckets=[_bucket_row(b) for b in rows])


def _bucket_row(bucket: Any) -> dict[str, Any]:
    return {"name": bucket.name, "objects": bucket.object_count, "bytes": human_bytes(bucket.bytes_stored),
            "created": when(bucket.created_ms), "versioning": bucket.versioning or "Off"}


async def create_bucket(page: Page) -> None:
    name = page.arg("name").strip()
    if not name:
        raise IamError(400, "a bucket name is required")
    await page.console.s3.call(page.user, page.req, "CreateBucket", name)
    page.redirect("/buckets")


async def delete_bucket(page: Page) -> None:
    bucket = page.params["bucket"]
    if page.arg("force") in ("1", "on", "true"):
        if page.arg("confirm") != bucket:
            raise IamError(400, "type the bucket's name to confirm deleting it with everything in it")
        await _empty(page, bucket)
    await page.console.s3.call(page.user, page.req, "DeleteBucket", bucket)
    page.redirect("/buckets")


async def _empty(page: Page, bucket: str) -> None:
    """Every version, delete marker and multipart upload removed, each through its S3 operation (and its check)."""
    s3, engine = page.console.s3, page.console.engine
    s3.authorize(page.user, page.req, "ListObjectVersions", bucket)
    for _ in range(EMPTY_ROUNDS):
        versions = (await engine.list_object_versions(bucket, max_keys=1000)).versions
        uploads = engine.list_multipart_uploads(bucket, max_uploads=1000).uploads
        if not versions and not uploads:
            return
        await _bounded([s3.call(page.user, page.req, "DeleteObject", bucket, v.key, query={"versionId": v.version_id})
                        for v in versions] +
                       [s3.call(page.user, page.req, "AbortMultipartUpload", bucket, u.key,
                                query={"uploadId": u.upload_id}) for u in uploads])
    raise IamError(409, "the bucket is still being written to; try again")


async def _bounded(calls: Sequence[Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def run(call: Awaitable[Any]) -> None:
        async with gate:
            try:
                await call
            except S3Error as exc:  # already gone (a concurrent delete or abort): that is what was wanted
                if exc.code not in (ErrorCode.NO_SUCH_UPLOAD, ErrorCode.NO_SUCH_KEY, ErrorCode.NO_SUCH_VERSION):
                    raise

    await asyncio.gather(*(run(c) for c in calls))


async def set_versioning(page: Page) -> None:
    bucket, status = page.params["bucket"], page.arg("status")
    if status not in ("Enabled", "Suspended"):
        raise IamError(400, "versioning is Enabled or Suspended")
    await page.console.s3.call(page.user, page.req, "PutBucketVersioning", bucket, query={"versioning": ""},
                               body=versioning_xml(status))
    page.redirect("/buckets")


# -- object browser -----------------------------------------------------------------------------------------------
async def browse(page: Page) -> None:
    bucket = page.params["bucket"]
    prefix, search, after = page.arg("prefix"), page.arg("search"), page.arg("after")
    query = {"prefix": prefix + search, "delimiter": "/"}
    page.console.s3.authorize(page.user, page.req, "ListObjectsV2", bucket, query=query)
    listing = await page.console.engine.list_objects(bucket, prefix + search, "/", after, PAGE_SIZE)
    crumbs, walked = [], ""
    for part in [p for p in prefix.split("/") if p]:
        walked += part + "/"
        crumbs.append({"name": part, "prefix": walked})
    folders = [{"name": p[len(prefix):], "prefix": p} for p in listing.common_prefixes]
    objects = [{"key": e.key, "name": e.key[len(prefix):], "size": human_bytes(e.size), "bytes": e.size,
                "modified": when(e.last_modified_ms)} for e in listing.entries]
    bucket_rec = page.console.engine.get_bucket(bucket)
    page.render("browser.html", bucket=bucket, prefix=prefix, search=search, crumbs=crumbs, folders=folders,
                objects=objects, next_after=listing.next_marker if listing.is_truncated else "",
                versioning=bucket_rec.versioning or "Off", part_size=PART_SIZE, single_limit=SINGLE_PUT_LIMIT,
                max_expiry_days=MAX_EXPIRY_S // 86400, quote=quote)


async def download(page: Page) -> None:
    bucket, key, version_id = page.params["bucket"], page.arg("key"), page.arg("version_id")
    found = await page.console.s3.call(page.user, page.req, "GetObject", bucket, key,
                                       query={"versionId": version_id} if version_id else None)
    resp = page.resp
    # The console's origin never renders stored bytes: a download, whatever the object's type (an HTML object
    # opened here would run with the console's origin)
    resp.content_type = "application/octet-stream"
    name = key.rsplit("/", 1)[-1] or "download"
    resp.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}")
    length = found.get_header("Content-Length")
    if length is not None:
        resp.set_header("Content-Length", length)
    resp.set_header("ETag", found.get_header("ETag") or "")
    if found.stream is not None:
        resp.stream = found.stream
    else:
        resp.data = found.data or b""


async def delete_objects(page: Page) -> None:
    bucket = page.params["bucket"]
    keys = [k for k in page.args("key") if k]
    if not keys:
        raise IamError(400, "select the objects to delete")
    await _bounded([page.console.s3.call(page.user, page.req, "DeleteObject", bucket, k) for k in keys])
    page.redirect(f"/buckets/{quote(bucket, safe='')}?prefix={quote(page.arg('prefix'), safe='')}")


async def share(page: Page) -> None:
    bucket, key = page.params["bucket"], page.arg("key")
    try:
        seconds = int(float(page.arg("expires_hours", "24")) * 3600)
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        raise IamError(400, "the expiry is a number of hours") from None
    if not 1 <= seconds <= MAX_EXPIRY_S:
        raise IamError(400, f"a share link expires within 1 second to {MAX_EXPIRY_S // 86400} days")
    # the link acts as the user's S3 key: the user must be allowed to read the object now
    page.console.s3.authorize(page.user, page.req, "GetObject", bucket, key)
    page.console.engine.head_object(bucket, key)
    url = presign_get(page.console, page.user, page.req, bucket, key, seconds)
    page.render("share_fragment.html", url=url, key=key, hours=seconds / 3600)


# -- dashboard ----------------------------------------------------------------------------------------------------
async def dashboard(page: Page) -> None:
    page.console.s3.authorize(page.user, page.req, "ListBuckets", "")
    stats = await anyio.to_thread.run_sync(page.console.engine.storage_stats)
    buckets = stats["buckets"]
    logical = sum(b.bytes_stored for b in buckets)
    stored = stats["live_bytes"]
    unique, refs = stats["unique_blobs"], stats["blob_refs"]
    cards = [("Buckets", str(len(buckets))), ("Objects", str(sum(b.object_count for b in buckets))),
             ("Logical bytes", human_bytes(logical)), ("Stored bytes", human_bytes(stored)),
             ("Dedup savings", human_bytes(max(0, logical - stored))),
             ("Dedup ratio", f"{refs / unique:.2f}" if unique else "1.00"),
             ("Volumes", str(stats["volumes"])), ("Damaged blobs", str(stats["damaged_blobs"]))]
    jobs, nodes = [], []
    if page.user.is_super:  # the node's background jobs and the pool's members: SuperUsers only (as the admin API)
        service = for_engine(page.console.engine)
        for name in JOBS:
            status = await anyio.to_thread.run_sync(service.status, name)  # a worker asks the journal's owner
            last = status.get("last_run") or {}
            jobs.append({"name": name, "runs": status.get("runs", 0), "running": status.get("running", False),
                         "last": when(last["started_ms"]) if last.get("started_ms") else "never",
                         "duration": f"{last.get('duration_ms', 0) / 1000:.1f} s" if last else "",
                         "errors": len(last.get("errors") or [])})
        cluster = page.console.engine.cluster or SingleNodeStatus(page.console.engine.node_id, None)
        health = await cluster.health()
        nodes = [{"id": n.get("id"), "pool": n.get("pool") or "", "state": n.get("state"),
                  "address": n.get("http_addr") or ""} for n in health.get("nodes", [])]
    page.render("dashboard.html", cards=cards, generated=when(int(time.time() * 1000)), jobs=jobs, nodes=nodes,
                notice=page.arg("notice"))


async def run_job(page: Page) -> None:
    """Run a background job now (the admin API's run: lifecycle takes its pool lease first)."""
    service, job = for_engine(page.console.engine), page.params["job"]
    report = await getattr(service, job)()
    if report.get("skipped"):
        notice = f"{job} not run: {report.get('lease', {}).get('reason', 'its lease is held elsewhere')}"
    else:
        notice = f"{job} ran: {len(report.get('errors') or [])} errors, {report.get('duration_ms', 0)} ms"
    page.redirect(f"/dashboard?notice={quote(notice)}")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
