"""Parsers for the S3 request documents clients send (CreateBucket, CompleteMultipartUpload, DeleteObjects,
PutObjectTagging, PutBucketVersioning).

Bodies are untrusted: parsing goes through defusedxml (no entities, no DTDs), and every malformed or
unexpected structure becomes ``S3Error(MALFORMED_XML)`` -- never any other exception -- so a bad body is
always a 400, not a 500. Validation failures that AWS reports with other codes (InvalidTag, ...) use those.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, NoReturn
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring

from s4.engine.conditions import DeleteConditions
from s4.engine.errors import ErrorCode, S3Error

from ..inputs import parse_int
from .xml_render import parse_http_date

_NAMESPACES = ("{http://s3.amazonaws.com/doc/2006-03-01/}", "{http://s3.amazonaws.com/doc/2006-03-01}")
MAX_DELETE_KEYS = 1000
MAX_TAG_KEY_LEN = 128
MAX_TAG_VALUE_LEN = 256


@dataclass(slots=True)
class CompletedPart:
    """One <Part> of a CompleteMultipartUpload request, ETag without its quotes."""

    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)  # e.g. {"CRC32": "..."}


def malformed() -> NoReturn:
    raise S3Error(ErrorCode.MALFORMED_XML)


def local_name(elem: Element) -> str:
    """Element name with the S3 namespace (or none) removed; any other namespace is not S3's schema."""
    tag = elem.tag
    if not isinstance(tag, str):  # comments / processing instructions are not kept by the parser, but be sure
        malformed()
    if tag[0] != "{":
        return tag
    for ns in _NAMESPACES:
        if tag.startswith(ns):
            return tag[len(ns):]
    malformed()


def parse_root(body: bytes, expected: str) -> Element:
    """Parse a request body and check its root element; any parser failure is MalformedXML."""
    try:
        root: Element = fromstring(body)
    except Exception:  # expat, defusedxml and codec errors all mean "not well-formed" here
        malformed()
    if local_name(root) != expected:
        malformed()
    return root


def children(elem: Element) -> list[tuple[str, Element]]:
    return [(local_name(child), child) for child in elem]


def text_of(elem: Element) -> str:
    """Text content of a leaf element (kept verbatim: keys may have leading/trailing spaces)."""
    if len(elem):
        malformed()
    return elem.text or ""


def int_of(elem: Element) -> int:
    """An xs:integer element (ASCII digits, optional sign, surrounding spaces), at most 18 digits; else
    MalformedXML. Ranges (part numbers, days) are the caller's to check."""
    text = text_of(elem).strip()
    if text.startswith("+") and text[1:2] != "-":
        text = text[1:]
    return parse_int(text, "", minimum=-(10**18) + 1, maximum=10**18 - 1, code=ErrorCode.MALFORMED_XML,
                     message=ErrorCode.MALFORMED_XML.default_message, argument=False)


def bool_of(elem: Element) -> bool:
    """xs:boolean: true/false/1/0."""
    text = text_of(elem).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    malformed()


def _is_blank(body: bytes) -> bool:
    return not body or body.isspace()


# --- CreateBucket -----------------------------------------------------------------------------------------


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucketConfiguration; None for an empty body or constraint."""
    if _is_blank(body):
        return None
    root = parse_root(body, "CreateBucketConfiguration")
    location: str | None = None
    seen = False
    for name, child in children(root):
        if name == "LocationConstraint":
            if seen:
                malformed()
            seen = True
            location = text_of(child).strip() or None
        elif name not in ("Location", "Bucket", "Tags"):  # directory-bucket and tag fields: accepted, unused
            malformed()
    return location


# --- CompleteMultipartUpload ------------------------------------------------------------------------------


def _strip_etag(etag: str) -> str:
    etag = etag.strip()
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return etag[1:-1]
    return etag


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    """Parts in the order the client listed them; ordering and existence are the engine's to check."""
    root = parse_root(body, "CompleteMultipartUpload")
    parts: list[CompletedPart] = []
    for name, part in children(root):
        if name != "Part":
            malformed()
        number: int | None = None
        etag: str | None = None
        checksums: dict[str, str] = {}
        for field_name, child in children(part):
            if field_name == "PartNumber" and number is None:
                number = int_of(child)
            elif field_name == "ETag" and etag is None:
                etag = _strip_etag(text_of(child))
            elif field_name.startswith("Checksum") and field_name[8:] and field_name[8:] not in checksums:
                checksums[field_name[8:]] = text_of(child).strip()
            else:
                malformed()
        if number is None or etag is None:
            malformed()
        parts.append(CompletedPart(number, etag, checksums))
    if not parts:
        malformed()
    return parts


# --- DeleteObjects ----------------------------------------------------------------------------------------


class DeleteTarget(NamedTuple):
    """One <Object> of a DeleteObjects request, with its conditional-delete fields."""

    key: str
    version_id: str | None
    conditions: DeleteConditions = DeleteConditions()


def parse_delete_objects(body: bytes) -> tuple[bool, list[DeleteTarget]]:
    """(quiet, targets) -- 1 to 1000 objects, as AWS's schema allows."""
    root = parse_root(body, "Delete")
    quiet = False
    seen_quiet = False
    objects: list[DeleteTarget] = []
    for name, child in children(root):
        if name == "Object":
            if len(objects) >= MAX_DELETE_KEYS:
                malformed()
            objects.append(_delete_object(child))
        elif name == "Quiet" and not seen_quiet:
            seen_quiet = True
            quiet = bool_of(child)
        else:
            malformed()
    if not objects:
        malformed()
    return quiet, objects


def _delete_object(elem: Element) -> DeleteTarget:
    fields: dict[str, str] = {}
    for name, child in children(elem):
        if name in ("Key", "VersionId", "ETag", "LastModifiedTime", "Size") and name not in fields:
            fields[name] = text_of(child)
        else:
            malformed()
    if "Key" not in fields:
        malformed()
    modified = fields.get("LastModifiedTime")
    size = fields.get("Size")
    conditions = DeleteConditions(fields.get("ETag"), None if modified is None else _timestamp_ms(modified),
                                  None if size is None else parse_int(size, "Size", code=ErrorCode.MALFORMED_XML))
    return DeleteTarget(fields["Key"], fields.get("VersionId") or None, conditions)


def _timestamp_ms(text: str) -> int:
    """An XML timestamp as epoch ms: the RFC 822 form the SDKs send for LastModifiedTime, or ISO 8601."""
    ms = parse_http_date(text)
    if ms is not None:
        return ms
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        malformed()
    if when.tzinfo is None:
        malformed()
    return int(when.timestamp() * 1000)


# --- Tagging ----------------------------------------------------------------------------------------------

_PLAIN_TAG_TEXT = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")


def _valid_tag_text(text: str) -> bool:
    """AWS's tag alphabet: Unicode letters, numbers and separators, plus ``_ . : / = + - @``."""
    if _PLAIN_TAG_TEXT.fullmatch(text):
        return True
    for ch in text:
        if not (ch.isalnum() or ch in "_.:/=+-@" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")):
            return False
    return True


def _invalid_tag(message: str) -> NoReturn:
    raise S3Error(ErrorCode.INVALID_TAG, message)


def parse_tagging(body: bytes, *, max_tags: int) -> dict[str, str]:
    """A <Tagging><TagSet> document as an ordered dict, validated as S3 validates object tags."""
    root = parse_root(body, "Tagging")
    tag_sets = children(root)
    if len(tag_sets) != 1 or tag_sets[0][0] != "TagSet":
        malformed()
    tags: dict[str, str] = {}
    for name, tag in children(tag_sets[0][1]):
        if name != "Tag":
            malformed()
        key: str | None = None
        value: str | None = None
        for field_name, child in children(tag):
            if field_name == "Key" and key is None:
                key = text_of(child)
            elif field_name == "Value" and value is None:
                value = text_of(child)
            else:
                malformed()
        if key is None or value is None:
            malformed()
        if key in tags:
            _invalid_tag("Cannot provide multiple Tags with the same key")
        tags[key] = value
        if len(tags) > max_tags:
            _invalid_tag(f"Object tags cannot be greater than {max_tags}")
    for key, value in tags.items():
        if len(key) > MAX_TAG_KEY_LEN:
            _invalid_tag(f"The TagKey you have provided is too long, max {MAX_TAG_KEY_LEN}")
        if len(value) > MAX_TAG_VALUE_LEN:
            _invalid_tag(f"The TagValue you have provided is too long, max {MAX_TAG_VALUE_LEN}")
        if not key or not _valid_tag_text(key):
            _invalid_tag("The TagKey you have provided is invalid")
        if not _valid_tag_text(value):
            _invalid_tag("The TagValue you have provided is invalid")
        if key.startswith("aws:"):
            _invalid_tag("Your TagKey cannot be prefixed with aws:")
    return tags


# --- Versioning -------------------------------------------------------------------------------------------

_VERSIONING_STATUSES = ("Enabled", "Suspended")


def parse_versioning(body: bytes) -> str:
    """The requested Status: "Enabled" or "Suspended". MFA delete is not supported."""
    root = parse_root(body, "VersioningConfiguration")
    status: str | None = None
    mfa_delete: str | None = None
    for name, child in children(root):
        if name == "Status" and status is None:
            status = text_of(child).strip()
        elif name == "MfaDelete" and mfa_delete is None:
            mfa_delete = text_of(child).strip()
        else:
            malformed()
    if mfa_delete is not None:
        if mfa_delete == "Enabled":
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, "MFA delete is not supported.")
        if mfa_delete != "Disabled":
            malformed()
    if status is None:
        raise S3Error(ErrorCode.ILLEGAL_VERSIONING_CONFIGURATION, "The Versioning element must be specified")
    if status not in _VERSIONING_STATUSES:
        malformed()
    return status
