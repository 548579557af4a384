"""One object's page (metadata, tags, version history) and the browser's folder actions: new folder, rename.

Each action is the S3 operation it names, through ``s3bridge``: PutObject (a folder is an empty ``name/`` key),
RenameObject (S4's: one event whatever the folder holds, docs/architecture/rename.md), PutObjectTagging,
CopyObject of an older version onto the key (restore), DeleteObject of one version, GetObject of one version.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from s4.engine.iam import IamError

from ..s3.xml_render import tagging_xml
from .app import Page, Route
from .pages import human_bytes, when

MAX_VERSIONS_SHOWN = 1000


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("POST", re.compile(rf"/buckets/{b}/folder"), new_folder, "user"),
        ("POST", re.compile(rf"/buckets/{b}/rename"), rename, "user"),
        ("GET", re.compile(rf"/buckets/{b}/object"), object_page, "user"),
        ("POST", re.compile(rf"/buckets/{b}/object/tags"), set_tags, "user"),
        ("POST", re.compile(rf"/buckets/{b}/object/metadata"), set_metadata, "user"),
        ("POST", re.compile(rf"/buckets/{b}/object/restore"), restore_version, "user"),
        ("POST", re.compile(rf"/buckets/{b}/object/delete-version"), delete_version, "user"),
    ]


def _browse_url(bucket: str, prefix: str) -> str:
    return f"/buckets/{quote(bucket, safe='')}?prefix={quote(prefix, safe='')}"


def _object_url(bucket: str, key: str) -> str:
    return f"/buckets/{quote(bucket, safe='')}/object?key={quote(key, safe='')}"


async def new_folder(page: Page) -> None:
    bucket, prefix, name = page.params["bucket"], page.arg("prefix"), page.arg("name").strip().strip("/")
    if not name:
        raise IamError(400, "a folder name is required")
    await page.console.s3.call(page.user, page.req, "PutObject", bucket, f"{prefix}{name}/", body=b"")
    page.redirect(_browse_url(bucket, prefix))


async def rename(page: Page) -> None:
    """A key, or a whole folder when the source ends in '/' (the destination then gets one too)."""
    bucket, source, target = page.params["bucket"], page.arg("source"), page.arg("target").strip()
    if not source or not target:
        raise IamError(400, "name what to rename and its new name")
    if source.endswith("/") and not target.endswith("/"):
        target += "/"
    header = {"x-amz-rename-source": f"/{bucket}/{quote(source, safe='/')}"}
    await page.console.s3.call(page.user, page.req, "RenameObject", bucket, target, query={"renameObject": ""},
                               headers=header)
    page.redirect(_browse_url(bucket, page.arg("prefix")))


async def object_page(page: Page) -> None:
    bucket, key = page.params["bucket"], page.arg("key")
    s3, engine = page.console.s3, page.console.engine
    s3.authorize(page.user, page.req, "HeadObject", bucket, key)
    version = engine.head_object(bucket, key)
    s3.authorize(page.user, page.req, "ListObjectVersions", bucket, query={"prefix": key})
    listing = await engine.list_object_versions(bucket, prefix=key, max_keys=MAX_VERSIONS_SHOWN)
    versions = [{"id": v.version_id, "size": human_bytes(v.size), "modified": when(v.last_modified_ms),
                 "marker": v.is_delete_marker, "latest": i == 0, "etag": v.etag}
                for i, v in enumerate(e for e in listing.versions if e.key == key)]
    details = [("Size", f"{human_bytes(version.size)} ({version.size} bytes)"), ("ETag", version.etag),
               ("Content type", version.content_type), ("Last modified", when(version.last_modified_ms)),
               ("Version", version.version_id or "null")]
    page.render("object.html", bucket=bucket, key=key, details=details, metadata=sorted(version.metadata.items()),
                content_type=version.content_type,
                metadata_text="\n".join(f"{k}={v}" for k, v in sorted(version.metadata.items())),
                tags="\n".join(f"{k}={v}" for k, v in sorted(version.tags.items())), versions=versions,
                parent=key.rpartition("/")[0] + "/" if "/" in key else "")


async def set_tags(page: Page) -> None:
    bucket, key = page.params["bucket"], page.arg("key")
    tags: dict[str, str] = {}
    for line in page.arg("tags").splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise IamError(400, f"a tag is name=value, one per line: {line.strip()[:64]!r}")
            tags[name.strip()] = value.strip()
    await page.console.s3.call(page.user, page.req, "PutObjectTagging", bucket, key, query={"tagging": ""},
                               body=tagging_xml(tags))
    page.redirect(_object_url(bucket, key))


async def set_metadata(page: Page) -> None:
    """Content type and user metadata replaced: the object copied onto itself with REPLACE (S3's only way; a
    versioned bucket keeps the old version)."""
    bucket, key = page.params["bucket"], page.arg("key")
    headers = {"x-amz-copy-source": f"/{bucket}/{quote(key, safe='/')}", "x-amz-metadata-directive": "REPLACE"}
    content_type = page.arg("content_type").strip()
    if content_type:
        headers["content-type"] = content_type
    for line in page.arg("metadata").splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise IamError(400, f"metadata is name=value, one per line: {line.strip()[:64]!r}")
            headers[f"x-amz-meta-{name.strip().lower()}"] = value.strip()
    await page.console.s3.call(page.user, page.req, "CopyObject", bucket, key, headers=headers)
    page.redirect(_object_url(bucket, key))


async def restore_version(page: Page) -> None:
    """An older version copied onto the key: it becomes the latest again (history keeps every version)."""
    bucket, key, version_id = page.params["bucket"], page.arg("key"), page.arg("version_id")
    source = f"/{bucket}/{quote(key, safe='/')}?versionId={quote(version_id, safe='')}"
    await page.console.s3.call(page.user, page.req, "CopyObject", bucket, key, headers={"x-amz-copy-source": source})
    page.redirect(_object_url(bucket, key))


async def delete_version(page: Page) -> None:
    bucket, key, version_id = page.params["bucket"], page.arg("key"), page.arg("version_id")
    await page.console.s3.call(page.user, page.req, "DeleteObject", bucket, key, query={"versionId": version_id})
    page.redirect(_object_url(bucket, key))
