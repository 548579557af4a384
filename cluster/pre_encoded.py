"""gRPC messages encoded once by betterproto2 and sent as those bytes (``Encoded``, ``PassThroughCodec``).

A large write's chunks go to every peer (cluster/blob_push.py), each 1 MiB piece as a ``PutBlobChunk`` message.
betterproto2 (pure Python) encodes a 1 MiB ``bytes`` field through five copies and a fresh buffer each: ~1 ms of
CPU per MiB on this machine, as much as the coordinator's SHA-256, CRCs and socket writes of that MiB together, and
paid once per peer for the same bytes. ``Encoded`` carries the bytes betterproto2 produced for one message, so a
piece encoded once is sent to both peers; ``PassThroughCodec`` (the codec of the blob connection, cluster/h2_tuning.py
``BulkChannel``) hands them to grpclib unchanged and encodes every other message as grpclib's ``ProtoCodec`` does.
Nothing on the wire changes: the receiver parses the same bytes with the same generated class.

On the receiving side, ``BlobCodec`` (the gRPC server's codec, and the blob connection's) parses a blob piece's
message (``PutBlobChunk`` / ``GetBlobChunk`` holding only ``data``) itself: betterproto2 reads a 1 MiB ``bytes``
field with two copies (``stream.read(length)``, then ``raw += decoded`` for its ``ParsedField.raw``), here it is one
slice. Any other message, or one with any other field, goes to betterproto2; the result is the same message
(tests/unit/cluster/test_pre_encoded.py compares the two on arbitrary bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import betterproto2
from grpclib.encoding.proto import ProtoCodec

from .wire.s4cluster.v1 import GetBlobChunk, PutBlobChunk

#: The tag of field 2 (``data``) as length-delimited: the first byte of a piece's message.
_DATA_TAG = (2 << 3) | 2
_DATA_TAG_BYTE = bytes([_DATA_TAG])
_PIECE_TYPES = (PutBlobChunk, GetBlobChunk)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message of ``message_type`` already encoded (``bytes(message)``); ``len`` is its size on the wire."""

    data: bytes
    message_type: type

    @classmethod
    def of(cls, message: betterproto2.Message) -> Encoded:
        return cls(bytes(message), type(message))

    @classmethod
    def piece(cls, data: bytes, message_type: type = PutBlobChunk) -> Encoded:
        """``of(message_type(data=data))`` for a blob piece's message, built as its three parts joined (the tag, the
        varint length, the bytes: one copy) instead of through betterproto2's five; the same bytes
        (tests/unit/cluster/test_pre_encoded.py)."""
        return cls(b"".join((_DATA_TAG_BYTE, _varint(len(data)), data)), message_type)

    def __len__(self) -> int:
        return len(self.data)


class PassThroughCodec(ProtoCodec):
    """grpclib's protobuf codec, sending an ``Encoded`` of the call's request type as its bytes."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            if not issubclass(message.message_type, message_type):
                raise TypeError(f"an encoded {message.message_type.__name__} sent where a {message_type.__name__} "
                                "is expected")
            return message.data
        return super().encode(message, message_type)


def data_only(data: bytes, message_type: type) -> PutBlobChunk | GetBlobChunk | None:
    """``message_type(data=...)`` when ``data`` encodes exactly that one field (tag, varint length, bytes), else
    None: the caller parses it with betterproto2."""
    if not data or data[0] != _DATA_TAG:
        return None
    length, shift, pos, end = 0, 0, 1, len(data)
    while True:
        if pos >= end or shift > 63:
            return None
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if pos + length != end:
        return None
    return message_type(data=data[pos:])  # type: ignore[no-any-return]


class BlobCodec(PassThroughCodec):
    """``PassThroughCodec``, parsing a blob piece's message (``data`` only) with one copy of its bytes."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type in _PIECE_TYPES:
            message = data_only(data, message_type)
            if message is not None:
                return message
        return super().decode(data, message_type)
