"""Volume record format. Pure; no I/O.

A volume is a sequence of records. Every record starts with the same 52-byte header; the magic says its version::

    0       4         12          16                 48           52
    +-------+---------+-----------+------------------+------------+----------------+-----------------------+
    | magic | length  | field     | sha256(data)     | header_crc | data ...       | v2 only: block table  |
    | 4 B   | u64 LE  | u32 LE    | 32 bytes         | u32 LE     | length bytes   | u32 LE per block      |
    +-------+---------+-----------+------------------+------------+----------------+-----------------------+

    v1  magic "S4VR", field = crc32c(data): one checksum over the whole blob
    v2  magic "S4VB", field = block size B (65536), and after the data ceil(length / B) crc32c values, one per
        B-byte block of the data (the last block may be short), so a read of any range checks only the blocks
        that cover it
    header_crc = crc32c(header[0:48])  -- a scan can trust `length` (and so where the record ends)

The blob index stores the offset of the data (record start + HEADER_BYTES): the header is always the 52 bytes
before it, whatever the version, so the index needs no format field, and a small blob's header, data and table are
contiguous (one ``pread``). New records are v2; v1 records stay readable and are checked as one block.
See docs/architecture/volumes.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

MAGIC = b"S4VR"  # v1
MAGIC_V2 = b"S4VB"
MAGICS = (MAGIC, MAGIC_V2)
BLOCK_BYTES = 64 * 1024
_HEAD = struct.Struct("<4sQI32s")
_ONE_CRC = struct.Struct("<I")  # one crc32c: a header's, or a one-block record's table
HEADER_BYTES = _HEAD.size + 4
CRC_BYTES = 4


class DamagedBlob(Exception):
    """A stored blob failed its checks: the bytes on disk are not the bytes that were written."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def block_count(length: int, block_bytes: int = BLOCK_BYTES) -> int:
    return -(-length // block_bytes)


def table_bytes(length: int) -> int:
    """Size of a v2 record's block table."""
    return CRC_BYTES * block_count(length)


def record_bytes(length: int) -> int:
    """On-disk size of a v2 record holding ``length`` bytes of data."""
    return HEADER_BYTES + length + table_bytes(length)


def block_table(data: bytes | memoryview, block_bytes: int = BLOCK_BYTES) -> bytes:
    if 0 < len(data) <= block_bytes:  # one block (most chunks: small objects): one C call, no slicing
        return _ONE_CRC.pack(crc32c.crc32c(data))
    view = memoryview(data)
    crcs = [crc32c.crc32c(view[i:i + block_bytes]) for i in range(0, len(view), block_bytes)]
    return struct.pack(f"<{len(crcs)}I", *crcs)


def _header(magic: bytes, data_len: int, field: int, digest: bytes) -> bytes:
    head = _HEAD.pack(magic, data_len, field, digest)
    return head + _ONE_CRC.pack(crc32c.crc32c(head))


def encode_header(data_len: int, data_crc: int, digest: bytes) -> bytes:
    """A v1 header (kept for tests and tools that build old volumes)."""
    return _header(MAGIC, data_len, data_crc, digest)


def encode_header_v2(data_len: int, digest: bytes) -> bytes:
    """A v2 header (what ``encode_record`` writes; a streamed record, store.PendingRecord, writes it last)."""
    return _header(MAGIC_V2, data_len, BLOCK_BYTES, digest)


def encode_record(data: bytes | memoryview, digest: bytes) -> tuple[bytes, bytes]:
    """(header, block table) of a v2 record: written as header + data + table."""
    return encode_header_v2(len(data), digest), block_table(data)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    version: int
    length: int
    field: int  # v1: crc32c of the data; v2: the block size
    digest: bytes

    @property
    def data_crc(self) -> int:
        return self.field if self.version == 1 else 0

    @property
    def block_bytes(self) -> int:
        """v1 records are one block (the whole blob)."""
        return self.field if self.version == 2 else max(self.length, 1)

    @property
    def trailer_bytes(self) -> int:
        """Bytes after the data that belong to the record (the v2 block table)."""
        return CRC_BYTES * block_count(self.length, self.field) if self.version == 2 else 0

    def covering(self, lo: int, hi: int) -> tuple[int, int]:
        """The data span ``[start, end)`` a read of ``[lo, hi)`` must read and check: whole blocks."""
        if self.version == 1:
            return 0, self.length
        b = self.field
        return lo // b * b, min(self.length, -(-hi // b) * b)

    def table_span(self, start: int, end: int) -> tuple[int, int]:
        """Offsets, relative to the end of the data, of the table entries for the blocks in ``[start, end)``."""
        b = self.field
        return CRC_BYTES * (start // b), CRC_BYTES * block_count(end, b)

    def check(self, start: int, data: bytes | memoryview, table: bytes | memoryview) -> str | None:
        """None if ``data`` (the blocks from block-aligned ``start``) matches its checksums, else the problem.

        ``table`` holds the entries for exactly those blocks (v1: ignored, ``data`` must be the whole blob)."""
        if self.version == 1:
            return None if crc32c.crc32c(data) == self.field else "data checksum mismatch"
        b = self.field
        view, crcs = memoryview(data), memoryview(table).cast("B")
        if len(crcs) != CRC_BYTES * block_count(len(view), b):
            return "block table cut off"
        for i, want in enumerate(struct.unpack(f"<{len(crcs) // CRC_BYTES}I", crcs)):
            if crc32c.crc32c(view[i * b:(i + 1) * b]) != want:
                return f"data checksum mismatch in block {start // b + i} (bytes {start + i * b}-" \
                       f"{min(start + (i + 1) * b, self.length) - 1})"
        return None


_HEAD_AND_CRC = struct.Struct("<4sQI32sI")
_HEAD_SIZE = _HEAD.size
_crc32c = crc32c.crc32c


def verify_single_block(raw: bytes, digest: bytes, length: int) -> bytes | None:
    """The data of a whole v2 record of at most one block (header + data + its one table entry, as read), or
    None when this fast path does not apply or something does not check (the caller then takes the general path,
    which says what is wrong). Most objects are one small chunk: this is their GET, in a handful of C calls.
    Slices of ``raw``, not a ``memoryview``: building a view and slicing it cost more than copying 4 KiB, and the
    data's slice is what the caller returns."""
    end = HEADER_BYTES + length
    if len(raw) < end + CRC_BYTES:
        return None
    magic, stored_len, block, stored_digest, head_crc = _HEAD_AND_CRC.unpack_from(raw)
    if magic != MAGIC_V2 or stored_len != length or not 0 < length <= block or stored_digest != digest:
        return None
    if _crc32c(raw[:_HEAD_SIZE]) != head_crc:
        return None
    data = raw[HEADER_BYTES:end]
    if _crc32c(data) != _ONE_CRC.unpack_from(raw, end)[0]:
        return None
    return data


def decode_header(raw: bytes | memoryview) -> RecordHeader | None:
    """The header, or None when the bytes are not an intact record header."""
    if len(raw) < HEADER_BYTES:
        return None
    head = bytes(raw[: _HEAD.size])
    (crc,) = struct.unpack_from("<I", raw, _HEAD.size)
    if crc32c.crc32c(head) != crc:
        return None
    magic, length, field, digest = _HEAD.unpack(head)
    if magic == MAGIC:
        return RecordHeader(1, length, field, digest)
    if magic == MAGIC_V2 and field > 0:
        return RecordHeader(2, length, field, digest)
    return None


def check_header(raw: bytes | memoryview, digest: bytes, length: int) -> RecordHeader:
    """The header of the record the blob index names, or DamagedBlob."""
    header = decode_header(raw)
    if header is None:
        raise DamagedBlob("record header damaged")
    if header.length != length or header.digest != digest:
        raise DamagedBlob("record header does not match the blob index")
    return header
