"""HTTP header <-> engine values: ranges, conditional requests, metadata, response overrides."""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.header import Header, decode_header, make_header

from s4.engine.conditions import DeleteConditions, Preconditions
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import ObjectVersion

from ..inputs import digits_value, parse_int, wire_bytes
from .xml import http_date, parse_http_date

STORED_HEADERS = ("content-encoding", "content-disposition", "content-language", "cache-control", "expires")
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
MAX_METADATA_BYTES = 2048


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """``x-amz-meta-*`` as text. The limit counts UTF-8 bytes of names and values, as S3 does."""
    meta = {name[11:]: _metadata_text(value) for name, value in headers.items() if name.startswith("x-amz-meta-")}
    if not meta:
        return meta
    size = sum(len(k) + len(v.encode("utf-8") if not v.isascii() else v) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise S3Error(ErrorCode.METADATA_TOO_LARGE, Size=str(size), MaxSizeAllowed=str(MAX_METADATA_BYTES))
    return meta


def _metadata_text(value: str) -> str:
    """A metadata header value as the text it means: raw non-ASCII bytes read as UTF-8 (latin-1 when they are
    not UTF-8), and RFC 2047 encoded words decoded, as S3 does before storing."""
    if value.isascii():
        if "=?" not in value:
            return value  # the usual case
    else:
        try:
            value = wire_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            pass  # not UTF-8: each byte is its latin-1 character, as it arrived
        if "=?" not in value:
            return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return value  # not well-formed encoded words: the text as sent


def metadata_header(value: str) -> str:
    """The response header value for stored metadata text: ASCII as is, anything else as RFC 2047 encoded words
    (UTF-8), as S3 returns them, so every client reads the same text whatever it assumes about header bytes."""
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=0).encode()


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The standard headers kept with the object. ``aws-chunked`` describes how this request's body was framed, not
    the object, so it is dropped from Content-Encoding (and the header with it when nothing else is left)."""
    stored = {name: headers[name] for name in STORED_HEADERS if name in headers}
    encoding = stored.get("content-encoding")
    if encoding is not None and "aws-chunked" in encoding.lower():
        kept = [c.strip() for c in encoding.split(",") if c.strip() and c.strip().lower() != "aws-chunked"]
        if kept:
            stored["content-encoding"] = ", ".join(kept)
        else:
            del stored["content-encoding"]
    return stored


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single satisfiable range; None to serve the whole object; InvalidRange if unsatisfiable."""
    if not value:
        return None
    m = _RANGE_RE.match(value.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # unparseable ranges are ignored, as HTTP says
    first, last = digits_value(m.group(1)), digits_value(m.group(2))  # huge values saturate past any size
    if first is not None:
        end = min(last, size - 1) if last is not None else size - 1
        if last is not None and last < first:
            return None
        if first >= size:
            raise _invalid_range(size)
        return first, end - first + 1
    suffix = last or 0
    if suffix == 0 or size == 0:
        raise _invalid_range(size)
    start = max(0, size - suffix)
    return start, size - start


def _invalid_range(size: int) -> S3Error:
    return S3Error(ErrorCode.INVALID_RANGE, headers={"content-range": f"bytes */{size}"},
                   ActualObjectSize=str(size))


def preconditions(headers: Mapping[str, str], prefix: str = "") -> Preconditions:
    """The four conditional headers (optionally ``x-amz-copy-source-``/``x-amz-rename-source-`` prefixed)."""
    def date(name: str) -> int | None:
        value = headers.get(prefix + name)
        return parse_http_date(value) if value is not None else None

    return Preconditions(headers.get(prefix + "if-match"), headers.get(prefix + "if-none-match"),
                         date("if-modified-since"), date("if-unmodified-since"))


def delete_conditions(headers: Mapping[str, str]) -> DeleteConditions | None:
    """DeleteObject's conditional headers (None: the request sends none, as most do; the engine then has none to
    pass on). A value that does not parse is InvalidArgument, never ignored: a client relying on the condition to
    protect a newer write must not see its object deleted regardless."""
    modified, size = headers.get("x-amz-if-match-last-modified-time"), headers.get("x-amz-if-match-size")
    if modified is None and size is None and "if-match" not in headers:
        return None
    modified_ms = None
    if modified is not None:
        modified_ms = parse_http_date(modified)
        if modified_ms is None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-if-match-last-modified-time must be an HTTP date.",
                          ArgumentName="x-amz-if-match-last-modified-time", ArgumentValue=modified[:64])
    return DeleteConditions(headers.get("if-match"), modified_ms,
                            None if size is None else parse_int(size, "x-amz-if-match-size"))


_CONDITIONAL = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def check_read(headers: Mapping[str, str], version: ObjectVersion, *, prefix: str = "") -> None:
    """GET/HEAD preconditions (304/412), or copy-source preconditions (always 412) when ``prefix`` is given."""
    if not prefix:  # a GET/HEAD: four lookups, without a generator and a concatenation each
        if "if-match" not in headers and "if-none-match" not in headers and "if-modified-since" not in headers \
                and "if-unmodified-since" not in headers:  # the usual read: nothing to evaluate (_CONDITIONAL)
            return
    elif not any(prefix + name in headers for name in _CONDITIONAL):
        return
    cache_headers = {"etag": f'"{version.etag}"', "last-modified": http_date(version.last_modified_ms)}
    preconditions(headers, prefix).check(
        version.etag, version.last_modified_ms, headers=cache_headers,
        not_modified=ErrorCode.PRECONDITION_FAILED if prefix else ErrorCode.NOT_MODIFIED)
