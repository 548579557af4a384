"""Stateful property test: random S3 operations on an Engine against a dict model, plus replay equivalence.

The machine drives one Engine (one event loop kept for its lifetime) with bucket creation and deletion,
versioning toggles, puts of small bodies (many duplicates, so chunks dedup), deletes of keys and of versions,
copies, tags, renames of keys and prefixes and whole multipart uploads. The model is plain dicts: per bucket,
every key's versions newest first. After every step the Engine's listings, bytes, tags and bucket counters
must equal the model and blob refcounts must equal the references; every few steps and at teardown, a fresh
LMDB rebuilt from the journal must equal the live views in every database, key and value.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.engine_io import list_all, list_all_versions, put, read
from helpers.views_compare import check_live_vs_rebuild, diff_dumps, dump_views, refcount_problems
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s4.engine import Engine, EngineOptions, ErrorCode, S3Error
from s4.engine.model import BlobLocation
from s4.engine.sequencer import Command
from s4.engine.views.blobs import is_damaged
from s4.engine.views.env import unpack

BUCKETS = ["bkt-1", "bkt-2"]
MISSING = "no-such-bucket"
# Long keys (issue 18): LMDB keys stop at 511 bytes and S3 keys at 1,024; names of 480 bytes or more are stored as
# pieces, so these cross that boundary in one segment, in a directory name and under shared long prefixes.
LONG = ["L" * 600, "L" * 479 + "/x", "L" * 600 + "/k", "L" * 600 + "/k/" + "z" * 400, "é" * 300 + "/" + "v" * 300,
        "P" * 1024, "/" * 40 + "deep"]
KEYS = ["a", "a.txt", "a/b", "a/c", "a/d/e", "a0", "b/", "b/x", "c//d", "é/f", "x/y/z", "x/y/w", "m", *LONG]
PREFIXES = ["a/", "b/", "x/", "x/y/", "n/", "q/r/", "a/d/", "L" * 600 + "/", "N" * 500 + "/", "é" * 300 + "/"]
POOL = [b"", b"hello", b"\0" * 100, bytes(range(200)), b"hello" * 30, b"x" * 17]
bodies = st.one_of(st.sampled_from(POOL), st.binary(max_size=120))
tag_sets = st.sampled_from([{}, {"k": "v"}, {"a": "1", "b": "2"}])
CHUNK = 16


@dataclass
class Version:
    vid: str
    data: bytes | None  # None: a delete marker
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class BucketModel:
    versioning: str = ""
    keys: dict[str, list[Version]] = field(default_factory=dict)  # newest first

    def latest_live(self, key: str) -> Version | None:
        versions = self.keys.get(key)
        return versions[0] if versions and versions[0].data is not None else None

    def store(self, key: str, version: Version) -> None:
        versions = self.keys.setdefault(key, [])
        if version.vid == "null":
            versions[:] = [v for v in versions if v.vid != "null"]
        versions.insert(0, version)

    def remove(self, key: str, vid: str) -> None:
        versions = [v for v in self.keys.get(key, []) if v.vid != vid]
        if versions:
            self.keys[key] = versions
        else:
            self.keys.pop(key, None)

    def has_dir(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.keys)


@dataclass
class UploadModel:
    bucket: str
    key: str
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="s4-machine-"))
        self.data_dir = self.tmp / "data"
        self.loop = asyncio.new_event_loop()
        self.engine = self._open()
        self.buckets: dict[str, BucketModel] = {}
        self.uploads: dict[str, UploadModel] = {}
        self.steps = 0
        self.rebuilds = 0

    def _open(self) -> Engine:
        return Engine(EngineOptions(self.data_dir, chunk_bytes=CHUNK, min_part_bytes=1))

    def run(self, awaitable: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(awaitable)

    def call(self, awaitable: Awaitable[Any], expect: ErrorCode | None) -> Any:
        """Run an engine call that must fail with ``expect`` (or succeed when None)."""
        event(f"{getattr(awaitable, '__qualname__', 'call')}: {expect.aws_code if expect else 'ok'}")
        try:
            result = self.run(awaitable)
        except S3Error as exc:
            assert exc.code is expect, f"got {exc.code.aws_code}, expected {expect and expect.aws_code}: {exc}"
            return None
        assert expect is None, f"expected {expect.aws_code}, the call succeeded"
        return result

    def bucket_error(self, bucket: str) -> ErrorCode | None:
        return None if bucket in self.buckets else ErrorCode.NO_SUCH_BUCKET

    def pick(self, data: st.DataObject) -> str:
        """An existing bucket, mostly; now and then one that does not exist (NoSuchBucket paths)."""
        return data.draw(st.sampled_from([*sorted(self.buckets) * 8, MISSING]), label="bucket")

    def pick_key(self, data: st.DataObject, bucket: str, label: str) -> str:
        """Mostly a key that holds versions in ``bucket``, sometimes any key of the pool."""
        model = self.buckets.get(bucket)
        present = sorted(model.keys) if model else []
        return data.draw(st.sampled_from([*present * 3, *KEYS]), label=label)

    @initialize(versioning=st.sampled_from(["", "Enabled", "Suspended"]))
    def first_bucket(self, versioning: str) -> None:
        self.run(self.engine.create_bucket(BUCKETS[0]))
        self.buckets[BUCKETS[0]] = BucketModel()
        if versioning:
            self.set_versioning(BUCKETS[0], versioning)

    # -- buckets ------------------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.buckets) < len(BUCKETS))
    @rule(bucket=st.sampled_from(BUCKETS))
    def create_bucket(self, bucket: str) -> None:
        expect = ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU if bucket in self.buckets else None
        self.call(self.engine.create_bucket(bucket), expect)
        self.buckets.setdefault(bucket, BucketModel())

    @precondition(lambda self: len(self.buckets) > 1)
    @rule(bucket=st.sampled_from(BUCKETS))
    def delete_bucket(self, bucket: str) -> None:
        expect = self.bucket_error(bucket)
        if expect is None and self.buckets[bucket].keys:
            expect = ErrorCode.BUCKET_NOT_EMPTY
        self.call(self.engine.delete_bucket(bucket), expect)
        if expect is None:
            del self.buckets[bucket]
            # S3 aborts the bucket's in-flight multipart uploads with it.
            self.uploads = {uid: u for uid, u in self.uploads.items() if u.bucket != bucket}

    @rule(data=st.data(), state=st.sampled_from(["Enabled", "Suspended"]))
    def toggle_versioning(self, data: st.DataObject, state: str) -> None:
        self.set_versioning(self.pick(data), state)

    def set_versioning(self, bucket: str, state: str) -> None:
        expect = self.bucket_error(bucket)
        self.call(self.engine.set_bucket_config(bucket, "versioning", state), expect)
        if expect is None:
            self.buckets[bucket].versioning = state

    # -- objects ------------------------------------------------------------------------------------------------
    @rule(data=st.data(), items=st.lists(st.tuples(st.sampled_from(KEYS), bodies), min_size=1, max_size=3),
          tags=tag_sets, if_none_match=st.sampled_from([False, False, True]))
    def put_objects(self, data: st.DataObject, items: list[tuple[str, bytes]], tags: dict[str, str],
                    if_none_match: bool) -> None:
        bucket = self.pick(data)
        for key, body in items:
            self.put_one(bucket, key, body, tags, if_none_match)

    def put_one(self, bucket: str, key: str, body: bytes, tags: dict[str, str], if_none_match: bool) -> None:
        expect = self.bucket_error(bucket)
        if expect is None and if_none_match and self.buckets[bucket].latest_live(key) is not None:
            expect = ErrorCode.PRECONDITION_FAILED
        version = self.call(put(self.engine, bucket, key, body, tags=tags,
                                if_none_match="*" if if_none_match else None), expect)
        if expect is None:
            model = self.buckets[bucket]
            assert (version.version_id == "null") == (model.versioning != "Enabled")
            model.store(key, Version(version.version_id, body, tags))

    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def damage_and_heal(self, data: st.DataObject, key: str) -> None:
        """Issue 18: a stored chunk's bytes rot, a read marks it (``blob.damaged``), and storing the same bytes
        again heals it (the blob repointed to a good copy). Refcounts, volume counters and replay must hold."""
        blobs = sorted(dump_views(self.engine.views)["blobs"].items())
        if not blobs:
            return
        digest, raw = data.draw(st.sampled_from(blobs), label="blob")
        volume, offset, size = unpack(raw)[:3]
        loc = BlobLocation(digest, volume, offset, size)
        good = self.engine.volumes.read_blob(loc, 0, size)
        with open(self.engine.volumes.directory / volume, "r+b") as f:
            f.seek(offset)
            f.write(bytes([good[0] ^ 0x01]))
        assert self.engine.volumes.verify_blob(loc) is not None
        self.engine.sequencer.execute_sync(Command("mark_blob_damaged", {
            "hash": digest, "volume": volume, "offset": offset, "problem": "test"}))
        assert is_damaged(unpack(dump_views(self.engine.views)["blobs"][digest]))
        self.put_one(sorted(self.buckets)[0], key, good, {}, False)
        healed = unpack(dump_views(self.engine.views)["blobs"][digest])
        assert not is_damaged(healed) and healed[:2] != [volume, offset]

    @rule(data=st.data())
    def delete_object(self, data: st.DataObject) -> None:
        bucket = self.pick(data)
        key = self.pick_key(data, bucket, "key")
        expect = self.bucket_error(bucket)
        result = self.call(self.engine.delete_object(bucket, key), expect)
        if expect is not None:
            return
        model = self.buckets[bucket]
        if model.versioning == "":
            assert result == {"version_id": None, "delete_marker": False}
            model.remove(key, "null")
        else:
            assert result["delete_marker"]
            assert (result["version_id"] == "null") == (model.versioning == "Suspended")
            model.store(key, Version(result["version_id"], None))

    @rule(data=st.data())
    def delete_version(self, data: st.DataObject) -> None:
        bucket = self.pick(data)
        key = self.pick_key(data, bucket, "key")
        expect = self.bucket_error(bucket)
        versions = self.buckets[bucket].keys.get(key, []) if expect is None else []
        choices = [v.vid for v in versions] + [str(uuid.uuid4())]
        vid = data.draw(st.sampled_from(choices), label="version")
        result = self.call(self.engine.delete_object(bucket, key, vid), expect)
        if expect is None:
            removed = [v for v in versions if v.vid == vid]
            assert result == {"version_id": vid, "delete_marker": bool(removed) and removed[0].data is None}
            self.buckets[bucket].remove(key, vid)

    @rule(data=st.data(), dst=st.sampled_from(KEYS))
    def copy_object(self, data: st.DataObject, dst: str) -> None:
        src_bucket, dst_bucket = self.pick(data), self.pick(data)
        src = self.pick_key(data, src_bucket, "src")
        expect = self.bucket_error(src_bucket)
        source_model = self.buckets[src_bucket].latest_live(src) if expect is None else None
        if expect is None and source_model is None:
            expect = ErrorCode.NO_SUCH_KEY
        try:
            source = self.engine.head_object(src_bucket, src)
        except S3Error as exc:
            assert exc.code is expect
            return
        assert expect is None
        expect = self.bucket_error(dst_bucket)
        version = self.call(self.engine.copy_object(source, dst_bucket, dst, replace_metadata=False), expect)
        if expect is None:
            assert source_model is not None
            self.buckets[dst_bucket].store(dst, Version(version.version_id, source_model.data,
                                                        dict(source_model.tags)))

    @rule(data=st.data(), tags=tag_sets)
    def set_tags(self, data: st.DataObject, tags: dict[str, str]) -> None:
        bucket = self.pick(data)
        key = self.pick_key(data, bucket, "key")
        expect = self.bucket_error(bucket)
        latest = self.buckets[bucket].latest_live(key) if expect is None else None
        if expect is None and latest is None:
            expect = ErrorCode.NO_SUCH_KEY
        vid = self.call(self.engine.put_object_tags(bucket, key, None, tags), expect)
        if latest is not None:
            assert vid == latest.vid
            latest.tags = dict(tags)

    @rule(data=st.data(), dst=st.sampled_from(KEYS + ["new", "n/k"]))
    def rename_key(self, data: st.DataObject, dst: str) -> None:
        bucket = self.pick(data)
        src = self.pick_key(data, bucket, "src")
        expect = self.bucket_error(bucket)
        model = self.buckets.get(bucket)
        if model is None:
            pass
        elif src.endswith("/") != dst.endswith("/"):
            expect = ErrorCode.INVALID_ARGUMENT
        elif src.endswith("/"):
            return  # both prefixes: rename_prefix covers it
        elif src == dst:
            expect = ErrorCode.INVALID_REQUEST
        elif model.latest_live(src) is None:
            expect = ErrorCode.NO_SUCH_KEY
        elif dst in model.keys and model.versioning:
            expect = ErrorCode.DESTINATION_EXISTS  # a versioned target's history would be lost
        self.call(self.engine.rename(bucket, src, dst), expect)
        if expect is None:
            assert model is not None
            model.keys[dst] = model.keys.pop(src)  # an unversioned target is overwritten
            self.move_uploads(bucket, lambda key: dst if key == src else None)

    @rule(data=st.data(), src=st.sampled_from(PREFIXES), dst=st.sampled_from(PREFIXES),
          merge=st.sampled_from([False, False, True]))
    def rename_prefix(self, data: st.DataObject, src: str, dst: str, merge: bool) -> None:
        bucket = self.pick(data)
        expect = self.bucket_error(bucket)
        model = self.buckets.get(bucket)
        if model is None:
            pass
        elif dst.startswith(src):
            expect = ErrorCode.INVALID_REQUEST
        elif not model.has_dir(src):
            expect = ErrorCode.NO_SUCH_KEY
        elif model.has_dir(dst) and not merge:
            expect = ErrorCode.DESTINATION_EXISTS
        self.call(self.engine.rename(bucket, src, dst, merge=merge), expect)
        if expect is None:
            assert model is not None
            moved = {dst + k[len(src):]: v for k, v in model.keys.items() if k.startswith(src)}
            kept = {k: v for k, v in model.keys.items() if not k.startswith(src) and k not in moved}
            model.keys = {**kept, **moved}  # on a merge, a source key replaces the same destination key
            self.move_uploads(bucket, lambda key: dst + key[len(src):] if key.startswith(src) else None)

    def move_uploads(self, bucket: str, rename: Callable[[str], str | None]) -> None:
        """In-flight uploads follow their keys."""
        for upload in self.uploads.values():
            new = rename(upload.key) if upload.bucket == bucket else None
            if new is not None:
                upload.key = new

    # -- multipart ----------------------------------------------------------------------------------------------
    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def mp_create(self, data: st.DataObject, key: str) -> None:
        bucket = self.pick(data)
        expect = self.bucket_error(bucket)
        upload_id = self.call(self.engine.create_multipart_upload(bucket, key), expect)
        if expect is None:
            self.uploads[upload_id] = UploadModel(bucket, key)

    @precondition(lambda self: self.uploads)
    @rule(data=st.data(), number=st.integers(1, 4), body=bodies)
    def mp_upload_part(self, data: st.DataObject, number: int, body: bytes) -> None:
        upload_id = data.draw(st.sampled_from(list(self.uploads)), label="upload")  # creation order: ids are random
        upload = self.uploads[upload_id]
        stored = self.run(self.engine.ingestor.ingest_bytes(body))
        etag = self.run(self.engine.upload_part(upload.bucket, upload.key, upload_id, number, stored))
        upload.parts[number] = (body, etag)

    @precondition(lambda self: self.uploads)
    @rule(data=st.data(), missing=st.sampled_from([False, False, False, True]))
    def mp_complete(self, data: st.DataObject, missing: bool) -> None:
        upload_id = data.draw(st.sampled_from(list(self.uploads)), label="upload")  # creation order: ids are random
        upload = self.uploads[upload_id]
        pool = sorted(upload.parts) if upload.parts and not missing else [1, 2, 3, 4]
        chosen = sorted(data.draw(st.sets(st.sampled_from(pool), min_size=1), label="parts"))
        expect = None
        for index, n in enumerate(chosen):  # the first offending part, in order, decides (as the decider does)
            if n not in upload.parts:
                expect = ErrorCode.INVALID_PART
                break
            if not upload.parts[n][0] and index < len(chosen) - 1:  # below min_part_bytes=1 and not the last
                expect = ErrorCode.ENTITY_TOO_SMALL
                break
        parts = [(n, upload.parts[n][1] if n in upload.parts else "0" * 32) for n in chosen]
        version = self.call(self.engine.complete_multipart_upload(upload.bucket, upload.key, upload_id, parts),
                            expect)
        if expect is None:
            body = b"".join(upload.parts[n][0] for n in chosen)
            assert version.size == len(body) and version.etag.endswith(f"-{len(chosen)}")
            self.buckets[upload.bucket].store(upload.key, Version(version.version_id, body))
            del self.uploads[upload_id]

    @precondition(lambda self: self.uploads)
    @rule(data=st.data())
    def mp_abort(self, data: st.DataObject) -> None:
        upload_id = data.draw(st.sampled_from(list(self.uploads)), label="upload")  # creation order: ids are random
        upload = self.uploads.pop(upload_id)
        self.run(self.engine.abort_multipart_upload(upload.bucket, upload.key, upload_id))

    # -- invariants ---------------------------------------------------------------------------------------------
    @invariant()
    def engine_matches_model(self) -> None:
        assert sorted(b.name for b in self.engine.list_buckets()) == sorted(self.buckets)
        for name, model in self.buckets.items():
            keys, _, _ = self.run(list_all(self.engine, name, page_size=4))
            live = sorted((k for k in model.keys if model.latest_live(k) is not None), key=str.encode)
            assert keys == live, f"{name}: listing {keys} != model {live}"
            rows, _ = self.run(list_all_versions(self.engine, name, page_size=3))
            want = [(k, v.vid, v.data is None) for k in sorted(model.keys, key=str.encode) for v in model.keys[k]]
            assert rows == want, f"{name}: versions differ"
            for key, versions in model.keys.items():
                for index, v in enumerate(versions):
                    if v.data is None:
                        continue
                    head = self.engine.head_object(name, key, v.vid)
                    assert head.is_latest == (index == 0)
                    assert head.tags == v.tags, f"{name}/{key}@{v.vid} tags"
                    assert self.run(read(self.engine, head)) == v.data, f"{name}/{key}@{v.vid} bytes"
            bucket = self.engine.get_bucket(name)
            assert bucket.object_count == len(live)
            assert bucket.bytes_stored == sum(len(v.data or b"") for vs in model.keys.values() for v in vs)
            uploads = self.engine.list_multipart_uploads(name).uploads
            assert sorted(u.upload_id for u in uploads) == sorted(
                uid for uid, u in self.uploads.items() if u.bucket == name)
        problems = refcount_problems(self.engine.views)
        assert not problems, "\n".join(problems)

    @invariant()
    def views_equal_replay(self) -> None:
        self.steps += 1
        if self.steps % 10 == 0:
            self.check_replay()

    def check_replay(self) -> None:
        self.rebuilds += 1
        scratch = self.tmp / f"rebuild-{self.rebuilds}"
        check_live_vs_rebuild(self.engine.views, self.engine.journal, scratch)
        shutil.rmtree(scratch)

    def teardown(self) -> None:
        try:
            self.check_replay()
            before = dump_views(self.engine.views)
            self.engine.close()
            self.engine = self._open()  # nothing to replay: the views are current
            assert not diff_dumps(before, dump_views(self.engine.views))
            self.engine.close()
            shutil.rmtree(self.data_dir / "views")
            self.engine = self._open()  # full replay through the engine's own start-up path
            diffs = diff_dumps(before, dump_views(self.engine.views))
            assert not diffs, "\n".join(diffs)
        finally:
            self.engine.close()
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


EngineMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestEngineReplay = EngineMachine.TestCase
