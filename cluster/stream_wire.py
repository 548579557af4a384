"""The two messages of ``ApplyEventsStream`` (s4_cluster.proto ``ApplyEventsStreamRequest`` / ``Reply``), encoded and
parsed by hand: the same protobuf bytes as betterproto2 writes, in a few microseconds instead of ~40 (encoding a
request) and ~25-50 (a reply) of pure-Python reflection, paid once per peer per write batch at the coordinator and
once per batch at each replica (docs/architecture/replication.md, "ApplyEvents on a stream").

Only the envelope is hand-made: its fields are an id, a deadline, a status, a message and ``packed`` (the msgpack
body of cluster/event_stream.py). The nested ``request`` / ``reply`` (an older sender's form) is still encoded and
parsed by betterproto2. Unknown fields are skipped, as protobuf requires. grpclib's codec only calls
``SerializeToString`` and ``FromString`` (and checks the class), so these classes stand in for the generated ones on
both ends of the stream; the bytes on the wire are unchanged (tests/unit/cluster/test_stream_wire.py compares them).
"""

from __future__ import annotations

from .wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("a protobuf varint runs past the end of the message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a protobuf varint is longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) in order: an int for a varint, bytes for a length-delimited field; others skipped."""
    out: list[tuple[int, int | bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _read_varint(data, pos)
            out.append((number, value))
        elif kind == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > end:
                raise ValueError("a protobuf field runs past the end of the message")
            out.append((number, data[pos:pos + size]))
            pos += size
        elif kind == _I64:
            pos += 8
        elif kind == _I32:
            pos += 4
        else:
            raise ValueError(f"protobuf wire type {kind} is not supported")
    if pos != end:
        raise ValueError("a protobuf field runs past the end of the message")
    return out


def _len_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(value)) + value


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value)


class StreamRequest:
    """``ApplyEventsStreamRequest``: id = 1, request = 2, timeout_ms = 3, packed = 4."""

    __slots__ = ("id", "packed", "request", "timeout_ms")

    def __init__(self, id: int = 0, request: ApplyEventsRequest | None = None, timeout_ms: int = 0,  # noqa: A002
                 packed: bytes = b"") -> None:
        self.id, self.request, self.timeout_ms, self.packed = id, request, timeout_ms, packed

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec calls it by this name
        parts = []
        if self.id:
            parts.append(_int_field(1, self.id))
        if self.request is not None:
            parts.append(_len_field(2, bytes(self.request)))
        if self.timeout_ms:
            parts.append(_int_field(3, self.timeout_ms))
        if self.packed:
            parts.append(_len_field(4, bytes(self.packed)))
        return b"".join(parts)

    __bytes__ = SerializeToString

    @classmethod
    def FromString(cls, data: bytes) -> StreamRequest:  # noqa: N802 - grpclib's codec calls it by this name
        message = cls()
        for number, value in _fields(bytes(data)):
            if number == 1 and isinstance(value, int):
                message.id = value
            elif number == 2 and isinstance(value, bytes):
                message.request = ApplyEventsRequest.FromString(value)
            elif number == 3 and isinstance(value, int):
                message.timeout_ms = value
            elif number == 4 and isinstance(value, bytes):
                message.packed = value
        return message


class StreamReply:
    """``ApplyEventsStreamReply``: id = 1, reply = 2, status = 3, message = 4, packed = 5."""

    __slots__ = ("id", "message", "packed", "reply", "status")

    def __init__(self, id: int = 0, reply: ApplyEventsReply | None = None, status: int = 0,  # noqa: A002
                 message: str = "", packed: bytes = b"") -> None:
        self.id, self.reply, self.status, self.message, self.packed = id, reply, status, message, packed

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec calls it by this name
        parts = []
        if self.id:
            parts.append(_int_field(1, self.id))
        if self.reply is not None:
            parts.append(_len_field(2, bytes(self.reply)))
        if self.status:
            parts.append(_int_field(3, self.status))
        if self.message:
            parts.append(_len_field(4, self.message.encode()))
        if self.packed:
            parts.append(_len_field(5, bytes(self.packed)))
        return b"".join(parts)

    __bytes__ = SerializeToString

    @classmethod
    def FromString(cls, data: bytes) -> StreamReply:  # noqa: N802 - grpclib's codec calls it by this name
        reply = cls()
        for number, value in _fields(bytes(data)):
            if number == 1 and isinstance(value, int):
                reply.id = value
            elif number == 2 and isinstance(value, bytes):
                reply.reply = ApplyEventsReply.FromString(value)
            elif number == 3 and isinstance(value, int):
                reply.status = value
            elif number == 4 and isinstance(value, bytes):
                reply.message = value.decode()
            elif number == 5 and isinstance(value, bytes):
                reply.packed = value
        return reply
