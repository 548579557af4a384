"""The import headers of PutObject and DeleteObject: how ``s4-admin import`` keeps a source's Last-Modified.

``x-amz-s4-import-last-modified`` (RFC 3339, ms precision, e.g. ``2026-01-02T03:04:05.678Z``) and
``x-amz-s4-import-source`` (an opaque id of the source version, at most 256 characters) go together, on
PutObject, CompleteMultipartUpload or DeleteObject (any other operation: InvalidRequest). They are
honoured only for a SuperUser (a backdated Last-Modified would let anyone dodge lifecycle ages): anyone else
sending them gets AccessDenied and nothing is written. The engine's deciders apply them (engine/imports.py,
docs/architecture/imports.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from s4.engine import imports
from s4.engine.errors import ErrorCode, S3Error

from .call import Call

TIME_HEADER = "x-amz-s4-import-last-modified"
SOURCE_HEADER = "x-amz-s4-import-source"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: The operations that create a version and honour the headers (their handlers call ``import_stamp``).
HONOURED = frozenset({"PutObject", "CompleteMultipartUpload", "DeleteObject"})


def check_import_headers(operation: str, headers: Mapping[str, str]) -> None:
    """Any other operation sent the headers is InvalidRequest: silently writing a version stamped now (a
    CopyObject, say) would be a migration that looks right and is not."""
    if operation not in HONOURED and (TIME_HEADER in headers or SOURCE_HEADER in headers):
        raise S3Error(ErrorCode.INVALID_REQUEST, f"{TIME_HEADER} and {SOURCE_HEADER} apply only to PutObject, "
                      "CompleteMultipartUpload and DeleteObject.")


def import_stamp(call: Call) -> dict[str, Any] | None:
    """The request's import stamp (None without the headers); refused before any byte of a body is read."""
    when, source = call.headers.get(TIME_HEADER), call.headers.get(SOURCE_HEADER)
    if when is None and source is None:
        return None
    who = call.who
    if who is None or who.role != "SuperUser":
        raise S3Error(ErrorCode.ACCESS_DENIED, f"Only a SuperUser may send {TIME_HEADER} and {SOURCE_HEADER}.")
    if not when or not source:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, f"{TIME_HEADER} and {SOURCE_HEADER} go together.",
                      ArgumentName=SOURCE_HEADER if when else TIME_HEADER, ArgumentValue="")
    try:
        parsed = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, f"{TIME_HEADER} must be an RFC 3339 time with a zone.",
                      ArgumentName=TIME_HEADER, ArgumentValue=when[:64])
    return imports.stamp((parsed - EPOCH) // timedelta(milliseconds=1), source)  # exact: no float rounding
