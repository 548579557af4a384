"""Issue 19, blob transfer: a record written piece by piece (VolumeStore.begin_record, engine/volumes/pending.py)
is byte for byte the record ``append`` writes, however the data is cut; an abandoned one leaves no intact record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine.volumes.record import BLOCK_BYTES, HEADER_BYTES, record_bytes
from s4.engine.volumes.scanner import walk_volume
from s4.engine.volumes.store import VolumeStore


def record_at(store: VolumeStore, name: str, data_offset: int, size: int) -> bytes:
    return store.read(name, data_offset - HEADER_BYTES, record_bytes(size))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * BLOCK_BYTES + 17), cuts=st.lists(st.integers(0, 3 * BLOCK_BYTES + 17), max_size=6),
       seed=st.binary(min_size=1, max_size=4))
def test_streamed_record_is_byte_identical_to_append(tmp_path_factory: pytest.TempPathFactory, size: int,
                                                     cuts: list[int], seed: bytes) -> None:
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    digest = hashlib.sha256(data).digest()
    store = VolumeStore(tmp_path_factory.mktemp("vol"))
    try:
        appended = store.append(data, digest)
        record = store.begin_record(size)
        bounds = sorted({0, size, *(c for c in cuts if c <= size)})
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            record.write(data[lo:hi])
        streamed = record.finish(digest)
        assert streamed.size == size and streamed.hash == digest
        assert record_at(store, streamed.volume, streamed.offset, size) == \
            record_at(store, appended.volume, appended.offset, size)
        assert store.verify_blob(streamed) is None
        assert store.read_blob(streamed, 0, size) == data
    finally:
        store.close()


def test_abandoned_streamed_record_leaves_no_intact_record(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    data = bytes(range(256)) * 1000
    with store.begin_record(len(data)) as record:
        record.write(data[:100_000])
    with pytest.raises(ValueError):  # aborted: no more writes
        record.write(b"x")
    after = store.begin_record(3)
    with pytest.raises(ValueError):  # more than declared: refused before any byte is written
        after.write(b"abcd")
    after.write(b"abc")
    loc = after.finish(hashlib.sha256(b"abc").digest())
    walk = walk_volume(tmp_path / loc.volume)
    assert walk.records == 1  # only the finished one; the abandoned range is garbage
    assert [r.offset for r in walk.bad] == [0] and store.read_blob(loc, 0, 3) == b"abc"
    with pytest.raises(ValueError):
        store.begin_record(5).finish(hashlib.sha256(b"short").digest())  # 0 of 5 bytes: not finished
    store.close()
