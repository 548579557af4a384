"""Segment files: the journal is a directory of them, named by the seq of their first event.

Segment header (32 bytes) followed by framed records (see framing.py)::

    0         8           16           24        28          32
    +---------+-----------+------------+---------+-----------+
    | magic   | first_seq | created_ms | reserved| header_crc|
    | 8 bytes | u64 LE    | u64 LE     | u32     | u32 LE    |
    +---------+-----------+------------+---------+-----------+

File name: ``{first_seq:020d}.s4j`` so lexical order is log order.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .framing import checksum

MAGIC = b"S4JSEG01"
SEGMENT_HEADER = struct.Struct("<8sQQI")
SEGMENT_HEADER_BYTES = SEGMENT_HEADER.size + 4
SUFFIX = ".s4j"


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def encode_header(first_seq: int, created_ms: int) -> bytes:
    head = SEGMENT_HEADER.pack(MAGIC, first_seq, created_ms, 0)
    return head + struct.pack("<I", checksum(head))


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    first_seq: int
    created_ms: int


def decode_header(data: bytes) -> SegmentHeader | None:
    """The header, or None if the bytes are not a valid segment header."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return None
    head = data[: SEGMENT_HEADER.size]
    (crc,) = struct.unpack_from("<I", data, SEGMENT_HEADER.size)
    if checksum(head) != crc:
        return None
    magic, first_seq, created_ms, _ = SEGMENT_HEADER.unpack(head)
    if magic != MAGIC:
        return None
    return SegmentHeader(first_seq, created_ms)


def list_segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and p.name[:-4].isdigit())


def first_seq_of(path: Path) -> int:
    return int(path.name[: -len(SUFFIX)])


def fsync_dir(directory: Path) -> None:
    """Make a created/renamed/removed directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(directory: Path, first_seq: int, created_ms: int) -> Path:
    """Create a new segment with its header, durably (file and directory entry)."""
    path = directory / segment_name(first_seq)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        header = encode_header(first_seq, created_ms)
        if os.write(fd, header) != len(header):
            raise OSError(errno.ENOSPC, f"short write of the segment header of {path}")
        os.fsync(fd)
        fsync_dir(directory)
    except BaseException:
        # Never leave a headerless segment behind (disk full): a retry creates it again, and start-up never
        # sees a tail segment that holds nothing.
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return path
