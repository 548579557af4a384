"""HTTP preconditions (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) as engine values.

One evaluator for every place S3 has them: GET/HEAD (304 or 412), copy sources (always 412), conditional writes
and renames (evaluated inside the sequencer, atomically with the write). Dates are epoch milliseconds, compared
at one-second resolution as HTTP dates are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, S3Error


def etag_matches(header: str, etag: str) -> bool:
    return any(tag.strip() in ("*", f'"{etag}"', etag, f'W/"{etag}"') for tag in header.split(","))


@dataclass(frozen=True, slots=True)
class Preconditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since_ms: int | None = None
    if_unmodified_since_ms: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.if_match, self.if_none_match, self.if_modified_since_ms,
                                           self.if_unmodified_since_ms))

    def to_record(self) -> dict[str, Any]:
        return {"im": self.if_match, "inm": self.if_none_match, "ims": self.if_modified_since_ms,
                "ius": self.if_unmodified_since_ms}

    @classmethod
    def from_record(cls, rec: dict[str, Any] | None) -> Preconditions:
        rec = rec or {}
        return cls(rec.get("im"), rec.get("inm"), rec.get("ims"), rec.get("ius"))

    def check(self, etag: str | None, last_modified_ms: int, *, not_modified: ErrorCode = ErrorCode.NOT_MODIFIED,
              headers: dict[str, str] | None = None) -> None:
        """RFC 7232 order. ``etag`` None means the object does not exist (If-Match fails, If-None-Match holds)."""
        modified_s = last_modified_ms // 1000
        if self.if_match is not None:
            if etag is None:  # only writes evaluate against a missing object; S3 answers 404 there
                raise S3Error(ErrorCode.NO_SUCH_KEY, Condition="If-Match")
            if not etag_matches(self.if_match, etag):
                raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="If-Match")
        elif self.if_unmodified_since_ms is not None and etag is not None:
            if modified_s > self.if_unmodified_since_ms // 1000:
                raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="If-Unmodified-Since")
        if self.if_none_match is not None:
            if etag is not None and etag_matches(self.if_none_match, etag):
                raise S3Error(not_modified, headers=headers, Condition="If-None-Match")
        elif self.if_modified_since_ms is not None and etag is not None:
            if modified_s <= self.if_modified_since_ms // 1000:
                raise S3Error(not_modified, headers=headers, Condition="If-Modified-Since")


@dataclass(frozen=True, slots=True)
class DeleteConditions:
    """DeleteObject's ``If-Match``, ``x-amz-if-match-last-modified-time`` and ``x-amz-if-match-size`` (and the
    ``ETag``/``LastModifiedTime``/``Size`` of a DeleteObjects entry). Evaluated by the delete decider against the
    version the delete would act on, atomically with the delete, so a concurrent rewrite cannot slip between the
    check and the removal."""

    if_match: str | None = None
    last_modified_ms: int | None = None
    size: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.if_match, self.last_modified_ms, self.size))

    def to_record(self) -> dict[str, Any]:
        return {"im": self.if_match, "lmt": self.last_modified_ms, "sz": self.size}

    @classmethod
    def from_record(cls, rec: dict[str, Any] | None) -> DeleteConditions:
        rec = rec or {}
        return cls(rec.get("im"), rec.get("lmt"), rec.get("sz"))

    def check(self, rec: dict[str, Any] | None) -> None:
        """``rec`` is the version the delete targets: the named one, else the latest (possibly a delete marker).
        None (nothing to delete) passes, as S3 answers 204 for a missing object. A delete marker has no ETag
        and no size: only ``If-Match: *`` and its own Last-Modified match it."""
        if rec is None:
            return
        marker = bool(rec.get("dm"))
        if self.if_match is not None and not (self.if_match.strip() == "*" or (
                not marker and etag_matches(self.if_match, rec["e"]))):
            raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="If-Match")
        if self.last_modified_ms is not None and self.last_modified_ms // 1000 != rec["t"] // 1000:
            raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="x-amz-if-match-last-modified-time")
        if self.size is not None and (marker or self.size != rec["s"]):
            raise S3Error(ErrorCode.PRECONDITION_FAILED, Condition="x-amz-if-match-size")
