"""Record framing: layout, clean scans, and the classification of every kind of bad spot (torn vs corrupt)."""

from __future__ import annotations

import struct

import pytest

from s4.journal.framing import (
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    ScanEnd,
    StopReason,
    checksum,
    encode_record,
    scan_records,
)


def scan(buf: bytes, start: int = 0) -> tuple[list[tuple[int, bytes]], ScanEnd]:
    items = list(scan_records(buf, start))
    end = items.pop()
    assert isinstance(end, ScanEnd)
    assert not any(isinstance(i, ScanEnd) for i in items)
    return [(off, bytes(p)) for off, p in items], end  # type: ignore[misc]


def test_record_layout_is_length_payload_crc_header_crc_payload() -> None:
    rec = encode_record(b"hello")
    length, payload_crc, header_crc = struct.unpack_from("<III", rec)
    assert HEADER_BYTES == 12
    assert (length, payload_crc) == (5, checksum(b"hello"))
    assert header_crc == checksum(rec[:8])
    assert rec[12:] == b"hello"


def test_records_scan_back_in_order_with_their_offsets() -> None:
    payloads = [b"a", b"", b"x" * 1000, bytes(range(256))]
    buf = b"".join(encode_record(p) for p in payloads)
    records, end = scan(buf)
    assert [p for _, p in records] == payloads
    offsets = [0]
    for p in payloads[:-1]:
        offsets.append(offsets[-1] + HEADER_BYTES + len(p))
    assert [o for o, _ in records] == offsets
    assert end == ScanEnd(len(buf), StopReason.CLEAN)


def test_empty_buffer_is_a_clean_end() -> None:
    assert scan(b"") == ([], ScanEnd(0, StopReason.CLEAN))


def test_scan_starts_at_the_given_offset() -> None:
    buf = b"J" * 32 + encode_record(b"one")
    records, end = scan(buf, 32)
    assert records == [(32, b"one")] and end.reason is StopReason.CLEAN


def test_truncated_header_is_torn() -> None:
    buf = encode_record(b"one") + encode_record(b"two")[:7]
    records, end = scan(buf)
    assert [p for _, p in records] == [b"one"]
    assert end.reason is StopReason.TORN and end.offset == HEADER_BYTES + 3


def test_truncated_payload_is_torn() -> None:
    buf = encode_record(b"one") + encode_record(b"two" * 10)[:-1]
    _, end = scan(buf)
    assert end.reason is StopReason.TORN and "cut off" in end.detail


def test_zero_filled_tail_is_torn() -> None:
    buf = encode_record(b"one") + bytes(4096)
    records, end = scan(buf)
    assert len(records) == 1
    assert end == ScanEnd(HEADER_BYTES + 3, StopReason.TORN, "zero-filled tail")


def test_header_checksum_mismatch_with_data_after_it_is_corrupt() -> None:
    bad = bytearray(encode_record(b"two"))
    bad[0] ^= 0x40  # the length: caught by the header checksum before it is trusted
    buf = encode_record(b"one") + bytes(bad) + encode_record(b"three")
    _, end = scan(buf)
    assert end.reason is StopReason.BAD and end.offset == HEADER_BYTES + 3
    assert "header checksum" in end.detail


def test_length_over_the_maximum_is_corrupt_even_with_a_valid_header_checksum() -> None:
    head = struct.pack("<II", MAX_RECORD_BYTES + 1, 0)
    buf = head + struct.pack("<I", checksum(head)) + b"x" * 16
    _, end = scan(buf)
    assert end.reason is StopReason.BAD and "exceeds" in end.detail


def test_payload_checksum_mismatch_mid_buffer_is_corrupt() -> None:
    first = bytearray(encode_record(b"payload"))
    first[-1] ^= 1
    _, end = scan(bytes(first) + encode_record(b"next"))
    assert end == ScanEnd(0, StopReason.BAD, "payload checksum mismatch")


def test_payload_checksum_mismatch_of_the_last_record_is_torn() -> None:
    last = bytearray(encode_record(b"payload"))
    last[-1] ^= 1
    records, end = scan(encode_record(b"ok") + bytes(last))
    assert [p for _, p in records] == [b"ok"]
    assert end.reason is StopReason.TORN and end.detail == "payload checksum mismatch"


def test_encode_refuses_records_over_the_maximum() -> None:
    with pytest.raises(ValueError, match="MAX_RECORD_BYTES"):
        encode_record(bytes(MAX_RECORD_BYTES + 1))
