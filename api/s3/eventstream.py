"""The AWS binary event-stream framing used by SelectObjectContent responses.

A message: prelude (total length u32, headers length u32, CRC32 of those 8 bytes), headers, payload, CRC32 of
everything before it. Headers here are always strings (type 7: u16 length + UTF-8). The event helpers build the
Records / Stats / Progress / Cont / End events and the mid-stream error message S3 sends.
"""

from __future__ import annotations

import struct
import zlib

STRING_HEADER = 7


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", STRING_HEADER, len(raw_value)) + raw_value
    return bytes(out)


def message(headers: dict[str, str], payload: bytes = b"") -> bytes:
    """One framed message."""
    encoded = _headers(headers)
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: bytes = b"", content_type: str | None = None) -> bytes:
    headers = {":message-type": "event", ":event-type": event_type}
    if content_type:
        headers[":content-type"] = content_type
    return message(headers, payload)


def records(payload: bytes) -> bytes:
    return event("Records", payload, "application/octet-stream")


def _details(tag: str, scanned: int, processed: int, returned: int) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><{tag}><BytesScanned>{scanned}</BytesScanned>'
            f"<BytesProcessed>{processed}</BytesProcessed><BytesReturned>{returned}</BytesReturned></{tag}>").encode()


def stats(scanned: int, processed: int, returned: int) -> bytes:
    return event("Stats", _details("Stats", scanned, processed, returned), "text/xml")


def progress(scanned: int, processed: int, returned: int) -> bytes:
    return event("Progress", _details("Progress", scanned, processed, returned), "text/xml")


def cont() -> bytes:
    """Keep-alive while a long scan has nothing to return yet."""
    return event("Cont")


def end() -> bytes:
    return event("End")


def error(code: str, text: str) -> bytes:
    """An error after the 200 status was sent: the client SDK raises it as the event stream's error."""
    return message({":message-type": "error", ":error-code": code, ":error-message": text[:4000]})
