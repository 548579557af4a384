"""Small async helpers for driving an Engine in tests: put bytes, read them back, collect listings."""

from __future__ import annotations

from typing import Any

from s4.engine import Engine
from s4.engine.model import ListPage, ObjectVersion, VersionListPage


async def put(engine: Engine, bucket: str, key: str, data: bytes, **kwargs: Any) -> ObjectVersion:
    stored = await engine.ingestor.ingest_bytes(data)
    return await engine.put_object(bucket, key, stored, **kwargs)


async def read(engine: Engine, version: ObjectVersion, start: int = 0, length: int | None = None) -> bytes:
    return b"".join([piece async for piece in engine.read_object(version, start, length)])


async def get(engine: Engine, bucket: str, key: str, version_id: str | None = None) -> bytes:
    return await read(engine, engine.head_object(bucket, key, version_id))


async def list_all(engine: Engine, bucket: str, prefix: str = "", delimiter: str = "",
                   page_size: int = 1000) -> tuple[list[str], list[str], list[ListPage]]:
    """Every key and common prefix, following ``next_marker`` page by page."""
    keys: list[str] = []
    prefixes: list[str] = []
    pages: list[ListPage] = []
    marker = ""
    while True:
        page = await engine.list_objects(bucket, prefix, delimiter, marker, page_size)
        pages.append(page)
        keys += [e.key for e in page.entries]
        prefixes += page.common_prefixes
        if not page.is_truncated:
            return keys, prefixes, pages
        assert page.next_marker.encode() > marker.encode(), "a truncated page must resume past its marker"
        marker = page.next_marker


async def list_all_versions(engine: Engine, bucket: str, prefix: str = "", delimiter: str = "",
                            page_size: int = 1000) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Every (key, version id, is delete marker) and common prefix, following the key/version-id markers."""
    out: list[tuple[str, str, bool]] = []
    prefixes: list[str] = []
    key_marker = version_marker = ""
    while True:
        page: VersionListPage = await engine.list_object_versions(bucket, prefix, delimiter, key_marker,
                                                                  version_marker, page_size)
        out += [(v.key, v.version_id, v.is_delete_marker) for v in page.versions]
        prefixes += page.common_prefixes
        if not page.is_truncated:
            return out, prefixes
        assert (page.next_key_marker, page.next_version_id_marker) != (key_marker, version_marker), "no progress"
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker
