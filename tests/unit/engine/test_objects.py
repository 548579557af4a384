"""Object operations through the Engine API: S3 semantics, errors, multipart, ranges and blob refcounts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.engine_io import get, list_all, list_all_versions, put, read
from helpers.views_compare import dump_views, refcount_problems

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.conditions import DeleteConditions, Preconditions
from s4.engine.views.env import unpack
from s4.engine.volumes.record import HEADER_BYTES, decode_header

pytestmark = pytest.mark.anyio


def code_of(exc: pytest.ExceptionInfo[S3Error]) -> ErrorCode:
    return exc.value.code


async def make_bucket(engine: Engine, name: str = "bkt", versioning: str = "") -> str:
    await engine.create_bucket(name)
    if versioning:
        await engine.set_bucket_config(name, "versioning", versioning)
    return name


def blob_count(engine: Engine) -> int:
    return len(dump_views(engine.views)["blobs"])


# -- put / get / head ---------------------------------------------------------------------------------------------
async def test_put_get_head_roundtrip(engine: Engine) -> None:
    await make_bucket(engine)
    body = os.urandom(5000)
    version = await put(engine, "bkt", "dir/file.bin", body, content_type="text/plain",
                        metadata={"color": "blue"}, tags={"t": "1"})
    assert version.version_id == "null"
    assert version.etag == hashlib.md5(body).hexdigest() and version.size == 5000
    head = engine.head_object("bkt", "dir/file.bin")
    assert (head.size, head.etag, head.content_type, head.metadata, head.tags) == \
        (5000, version.etag, "text/plain", {"color": "blue"}, {"t": "1"})
    assert head.is_latest and head.last_modified_ms > 0
    assert await read(engine, head) == body
    empty = await put(engine, "bkt", "empty", b"")
    assert empty.size == 0 and empty.etag == hashlib.md5(b"").hexdigest()
    assert await get(engine, "bkt", "empty") == b""
    bucket = engine.get_bucket("bkt")
    assert (bucket.object_count, bucket.bytes_stored) == (2, 5000)


async def test_check_bucket_decides_existence_as_get_bucket_does(engine: Engine) -> None:
    """``check_bucket`` / ``require_bucket`` (what a request checks before its body) answer exactly as ``get_bucket``
    without decoding the record: a live bucket passes, a missing, deleted or unstorable name is NoSuchBucket."""
    await make_bucket(engine, "live")
    await make_bucket(engine, "gone")
    await engine.delete_bucket("gone")
    for name in ("live", "gone", "never", "x" * 600):
        try:
            engine.get_bucket(name)
            expected = None
        except S3Error as exc:
            expected = exc.code
        for check in (engine.check_bucket, engine.require_bucket):
            try:
                result = check(name)
                if asyncio.iscoroutine(result):
                    await result
                found = None
            except S3Error as exc:
                found = exc.code
                assert exc.fields.get("BucketName") == name
            assert found is expected, (name, check)
    assert engine.get_bucket("live").name == "live"


async def test_missing_bucket_and_key_errors(engine: Engine) -> None:
    with pytest.raises(S3Error) as exc:
        engine.head_object("nope", "k")
    assert code_of(exc) is ErrorCode.NO_SUCH_BUCKET
    with pytest.raises(S3Error) as exc:
        await put(engine, "nope", "k", b"x")
    assert code_of(exc) is ErrorCode.NO_SUCH_BUCKET
    await make_bucket(engine)
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k")
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY and exc.value.headers["x-amz-delete-marker"] == "false"
    with pytest.raises(S3Error) as exc:
        await engine.create_bucket("bkt")
    assert code_of(exc) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    with pytest.raises(S3Error) as exc:
        await engine.create_bucket("Bad_Name")
    assert code_of(exc) is ErrorCode.INVALID_BUCKET_NAME


async def test_unversioned_overwrite_and_delete(engine: Engine) -> None:
    await make_bucket(engine)
    await put(engine, "bkt", "k", b"one")
    await put(engine, "bkt", "k", b"two")
    assert await get(engine, "bkt", "k") == b"two"
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", "null", False)]
    assert blob_count(engine) == 1, "the overwritten version's blob must be released"
    result = await engine.delete_object("bkt", "k")
    assert result == {"version_id": None, "delete_marker": False}
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k")
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    assert (await list_all_versions(engine, "bkt"))[0] == []
    assert await engine.delete_object("bkt", "k") == {"version_id": None, "delete_marker": False}
    bucket = engine.get_bucket("bkt")
    assert (bucket.object_count, bucket.bytes_stored) == (0, 0)


async def test_versioning_enabled_delete_markers_and_errors(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    v1 = await put(engine, "bkt", "k", b"first")
    v2 = await put(engine, "bkt", "k", b"second")
    assert v1.version_id != v2.version_id and uuid.UUID(v1.version_id)
    assert await get(engine, "bkt", "k") == b"second"
    assert await get(engine, "bkt", "k", v1.version_id) == b"first"
    assert not engine.head_object("bkt", "k", v1.version_id).is_latest
    marker = await engine.delete_object("bkt", "k")
    assert marker["delete_marker"] and uuid.UUID(marker["version_id"])
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k")
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    assert exc.value.headers["x-amz-delete-marker"] == "true"
    assert exc.value.headers["x-amz-version-id"] == marker["version_id"]
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k", marker["version_id"])
    assert code_of(exc) is ErrorCode.METHOD_NOT_ALLOWED
    assert exc.value.headers["x-amz-delete-marker"] == "true"
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k", str(uuid.uuid4()))
    assert code_of(exc) is ErrorCode.NO_SUCH_VERSION
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "k", "not-a-version")
    assert code_of(exc) is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "other", str(uuid.uuid4()))
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    assert (await list_all(engine, "bkt"))[0] == []
    assert engine.get_bucket("bkt").object_count == 0
    # Removing the marker by version id brings the previous version back.
    result = await engine.delete_object("bkt", "k", marker["version_id"])
    assert result == {"version_id": marker["version_id"], "delete_marker": True}
    assert await get(engine, "bkt", "k") == b"second"
    assert engine.get_bucket("bkt").object_count == 1
    # Deleting a specific version removes only it; deleting an unknown version is a no-op.
    await engine.delete_object("bkt", "k", v2.version_id)
    assert await get(engine, "bkt", "k") == b"first"
    assert (await engine.delete_object("bkt", "k", str(uuid.uuid4())))["delete_marker"] is False
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", v1.version_id, False)]
    # A delete of a key that never existed still writes a marker in a versioned bucket.
    ghost = await engine.delete_object("bkt", "ghost")
    assert ghost["delete_marker"]
    rows, _ = await list_all_versions(engine, "bkt")
    assert ("ghost", ghost["version_id"], True) in rows


async def test_versioning_suspended_null_version_semantics(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    v1 = await put(engine, "bkt", "k", b"v1")
    await engine.set_bucket_config("bkt", "versioning", "Suspended")
    assert engine.get_bucket("bkt").versioning == "Suspended"
    n1 = await put(engine, "bkt", "k", b"null-1")
    assert n1.version_id == "null"
    await put(engine, "bkt", "k", b"null-2")
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", "null", False), ("k", v1.version_id, False)], "a second null put replaces the first"
    assert await get(engine, "bkt", "k") == b"null-2"
    result = await engine.delete_object("bkt", "k")
    assert result == {"version_id": "null", "delete_marker": True}
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", "null", True), ("k", v1.version_id, False)], "the null marker replaces the null object"
    await engine.set_bucket_config("bkt", "versioning", "Enabled")
    v3 = await put(engine, "bkt", "k", b"v3")
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", v3.version_id, False), ("k", "null", True), ("k", v1.version_id, False)]
    assert await get(engine, "bkt", "k", v1.version_id) == b"v1"
    bucket = engine.get_bucket("bkt")
    assert (bucket.object_count, bucket.bytes_stored) == (1, 4)
    # Suspending a never-versioned bucket is accepted.
    await make_bucket(engine, "plain", versioning="Suspended")
    assert (await put(engine, "plain", "x", b"1")).version_id == "null"


# -- conditional writes ------------------------------------------------------------------------------------------
async def test_conditional_writes(engine: Engine) -> None:
    await make_bucket(engine)
    first = await put(engine, "bkt", "k", b"one", if_none_match="*")
    with pytest.raises(S3Error) as exc:
        await put(engine, "bkt", "k", b"two", if_none_match="*")
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    with pytest.raises(S3Error) as exc:
        await put(engine, "bkt", "k", b"two", if_match='"0123"')
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    with pytest.raises(S3Error) as exc:
        await put(engine, "bkt", "absent", b"two", if_match=first.etag)
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    assert await get(engine, "bkt", "k") == b"one"
    second = await put(engine, "bkt", "k", b"two", if_match=f'"{first.etag}"')
    assert await get(engine, "bkt", "k") == b"two"
    with pytest.raises(S3Error) as exc:
        await put(engine, "bkt", "k", b"three", if_match=first.etag)
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    await put(engine, "bkt", "k", b"three", if_match=second.etag)
    # A delete marker does not count as an existing object for If-None-Match.
    await make_bucket(engine, "ver", versioning="Enabled")
    await put(engine, "ver", "k", b"x")
    await engine.delete_object("ver", "k")
    await put(engine, "ver", "k", b"y", if_none_match="*")


async def test_concurrent_if_none_match_exactly_one_wins(engine: Engine) -> None:
    await make_bucket(engine)
    bodies = [f"body-{i}".encode() * (i + 1) for i in range(12)]
    stored = [await engine.ingestor.ingest_bytes(b) for b in bodies]
    results = await asyncio.gather(*(engine.put_object("bkt", "k", s, if_none_match="*") for s in stored),
                                   return_exceptions=True)
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, S3Error) and r.code is ErrorCode.PRECONDITION_FAILED for r in losers)
    assert await get(engine, "bkt", "k") == bodies[winners[0]]
    assert not refcount_problems(engine.views)


async def test_concurrent_if_match_exactly_one_wins(engine: Engine) -> None:
    await make_bucket(engine)
    base = await put(engine, "bkt", "k", b"base")
    stored = [await engine.ingestor.ingest_bytes(f"next-{i}".encode()) for i in range(10)]
    results = await asyncio.gather(*(engine.put_object("bkt", "k", s, if_match=base.etag) for s in stored),
                                   return_exceptions=True)
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert await get(engine, "bkt", "k") == f"next-{winners[0]}".encode()


async def test_conditional_delete_races_a_rewrite_atomically(engine: Engine) -> None:
    """Issue 25: deletes conditioned on the old ETag, racing PUTs conditioned on it too, in a versioned bucket:
    the decider checks each against the version current at its turn, so exactly one of all of them wins and
    no loser changes anything (a delete never removes a version it was not conditioned on)."""
    await make_bucket(engine, versioning="Enabled")
    base = await put(engine, "bkt", "k", b"base")
    stored = [await engine.ingestor.ingest_bytes(f"next-{i}".encode()) for i in range(4)]
    cond = DeleteConditions(if_match=base.etag, size=4)
    ops = [engine.delete_object("bkt", "k", conditions=cond) for _ in range(4)]
    ops += [engine.put_object("bkt", "k", s, if_match=base.etag) for s in stored]
    results = await asyncio.gather(*ops, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    # a PUT after a winning delete finds a delete marker: If-Match then answers NoSuchKey, as S3 does
    assert all(isinstance(r, S3Error) and r.code in (ErrorCode.PRECONDITION_FAILED, ErrorCode.NO_SUCH_KEY)
               for r in results if isinstance(r, BaseException))
    versions, _ = await list_all_versions(engine, "bkt")
    assert len(versions) == 2  # base and the one winner (a delete marker or a new version)


async def test_conditional_delete_of_a_named_version(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    old = await put(engine, "bkt", "k", b"old")
    await put(engine, "bkt", "k", b"newer")
    with pytest.raises(S3Error) as exc:
        await engine.delete_object("bkt", "k", old.version_id, conditions=DeleteConditions(size=5))
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    with pytest.raises(S3Error) as exc:
        await engine.delete_object("bkt", "k", old.version_id,
                                   conditions=DeleteConditions(last_modified_ms=old.last_modified_ms - 1000))
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    await engine.delete_object("bkt", "k", old.version_id, conditions=DeleteConditions(
        f'"{old.etag}"', old.last_modified_ms, 3))
    versions, _ = await list_all_versions(engine, "bkt")
    assert len(versions) == 1 and old.version_id not in [v for _, v, _ in versions]


# -- copy, tags, rename ------------------------------------------------------------------------------------------
async def test_copy_shares_blobs_and_handles_metadata(engine: Engine) -> None:
    await make_bucket(engine)
    await make_bucket(engine, "dst")
    body = os.urandom(3000)
    await put(engine, "bkt", "src", body, content_type="image/png", metadata={"a": "1"}, tags={"t": "x"})
    blobs_before = dump_views(engine.views)["blobs"]
    source = engine.head_object("bkt", "src")
    copied = await engine.copy_object(source, "dst", "copy", replace_metadata=False)
    assert copied.etag == source.etag and copied.size == 3000
    head = engine.head_object("dst", "copy")
    assert (head.content_type, head.metadata, head.tags) == ("image/png", {"a": "1"}, {"t": "x"})
    assert await read(engine, head) == body
    assert dump_views(engine.views)["blobs"].keys() == blobs_before.keys(), "a copy must not store new bytes"
    replaced = await engine.copy_object(source, "bkt", "src", replace_metadata=True, content_type="text/plain",
                                        metadata={"b": "2"}, tags={})
    head = engine.head_object("bkt", "src")
    assert (head.content_type, head.metadata, head.tags) == ("text/plain", {"b": "2"}, {})
    assert replaced.etag == source.etag and await read(engine, head) == body
    assert not refcount_problems(engine.views)
    with pytest.raises(S3Error) as exc:
        await engine.copy_object(source, "dst", "copy", replace_metadata=False, if_none_match="*")
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED


async def test_object_tags(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    v1 = await put(engine, "bkt", "k", b"1", tags={"a": "1"})
    v2 = await put(engine, "bkt", "k", b"2")
    assert await engine.put_object_tags("bkt", "k", None, {"b": "2"}) == v2.version_id
    assert engine.head_object("bkt", "k").tags == {"b": "2"}
    assert engine.head_object("bkt", "k", v1.version_id).tags == {"a": "1"}
    await engine.put_object_tags("bkt", "k", v1.version_id, {})
    assert engine.head_object("bkt", "k", v1.version_id).tags == {}
    with pytest.raises(S3Error) as exc:
        await engine.put_object_tags("bkt", "missing", None, {"x": "y"})
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    marker = await engine.delete_object("bkt", "k")
    with pytest.raises(S3Error) as exc:
        await engine.put_object_tags("bkt", "k", None, {"x": "y"})
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    with pytest.raises(S3Error) as exc:
        await engine.put_object_tags("bkt", "k", marker["version_id"], {"x": "y"})
    assert code_of(exc) is ErrorCode.METHOD_NOT_ALLOWED


async def test_rename_key_and_prefix(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    v1 = await put(engine, "bkt", "docs/a.txt", b"a1")
    await put(engine, "bkt", "docs/a.txt", b"a2")
    await put(engine, "bkt", "docs/sub/b.txt", b"b")
    await put(engine, "bkt", "docs.txt", b"d")
    await put(engine, "bkt", "other", b"o")
    await engine.rename("bkt", "docs/a.txt", "docs/c.txt")
    assert await get(engine, "bkt", "docs/c.txt") == b"a2"
    assert await get(engine, "bkt", "docs/c.txt", v1.version_id) == b"a1", "versions follow the rename"
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "docs/a.txt")
    assert code_of(exc) is ErrorCode.NO_SUCH_KEY
    await engine.rename("bkt", "docs/", "archive/2024/")
    keys, _, _ = await list_all(engine, "bkt")
    assert keys == ["archive/2024/c.txt", "archive/2024/sub/b.txt", "docs.txt", "other"]
    assert await get(engine, "bkt", "archive/2024/sub/b.txt") == b"b"
    rows, _ = await list_all_versions(engine, "bkt", prefix="archive/2024/c")
    assert [r[0] for r in rows] == ["archive/2024/c.txt"] * 2

    async def fails(src: str, dst: str, code: ErrorCode, **kwargs: Any) -> None:
        with pytest.raises(S3Error) as exc:
            await engine.rename("bkt", src, dst, **kwargs)
        assert code_of(exc) is code, (src, dst)

    await fails("docs/", "x/", ErrorCode.NO_SUCH_KEY)
    await fails("nothing", "x", ErrorCode.NO_SUCH_KEY)
    await fails("other", "other", ErrorCode.INVALID_REQUEST)
    await fails("other", "docs.txt", ErrorCode.DESTINATION_EXISTS)  # versioned: the target's history would go
    await fails("archive/", "archive/deeper/", ErrorCode.INVALID_REQUEST)
    await fails("archive/2024/", "archive/", ErrorCode.DESTINATION_EXISTS)
    await fails("other", "dir/", ErrorCode.INVALID_ARGUMENT)
    await fails("archive/", "flat", ErrorCode.INVALID_ARGUMENT)
    await engine.delete_object("bkt", "other")
    await fails("other", "renamed-marker", ErrorCode.NO_SUCH_KEY)  # latest is a delete marker
    keys_after, _, _ = await list_all(engine, "bkt")
    assert keys_after == keys[:-1], "failed renames change nothing"
    bucket = engine.get_bucket("bkt")
    assert bucket.object_count == 3
    assert not refcount_problems(engine.views)


async def test_rename_key_into_new_nested_directories(engine: Engine) -> None:
    """The renamed key keeps its object id; directories created for the new name need ids of their own."""
    await make_bucket(engine)
    await put(engine, "bkt", "a", b"payload")
    await put(engine, "bkt", "b", b"other")
    await engine.rename("bkt", "a", "x/y/z")
    await engine.rename("bkt", "b", "c//d")
    keys, prefixes, _ = await list_all(engine, "bkt", delimiter="/")
    assert (keys, prefixes) == ([], ["c/", "x/"])
    assert (await list_all(engine, "bkt"))[0] == ["c//d", "x/y/z"]
    assert await get(engine, "bkt", "x/y/z") == b"payload"
    assert await get(engine, "bkt", "c//d") == b"other"


async def test_rename_key_overwrites_in_unversioned_bucket(engine: Engine) -> None:
    await make_bucket(engine)
    await put(engine, "bkt", "src", b"new bytes")
    await put(engine, "bkt", "dst", b"old bytes")
    await engine.rename("bkt", "src", "dst")
    assert await get(engine, "bkt", "dst") == b"new bytes"
    assert (await list_all(engine, "bkt"))[0] == ["dst"]
    bucket = engine.get_bucket("bkt")
    assert (bucket.object_count, bucket.bytes_stored) == (1, 9)
    assert blob_count(engine) == 1 and not refcount_problems(engine.views), "the overwritten bytes are released"


async def test_rename_prefix_merge(engine: Engine) -> None:
    await make_bucket(engine)
    for key, body in [("a/1", b"a1"), ("a/sub/2", b"a2"), ("a/3", b"a3"), ("b/1", b"b1"), ("b/sub/9", b"b9")]:
        await put(engine, "bkt", key, body)
    with pytest.raises(S3Error) as exc:
        await engine.rename("bkt", "a/", "b/", merge=True, dst_cond=Preconditions(if_none_match="*"))
    assert code_of(exc) is ErrorCode.DESTINATION_EXISTS
    await engine.rename("bkt", "a/", "b/", merge=True)
    keys, _, _ = await list_all(engine, "bkt")
    assert keys == ["b/1", "b/3", "b/sub/2", "b/sub/9"]
    assert [await get(engine, "bkt", k) for k in keys] == [b"a1", b"a3", b"a2", b"b9"]
    bucket = engine.get_bucket("bkt")
    assert (bucket.object_count, bucket.bytes_stored) == (4, 8)
    assert not refcount_problems(engine.views)
    # b/ -> {1, 3, sub/ -> {2, 9}}: six entries, nothing left of the source directories.
    assert len(dump_views(engine.views)["ns"]) == 6, "the merged source directories are gone"


async def test_rename_prefix_merge_into_its_own_ancestor(engine: Engine) -> None:
    await make_bucket(engine)
    for key in ("x/y/y/k", "x/y/top", "x/z"):
        await put(engine, "bkt", key, key.encode())
    await engine.rename("bkt", "x/y/", "x/", merge=True)
    keys, _, _ = await list_all(engine, "bkt")
    assert keys == ["x/top", "x/y/k", "x/z"]
    assert [await get(engine, "bkt", k) for k in keys] == [b"x/y/top", b"x/y/y/k", b"x/z"]
    assert engine.get_bucket("bkt").object_count == 3
    assert not refcount_problems(engine.views)


async def test_rename_moves_uploads_in_flight(engine: Engine) -> None:
    await make_bucket(engine)
    await put(engine, "bkt", "dir/obj", b"x")
    upload_id, etags = await upload_parts(engine, "dir/obj", {1: b"part"})
    other_id, _ = await upload_parts(engine, "dir/deep/other", {1: b"o"})
    await engine.rename("bkt", "dir/", "moved/")
    assert sorted(u.key for u in engine.list_multipart_uploads("bkt").uploads) == ["moved/deep/other",
                                                                                    "moved/obj"]
    with pytest.raises(S3Error) as exc:
        await engine.complete_multipart_upload("bkt", "dir/obj", upload_id, [(1, etags[1])])
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    await engine.complete_multipart_upload("bkt", "moved/obj", upload_id, [(1, etags[1])])
    assert await get(engine, "bkt", "moved/obj") == b"part"
    await engine.abort_multipart_upload("bkt", "moved/deep/other", other_id)


async def test_rename_client_token_makes_retries_idempotent(engine: Engine) -> None:
    await make_bucket(engine)
    await put(engine, "bkt", "a", b"1")
    await engine.rename("bkt", "a", "b", client_token="tok")
    await engine.rename("bkt", "a", "b", client_token="tok")  # the retry succeeds without doing anything
    assert (await list_all(engine, "bkt"))[0] == ["b"]
    with pytest.raises(S3Error) as exc:
        await engine.rename("bkt", "b", "c", client_token="tok")
    assert code_of(exc) is ErrorCode.IDEMPOTENCY_PARAMETER_MISMATCH


# -- multipart ----------------------------------------------------------------------------------------------------
async def upload_parts(engine: Engine, key: str, parts: dict[int, bytes], bucket: str = "bkt"
                       ) -> tuple[str, dict[int, str]]:
    upload_id = await engine.create_multipart_upload(bucket, key, content_type="text/csv", metadata={"m": "1"})
    etags = {}
    for number, data in parts.items():
        stored = await engine.ingestor.ingest_bytes(data)
        etags[number] = await engine.upload_part(bucket, key, upload_id, number, stored)
    return upload_id, etags


async def test_multipart_complete(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(min_part_bytes=1000, chunk_bytes=700)
    await make_bucket(engine)
    parts = {1: os.urandom(1500), 2: os.urandom(1000), 3: os.urandom(10), 4: os.urandom(5)}
    upload_id, etags = await upload_parts(engine, "big", parts)
    assert engine.get_upload("bkt", "big", upload_id).content_type == "text/csv"
    version = await engine.complete_multipart_upload("bkt", "big", upload_id,
                                                     [(1, etags[1]), (2, f'"{etags[2]}"'), (3, etags[3])])
    want_etag = hashlib.md5(b"".join(hashlib.md5(parts[n]).digest() for n in (1, 2, 3))).hexdigest() + "-3"
    assert version.etag == want_etag and version.size == 2510 and version.part_sizes == [1500, 1000, 10]
    head = engine.head_object("bkt", "big")
    assert (head.content_type, head.metadata) == ("text/csv", {"m": "1"})
    assert await read(engine, head) == parts[1] + parts[2] + parts[3]
    assert engine.list_multipart_uploads("bkt").uploads == []
    with pytest.raises(S3Error) as exc:
        engine.list_parts("bkt", "big", upload_id)
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    assert not refcount_problems(engine.views), "part 4 (not completed) must be released"
    with pytest.raises(S3Error) as exc:
        await engine.complete_multipart_upload("bkt", "big", upload_id, [(1, etags[1])])
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD


async def test_multipart_errors(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(min_part_bytes=1000)
    await make_bucket(engine)
    parts = {1: os.urandom(1200), 2: os.urandom(999), 3: os.urandom(1200)}
    upload_id, etags = await upload_parts(engine, "k", parts)

    async def complete(part_list: list[tuple[int, str]], key: str = "k") -> None:
        await engine.complete_multipart_upload("bkt", key, upload_id, part_list)

    cases: list[tuple[list[tuple[int, str]], ErrorCode]] = [
        ([(1, etags[1]), (5, etags[1])], ErrorCode.INVALID_PART),
        ([(1, etags[2])], ErrorCode.INVALID_PART),
        ([(2, etags[2]), (1, etags[1])], ErrorCode.INVALID_PART_ORDER),
        ([(1, etags[1]), (1, etags[2])], ErrorCode.INVALID_PART),  # a repeated number: its last entry counts
        ([(1, etags[1]), (2, etags[2]), (3, etags[3])], ErrorCode.ENTITY_TOO_SMALL),
    ]
    for part_list, code in cases:
        with pytest.raises(S3Error) as exc:
            await complete(part_list)
        assert code_of(exc) is code, part_list
    with pytest.raises(S3Error) as exc:
        await complete([(1, etags[1])], key="other-key")
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    with pytest.raises(S3Error) as exc:
        await engine.upload_part("bkt", "k", "no-such-upload", 1, await engine.ingestor.ingest_bytes(b"x"))
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    # Every failure left the upload intact; the last part may be small.
    await complete([(1, etags[1]), (2, etags[2])])
    assert await get(engine, "bkt", "k") == parts[1] + parts[2]


async def test_multipart_abort_and_conditional_complete(engine: Engine) -> None:
    await make_bucket(engine)
    upload_id, etags = await upload_parts(engine, "k", {1: b"x" * 100})
    await engine.abort_multipart_upload("bkt", "k", upload_id)
    assert blob_count(engine) == 0
    for call in (engine.abort_multipart_upload("bkt", "k", upload_id),
                 engine.complete_multipart_upload("bkt", "k", upload_id, [(1, etags[1])])):
        with pytest.raises(S3Error) as exc:
            await call
        assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    await put(engine, "bkt", "k", b"existing")
    upload_id, etags = await upload_parts(engine, "k", {1: b"y" * 100})
    with pytest.raises(S3Error) as exc:
        await engine.complete_multipart_upload("bkt", "k", upload_id, [(1, etags[1])], if_none_match="*")
    assert code_of(exc) is ErrorCode.PRECONDITION_FAILED
    assert engine.list_parts("bkt", "k", upload_id)[1].parts, "a refused completion keeps the upload"


async def test_concurrent_completions_of_one_upload(engine: Engine) -> None:
    """Retried completions answer with the original result and create no second version."""
    await make_bucket(engine, versioning="Enabled")
    upload_id, etags = await upload_parts(engine, "k", {1: b"p" * 50})
    results = await asyncio.gather(*(engine.complete_multipart_upload("bkt", "k", upload_id, [(1, etags[1])])
                                     for _ in range(5)))
    assert len({(r.version_id, r.etag, r.size) for r in results}) == 1
    rows, _ = await list_all_versions(engine, "bkt")
    assert rows == [("k", results[0].version_id, False)]
    with pytest.raises(S3Error) as exc:  # a different part list is not a retry
        await engine.complete_multipart_upload("bkt", "k", upload_id, [(1, etags[1]), (2, etags[1])])
    assert code_of(exc) is ErrorCode.NO_SUCH_UPLOAD
    assert not refcount_problems(engine.views)


# -- ranges -------------------------------------------------------------------------------------------------------
async def test_ranges_across_chunk_boundaries(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=1000, min_part_bytes=1)
    await make_bucket(engine)
    body = os.urandom(10_500)
    version = await put(engine, "bkt", "k", body)
    assert len(version.blobs) == 11 and [b.size for b in version.blobs][-2:] == [1000, 500]
    rng = random.Random(7)
    cases = [(0, None), (0, 10_500), (0, 1), (999, 2), (1000, 1000), (999, 1002), (10_499, 1), (10_499, 100),
             (10_500, 10), (5000, 0), (123, 9000)] + [(rng.randrange(10_500), rng.randrange(3000)) for _ in range(60)]
    for start, length in cases:
        want = body[start:] if length is None else body[start:start + length]
        assert await read(engine, version, start, length) == want, (start, length)
    # A multipart object: parts of uneven sizes, each chunked.
    parts = {1: os.urandom(2500), 2: os.urandom(1), 3: os.urandom(1999)}
    upload_id, etags = await upload_parts(engine, "mp", parts)
    mp = await engine.complete_multipart_upload("bkt", "mp", upload_id, sorted(etags.items()))
    whole = parts[1] + parts[2] + parts[3]
    for start in range(0, len(whole), 97):
        for length in (1, 500, 1001, 2600):
            assert await read(engine, mp, start, length) == whole[start:start + length], (start, length)


async def test_streamed_ingest_of_uneven_pieces(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=4096)
    await make_bucket(engine)
    body = os.urandom(70_000)

    async def pieces() -> AsyncIterator[bytes]:
        pos, rng = 0, random.Random(3)
        while pos < len(body):
            n = rng.randrange(1, 9000)
            yield body[pos:pos + n]
            pos += n

    stored = await engine.ingest(pieces())
    assert stored.size == len(body) and stored.etag == hashlib.md5(body).hexdigest()
    version = await engine.put_object("bkt", "k", stored)
    assert all(b.size == 4096 for b in version.blobs[:-1])
    assert await read(engine, version) == body
    with pytest.raises(S3Error) as exc:
        await engine.ingest(pieces(), max_bytes=1000)
    assert code_of(exc) is ErrorCode.ENTITY_TOO_LARGE


async def test_concurrent_puts_across_volume_rolls(make_engine: Callable[..., Engine]) -> None:
    """Many uploads at once while the active volume keeps rolling: every body must read back intact."""
    engine = make_engine(volume_size_bytes=150_000, chunk_bytes=70_000)
    await make_bucket(engine)
    bodies = {f"k{i:03d}": os.urandom(140_001 + i) for i in range(600)}
    results = await asyncio.gather(*(put(engine, "bkt", k, b) for k, b in bodies.items()), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} puts failed, e.g. {errors[0]!r}"
    damaged = [k for k, b in bodies.items() if await get(engine, "bkt", k) != b]
    assert not damaged, f"{len(damaged)} objects read back wrong bytes"
    assert len(list(engine.volumes.directory.iterdir())) > 300


async def test_dedup_within_and_across_objects(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=1000)
    await make_bucket(engine)
    block = os.urandom(1000)
    await put(engine, "bkt", "a", block * 3)
    assert blob_count(engine) == 1
    tail = os.urandom(1000)
    await put(engine, "bkt", "b", block + tail)
    assert blob_count(engine) == 2
    (rec,) = [v for k, v in dump_views(engine.views)["blobs"].items() if k == hashlib.sha256(block).digest()]
    assert unpack(rec)[3] == 4, "three references from a, one from b"
    await engine.delete_object("bkt", "a")
    assert await get(engine, "bkt", "b") == block + tail
    assert not refcount_problems(engine.views)


# -- buckets ------------------------------------------------------------------------------------------------------
async def test_delete_bucket_not_empty(engine: Engine) -> None:
    await make_bucket(engine, versioning="Enabled")
    v = await put(engine, "bkt", "k", b"x")

    async def delete_fails() -> None:
        with pytest.raises(S3Error) as exc:
            await engine.delete_bucket("bkt")
        assert code_of(exc) is ErrorCode.BUCKET_NOT_EMPTY

    await delete_fails()
    marker = await engine.delete_object("bkt", "k")
    await delete_fails()  # versions and markers still count
    await engine.delete_object("bkt", "k", v.version_id)
    await delete_fails()
    await engine.delete_object("bkt", "k", marker["version_id"])
    await engine.create_multipart_upload("bkt", "up")  # an upload in progress does not block it (S3 aborts it)
    await engine.set_bucket_config("bkt", "cors", {"rules": []})
    await engine.delete_bucket("bkt")
    with pytest.raises(S3Error) as exc:
        engine.get_bucket("bkt")
    assert code_of(exc) is ErrorCode.NO_SUCH_BUCKET
    with pytest.raises(S3Error) as exc:
        await engine.delete_bucket("bkt")
    assert code_of(exc) is ErrorCode.NO_SUCH_BUCKET
    await engine.create_bucket("bkt")
    assert engine.get_bucket("bkt").versioning == "" and engine.get_bucket_config("bkt", "cors") is None
    assert (await list_all(engine, "bkt"))[0] == []


async def test_bucket_config_if_any_reads_what_get_bucket_config_reads_without_the_bucket_record(
        engine: Engine) -> None:
    """Access control's per-request policy read: the same answer as ``get_bucket_config`` (None where that one
    raises NoSuchBucket), including after the bucket is deleted and created again, and for a name too long to be a
    view key (no LMDB error)."""
    assert engine.bucket_config_if_any("bkt", "policy") is None  # no bucket
    assert engine.bucket_config_if_any("b" * 600, "policy") is None
    await make_bucket(engine)
    assert engine.bucket_config_if_any("bkt", "policy") is None
    await engine.set_bucket_config("bkt", "policy", '{"Statement": []}')
    assert engine.bucket_config_if_any("bkt", "policy") == engine.get_bucket_config("bkt", "policy")
    assert engine.bucket_config_if_any("bkt", "policy") == '{"Statement": []}'
    await engine.set_bucket_config("bkt", "policy", None)
    assert engine.bucket_config_if_any("bkt", "policy") is None
    await engine.set_bucket_config("bkt", "policy", '{"Statement": []}')
    await engine.delete_bucket("bkt")
    assert engine.bucket_config_if_any("bkt", "policy") is None
    await engine.create_bucket("bkt")
    assert engine.bucket_config_if_any("bkt", "policy") is None


# -- blob refcounts -----------------------------------------------------------------------------------------------
def volume_data_bytes(data_dir: Path) -> int:
    """Sum of the data lengths of every intact record in every volume file."""
    total = 0
    for path in sorted((data_dir / "volumes").iterdir()):
        raw = path.read_bytes()
        pos = 0
        while pos + HEADER_BYTES <= len(raw):
            header = decode_header(raw[pos:pos + HEADER_BYTES])
            assert header is not None, f"{path.name}: bad record at {pos}"
            total += header.length
            pos += HEADER_BYTES + header.length + header.trailer_bytes
        assert pos == len(raw)
    return total


async def test_refcounts_drop_to_zero_when_everything_is_deleted(make_engine: Callable[..., Engine],
                                                                 tmp_path: Path) -> None:
    engine = make_engine(chunk_bytes=2000, min_part_bytes=1)
    await make_bucket(engine, "plain")
    await make_bucket(engine, "ver", versioning="Enabled")
    shared = os.urandom(2000)
    for i in range(8):
        await put(engine, "plain", f"k{i % 3}", shared + os.urandom(i * 700))
        await put(engine, "ver", f"v{i % 2}", shared * (i % 3) + os.urandom(100))
    await engine.copy_object(engine.head_object("plain", "k1"), "ver", "copied", replace_metadata=False)
    await engine.rename("ver", "v0", "renamed/v0")
    upload_id, etags = await upload_parts(engine, "mp", {1: shared, 2: os.urandom(3000)}, bucket="ver")
    await engine.complete_multipart_upload("ver", "mp", upload_id, sorted(etags.items()))
    pending, _ = await upload_parts(engine, "pending", {1: shared, 3: os.urandom(10)}, bucket="plain")
    assert blob_count(engine) > 0 and not refcount_problems(engine.views)

    rows, _ = await list_all_versions(engine, "ver")
    for key, version_id, _ in rows:
        await engine.delete_object("ver", key, version_id)
    for key in (await list_all(engine, "plain"))[0]:
        await engine.delete_object("plain", key)
    await engine.abort_multipart_upload("plain", "pending", pending)

    dump = dump_views(engine.views)
    assert dump["blobs"] == {}
    assert dump["versions"] == {} and dump["vidx"] == {} and dump["parts"] == {} and dump["uploads"] == {}
    stats = {name: unpack(raw) for name, raw in dump["volumes"].items()}
    assert stats and all(s["live"] == 0 for s in stats.values())
    # dead counts whole records (header + data): every byte of the volume files is reclaimable now
    volume_bytes = sum(p.stat().st_size for p in (tmp_path / "data" / "volumes").iterdir())
    assert volume_data_bytes(tmp_path / "data") < volume_bytes
    assert sum(s["dead"] for s in stats.values()) == volume_bytes
    for name in ("plain", "ver"):
        bucket = engine.get_bucket(name)
        assert (bucket.object_count, bucket.bytes_stored) == (0, 0)
        await engine.delete_bucket(name)
    assert len(dump_views(engine.views)["ns"]) == 0


async def test_delete_bucket_aborts_inflight_uploads(engine: Engine) -> None:
    """S3 deletes a bucket whose only content is unfinished multipart uploads; their parts' space is released."""
    await make_bucket(engine)
    upload = await engine.create_multipart_upload("bkt", "dir/big")
    stored = await engine.ingestor.ingest_bytes(b"part-bytes" * 100)
    await engine.upload_part("bkt", "dir/big", upload, 1, stored)
    await engine.delete_bucket("bkt")
    assert engine.list_buckets() == []
    assert blob_count(engine) == 0
