"""Our event-stream frames decoded by botocore's own parser (what boto3's select_object_content uses)."""

from __future__ import annotations

import struct
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from s4.api.s3 import eventstream


def decode(data: bytes) -> list:  # type: ignore[type-arg]
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_records_stats_end_round_trip() -> None:
    data = eventstream.records(b"a,b\n") + eventstream.stats(10, 20, 4) + eventstream.cont() + eventstream.end()
    messages = decode(data)
    assert [m.headers[":event-type"] for m in messages] == ["Records", "Stats", "Cont", "End"]
    assert messages[0].payload == b"a,b\n"
    assert messages[0].headers[":content-type"] == "application/octet-stream"
    assert b"<BytesScanned>10</BytesScanned><BytesProcessed>20</BytesProcessed>" in messages[1].payload
    assert b"<BytesReturned>4</BytesReturned>" in messages[1].payload


def test_progress_event() -> None:
    (message,) = decode(eventstream.progress(1, 2, 3))
    assert message.headers[":event-type"] == "Progress"
    assert message.payload.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Progress>')


def test_error_message() -> None:
    (message,) = decode(eventstream.error("QueryTimeout", "too slow ünïcode"))
    assert message.headers[":message-type"] == "error"
    assert message.headers[":error-code"] == "QueryTimeout"
    assert message.headers[":error-message"] == "too slow ünïcode"


def test_prelude_and_crcs() -> None:
    data = eventstream.records(b"x" * 1000)
    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])
    assert total == len(data)
    assert prelude_crc == zlib.crc32(data[:8])
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert 12 + headers_len + 1000 + 4 == total


def test_corruption_is_detected_by_botocore() -> None:
    data = bytearray(eventstream.records(b"payload"))
    data[-6] ^= 0xFF
    with pytest.raises(Exception):  # noqa: B017 - botocore's ChecksumMismatch
        decode(bytes(data))
