"""Issue 18 item 2: the volume record carries a CRC32C per 64 KiB block, and every read checks what it returns.

Property: a single flipped bit anywhere in a record (header, data, block table) is detected by any read whose range
covers it (the header by every read), and a read that does not cover it still returns the right bytes. v1 records
(one CRC over the whole blob) stay readable and are checked as one block.
"""

from __future__ import annotations

import hashlib
import random

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine.model import BlobLocation
from s4.engine.volumes.reads import BlobReader, read_blob, verify_record
from s4.engine.volumes.record import (
    BLOCK_BYTES,
    HEADER_BYTES,
    DamagedBlob,
    block_table,
    decode_header,
    encode_header,
    encode_record,
    record_bytes,
    table_bytes,
)

PREFIX = b"\x07" * 13  # bytes of an earlier record: the blob does not start at offset 0


class MemVolume:
    """A volume in memory, with VolumeStore's ``pread`` contract (short only at the end)."""

    def __init__(self, raw: bytes | bytearray) -> None:
        self.raw = bytearray(raw)
        self.preads = 0

    def pread(self, name: str, offset: int, length: int) -> bytes:
        self.preads += 1
        return bytes(self.raw[offset:offset + length])


def v2_volume(data: bytes, tail: bytes = b"") -> tuple[MemVolume, BlobLocation]:
    digest = hashlib.sha256(data).digest()
    header, table = encode_record(data, digest)
    return MemVolume(PREFIX + header + data + table + tail), BlobLocation(digest, "v", len(PREFIX) + HEADER_BYTES,
                                                                          len(data))


def v1_volume(data: bytes, tail: bytes = b"") -> tuple[MemVolume, BlobLocation]:
    digest = hashlib.sha256(data).digest()
    header = encode_header(len(data), crc32c.crc32c(data), digest)
    return MemVolume(PREFIX + header + data + tail), BlobLocation(digest, "v", len(PREFIX) + HEADER_BYTES, len(data))


def read_both(vol: MemVolume, loc: BlobLocation, lo: int, n: int) -> list[bytes | None]:
    """The range through the one-shot reader and through a streaming reader (None: DamagedBlob)."""
    out: list[bytes | None] = []
    for read in (lambda: read_blob(vol, loc, lo, n), lambda: BlobReader(vol, loc).read(lo, n)):
        try:
            out.append(read())
        except DamagedBlob:
            out.append(None)
    return out


def test_issue18_v2_record_layout() -> None:
    data = random.Random(1).randbytes(3 * BLOCK_BYTES + 5)
    vol, loc = v2_volume(data)
    header = decode_header(vol.raw[len(PREFIX):len(PREFIX) + HEADER_BYTES])
    assert header is not None and header.version == 2 and header.length == len(data)
    assert header.field == BLOCK_BYTES and header.trailer_bytes == table_bytes(len(data)) == 16
    assert len(vol.raw) == len(PREFIX) + record_bytes(len(data))
    table = vol.raw[loc.offset + loc.size:]
    assert table[4:8] == crc32c.crc32c(data[BLOCK_BYTES:2 * BLOCK_BYTES]).to_bytes(4, "little")


def test_issue18_small_read_is_one_pread() -> None:
    data = b"x" * 5000
    vol, loc = v2_volume(data)
    assert read_blob(vol, loc, 0, len(data)) == data and vol.preads == 1
    vol.preads = 0
    assert read_blob(vol, loc, 100, 50) == data[100:150] and vol.preads == 1


def test_issue18_v1_record_at_end_of_file_is_read_and_checked() -> None:
    """A v1 record has no table: the one-pread path reads short at the end of the file and still checks."""
    data = b"legacy bytes" * 100
    vol, loc = v1_volume(data)
    assert read_blob(vol, loc, 3, 20) == data[3:23]
    assert BlobReader(vol, loc).read(0, len(data)) == data
    vol.raw[loc.offset + 500] ^= 1
    assert read_both(vol, loc, 0, 1) == [None, None]
    assert verify_record(vol, loc) == "data checksum mismatch"


@st.composite
def flipped_reads(draw: st.DrawFn) -> tuple[int, int, int, int, int, bool]:
    size = draw(st.sampled_from([1, 100, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 3 * BLOCK_BYTES + 77,
                                 5 * BLOCK_BYTES]) | st.integers(1, 6 * BLOCK_BYTES))
    v1 = draw(st.booleans())
    span = HEADER_BYTES + size + (0 if v1 else table_bytes(size))
    bit = draw(st.integers(0, span * 8 - 1))
    lo = draw(st.integers(0, size - 1))
    n = draw(st.integers(1, size - lo))
    seed = draw(st.integers(0, 2**32))
    return size, bit, lo, n, seed, v1


@settings(max_examples=300, deadline=None)
@given(flipped_reads())
def test_issue18_any_flipped_bit_is_detected_by_reads_covering_it(case: tuple[int, int, int, int, int, bool]) -> None:
    size, bit, lo, n, seed, v1 = case
    data = random.Random(seed).randbytes(size)
    vol, loc = (v1_volume if v1 else v2_volume)(data, tail=b"\x09" * 40)
    vol.raw[len(PREFIX) + bit // 8] ^= 1 << (bit % 8)
    pos = bit // 8  # within the record
    if pos < HEADER_BYTES or v1:
        covered = True  # the header is checked by every read; a v1 record is one block
    else:
        at = pos - HEADER_BYTES
        block = at // BLOCK_BYTES if at < size else (at - size) // 4
        covered = lo // BLOCK_BYTES <= block <= (lo + n - 1) // BLOCK_BYTES
    got = read_both(vol, loc, lo, n)
    if covered:
        assert got == [None, None], f"flip at record byte {pos} not detected by a read of [{lo}, {lo + n})"
    else:
        assert got == [data[lo:lo + n]] * 2
    assert verify_record(vol, loc) is not None, "a whole-record check finds every flip"


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5 * BLOCK_BYTES), st.data())
def test_issue18_streamed_pieces_equal_the_data(size: int, draw: st.DataObject) -> None:
    """A BlobReader serving consecutive pieces (the GET stream) returns exactly the data, with no damage."""
    data = random.Random(size).randbytes(size)
    vol, loc = v2_volume(data)
    reader = BlobReader(vol, loc)
    lo = draw.draw(st.integers(0, size - 1))
    piece = draw.draw(st.sampled_from([1, 4096, BLOCK_BYTES, 1 << 20]))
    out = []
    while lo < size:
        n = min(piece, size - lo)
        out.append(reader.read(lo, n))
        lo += n
    assert b"".join(out) == data[size - sum(map(len, out)):]
    assert verify_record(vol, loc) is None


@pytest.mark.parametrize("field", ["length", "digest"])
def test_issue18_header_that_names_another_blob_is_damage(field: str) -> None:
    data = b"abc" * 1000
    vol, loc = v2_volume(data)
    wrong = BlobLocation(b"\0" * 32, loc.volume, loc.offset, loc.size) if field == "digest" else \
        BlobLocation(loc.hash, loc.volume, loc.offset, loc.size - 1)
    assert read_both(vol, wrong, 0, 10) == [None, None]
    assert verify_record(vol, wrong) == "record header does not match the blob index"


def test_issue18_cut_off_record_is_damage() -> None:
    data = b"q" * (2 * BLOCK_BYTES)
    vol, loc = v2_volume(data)
    del vol.raw[-3:]
    assert read_both(vol, loc, 0, 10) == [None, None]


@pytest.mark.parametrize("size", [0, 1, 4096, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 3 * BLOCK_BYTES + 5])
def test_block_table_is_one_crc32c_per_block_whatever_the_path(size: int) -> None:
    """A one-block record's table is taken in one C call (a small PUT's fast path): the same bytes as the
    per-block table, little-endian crc32c of each 64 KiB block, at every size around the block boundary."""
    data = random.Random(size).randbytes(size)
    expected = b"".join(crc32c.crc32c(data[i:i + BLOCK_BYTES]).to_bytes(4, "little")
                        for i in range(0, size, BLOCK_BYTES))
    _, table = encode_record(data, hashlib.sha256(data).digest())
    assert table == expected and len(table) == table_bytes(size)
    assert block_table(memoryview(data)) == expected
