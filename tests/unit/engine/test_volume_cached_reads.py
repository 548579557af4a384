"""Reads of hot blobs from the event loop (``BlobReader.read_cached``, ``VolumeStore.pread_cached``): the same checks
as ``read``, no copy of a whole piece, and a clean fallback to the worker-thread read when the page cache (or the
kernel) cannot serve without waiting."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine.model import BlobLocation
from s4.engine.volumes import store as store_module
from s4.engine.volumes.reads import BlobReader, WouldBlock
from s4.engine.volumes.record import BLOCK_BYTES, HEADER_BYTES, DamagedBlob, encode_record
from s4.engine.volumes.store import VolumeStore

MiB = 1024 * 1024


class CachedMemVolume:
    """A volume in memory with both reads of VolumeStore; ``cold`` makes every cached read miss."""

    def __init__(self, raw: bytes) -> None:
        self.raw = bytearray(raw)
        self.cold = False
        self.returned: list[object] = []

    def pread(self, name: str, offset: int, length: int) -> bytes:
        data = bytes(self.raw[offset:offset + length])
        self.returned.append(data)
        return data

    def pread_cached(self, name: str, offset: int, length: int) -> bytearray:
        if self.cold or offset + length > len(self.raw):
            raise WouldBlock(name)
        data = bytearray(self.raw[offset:offset + length])
        self.returned.append(data)
        return data


def volume(data: bytes) -> tuple[CachedMemVolume, BlobLocation]:
    digest = hashlib.sha256(data).digest()
    header, table = encode_record(data, digest)
    prefix = b"\x05" * 11
    return CachedMemVolume(prefix + header + data + table), BlobLocation(digest, "v", len(prefix) + HEADER_BYTES,
                                                                         len(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3 * BLOCK_BYTES + 5), st.data())
def test_a_flipped_bit_in_what_a_cached_read_covers_is_damage(size: int, draw: st.DataObject) -> None:
    data = random.Random(size).randbytes(size)
    vol, loc = volume(data)
    lo = draw.draw(st.integers(0, size - 1))
    n = draw.draw(st.integers(1, size - lo))
    start, stop = lo // BLOCK_BYTES * BLOCK_BYTES, min(size, -(-(lo + n) // BLOCK_BYTES) * BLOCK_BYTES)
    at = draw.draw(st.integers(start, stop - 1))  # a data byte of a block the read covers
    assert BlobReader(vol, loc).read_cached(lo, n) == data[lo:lo + n]
    vol.raw[loc.offset + at] ^= 1 << draw.draw(st.integers(0, 7))
    with pytest.raises(DamagedBlob):
        BlobReader(vol, loc).read_cached(lo, n)


def test_pieces_of_whole_blocks_are_the_bytes_read_not_a_copy() -> None:
    data = random.Random(1).randbytes(4 * MiB)
    vol, loc = volume(data)
    for read in ("read", "read_cached"):
        reader = BlobReader(vol, loc)
        for lo in range(0, len(data), MiB):
            piece = getattr(reader, read)(lo, MiB)
            assert piece == data[lo:lo + MiB]
            assert piece is vol.returned[-1], f"{read} copied the piece at {lo}"


def test_a_cold_read_falls_back_and_the_reader_goes_on() -> None:
    data = random.Random(2).randbytes(2 * MiB + 7)
    vol, loc = volume(data)
    reader = BlobReader(vol, loc)
    vol.cold = True
    assert reader.read_cached(0, MiB) is None  # nothing read: the caller reads on a worker thread
    assert reader.read(0, MiB) == data[:MiB]
    vol.cold = False
    assert reader.read_cached(MiB, MiB) == data[MiB:2 * MiB]
    assert reader.read_cached(2 * MiB, 7) == data[2 * MiB:]


def test_a_store_without_cached_reads_is_read_on_the_thread() -> None:
    class Plain:
        def pread(self, name: str, offset: int, length: int) -> bytes:
            raise AssertionError("read_cached must not read through pread")

    assert BlobReader(Plain(), BlobLocation(b"\0" * 32, "v", HEADER_BYTES, 10)).read_cached(0, 10) is None


def test_volume_store_serves_a_just_written_blob_from_the_page_cache(tmp_path: Path) -> None:
    vols = VolumeStore(tmp_path)
    data = random.Random(3).randbytes(3 * MiB + 100)
    loc = vols.append(data, hashlib.sha256(data).digest())
    vols.sync([loc.volume])
    reader = vols.blob_reader(loc)
    got = [reader.read_cached(lo, min(MiB, len(data) - lo)) for lo in range(0, len(data), MiB)]
    if store_module._NOWAIT[0]:
        assert b"".join(p or b"" for p in got) == data  # written a moment ago: in the page cache
    else:
        assert got == [None] * len(got)
    with pytest.raises(WouldBlock):  # past the end: never a short read handed out as the bytes
        vols.pread_cached(loc.volume, loc.offset, 1 << 30)


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EOPNOTSUPP])
def test_volume_store_cached_read_refused_by_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        code: int) -> None:
    vols = VolumeStore(tmp_path)
    loc = vols.append(b"x" * BLOCK_BYTES * 2, hashlib.sha256(b"x" * BLOCK_BYTES * 2).digest())
    monkeypatch.setattr(store_module, "_NOWAIT", [8])

    def refuse(*args: object) -> int:
        raise BlockingIOError(code, "would block") if code == errno.EAGAIN else OSError(code, "not supported")

    monkeypatch.setattr(os, "preadv", refuse)
    with pytest.raises(WouldBlock):
        vols.pread_cached(loc.volume, loc.offset, 10)
    assert store_module._NOWAIT[0] == (8 if code == errno.EAGAIN else 0)  # unsupported: not asked again
    assert vols.blob_reader(loc).read_cached(0, 10) is None
    assert vols.blob_reader(loc).read(0, 10) == b"x" * 10
