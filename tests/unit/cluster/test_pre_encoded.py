"""``BlobCodec``'s own parse of a blob piece's message: the same message betterproto2 parses, for any bytes; and a
1 MiB piece's message in one DATA frame of the blob connection."""

from __future__ import annotations

import struct

import pytest
from grpclib.encoding.proto import ProtoCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster import h2_tuning
from s4.cluster.blobs import PIECE_BYTES
from s4.cluster.pre_encoded import BlobCodec, Encoded, data_only
from s4.cluster.wire.s4cluster.v1 import BlobHeader, GetBlobChunk, PutBlobChunk, PutBlobReply

TYPES = [PutBlobChunk, GetBlobChunk]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _both(raw: bytes, message_type: type) -> tuple[object, object]:
    """(betterproto2's parse, BlobCodec's) of ``raw``, an exception's type standing for its result."""
    out: list[object] = []
    for codec in (ProtoCodec(), BlobCodec()):
        try:
            out.append(codec.decode(raw, message_type))
        except Exception as exc:  # noqa: BLE001 - compared, not swallowed
            out.append(type(exc))
    return out[0], out[1]


def messages() -> st.SearchStrategy[bytes]:
    """Piece messages as sent, and near misses: other fields, a repeated field, cut or padded, a long varint."""
    data = st.binary(max_size=300)
    header = st.builds(BlobHeader, content_hash=st.binary(max_size=32), size=st.integers(0, 2**40))
    sent = st.one_of(data.map(lambda d: bytes(PutBlobChunk(data=d))),
                     header.map(lambda h: bytes(PutBlobChunk(header=h))))
    padded_varint = data.map(lambda d: b"\x12" + _varint(len(d))[:-1] + bytes([_varint(len(d))[-1] | 0x80, 0]) + d
                             if len(_varint(len(d))) == 1 else b"\x12" + _varint(len(d)) + d)
    return st.one_of(sent, padded_varint,
                     st.tuples(sent, sent).map(b"".join),  # two fields: protobuf keeps the last
                     st.tuples(sent, st.integers(0, 5)).map(lambda t: t[0][:max(0, len(t[0]) - t[1])]),  # cut
                     st.tuples(sent, st.binary(min_size=1, max_size=4)).map(b"".join),  # trailing bytes
                     st.binary(max_size=40))


@settings(max_examples=400, deadline=None)
@given(messages(), st.sampled_from(TYPES))
def test_blob_codec_parses_every_message_as_betterproto2_does(raw: bytes, message_type: type) -> None:
    expected, got = _both(raw, message_type)
    assert got == expected


def test_a_piece_message_is_parsed_here_and_anything_else_by_betterproto2() -> None:
    piece = bytes(range(256)) * 4096  # 1 MiB
    for message_type in TYPES:
        parsed = data_only(bytes(message_type(data=piece)), message_type)
        assert isinstance(parsed, message_type) and parsed.data == piece
        assert data_only(bytes(message_type(header=BlobHeader(content_hash=b"h" * 32, size=9))), message_type) is None
    assert BlobCodec().decode(bytes(PutBlobReply(stored=True)), PutBlobReply) == PutBlobReply(stored=True)


@pytest.mark.parametrize("message_type", TYPES)
def test_a_whole_piece_message_fits_one_frame_of_the_blob_connection(message_type: type) -> None:
    """grpclib sends a message in frames of at most the peer's frame size, each a slice (a copy) unless the whole
    message fits: a 1 MiB piece with gRPC's 5-byte prefix must fit ``BULK_MAX_FRAME``."""
    message = bytes(message_type(data=b"\xff" * PIECE_BYTES))
    framed = struct.pack("?", False) + struct.pack(">I", len(message)) + message
    assert PIECE_BYTES < len(framed) <= h2_tuning.BULK_MAX_FRAME


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\0" * 127, b"\1" * 128, b"\2" * 16384,
                                                            b"\3" * 2_097_152])),
       st.sampled_from(TYPES))
def test_a_piece_encoded_here_is_the_bytes_betterproto2_encodes(data: bytes, message_type: type) -> None:
    encoded = Encoded.piece(data, message_type)
    assert encoded.data == bytes(message_type(data=data))
    assert encoded.message_type is message_type
    assert BlobCodec().decode(encoded.data, message_type) == message_type(data=data)
