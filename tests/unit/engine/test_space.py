"""Disk full (issue 18 item 9) and orphaned volume bytes (item 4): engine/space.py and how the write path uses it.

The filesystem is faked where a test needs it full (``SpaceGuard.statvfs``, ``os.pwrite``/``os.pwritev`` raising
ENOSPC, an LMDB commit failing as LMDB reports ENOSPC: EIO); tests/crash/test_issue18_disk_full.py fills a real
tmpfs under real server processes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
import lmdb
import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.jobs.compaction import run_compaction
from s4.engine.space import MAX_DEFAULT_RESERVE_BYTES, SpaceGuard, default_reserve_bytes, is_disk_full
from s4.engine.views.env import unpack
from s4.engine.volumes.record import record_bytes

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


class FakeFs:
    """A statvfs whose free space the test sets; counts its calls."""

    def __init__(self, total: int, free: int) -> None:
        self.total, self.free, self.calls = total, free, 0

    def __call__(self, path: str) -> Any:
        self.calls += 1
        return SimpleNamespace(f_blocks=self.total // 4096, f_frsize=4096, f_bavail=self.free // 4096)


def full(engine: Engine, free: int = 0) -> FakeFs:
    """Make the engine see a disk with ``free`` bytes left (below its reserve)."""
    fs = FakeFs(64 * MiB, free)
    engine.space.statvfs = fs
    engine.space.free_bytes(fresh=True)
    return fs


# -- SpaceGuard ---------------------------------------------------------------------------------------------------
def test_default_reserve_is_one_percent_capped() -> None:
    assert default_reserve_bytes(64 * MiB) == 64 * MiB // 100
    assert default_reserve_bytes(100 * 1024**4) == MAX_DEFAULT_RESERVE_BYTES == 256 * MiB


def test_reserve_check_and_cache() -> None:
    fs = FakeFs(100 * 1024**3, 10 * 1024**3)
    clock = [0.0]
    guard = SpaceGuard("/", 4 * MiB, statvfs=fs, monotonic=lambda: clock[0])
    calls = fs.calls
    guard.check_bytes(MiB)  # far from the reserve: answered from the cache
    assert fs.calls == calls
    fs.free = 5 * MiB
    guard.consumed(10 * 1024**3 - 5 * MiB)  # this process wrote that much: near the reserve, ask the kernel
    with pytest.raises(S3Error) as exc:
        guard.check_bytes(2 * MiB)
    assert exc.value.code is ErrorCode.INSUFFICIENT_STORAGE and exc.value.status == 507
    assert "disk is full" in exc.value.message
    assert guard.admits("put_object", {})  # 5 MiB free: a command (no body) still fits above the reserve
    fs.free = 3 * MiB
    assert not guard.admits("put_object", {}) and not guard.admits("create_bucket", {})
    assert guard.admits("delete_object", {}) and guard.admits("abort_multipart", {})
    assert guard.admits("delete_bucket", {}) and guard.admits("move_blobs", {})
    assert guard.admits("set_bucket_config", {"value": None}) and not guard.admits("set_bucket_config", {"value": 1})
    assert SpaceGuard("/", 0, statvfs=FakeFs(MiB, 0)).admits("put_object", {})  # 0 disables the reserve


def test_is_disk_full_recognises_every_form() -> None:
    fs = FakeFs(64 * MiB, 4096)
    guard = SpaceGuard("/", MiB, statvfs=fs)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert is_disk_full(lmdb.Error("mdb_txn_commit: Input/output error"), guard)  # LMDB's word for ENOSPC
    fs.free = 10 * 1024**3
    assert not is_disk_full(lmdb.Error("mdb_txn_commit: Input/output error"), guard)  # a real EIO stays one


# -- the engine on a full disk ------------------------------------------------------------------------------------
async def test_issue18_below_reserve_adding_data_is_refused_and_deletes_work(make_engine: Callable[..., Engine],
                                                                             tmp_path: Path) -> None:
    engine = make_engine(disk_reserve_bytes=MiB, min_part_bytes=1)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "keep", b"k" * 1000)
    await put(engine, "bkt", "gone", b"g" * 1000)
    upload_id = await engine.create_multipart_upload("bkt", "mp")
    volumes = tmp_path / "data" / "volumes"
    size_before = sum(p.stat().st_size for p in volumes.iterdir())
    full(engine, free=MiB // 2)

    attempts: list[Callable[[], Any]] = [
        lambda: put(engine, "bkt", "new", os.urandom(5000)), lambda: engine.create_bucket("other-bucket"),
        lambda: engine.create_multipart_upload("bkt", "mp2"),
        lambda: engine.set_bucket_config("bkt", "tagging", {"a": "1"})]
    for attempt in attempts:
        with pytest.raises(S3Error) as exc:
            await attempt()
        assert exc.value.code is ErrorCode.INSUFFICIENT_STORAGE
    assert sum(p.stat().st_size for p in volumes.iterdir()) == size_before  # refused before writing a byte

    await engine.delete_object("bkt", "gone")
    await engine.abort_multipart_upload("bkt", "mp", upload_id)
    await engine.set_bucket_config("bkt", "tagging", None)
    assert await get(engine, "bkt", "keep") == b"k" * 1000  # reads never need space
    full(engine, free=32 * MiB)
    await put(engine, "bkt", "new", b"n" * 10)
    assert await get(engine, "bkt", "new") == b"n" * 10


async def test_issue18_enospc_from_a_volume_write_is_507(make_engine: Callable[..., Engine],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(disk_reserve_bytes=0)
    await engine.create_bucket("bkt")

    def no_space(fd: int, buffers: Any, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "pwritev", no_space)
        with pytest.raises(S3Error) as exc:
            await put(engine, "bkt", "k", os.urandom(3000))
    assert exc.value.code is ErrorCode.INSUFFICIENT_STORAGE
    await put(engine, "bkt", "k", b"after")
    assert await get(engine, "bkt", "k") == b"after"


async def test_issue18_short_journal_write_is_507_and_leaves_no_half_record(
        make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine = make_engine(disk_reserve_bytes=0)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "keep", b"keep")
    assert engine.journal is not None
    journal_fd, real_pwrite = engine.journal._fd, os.pwrite
    segment = sorted((tmp_path / "data" / "journal").iterdir())[-1]
    size_before, seq_before = segment.stat().st_size, engine.journal.last_seq

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        if fd != journal_fd:
            return real_pwrite(fd, data, offset)
        if len(data) > 8:  # the disk takes half the batch, then has no room for the rest
            return real_pwrite(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", half_then_full)
        with pytest.raises(S3Error) as exc:
            await engine.delete_object("bkt", "keep")
    assert exc.value.code is ErrorCode.INSUFFICIENT_STORAGE
    assert segment.stat().st_size == size_before and engine.journal.last_seq == seq_before
    await engine.delete_object("bkt", "keep")  # the sequencer goes on: space can be freed
    engine.close()
    again = make_engine()
    with pytest.raises(S3Error) as missing:
        await get(again, "bkt", "keep")
    assert missing.value.code is ErrorCode.NO_SUCH_KEY


class _FailingTxn:
    def __init__(self, txn: Any, env: _FailingEnv) -> None:
        self.txn, self.env = txn, env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def commit(self) -> None:
        if self.env.failures > 0:
            self.env.failures -= 1
            self.txn.abort()
            raise lmdb.Error("mdb_txn_commit: Input/output error")
        self.txn.commit()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.txn.abort()


class _FailingEnv:
    """The views' LMDB environment with its next ``failures`` top-level commits failing as ENOSPC does."""

    def __init__(self, env: Any, failures: int) -> None:
        self.env, self.failures = env, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def begin(self, db: Any = None, parent: Any = None, write: bool = False, buffers: bool = False) -> Any:
        """py-lmdb's signature (the sequencer calls it positionally)."""
        if parent is not None:
            return self.env.begin(db, getattr(parent, "txn", parent), write, buffers)
        txn = self.env.begin(db, None, write, buffers)
        return _FailingTxn(txn, self) if write else txn


async def test_issue18_lmdb_commit_failing_on_full_disk_unjournals_the_batch(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(disk_reserve_bytes=MiB)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "keep", b"keep")
    assert engine.journal is not None
    seq_before = engine.journal.last_seq
    full(engine, free=0)
    real_env = engine.views.env
    engine.views.env = _FailingEnv(real_env, failures=4)  # the commit and its retry both fail, before and after
    # the space ballast is given back (both attempts of the batch)
    try:
        with pytest.raises(S3Error) as exc:
            await engine.delete_object("bkt", "keep")
        assert exc.value.code is ErrorCode.INSUFFICIENT_STORAGE
        assert engine.journal.last_seq == seq_before  # not acknowledged, so not in the log either
        assert await get(engine, "bkt", "keep") == b"keep"
        await engine.delete_object("bkt", "keep")  # the next batch is decided against consistent views
    finally:
        engine.views.env = real_env
    engine.close()
    again = make_engine()
    with pytest.raises(S3Error):
        await get(again, "bkt", "keep")
    assert again.journal is not None and again.journal.last_seq == seq_before + 1


async def test_issue18_a_delete_on_a_disk_eaten_to_the_last_byte_commits_with_the_ballast_given_back(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """Writers in other processes can each pass the (per process) reserve check at once and eat the whole reserve:
    the journal owner's ballast, allocated at start, is what a delete then commits with. A batch failing on a full
    disk gives the ballast back and runs again once; writes stay refused below the reserve; the ballast comes back
    when there is room."""
    engine = make_engine(disk_reserve_bytes=MiB)
    ballast = Path(engine.options.data_dir) / "space.ballast"
    assert ballast.stat().st_size == MiB  # allocated at start
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "gone", b"gone")
    seq_before = engine.journal.last_seq if engine.journal else 0
    fs = full(engine, free=0)
    real_env = engine.views.env
    engine.views.env = _FailingEnv(real_env, failures=2)  # the disk is full until the ballast is given back
    try:
        await engine.delete_object("bkt", "gone")
    finally:
        engine.views.env = real_env
    assert not ballast.exists()
    assert engine.journal is not None and engine.journal.last_seq == seq_before + 1
    with pytest.raises(S3Error) as refused:  # still below the reserve for new data
        await put(engine, "bkt", "new", b"x")
    assert refused.value.code is ErrorCode.INSUFFICIENT_STORAGE
    fs.free = 32 * MiB  # compaction freed room: the next batch allocates the ballast again
    engine.space.free_bytes(fresh=True)
    await put(engine, "bkt", "new", b"x")
    assert ballast.stat().st_size == MiB
    engine.close()


# -- orphaned bytes (item 4) --------------------------------------------------------------------------------------
async def test_issue18_failed_puts_leave_their_bytes_counted_as_dead(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(volume_size_bytes=5000, chunk_bytes=1000)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "k", os.urandom(1000))
    first = engine.volumes.active
    stored = await engine.ingestor.ingest_bytes(os.urandom(1000))
    with pytest.raises(S3Error) as cond:  # a failed conditional PUT: its chunk is in the volume, unreferenced
        await engine.put_object("bkt", "k", stored, if_none_match="*")
    assert cond.value.code is ErrorCode.PRECONDITION_FAILED

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield os.urandom(1000)

    with pytest.raises(S3Error) as big:  # EntityTooLarge after two chunks were stored
        await engine.ingest(body(), max_bytes=2500)
    assert big.value.code is ErrorCode.ENTITY_TOO_LARGE
    await put(engine, "bkt", "roll", os.urandom(1000))  # rolls (and seals) the first volume
    assert engine.volumes.active != first
    with engine.views.read() as txn:
        stats = unpack(txn.get(first.encode(), db=engine.views.dbs["volumes"]))
    size = (engine.volumes.directory / first).stat().st_size
    assert size == 4 * record_bytes(1000)
    assert stats["sealed"] and stats["live"] == 1000
    assert stats["dead"] == 3 * record_bytes(1000)  # the three orphaned records, headers and tables included
    report = await anyio.to_thread.run_sync(lambda: run_compaction(engine, threshold=0.5))
    assert report.done.get("volumes_compacted") == 1, report.to_dict()
    assert not (engine.volumes.directory / first).exists()
