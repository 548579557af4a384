"""The pipe between the HTTP process and a query process: length-prefixed msgpack frames.

Parent -> child: the job (pickled: the parent's own dataclasses, trusted direction), then replies to reads.
Child -> parent (msgpack only: nothing the query process sends is ever unpickled):

    ["hello"]                                  imports done, waiting for the job
    ["job"]                                    the job arrived (a spare that dies before this is replaced)
    ["ready"]                                  the query is bound: the HTTP status may go out
    ["read", rid, object, offset, n, processed] bytes [offset, offset+n) of the job's object #object
    ["chunk", data, processed]                 encoded result bytes (at most FRAME_DATA_BYTES per frame)
    ["done", processed] | ["error", code, message]

Every frame is at most MAX_FRAME_BYTES, so neither side ever buffers more than one frame of the other's making.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import IO, Any

import msgpack

from .inputs import InputSpec, ObjectRef

FRAME_DATA_BYTES = 1 << 20
MAX_FRAME_BYTES = FRAME_DATA_BYTES + 4096
_HEADER = struct.Struct(">I")


class ChannelError(Exception):
    """The other side broke the protocol or went away."""


def frame(message: Any, *, raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else msgpack.packb(message, use_bin_type=True)
    if len(data) > MAX_FRAME_BYTES:
        raise ChannelError(f"frame of {len(data)} bytes")
    return _HEADER.pack(len(data)) + data


def _length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ChannelError(f"frame of {length} bytes announced")
    return int(length)


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload from a blocking stream; None at a clean end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise ChannelError("truncated frame header")
    length = _length(header)
    data = stream.read(length)
    if len(data) < length:
        raise ChannelError("truncated frame")
    return data


async def read_frame_async(reader: asyncio.StreamReader) -> Any:
    """The next message from the query process; None when it closed its end (exited, or was killed)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        data = await reader.readexactly(_length(header))
    except asyncio.IncompleteReadError:
        return None
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ChannelError(f"undecodable frame: {exc}") from exc


@dataclass
class Job:
    """One query for a query process: the validated SQL, its tables (objects by index into the parent's list),
    the result encoder and the process's memory."""

    sql: str
    tables: dict[str, tuple[InputSpec, list[ObjectRef]]]
    encoder: Any
    memory_bytes: int
    threads: int = 2


def reply(rid: int, data: bytes) -> bytes:
    """A read's answer: the request id and the bytes, unframed by msgpack (the bulk of the traffic)."""
    return frame(None, raw=rid.to_bytes(8, "big") + data)
