"""Segment files: naming, header encoding and validation, creation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from s4.journal.framing import checksum
from s4.journal.segment import (
    MAGIC,
    SEGMENT_HEADER,
    SEGMENT_HEADER_BYTES,
    SegmentHeader,
    create_segment,
    decode_header,
    encode_header,
    first_seq_of,
    list_segments,
    segment_name,
)


def test_names_are_zero_padded_so_lexical_order_is_log_order() -> None:
    names = [segment_name(n) for n in (1, 9, 10, 123456789)]
    assert names == sorted(names)
    assert segment_name(42) == "00000000000000000042.s4j"
    assert first_seq_of(Path(segment_name(42))) == 42


def test_header_round_trips_and_is_32_bytes() -> None:
    raw = encode_header(17, 1_700_000_000_000)
    assert len(raw) == SEGMENT_HEADER_BYTES == 32
    assert raw[:8] == MAGIC
    assert decode_header(raw + b"records follow") == SegmentHeader(17, 1_700_000_000_000)


@pytest.mark.parametrize("index", range(32))
def test_any_flipped_header_byte_invalidates_it(index: int) -> None:
    raw = bytearray(encode_header(5, 123))
    raw[index] ^= 0x10
    assert decode_header(bytes(raw)) is None


def test_short_header_is_invalid() -> None:
    assert decode_header(encode_header(1, 0)[:31]) is None
    assert decode_header(b"") is None


def test_wrong_magic_with_a_valid_checksum_is_invalid() -> None:
    head = SEGMENT_HEADER.pack(b"NOTS4SEG", 1, 0, 0)
    assert decode_header(head + struct.pack("<I", checksum(head))) is None


def test_list_segments_ignores_other_files(tmp_path: Path) -> None:
    for name in (segment_name(11), segment_name(1), "notes.txt", "x.s4j", segment_name(5) + ".tmp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_segments(tmp_path)] == [segment_name(1), segment_name(11)]


def test_create_segment_writes_a_valid_header_and_never_overwrites(tmp_path: Path) -> None:
    path = create_segment(tmp_path, 7, 99)
    assert path.name == segment_name(7)
    assert decode_header(path.read_bytes()) == SegmentHeader(7, 99)
    with pytest.raises(FileExistsError):
        create_segment(tmp_path, 7, 100)
