"""Engine listings against models of S3's semantics.

``list_objects``: keys in UTF-8 byte order, common prefixes rolled up with a delimiter, ``start_after``/marker
exclusive (a marker that is itself a common prefix skips everything under it), ``max_keys`` counting keys and
prefixes together, keys whose latest version is a delete marker invisible. ``list_object_versions``: every version
newest first, paged by key and version-id markers. Also ListMultipartUploads and ListParts paging.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.engine_io import list_all, list_all_versions, put
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine import Engine, EngineOptions
from s4.engine.model import BlobRef, ListEntry, ObjectVersion

pytestmark = pytest.mark.anyio
ALPHABET = "ab/.0é-"


# -- models -----------------------------------------------------------------------------------------------------
def model_list(keys: list[str], prefix: str, delimiter: str, marker: str, max_keys: int
               ) -> tuple[list[str], list[str], bool, list[tuple[str, str]]]:
    """(keys, common prefixes, is_truncated, every item in order) for one ListObjects page."""
    p, d, m = prefix.encode(), delimiter.encode(), marker.encode()
    items: list[tuple[str, str]] = []
    seen: set[bytes] = set()
    for kb in sorted(k.encode() for k in keys):
        if not kb.startswith(p) or kb <= m:
            continue
        if d:
            cut = kb.find(d, len(p))
            if cut >= 0:
                cp = kb[: cut + len(d)]
                if cp == m or cp in seen:
                    continue
                seen.add(cp)
                items.append(("cp", cp.decode()))
                continue
        items.append(("key", kb.decode()))
    page = items[:max_keys]
    return ([n for t, n in page if t == "key"], [n for t, n in page if t == "cp"], len(items) > max_keys, items)


@dataclass
class VersionModel:
    """Every version of every key, newest first, as (version id, is delete marker)."""

    keys: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def live(self) -> list[str]:
        return [k for k, vs in self.keys.items() if vs and not vs[0][1]]

    def rows(self, prefix: str = "") -> list[tuple[str, str, bool]]:
        return [(k, vid, dm) for k in sorted(self.keys, key=str.encode) if k.startswith(prefix)
                for vid, dm in self.keys[k]]


async def populate(engine: Engine, bucket: str, ops: list[tuple[str, str]]) -> VersionModel:
    """Run puts/deletes on a versioned bucket, recording every version id the engine hands out."""
    model = VersionModel()
    for op, key in ops:
        if op == "put":
            version = await put(engine, bucket, key, key.encode())
            model.keys.setdefault(key, []).insert(0, (version.version_id, False))
        else:
            result = await engine.delete_object(bucket, key)
            assert result["delete_marker"]
            model.keys.setdefault(key, []).insert(0, (result["version_id"], True))
    return model


def run_with_engine(scenario, **options):  # type: ignore[no-untyped-def]
    """Run ``scenario(engine)`` on a fresh engine in a temporary directory (for hypothesis examples)."""
    with tempfile.TemporaryDirectory(prefix="s4-list-") as tmp:
        engine = Engine(EngineOptions(Path(tmp) / "data", **options))
        try:
            return asyncio.run(scenario(engine))
        finally:
            engine.close()


# -- list_objects -------------------------------------------------------------------------------------------------
TRICKY = ["a", "a/", "a.txt", "a0", "a//b", "a/b", "a/b/c", "a/é", "b-1", "b-2", "b/x", "é/1", "e"]


async def test_list_objects_tricky_keys(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    for key in TRICKY:
        await put(engine, "bkt", key, b"x")
    keys, prefixes, _ = await list_all(engine, "bkt")
    assert keys == sorted(TRICKY, key=str.encode)
    assert keys.index("a.txt") < keys.index("a/") < keys.index("a0")
    keys, prefixes, _ = await list_all(engine, "bkt", delimiter="/")
    assert keys == ["a", "a.txt", "a0", "b-1", "b-2", "e"]
    assert prefixes == ["a/", "b/", "é/"]
    keys, prefixes, _ = await list_all(engine, "bkt", prefix="a/", delimiter="/")
    assert keys == ["a/", "a/b", "a/é"]
    assert prefixes == ["a//", "a/b/"]
    keys, prefixes, _ = await list_all(engine, "bkt", delimiter="-")
    assert prefixes == ["b-"] and "b-1" not in keys and "b/x" in keys


async def test_marker_that_is_a_common_prefix_resumes_after_it(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    for key in ["a/1", "a/2", "a/3/x", "a0", "b/1", "c"]:
        await put(engine, "bkt", key, b"x")
    page = await engine.list_objects("bkt", delimiter="/", start_after="a/")
    assert [e.key for e in page.entries] == ["a0", "c"] and page.common_prefixes == ["b/"]
    page = await engine.list_objects("bkt", delimiter="/", max_keys=1)
    assert page.common_prefixes == ["a/"] and page.is_truncated and page.next_marker == "a/"
    page = await engine.list_objects("bkt", delimiter="/", start_after=page.next_marker, max_keys=1)
    assert [e.key for e in page.entries] == ["a0"] and not page.common_prefixes


async def test_max_keys_counts_keys_and_prefixes_and_truncation_is_exact(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    for key in ["a/1", "b", "c/1", "d"]:
        await put(engine, "bkt", key, b"x")
    page = await engine.list_objects("bkt", delimiter="/", max_keys=4)
    assert not page.is_truncated and len(page.entries) + len(page.common_prefixes) == 4
    page = await engine.list_objects("bkt", delimiter="/", max_keys=3)
    assert page.is_truncated and page.common_prefixes == ["a/", "c/"] and [e.key for e in page.entries] == ["b"]


async def test_delete_marker_keys_are_invisible(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "versioning", "Enabled")
    for key in ["d/1", "d/2", "e", "f/1", "g"]:
        await put(engine, "bkt", key, b"x")
    for key in ["d/1", "d/2", "e", "only-marker"]:
        await engine.delete_object("bkt", key)
    keys, prefixes, _ = await list_all(engine, "bkt", delimiter="/", page_size=1)
    assert keys == ["g"] and prefixes == ["f/"], "a prefix holding only delete markers must not be listed"
    keys, _, _ = await list_all(engine, "bkt", page_size=1)
    assert keys == ["f/1", "g"]
    rows, _ = await list_all_versions(engine, "bkt", page_size=1)
    assert [(k, dm) for k, _, dm in rows] == [("d/1", True), ("d/1", False), ("d/2", True), ("d/2", False),
                                              ("e", True), ("e", False), ("f/1", False), ("g", False),
                                              ("only-marker", True)]


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=5), min_size=0, max_size=18,
                  unique_by=str.encode),
    deleted=st.lists(st.integers(0, 17), max_size=6),
    queries=st.lists(st.tuples(st.sampled_from(["", "a", "a/", "é", "b/", "a."]),
                               st.sampled_from(["", "/", "-", "a/"]),
                               st.text(alphabet=ALPHABET, max_size=4),
                               st.integers(1, 5)), min_size=1, max_size=8),
)
def test_list_objects_matches_model(keys: list[str], deleted: list[int],
                                    queries: list[tuple[str, str, str, int]]) -> None:
    async def scenario(engine: Engine) -> None:
        await engine.create_bucket("bkt")
        await engine.set_bucket_config("bkt", "versioning", "Enabled")
        ops = [("put", k) for k in keys] + [("delete", keys[i]) for i in deleted if i < len(keys)]
        model = await populate(engine, "bkt", ops)
        live = model.live()
        for prefix, delimiter, marker, max_keys in queries:
            want_keys, want_prefixes, want_truncated, items = model_list(live, prefix, delimiter, marker, max_keys)
            page = await engine.list_objects("bkt", prefix, delimiter, marker, max_keys)
            where = f"prefix={prefix!r} delimiter={delimiter!r} marker={marker!r} max_keys={max_keys}"
            assert [e.key for e in page.entries] == want_keys, where
            assert page.common_prefixes == want_prefixes, where
            assert page.is_truncated == want_truncated, where
            # Following next_marker pages through exactly the model's items, each once.
            got: list[tuple[str, str]] = []
            while True:
                got += [("key", e.key) for e in page.entries] + [("cp", c) for c in page.common_prefixes]
                if not page.is_truncated:
                    break
                assert len(got) <= len(items), f"paging does not end: {where}"
                page = await engine.list_objects("bkt", prefix, delimiter, page.next_marker, max_keys)
            assert sorted(got, key=lambda item: item[1].encode()) == items, where

    run_with_engine(scenario)


# -- list_object_versions ----------------------------------------------------------------------------------------
def model_versions_page(model: VersionModel, key_marker: str, version_marker: str, max_keys: int
                        ) -> list[tuple[str, str, bool]]:
    rows = model.rows()
    if key_marker:
        if version_marker:
            index = rows.index(next(r for r in rows if r[0] == key_marker and r[1] == version_marker))
            rows = rows[index + 1:]
        else:
            rows = [r for r in rows if r[0].encode() > key_marker.encode()]
    return rows[:max_keys]


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "put", "delete"]),
                              st.sampled_from(["a", "a/", "a/b", "a.txt", "a0", "b", "é"])), max_size=20),
       page_size=st.integers(1, 4))
def test_list_versions_paging_matches_model(ops: list[tuple[str, str]], page_size: int) -> None:
    async def scenario(engine: Engine) -> None:
        await engine.create_bucket("bkt")
        await engine.set_bucket_config("bkt", "versioning", "Enabled")
        model = await populate(engine, "bkt", ops)
        key_marker = version_marker = ""
        collected: list[tuple[str, str, bool]] = []
        while True:
            page = await engine.list_object_versions("bkt", key_marker=key_marker,
                                                     version_id_marker=version_marker, max_keys=page_size)
            rows = [(v.key, v.version_id, v.is_delete_marker) for v in page.versions]
            assert rows == model_versions_page(model, key_marker, version_marker, page_size)
            for v in page.versions:
                assert v.is_latest == (model.keys[v.key][0][0] == v.version_id)
            collected += rows
            assert len(collected) <= len(model.rows()), "paging does not end"
            if not page.is_truncated:
                break
            key_marker, version_marker = page.next_key_marker, page.next_version_id_marker
        assert collected == model.rows()
        # A key marker without a version marker skips every version of that key.
        for key in model.keys:
            page = await engine.list_object_versions("bkt", key_marker=key, max_keys=1000)
            assert [(v.key, v.version_id, v.is_delete_marker) for v in page.versions] == \
                [r for r in model.rows() if r[0].encode() > key.encode()]

    run_with_engine(scenario)


async def test_list_versions_with_delimiter(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "versioning", "Enabled")
    model = await populate(engine, "bkt", [("put", "a/1"), ("put", "a/2"), ("put", "b"), ("put", "b"),
                                           ("delete", "c/x"), ("put", "d")])
    for page_size in (1, 2, 3, 100):
        rows, prefixes = await list_all_versions(engine, "bkt", delimiter="/", page_size=page_size)
        assert prefixes == ["a/", "c/"]
        assert rows == [r for r in model.rows() if "/" not in r[0]]


async def test_unversioned_bucket_lists_null_versions(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    for key in ("x", "y", "x"):
        await put(engine, "bkt", key, b"data")
    rows, _ = await list_all_versions(engine, "bkt", page_size=1)
    assert rows == [("x", "null", False), ("y", "null", False)]


# -- multipart listings -----------------------------------------------------------------------------------------
async def test_list_multipart_uploads_order_and_delimiter(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    created = []
    for key in ["b", "a/2", "a/1", "c", "a.txt"]:
        created.append((key, await engine.create_multipart_upload("bkt", key)))
    page = engine.list_multipart_uploads("bkt")
    assert [u.key for u in page.uploads] == ["a.txt", "a/1", "a/2", "b", "c"]
    assert not page.is_truncated
    page = engine.list_multipart_uploads("bkt", delimiter="/")
    assert [u.key for u in page.uploads] == ["a.txt", "b", "c"] and page.common_prefixes == ["a/"]
    page = engine.list_multipart_uploads("bkt", prefix="a/")
    assert [u.key for u in page.uploads] == ["a/1", "a/2"]
    page = engine.list_multipart_uploads("bkt", key_marker="a/2")
    assert [u.key for u in page.uploads] == ["b", "c"]
    await engine.create_bucket("other")
    assert engine.list_multipart_uploads("other").uploads == []


async def test_list_multipart_uploads_pages_through_every_upload(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    for key in ["a", "c"]:
        await engine.create_multipart_upload("bkt", key)
    # Several uploads of one key, initiated in different milliseconds, until two of them have upload ids in
    # the opposite order of their initiation times (ids are random, so this happens almost at once).
    same_key: list[str] = []
    while len(same_key) < 3 or sorted(same_key) == same_key:
        same_key.append(await engine.create_multipart_upload("bkt", "b"))
        time.sleep(0.002)
        assert len(same_key) < 50
    expected = [u.upload_id for u in engine.list_multipart_uploads("bkt").uploads]
    assert len(expected) == len(same_key) + 2
    assert [u for u in expected if u in same_key] == same_key, "uploads of one key list oldest first"
    for page_size in (1, 2, 3):
        seen: list[str] = []
        key_marker = upload_marker = ""
        while True:
            page = engine.list_multipart_uploads("bkt", key_marker=key_marker, upload_id_marker=upload_marker,
                                                 max_uploads=page_size)
            seen += [u.upload_id for u in page.uploads]
            assert len(seen) <= len(expected), "paging does not end"
            if not page.is_truncated:
                break
            key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker
        assert seen == expected, f"paging by {page_size} lost or repeated uploads"


async def test_list_parts_paging(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    upload_id = await engine.create_multipart_upload("bkt", "k")
    etags = {}
    for number in (3, 1, 7, 2, 10):
        stored = await engine.ingestor.ingest_bytes(bytes([number]) * (100 + number))
        etags[number] = await engine.upload_part("bkt", "k", upload_id, number, stored)
    upload, page = engine.list_parts("bkt", "k", upload_id)
    assert upload.upload_id == upload_id and upload.key == "k"
    assert [p.part_number for p in page.parts] == [1, 2, 3, 7, 10]
    assert [p.size for p in page.parts] == [101, 102, 103, 107, 110]
    assert [p.etag for p in page.parts] == [etags[n] for n in (1, 2, 3, 7, 10)]
    numbers: list[int] = []
    marker = 0
    while True:
        _, page = engine.list_parts("bkt", "k", upload_id, part_number_marker=marker, max_parts=2)
        numbers += [p.part_number for p in page.parts]
        assert len(page.parts) <= 2 and len(numbers) <= 5
        if not page.is_truncated:
            break
        marker = page.next_part_number_marker
    assert numbers == [1, 2, 3, 7, 10]
    _, page = engine.list_parts("bkt", "k", upload_id, part_number_marker=7)
    assert [p.part_number for p in page.parts] == [10]
    # Re-uploading a part replaces it.
    stored = await engine.ingestor.ingest_bytes(b"new")
    await engine.upload_part("bkt", "k", upload_id, 3, stored)
    _, page = engine.list_parts("bkt", "k", upload_id)
    assert [(p.part_number, p.size) for p in page.parts if p.part_number == 3] == [(3, 3)]


# -- ListEntry reads the stored record directly ---------------------------------------------------------------
_text = st.text(max_size=12)
_versions = st.builds(
    ObjectVersion, key=_text, version_id=_text, last_modified_ms=st.integers(0, 2**42),
    size=st.integers(0, 2**40), etag=_text, is_delete_marker=st.just(False), content_type=_text,
    metadata=st.dictionaries(_text, _text, max_size=2), headers=st.dictionaries(_text, _text, max_size=2),
    checksums=st.dictionaries(st.sampled_from(["CRC32", "CRC32C", "SHA1", "SHA256"]), _text, max_size=2),
    part_sizes=st.lists(st.integers(1, 2**30), max_size=3),
    blobs=st.lists(st.builds(BlobRef, st.binary(min_size=32, max_size=32), st.integers(0, 2**30)), max_size=2),
    tags=st.dictionaries(_text, _text, max_size=2), hlc=st.integers(0, 2**63), is_latest=st.booleans())


@given(_versions)
def test_list_entry_fields_match_the_version_it_was_stored_from(version: ObjectVersion) -> None:
    entry = ListEntry.of(version)
    assert (entry.key, entry.version_id, entry.last_modified_ms, entry.size, entry.etag, entry.is_latest,
            entry.is_delete_marker) == (version.key, version.version_id, version.last_modified_ms, version.size,
                                        version.etag, version.is_latest, False)
    assert dict(entry.checksums) == version.checksums and dict(entry.headers) == version.headers
    assert entry.version == version


def test_list_entry_of_a_delete_marker() -> None:
    marker = ObjectVersion("k", "v1", 1234, is_delete_marker=True, is_latest=False)
    entry = ListEntry.of(marker)
    assert (entry.is_delete_marker, entry.is_latest, entry.version_id, entry.size, entry.etag) == \
        (True, False, "v1", 0, "")
    assert entry.version.is_delete_marker and not entry.version.is_latest


# -- issue 18: keys of any valid length (names cut into pieces in the namespace and upload trees) --------------
#: Chunks that put long shared prefixes, slashes and multi-byte characters on both sides of the piece boundary.
LONG_CHUNKS = ["a", "b", "/", "é", ".", "s" * 240, "s" * 479, "s" * 480, "t" * 500]
long_keys = st.lists(st.sampled_from(LONG_CHUNKS), min_size=1, max_size=6).map("".join).filter(
    lambda k: len(k.encode()) <= 1024)


def _cuts(keys: list[str]) -> list[str]:
    """Prefixes of the keys at interesting places: around every '/', around the piece boundary, the whole key."""
    out = {""}
    for key in keys:
        raw = key.encode()
        for cut in {len(raw), 479, 480, 481, 960, 961, *[i + 1 for i, b in enumerate(raw) if b == 0x2F]}:
            part = raw[:cut]
            try:
                out.add(part.decode())
            except UnicodeDecodeError:
                continue
    return sorted(out, key=str.encode)


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(long_keys, min_size=1, max_size=14, unique_by=str.encode), data=st.data())
def test_issue18_long_keys_list_objects_matches_sorted_model(keys: list[str], data: st.DataObject) -> None:
    """Flat and delimiter listings of keys up to 1,024 bytes equal a sorted dict model, across pagination."""
    cuts = _cuts(keys)
    queries = data.draw(st.lists(st.tuples(st.sampled_from(cuts), st.sampled_from(["", "/"]),
                                           st.sampled_from(cuts), st.integers(1, 4)), min_size=1, max_size=6))
    doomed = data.draw(st.sets(st.sampled_from(keys), max_size=3))

    async def scenario(engine: Engine) -> None:
        await engine.create_bucket("bkt")
        for key in keys:
            await put(engine, "bkt", key, key.encode())
        for key in doomed:
            await engine.delete_object("bkt", key)
        live = [k for k in keys if k not in doomed]
        flat, _, _ = await list_all(engine, "bkt", page_size=3)
        assert flat == sorted(live, key=str.encode)
        for prefix, delimiter, marker, max_keys in queries:
            _, _, _, items = model_list(live, prefix, delimiter, marker, max_keys)
            got: list[tuple[str, str]] = []
            page = await engine.list_objects("bkt", prefix, delimiter, marker, max_keys)
            for _ in range(len(items) + 1):
                got += [("key", e.key) for e in page.entries] + [("cp", c) for c in page.common_prefixes]
                if not page.is_truncated:
                    break
                page = await engine.list_objects("bkt", prefix, delimiter, page.next_marker, max_keys)
            assert not page.is_truncated, "paging does not end"
            assert sorted(got, key=lambda item: item[1].encode()) == items, (prefix, delimiter, marker)
        for key in live:
            assert engine.head_object("bkt", key).size == len(key.encode())

    run_with_engine(scenario)


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(long_keys, min_size=1, max_size=8), delimiter=st.sampled_from(["", "/"]),
       page_size=st.integers(1, 3), data=st.data())
def test_issue18_long_keys_list_multipart_uploads_matches_model(keys: list[str], delimiter: str, page_size: int,
                                                                data: st.DataObject) -> None:
    """ListMultipartUploads over keys up to 1,024 bytes (several uploads per key): key byte order, then
    initiation order, common prefixes once each, paged by the key and upload-id markers."""
    prefix = data.draw(st.sampled_from(_cuts(keys)))

    async def scenario(engine: Engine) -> None:
        await engine.create_bucket("bkt")
        created = [(key, await engine.create_multipart_upload("bkt", key)) for key in keys]
        order = {upload_id: i for i, (_, upload_id) in enumerate(created)}
        want: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key, upload_id in sorted(created, key=lambda c: (c[0].encode(), order[c[1]])):
            if not key.startswith(prefix):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                cp = key[: cut + 1]
                if cp not in seen:
                    seen.add(cp)
                    want.append(("cp", cp))
                continue
            want.append(("up", upload_id))
        got: list[tuple[str, str]] = []
        key_marker = upload_marker = ""
        for _ in range(len(want) + 1):
            page = engine.list_multipart_uploads("bkt", prefix, delimiter, key_marker, upload_marker, page_size)
            got += [("up", u.upload_id) for u in page.uploads] + [("cp", c) for c in page.common_prefixes]
            if not page.is_truncated:
                break
            key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker
        assert not page.is_truncated, "paging does not end"
        rank = {item: i for i, item in enumerate(want)}
        assert sorted(got, key=lambda item: rank.get(item, -1)) == want

    run_with_engine(scenario)
