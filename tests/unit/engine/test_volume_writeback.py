"""The 64 MiB PUT's tail (docs/performance.md, "a timeline of the 64 MiB PUT across the pool"): a large record's
bytes start their write-out as they are written (engine/volumes/writeback.py), so the fdatasync that makes them
durable finds little left; small records are left alone. A hint only: the record and the later sync are unchanged."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from s4.engine.volumes import pending, writeback
from s4.engine.volumes import store as store_module
from s4.engine.volumes.record import HEADER_BYTES, record_bytes
from s4.engine.volumes.store import VolumeStore

MiB = 1024 * 1024


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (offset, length) ranges whose write-out was started, through the store and the piece-wise record."""
    calls: list[tuple[int, int]] = []

    def record(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        writeback.start_writeback(fd, offset, length)

    monkeypatch.setattr(store_module, "start_writeback", record)
    monkeypatch.setattr(pending, "start_writeback", record)
    return calls


def test_a_large_append_starts_the_write_out_of_its_whole_record(tmp_path: Path,
                                                                   started: list[tuple[int, int]]) -> None:
    store = VolumeStore(tmp_path)
    try:
        small = os.urandom(64 * 1024)
        store.append(small, hashlib.sha256(small).digest())
        assert started == []  # a small write keeps its one fdatasync at commit (no extra syscall)
        data = os.urandom(4 * MiB)
        loc = store.append(data, hashlib.sha256(data).digest())
        assert started == [(loc.offset - HEADER_BYTES, record_bytes(len(data)))]
        assert store.read_blob(loc, 0, len(data)) == data
    finally:
        store.close()


def test_a_large_streamed_record_starts_the_write_out_of_each_piece(tmp_path: Path,
                                                                      started: list[tuple[int, int]]) -> None:
    store = VolumeStore(tmp_path)
    try:
        data = os.urandom(2 * MiB + 5)
        digest = hashlib.sha256(data).digest()
        record = store.begin_record(len(data))
        for lo in range(0, len(data), MiB):
            record.write(data[lo:lo + MiB])
        loc = record.finish(digest)
        base = loc.offset
        assert started == [(base, MiB), (base + MiB, MiB), (base + 2 * MiB, 5)]
        assert store.verify_blob(loc) is None
        small = store.begin_record(1000)
        small.write(b"x" * 1000)
        small.abort()
        assert len(started) == 3
    finally:
        store.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_hint_reaches_the_kernel_and_never_raises(tmp_path: Path) -> None:
    assert writeback._sync_file_range is not None  # loaded from libc: the hint is really given on Linux
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"y" * MiB)
        writeback.start_writeback(fd, 0, MiB)
        os.fdatasync(fd)
        assert os.pread(fd, MiB, 0) == b"y" * MiB
    finally:
        os.close(fd)
    writeback.start_writeback(fd, 0, MiB)  # a closed descriptor: EBADF is ignored, a hint never fails a write
