"""HTTP header <-> engine values: ranges, conditional requests, metadata, response overrides."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import ObjectVersion

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
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_METADATA_BYTES = 2048


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    meta = {name[11:]: value for name, value in headers.items() if name.startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_BYTES:
        raise S3Error(ErrorCode.METADATA_TOO_LARGE, Size=str(sum(len(k) + len(v) for k, v in meta.items())),
                      MaxSizeAllowed=str(MAX_METADATA_BYTES))
    return meta


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in STORED_HEADERS if name in headers}


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single satisfiable range; None to serve the whole object; InvalidRange if unsatisfiable."""
    if not value:
        return None
    m = _RANGE_RE.match(value.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # unparseable ranges are ignored, as HTTP says
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
        if start >= size:
            raise _invalid_range(size)
        return start, end - start + 1
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise _invalid_range(size)
    start = max(0, size - suffix)
    return start, size - start


def _invalid_range(size: int) -> S3Error:
    return S3Error(ErrorCode.INVALID_RANGE, headers={"content-range": f"bytes */{size}"},
                   ActualObjectSize=str(size))


def _etag_matches(header: str, etag: str) -> bool:
    return any(tag.strip() in ("*", f'"{etag}"', etag, f'W/"{etag}"') for tag in header.split(","))


@dataclass(frozen=True, slots=True)
class Conditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], prefix: str = "") -> Conditions:
        return cls(headers.get(prefix + "if-match"), headers.get(prefix + "if-none-match"),
                   headers.get(prefix + "if-modified-since"), headers.get(prefix + "if-unmodified-since"))

    def check_read(self, version: ObjectVersion, *, copy_source: bool = False) -> None:
        """RFC 7232 evaluation order; 412 PreconditionFailed or 304 NotModified (412 for copy sources)."""
        modified_s = version.last_modified_ms // 1000
        if self.if_match is not None:
            if not _etag_matches(self.if_match, version.etag):
                raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="If-Match")
        elif self.if_unmodified_since is not None:
            since = parse_http_date(self.if_unmodified_since)
            if since is not None and modified_s > since // 1000:
                raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="If-Unmodified-Since")
        not_modified = ErrorCode.PRECONDITION_FAILED if copy_source else ErrorCode.NOT_MODIFIED
        cache_headers = {"etag": f'"{version.etag}"', "last-modified": http_date(version.last_modified_ms)}
        if self.if_none_match is not None:
            if _etag_matches(self.if_none_match, version.etag):
                raise S3Error(not_modified, headers=cache_headers, Condition="If-None-Match")
        elif self.if_modified_since is not None:
            since = parse_http_date(self.if_modified_since)
            if since is not None and modified_s <= since // 1000:
                raise S3Error(not_modified, headers=cache_headers, Condition="If-Modified-Since")
