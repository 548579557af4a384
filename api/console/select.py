"""The SQL page's S3 Select: SelectObjectContent over one object (CSV or JSON input, CSV output) through the S3
API's own handler (``S3Bridge.call``), its AWS event stream decoded back into the records for a results table or
a CSV download."""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator
from typing import Any
from xml.sax.saxutils import escape

from s4.engine.iam import IamError

INPUTS = {"csv": "CSV with a header row", "csv-noheader": "CSV without a header row",
          "json-lines": "JSON lines", "json-document": "JSON document"}


class SelectFailed(Exception):
    """An error event inside the stream (after the 200 was sent): its code and message."""


def request_xml(expression: str, input_format: str) -> bytes:
    """The SelectObjectContentRequest document for ``expression`` over one object in ``input_format``."""
    if input_format not in INPUTS:
        raise IamError(400, f"input is one of {', '.join(INPUTS)}")
    if input_format.startswith("csv"):
        use = "NONE" if input_format == "csv-noheader" else "USE"
        source = f"<CSV><FileHeaderInfo>{use}</FileHeaderInfo></CSV>"
    else:
        source = f"<JSON><Type>{'LINES' if input_format == 'json-lines' else 'DOCUMENT'}</Type></JSON>"
    return (f'<?xml version="1.0" encoding="UTF-8"?><SelectObjectContentRequest><Expression>{escape(expression)}'
            f"</Expression><ExpressionType>SQL</ExpressionType><InputSerialization>{source}</InputSerialization>"
            f"<OutputSerialization><CSV/></OutputSerialization></SelectObjectContentRequest>").encode()


def _headers(raw: bytes) -> dict[str, str]:
    out, at = {}, 0
    while at < len(raw):
        size = raw[at]
        name = raw[at + 1:at + 1 + size].decode()
        at += 1 + size
        if raw[at] != 7:  # only string headers are sent; anything else is a framing error
            raise SelectFailed(f"unexpected event header type {raw[at]}")
        (length,) = struct.unpack(">H", raw[at + 1:at + 3])
        out[name] = raw[at + 3:at + 3 + length].decode()
        at += 3 + length
    return out


async def records(stream: Any) -> AsyncIterator[bytes]:
    """The Records payloads of an event stream (``stream``: the handler's async iterator of framed messages); an
    error message raises SelectFailed. The CRCs are not checked: the stream never left this process."""
    buffer = b""
    try:
        async for chunk in stream:
            buffer += chunk
            while len(buffer) >= 12:
                total, header_length = struct.unpack(">II", buffer[:8])
                if len(buffer) < total:
                    break
                message, buffer = buffer[:total], buffer[total:]
                headers = _headers(message[12:12 + header_length])
                if headers.get(":message-type") == "error":
                    raise SelectFailed(f"{headers.get(':error-code', 'Error')}: {headers.get(':error-message', '')}")
                if headers.get(":event-type") == "Records":
                    yield message[12 + header_length:total - 4]
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()


def safe_name(key: str) -> str:
    """A download file name from a key: its last part, word characters only."""
    return re.sub(r"[^\w.-]", "_", key.rsplit("/", 1)[-1]) or "select"
