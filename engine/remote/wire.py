"""What crosses the process boundary: msgpack frames, and errors turned into data and back.

Frame: ``u32 BE length`` + msgpack map. A request is ``{"id", "op", ...}``; its reply is ``{"id", "ok": value}``
or ``{"id", "err": error}``. Errors keep their meaning across the boundary: an S3Error arrives as the same
S3Error (code, message, resource, headers, XML fields), an IamError (and ThrottledError) as the same one;
"cannot commit now" (ServiceUnavailableError) as that type, and the pool's refusal (PoolUnavailableError) as
that one (the worker must not abandon its volumes for it: engine/errors.py); anything else becomes an
InternalError whose message names the original exception type -- for the worker's log only: the HTTP error
boundary (api/errors.py) never sends an InternalError's message to a client.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ..errors import ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError
from ..iam import IamError
from ..login_throttle import ThrottledError

LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
_ERROR_TAG = -1  # an int key: no user map (metadata, tags) can collide with it


class FrameTooLargeError(ValueError):
    """A frame announced a length past MAX_FRAME_BYTES: the stream cannot be trusted any more."""


class FrameBuffer:
    """Reassembles messages from a byte stream however it arrives in pieces (both ends of a channel use one)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The messages ``data`` completes, in order; an incomplete frame waits for the next piece. Raises
        FrameTooLargeError, or ValueError/TypeError for an undecodable frame (the caller closes the channel)."""
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buffer, start)
            if length > MAX_FRAME_BYTES:
                raise FrameTooLargeError(f"frame of {length} bytes refused")
            end = start + LENGTH.size + length
            if len(buffer) < end:
                break
            messages.append(decode_body(bytes(buffer[start + LENGTH.size:end])))
            start = end
        if start:
            del buffer[:start]
        return messages


def encode_frame(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True, default=_encode_value)
    return LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False, strict_map_key=False, object_hook=_decode_value)  # type: ignore[no-any-return]


def encode_error(exc: BaseException) -> dict[str | int, Any]:
    if isinstance(exc, S3Error):
        return {_ERROR_TAG: "s3", "code": exc.code.name, "message": exc.message, "resource": exc.resource,
                "headers": exc.headers, "fields": exc.fields, "pool": isinstance(exc, PoolUnavailableError)}
    if isinstance(exc, ThrottledError):
        return {_ERROR_TAG: "throttled", "retry_after_s": exc.retry_after_s}
    if isinstance(exc, IamError):
        return {_ERROR_TAG: "iam", "status": exc.status, "message": exc.message}
    return {_ERROR_TAG: "internal", "message": f"{type(exc).__name__}: {exc}"}


def decode_error(data: dict[str | int, Any]) -> BaseException:
    kind = data.get(_ERROR_TAG)
    if kind == "s3" and data.get("pool"):
        return PoolUnavailableError(data["message"], data["message"])
    if kind == "s3" and data["code"] == ErrorCode.SERVICE_UNAVAILABLE.name:
        return ServiceUnavailableError(data["message"], data["message"])
    if kind == "s3":
        return S3Error(ErrorCode[data["code"]], data["message"], resource=data["resource"],
                       headers=data["headers"], **data["fields"])
    if kind == "throttled":
        return ThrottledError(data["retry_after_s"])
    if kind == "iam":
        return IamError(data["status"], data["message"])
    return S3Error(ErrorCode.INTERNAL_ERROR, data.get("message") or "internal error")


def _encode_value(value: Any) -> Any:
    """Decider results may be exception instances (IamError is returned, not raised) or tuples/sets."""
    if isinstance(value, BaseException):
        return encode_error(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} between processes")


def _decode_value(value: dict[Any, Any]) -> Any:
    if _ERROR_TAG in value:
        return decode_error(value)
    return value
