"""Issue 18 item 2 through the engine: a flipped byte in a volume is never served, is marked damaged through the
journal (``blob.damaged``), is never deduplicated onto, and the next write of the same bytes heals it.

Each test checks the views against a replay of the journal and the blob refcounts / volume counters at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
import crc32c
import pytest
from helpers.engine_io import put, read
from helpers.views_compare import check_live_vs_rebuild, dump_views, refcount_problems

from s4.engine import Engine
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.jobs.compaction import run_compaction
from s4.engine.jobs.scrubber import damaged_blobs, run_scrub
from s4.engine.model import BlobLocation, ObjectVersion
from s4.engine.sequencer import Command
from s4.engine.views.blobs import damaged_locations, is_damaged
from s4.engine.views.env import unpack
from s4.engine.volumes import store as store_module
from s4.engine.volumes.record import BLOCK_BYTES, encode_header, record_bytes

pytestmark = pytest.mark.anyio
BODY = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB blocks in one chunk


def flip(engine: Engine, loc: BlobLocation, at: int) -> None:
    """Flip one byte of the blob's data at ``at`` (relative to the data start), behind the engine's back."""
    path = Path(engine.volumes.directory) / loc.volume
    with open(path, "r+b") as f:
        f.seek(loc.offset + at)
        byte = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([byte[0] ^ 0x5A]))


def blob_rec(engine: Engine, digest: bytes) -> list | None:
    raw = dump_views(engine.views)["blobs"].get(digest)
    return None if raw is None else unpack(raw)


def wait_marked(engine: Engine, digest: bytes) -> list:
    """The read path marks without waiting: poll (bounded) until the sequencer has applied the mark."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = blob_rec(engine, digest)
        if rec is not None and is_damaged(rec):
            return rec
        time.sleep(0.01)
    raise AssertionError(f"blob {digest.hex()} was never marked damaged")


def check_views(engine: Engine, tmp_path: Path) -> None:
    assert engine.journal is not None
    check_live_vs_rebuild(engine.views, engine.journal, tmp_path / "rebuilt")
    assert refcount_problems(engine.views) == []


async def stored(engine: Engine, key: str = "k", body: bytes = BODY) -> tuple[ObjectVersion, BlobLocation]:
    await engine.create_bucket("bkt")
    version = await put(engine, "bkt", key, body)
    return version, engine.locate(version)[0]


async def test_issue18_get_of_a_flipped_byte_fails_and_marks_the_blob(engine: Engine, tmp_path: Path) -> None:
    version, loc = await stored(engine)
    flip(engine, loc, 3 * BLOCK_BYTES + 7)
    with pytest.raises(S3Error) as err:
        engine.read_small(version, 0, version.size)
    assert err.value.code is ErrorCode.INTERNAL_ERROR and "checksum" in err.value.message
    with pytest.raises(S3Error):
        await read(engine, version)
    with pytest.raises(S3Error):  # a range over the bad block
        engine.read_small(version, 3 * BLOCK_BYTES, 100)
    # a range over good blocks is still served, exactly
    assert engine.read_small(version, 10, 1000) == BODY[10:1010]
    assert await read(engine, version, BLOCK_BYTES, 2 * BLOCK_BYTES) == BODY[BLOCK_BYTES:3 * BLOCK_BYTES]
    rec = wait_marked(engine, loc.hash)
    assert damaged_locations(rec) == [[loc.volume, loc.offset]]
    stats = engine.storage_stats()
    assert stats["damaged_blobs"] == 1 and stats["damaged_bytes"] == len(BODY)
    check_views(engine, tmp_path)


async def test_issue18_reupload_of_the_same_bytes_stores_a_good_copy_and_repoints(engine: Engine,
                                                                                   tmp_path: Path) -> None:
    version, loc = await stored(engine)
    await put(engine, "bkt", "other", BODY)  # a second reference to the same blob
    flip(engine, loc, 5)
    with pytest.raises(S3Error):
        engine.read_small(version, 0, 10)
    wait_marked(engine, loc.hash)
    again = await put(engine, "bkt", "k2", BODY)
    new = engine.locate(again)[0]
    assert (new.volume, new.offset) != (loc.volume, loc.offset), "must not deduplicate onto the damaged copy"
    rec = blob_rec(engine, loc.hash)
    assert rec is not None and rec[3] == 3 and not is_damaged(rec)
    # every version naming the blob now reads the good copy
    assert engine.read_small(version, 0, version.size) == BODY
    assert await read(engine, engine.head_object("bkt", "other")) == BODY
    assert engine.storage_stats()["damaged_blobs"] == 0
    vols = {k.decode(): unpack(v) for k, v in dump_views(engine.views)["volumes"].items()}
    assert sum(v["live"] for v in vols.values()) == len(BODY)  # one live copy
    assert sum(v["dead"] for v in vols.values()) == record_bytes(len(BODY))  # the damaged copy, whole, is dead
    check_views(engine, tmp_path)


async def test_issue18_copy_of_a_damaged_source_fails_and_shares_nothing(engine: Engine, tmp_path: Path) -> None:
    version, loc = await stored(engine)
    flip(engine, loc, 2 * BLOCK_BYTES)
    with pytest.raises(S3Error) as err:
        await engine.copy_object(version, "bkt", "copy", replace_metadata=False)
    assert err.value.code is ErrorCode.INTERNAL_ERROR
    with pytest.raises(S3Error) as missing:
        engine.head_object("bkt", "copy")
    assert missing.value.code is ErrorCode.NO_SUCH_KEY
    rec = wait_marked(engine, loc.hash)
    assert rec[3] == 1
    await put(engine, "bkt", "again", BODY)  # heal, then the copy shares the good copy
    copied = await engine.copy_object(version, "bkt", "copy", replace_metadata=False)
    assert engine.read_small(copied, 0, copied.size) == BODY
    check_views(engine, tmp_path)


async def test_issue18_mark_decider_is_idempotent_and_ignores_stale_locations(engine: Engine,
                                                                              tmp_path: Path) -> None:
    version, loc = await stored(engine)
    args = {"hash": loc.hash, "volume": loc.volume, "offset": loc.offset, "problem": "test"}
    assert engine.sequencer.execute_sync(Command("mark_blob_damaged", args)) is True
    assert engine.sequencer.execute_sync(Command("mark_blob_damaged", args)) is False  # already marked
    stale = dict(args, offset=loc.offset + 1)
    assert engine.sequencer.execute_sync(Command("mark_blob_damaged", stale)) is False
    gone = dict(args, hash=b"\1" * 32)
    assert engine.sequencer.execute_sync(Command("mark_blob_damaged", gone)) is False
    assert engine.storage_stats()["damaged_blobs"] == 1
    assert [d["hash"] for d in damaged_blobs(engine)] == [loc.hash.hex()]
    check_views(engine, tmp_path)


async def test_issue18_write_deduplicated_before_the_mark_is_refused_for_retry(engine: Engine,
                                                                               tmp_path: Path) -> None:
    """The race: a PUT's chunk deduplicated onto a copy that is marked damaged before the PUT commits."""
    version, loc = await stored(engine)
    ingested = await engine.ingestor.ingest_bytes(BODY)  # dedups onto loc
    assert ingested.blobs_at[0][1:3] == [loc.volume, loc.offset]
    engine.sequencer.execute_sync(Command("mark_blob_damaged", {"hash": loc.hash, "volume": loc.volume,
                                                                "offset": loc.offset, "problem": "test"}))
    with pytest.raises(S3Error) as err:
        await engine.put_object("bkt", "late", ingested)
    assert err.value.code is ErrorCode.SLOW_DOWN
    retry = await put(engine, "bkt", "late", BODY)  # the retry stores afresh
    assert engine.read_small(retry, 0, retry.size) == BODY
    check_views(engine, tmp_path)


async def test_issue18_deleting_a_damaged_blob_clears_the_counters(engine: Engine, tmp_path: Path) -> None:
    version, loc = await stored(engine)
    engine.sequencer.execute_sync(Command("mark_blob_damaged", {"hash": loc.hash, "volume": loc.volume,
                                                                "offset": loc.offset, "problem": "test"}))
    assert engine.storage_stats()["damaged_blobs"] == 1
    await engine.delete_object("bkt", "k")
    assert blob_rec(engine, loc.hash) is None
    assert engine.storage_stats()["damaged_blobs"] == 0 and engine.storage_stats()["damaged_bytes"] == 0
    check_views(engine, tmp_path)


async def test_issue18_scrubber_marks_what_it_finds(engine: Engine, tmp_path: Path) -> None:
    version, loc = await stored(engine)
    flip(engine, loc, 100)
    report = await anyio.to_thread.run_sync(lambda: run_scrub(engine))
    assert report.done["bad_blobs"] == 1 and report.done["marked_damaged"] == 1
    rec = blob_rec(engine, loc.hash)
    assert rec is not None and is_damaged(rec)
    again = await anyio.to_thread.run_sync(lambda: run_scrub(engine))
    assert again.done["bad_blobs"] == 1 and "marked_damaged" not in again.done  # already marked
    check_views(engine, tmp_path)


async def test_issue18_compaction_marks_a_damaged_blob_and_keeps_its_volume(make_engine: Callable[..., Engine],
                                                                           tmp_path: Path) -> None:
    engine = make_engine(volume_size_bytes=1 << 20)
    await engine.create_bucket("bkt")
    keep = await put(engine, "bkt", "keep", BODY)
    for i in range(6):  # fill and roll the first volume with garbage-to-be
        await put(engine, "bkt", f"tmp{i}", bytes([i]) * (200 * 1024))
    for i in range(6):
        await engine.delete_object("bkt", f"tmp{i}")
    loc = engine.locate(keep)[0]
    assert loc.volume != engine.volumes.active
    flip(engine, loc, 9)
    report = await anyio.to_thread.run_sync(lambda: run_compaction(engine, threshold=0.1))
    assert any("damaged" in e for e in report.errors)
    assert (Path(engine.volumes.directory) / loc.volume).exists()
    assert is_damaged(blob_rec(engine, loc.hash) or [])
    await put(engine, "bkt", "heal", BODY)  # heal: the old copy is dead, the volume can go
    report = await anyio.to_thread.run_sync(lambda: run_compaction(engine, threshold=0.1))
    assert not report.errors and not (Path(engine.volumes.directory) / loc.volume).exists()
    assert engine.read_small(keep, 0, keep.size) == BODY
    check_views(engine, tmp_path)


async def test_issue18_v1_records_stay_readable_and_checked(engine: Engine, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Volumes written before the block table (one CRC over the whole blob) are read and verified as one block."""
    monkeypatch.setattr(store_module, "encode_record", lambda data, digest: (
        encode_header(len(data), crc32c.crc32c(data), digest), b""))
    version, loc = await stored(engine)
    small = await put(engine, "bkt", "small", b"tiny v1 object")
    monkeypatch.undo()
    assert engine.read_small(version, 0, version.size) == BODY
    assert await read(engine, version, 1000, 3 * BLOCK_BYTES) == BODY[1000:1000 + 3 * BLOCK_BYTES]
    assert engine.read_small(small, 2, 4) == b"ny v"
    assert engine.volumes.verify_blob(loc) is None
    flip(engine, loc, len(BODY) - 1)
    with pytest.raises(S3Error):
        engine.read_small(version, 0, 10)  # one block: any read of a damaged v1 blob fails
    wait_marked(engine, loc.hash)
    check_views(engine, tmp_path)
