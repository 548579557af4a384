"""Record framing for journal segments. Pure functions, no I/O.

Every record is a 12-byte header followed by the payload::

    0        4             8             12                 12+length
    +--------+-------------+-------------+------------------+
    | length | payload_crc | header_crc  | payload (msgpack)|
    | u32 LE | u32 LE      | u32 LE      | length bytes     |
    +--------+-------------+-------------+------------------+

    payload_crc = crc32c(payload)
    header_crc  = crc32c(header[0:8])      -- so a flipped bit in `length` is caught before it is trusted

Scanning classifies the first bad spot it meets (see docs/architecture/recovery.md):
  * TORN  -- the bytes end inside a header or payload, or everything from here on is zero (pre-allocation):
             a write that never completed; safe to truncate.
  * BAD   -- checksum mismatch with bytes after it: corruption, start-up must refuse.
  * a payload checksum mismatch on the very last record is TORN (partial persist after power loss).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

HEADER = struct.Struct("<III")
HEADER_BYTES = HEADER.size
MAX_RECORD_BYTES = 64 * 1024 * 1024


def checksum(data: bytes | memoryview) -> int:
    return crc32c.crc32c(data)


def encode_record(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(payload)} bytes exceeds MAX_RECORD_BYTES")
    length_and_crc = struct.pack("<II", len(payload), checksum(payload))
    return length_and_crc + struct.pack("<I", checksum(length_and_crc)) + payload


class StopReason(enum.Enum):
    CLEAN = "clean end"
    TORN = "torn tail"
    BAD = "corrupt record"


@dataclass(frozen=True, slots=True)
class ScanEnd:
    """Where scanning stopped and why; ``offset`` is the end of the last good record."""

    offset: int
    reason: StopReason
    detail: str = ""


def scan_records(buf: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, memoryview] | ScanEnd]:
    """Yield ``(offset, payload)`` for each intact record, then exactly one ``ScanEnd``."""
    view = memoryview(buf)
    end = len(view)
    pos = start
    while True:
        if pos == end:
            yield ScanEnd(pos, StopReason.CLEAN)
            return
        if end - pos < HEADER_BYTES:
            yield ScanEnd(pos, StopReason.TORN, f"{end - pos} bytes, shorter than a record header")
            return
        length, payload_crc, header_crc = HEADER.unpack_from(view, pos)
        if checksum(view[pos : pos + 8]) != header_crc:
            if not any(view[pos:end]):
                yield ScanEnd(pos, StopReason.TORN, "zero-filled tail")
            else:
                yield ScanEnd(pos, StopReason.BAD, "record header checksum mismatch")
            return
        if length > MAX_RECORD_BYTES:
            yield ScanEnd(pos, StopReason.BAD, f"record length {length} exceeds the maximum")
            return
        body_start = pos + HEADER_BYTES
        body_end = body_start + length
        if body_end > end:
            yield ScanEnd(pos, StopReason.TORN, f"record of {length} bytes cut off at end of file")
            return
        payload = view[body_start:body_end]
        if checksum(payload) != payload_crc:
            reason = StopReason.TORN if body_end == end else StopReason.BAD
            yield ScanEnd(pos, reason, "payload checksum mismatch")
            return
        yield pos, payload
        pos = body_end
