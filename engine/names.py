"""Validation of bucket names, object keys, part numbers and tags (S3's rules), raising S3Error."""

from __future__ import annotations

import re

from .errors import ErrorCode, S3Error

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
MAX_KEY_BYTES = 1024
MAX_PART_NUMBER = 10_000


def check_bucket_name(name: str) -> None:
    """S3's general-purpose bucket naming rules."""
    if (not _BUCKET_RE.match(name) or ".." in name or _IP_RE.match(name) or name.startswith(("xn--", "sthree-"))
            or name.endswith(("-s3alias", "--ol-s3")) or ".-" in name or "-." in name):
        raise S3Error(ErrorCode.INVALID_BUCKET_NAME, resource=name, BucketName=name)


def check_key(key: str) -> None:
    encoded = key.encode("utf-8", "surrogatepass")
    if not key:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Object key must not be empty")
    if len(encoded) > MAX_KEY_BYTES:
        raise S3Error(ErrorCode.KEY_TOO_LONG, Size=str(len(encoded)), MaxSizeAllowed=str(MAX_KEY_BYTES))
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Object key is not valid UTF-8") from exc


def check_part_number(number: int) -> None:
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=str(number))
