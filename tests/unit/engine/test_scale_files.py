"""Scale properties of the on-disk layout: objects do not cost inodes, and identical bytes are stored once.

* 25,000 small objects through the Engine (batches of 500 concurrent PUTs, so group commit batches them) leave
  a handful of files under the data directory: volumes, journal segments, the LMDB pair -- never one per object.
* 20 objects with the same 8 MiB content grow the data directory by about one copy, in allocated blocks and in
  apparent size; deleting 19 of them keeps the bytes of the last one readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.engine_io import get, list_all, put

from s4.engine import Engine
from s4.engine.views.env import unpack

pytestmark = pytest.mark.anyio

OBJECTS = 25_000  # 500 times the file budget below: a file per object could not hide
BATCH = 500
MiB = 1024 * 1024


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) under ``root``."""
    files = apparent = allocated = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return files, apparent, allocated


def body_of(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * 3 + i.to_bytes(4, "big")  # 100 bytes, all distinct


def key_of(i: int) -> str:
    return f"d{i % 50:02d}/obj-{i:06d}"


@pytest.mark.slow  # 5-15 s on a 2-core machine
async def test_small_objects_do_not_cost_inodes(engine: Engine, tmp_path: Path) -> None:
    await engine.create_bucket("many")
    started = time.perf_counter()
    for first in range(0, OBJECTS, BATCH):
        await asyncio.gather(*(put(engine, "many", key_of(i), body_of(i))
                               for i in range(first, min(OBJECTS, first + BATCH))))
    elapsed = time.perf_counter() - started
    batches, commands = engine.sequencer.stats
    print(f"{OBJECTS} PUTs in {elapsed:.1f} s ({OBJECTS / elapsed:.0f}/s), {commands / batches:.0f} per batch")
    assert commands / batches > 20, "concurrent PUTs must share group commits"

    files, apparent, _ = disk_usage(tmp_path / "data")
    assert files < 50, f"{files} files for {OBJECTS} objects"
    assert engine.get_bucket("many").object_count == OBJECTS

    started = time.perf_counter()
    keys, _, pages = await list_all(engine, "many")
    print(f"listed {len(keys)} keys in {len(pages)} pages in {time.perf_counter() - started:.1f} s")
    assert keys == sorted(key_of(i) for i in range(OBJECTS))
    for i in range(0, OBJECTS, 997):
        assert await get(engine, "many", key_of(i)) == body_of(i)


async def test_identical_contents_are_stored_once(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine()
    data_dir = tmp_path / "data"
    await engine.create_bucket("dedup")
    await put(engine, "dedup", "warm-up", b"x")  # journal segment, LMDB and volume files exist from here on
    content = os.urandom(8 * MiB)
    _, apparent_before, allocated_before = disk_usage(data_dir)
    for i in range(20):
        await put(engine, "dedup", f"copy-{i:02d}", content)
    _, apparent_after, allocated_after = disk_usage(data_dir)
    grew_allocated, grew_apparent = allocated_after - allocated_before, apparent_after - apparent_before
    print(f"20 x 8 MiB identical: +{grew_allocated / MiB:.1f} MiB allocated, +{grew_apparent / MiB:.1f} MiB apparent")
    assert 8 * MiB <= grew_apparent < 2 * 8 * MiB
    assert grew_allocated < 2 * 8 * MiB

    with engine.views.read() as txn:
        refs = [unpack(v)[3] for _, v in txn.cursor(db=engine.views.dbs["blobs"]).iternext()]
    assert sorted(refs) == [1, 20, 20], "two 4 MiB chunks shared by 20 objects, plus the warm-up blob"

    for i in range(19):
        await engine.delete_object("dedup", f"copy-{i:02d}")
    assert await get(engine, "dedup", "copy-19") == content
    engine.close()
    reopened = make_engine()
    assert await get(reopened, "dedup", "copy-19") == content
