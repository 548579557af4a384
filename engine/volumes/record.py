"""Volume record format. Pure; no I/O.

A volume is a sequence of records, each a fixed header followed by the blob's bytes::

    0       4         12          16                 48           52
    +-------+---------+-----------+------------------+------------+----------------+
    | magic | length  | data_crc  | sha256(data)     | header_crc | data ...       |
    | S4VR  | u64 LE  | u32 LE    | 32 bytes         | u32 LE     | length bytes   |
    +-------+---------+-----------+------------------+------------+----------------+

    data_crc   = crc32c(data)          -- what the scrubber and `s4-journal verify` check
    header_crc = crc32c(header[0:48])  -- a scan can trust `length` before skipping over the data

The blob index stores the offset of the data (record start + HEADER_BYTES), so a read is one ``pread``.
See docs/architecture/volumes.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

MAGIC = b"S4VR"
_HEAD = struct.Struct("<4sQI32s")
HEADER_BYTES = _HEAD.size + 4


def encode_header(data_len: int, data_crc: int, digest: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, data_len, data_crc, digest)
    return head + struct.pack("<I", crc32c.crc32c(head))


@dataclass(frozen=True, slots=True)
class RecordHeader:
    length: int
    data_crc: int
    digest: bytes


def decode_header(raw: bytes) -> RecordHeader | None:
    """The header, or None when the bytes are not an intact record header."""
    if len(raw) < HEADER_BYTES:
        return None
    head = raw[: _HEAD.size]
    (crc,) = struct.unpack_from("<I", raw, _HEAD.size)
    if crc32c.crc32c(head) != crc:
        return None
    magic, length, data_crc, digest = _HEAD.unpack(head)
    if magic != MAGIC:
        return None
    return RecordHeader(length, data_crc, digest)
