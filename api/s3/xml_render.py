"""S3 response documents, rendered by string building (no DOM).

Listings of 1,000 keys are rendered on hot paths, so every renderer appends pre-escaped fragments to a list
and joins once. Element names, nesting and namespaces follow the AWS S3 API reference; the output is checked
against botocore's own parser in tests/unit/api/test_xml.py.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from s4.engine.model import (
    Bucket,
    ListPage,
    PartListPage,
    Upload,
    UploadListPage,
    VersionListPage,
)

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NS_ATTR = f' xmlns="{S3_NS}"'
DEFAULT_STORAGE_CLASS = "STANDARD"

# Characters that must not appear raw in element text. \r is escaped so parsers don't normalise it to \n;
# other C0 controls have no XML 1.0 representation at all, so (like AWS) they go out as character
# references and clients that care ask for encoding-type=url.
_ESCAPES: dict[int, str] = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;",
                            ord("\r"): "&#13;"}
for _c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF):
    _ESCAPES[_c] = f"&#{_c};"
_NEEDS_ESCAPE = re.compile('[&<>"\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')


def xml_escape(text: str) -> str:
    """Escape text for element content; the common case (nothing to escape) costs one regex scan."""
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return text.translate(_ESCAPES)


def url_encode(text: str) -> str:
    """encoding-type=url form of a key: percent-encoding, a space as ``%20`` (not ``+``), so both a form decoder
    (botocore's ``unquote_plus``) and a plain percent-decoder turn it back into the key."""
    return quote(text, safe="/")


def _encoder(encoding_type: str | None) -> Callable[[str], str]:
    """The function that turns a key-like value into element text for this request's encoding-type."""
    return url_encode if encoding_type == "url" else xml_escape


# --- timestamps -------------------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name.lower(): i + 1 for i, name in enumerate(_MONTHS)}


_TWO_DIGITS = [f"{i:02d}" for i in range(60)]
_MILLIS = [f".{i:03d}Z" for i in range(1000)]
_DATE_CACHE: dict[int, str] = {}  # days since epoch -> "YYYY-MM-DDT"; listings repeat a handful of days


def iso8601(ms: int) -> str:
    """Epoch milliseconds as S3's listing timestamp, e.g. ``2009-10-12T17:50:30.000Z``.

    Called once per key in listings, so it avoids gmtime and format specs per call."""
    secs, millis = divmod(ms, 1000)
    days, in_day = divmod(secs, 86400)
    date = _DATE_CACHE.get(days)
    if date is None:
        t = time.gmtime(days * 86400)
        date = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        if len(_DATE_CACHE) >= 4096:
            _DATE_CACHE.clear()
        _DATE_CACHE[days] = date
    hours, rem = divmod(in_day, 3600)
    minutes, seconds = divmod(rem, 60)
    two = _TWO_DIGITS
    return date + two[hours] + ":" + two[minutes] + ":" + two[seconds] + _MILLIS[millis]


def http_date(ms: int) -> str:
    """Epoch milliseconds as an RFC 7231 IMF-fixdate (Last-Modified), locale-independent."""
    return _http_date_of_second(ms // 1000)


@functools.lru_cache(maxsize=4096)
def _http_date_of_second(second: int) -> str:
    """Cached: a GET or HEAD formats its object's Last-Modified on every request."""
    t = time.gmtime(second)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


_IMF_FIXDATE = re.compile(r"[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT")
_RFC850 = re.compile(r"[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT")
_ASCTIME = re.compile(r"[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})")


def parse_http_date(value: str) -> int | None:
    """Parse any of RFC 7231's three HTTP-date forms to epoch ms; None if it is not one (the header is
    then ignored, as HTTP requires for conditional headers)."""
    value = value.strip()
    if m := _IMF_FIXDATE.fullmatch(value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, mon, yy, hh, mm, ss = m.groups()
        year = str(2000 + int(yy) if int(yy) < 70 else 1900 + int(yy))
    elif m := _ASCTIME.fullmatch(value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTH_NUMBERS.get(mon.lower())
    if month is None:
        return None
    try:
        dt = datetime(int(year), month, int(day), int(hh), int(mm), int(ss))
    except ValueError:
        return None
    return calendar.timegm(dt.timetuple()) * 1000


# --- shared fragments -------------------------------------------------------------------------------------


def _quoted_etag(etag: str) -> str:
    """ETags go out in double quotes (rendered as &quot;, as AWS does); stored ETags have none."""
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return xml_escape(etag)
    return f"&quot;{xml_escape(etag)}&quot;"


def _owner(owner_id: str, owner_name: str, tag: str = "Owner") -> str:
    return (f"<{tag}><ID>{xml_escape(owner_id)}</ID>"
            f"<DisplayName>{xml_escape(owner_name)}</DisplayName></{tag}>")


def _storage_class(headers: Mapping[str, str]) -> str:
    if not headers or (value := headers.get("x-amz-storage-class")) is None:
        return DEFAULT_STORAGE_CLASS
    return xml_escape(value)


def checksum_type(checksums: Mapping[str, str]) -> str:
    """A ``-N`` part-count suffix marks a composite (checksum-of-checksums) multipart value."""
    for value in checksums.values():
        head, sep, tail = value.rpartition("-")
        if sep and head and tail.isdigit():
            return "COMPOSITE"
    return "FULL_OBJECT"


def checksum_elements(checksums: Mapping[str, str], *, with_type: bool) -> str:
    if not checksums:
        return ""
    out = [f"<Checksum{alg.upper()}>{xml_escape(value)}</Checksum{alg.upper()}>"
           for alg, value in checksums.items()]
    if with_type:
        out.append(f"<ChecksumType>{checksum_type(checksums)}</ChecksumType>")
    return "".join(out)


def _checksum_algorithms(checksums: Mapping[str, str]) -> str:
    """Listing form: the algorithm names only, plus the checksum type."""
    if not checksums:
        return ""
    algs = "".join(f"<ChecksumAlgorithm>{alg.upper()}</ChecksumAlgorithm>" for alg in checksums)
    return f"{algs}<ChecksumType>{checksum_type(checksums)}</ChecksumType>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _common_prefixes(parts: list[str], prefixes: Iterable[str], enc: Callable[[str], str]) -> None:
    append = parts.append
    for p in prefixes:
        append(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>")


def _doc(parts: list[str]) -> bytes:
    return "".join(parts).encode("utf-8")


def _simple(root: str, body: str) -> bytes:
    return f"{XML_DECL}<{root}{_NS_ATTR}>{body}</{root}>".encode()


# --- errors, service and bucket documents -----------------------------------------------------------------


def error_xml(code: str, message: str, resource: str | None, request_id: str,
              fields: Mapping[str, str]) -> bytes:
    """The <Error> body; AWS sends it without the S3 namespace."""
    parts = [XML_DECL, f"<Error><Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"]
    for name, value in fields.items():
        parts.append(f"<{name}>{xml_escape(value)}</{name}>")
    if resource is not None:
        parts.append(f"<Resource>{xml_escape(resource)}</Resource>")
    parts.append(f"<RequestId>{xml_escape(request_id)}</RequestId></Error>")
    return _doc(parts)


def list_buckets_xml(buckets: list[Bucket], owner_id: str, owner_name: str, *, prefix: str | None = None,
                     continuation_token: str | None = None) -> bytes:
    """ListBuckets; ``continuation_token`` (opaque) only when the page was cut short by max-buckets."""
    parts = [XML_DECL, f"<ListAllMyBucketsResult{_NS_ATTR}>", _owner(owner_id, owner_name), "<Buckets>"]
    append = parts.append
    for b in buckets:
        append(f"<Bucket><Name>{xml_escape(b.name)}</Name><CreationDate>{iso8601(b.created_ms)}</CreationDate>"
               f"<BucketRegion>{xml_escape(b.region)}</BucketRegion></Bucket>")
    append("</Buckets>")
    if continuation_token:
        append(f"<ContinuationToken>{xml_escape(continuation_token)}</ContinuationToken>")
    if prefix:
        append(f"<Prefix>{xml_escape(prefix)}</Prefix>")
    append("</ListAllMyBucketsResult>")
    return _doc(parts)


def location_xml(region: str) -> bytes:
    """us-east-1 is the "no constraint" region and renders as an empty element, as AWS does."""
    if not region or region == "us-east-1":
        return f"{XML_DECL}<LocationConstraint{_NS_ATTR}/>".encode()
    return _simple("LocationConstraint", xml_escape(region))


def tagging_xml(tags: Mapping[str, str]) -> bytes:
    """A tag set in key order: the same set reads back the same whichever way it was written (header or XML)."""
    body = "".join(f"<Tag><Key>{xml_escape(k)}</Key><Value>{xml_escape(v)}</Value></Tag>"
                   for k, v in sorted(tags.items()))
    return _simple("Tagging", f"<TagSet>{body}</TagSet>")


def versioning_xml(status: str) -> bytes:
    """A bucket that never had versioning configured has no Status element at all."""
    if not status:
        return f"{XML_DECL}<VersioningConfiguration{_NS_ATTR}/>".encode()
    return _simple("VersioningConfiguration", f"<Status>{xml_escape(status)}</Status>")


# --- object listings --------------------------------------------------------------------------------------


OwnerOf = Callable[[Mapping[str, Any]], tuple[str, str] | None]
"""A listed version's record -> its owner's (canonical id, display name), or None: the bucket owner's."""


def _owners(owner: str, owner_of: OwnerOf | None) -> Callable[[Mapping[str, Any]], str]:
    """Each entry's Owner element: the bucket owner's, or the one ``owner_of`` names (an object another account
    wrote), each distinct owner rendered once."""
    if owner_of is None or not owner:
        return lambda _record: owner
    rendered: dict[tuple[str, str], str] = {}

    def element(record: Mapping[str, Any]) -> str:
        ident = owner_of(record)
        if ident is None:
            return owner
        text = rendered.get(ident)
        if text is None:
            text = rendered[ident] = _owner(*ident)
        return text

    return element


def _contents(parts: list[str], page: ListPage, enc: Callable[[str], str], owner: str,
              owner_of: OwnerOf | None = None) -> None:
    append = parts.append
    owner_element = _owners(owner, owner_of)
    for e in page.entries:
        append(f"<Contents><Key>{enc(e.key)}</Key><LastModified>{iso8601(e.last_modified_ms)}</LastModified>"
               f"<ETag>{_quoted_etag(e.etag)}</ETag>{_checksum_algorithms(e.checksums)}<Size>{e.size}</Size>"
               f"{owner_element(e.record)}<StorageClass>{_storage_class(e.headers)}</StorageClass></Contents>")


def list_objects_v1_xml(page: ListPage, *, bucket: str, prefix: str, delimiter: str, marker: str,
                        max_keys: int, encoding_type: str | None, owner_id: str, owner_name: str,
                        owner_of: OwnerOf | None = None) -> bytes:
    """ListObjects (v1). Prefix is left unencoded: botocore does not decode it for v1, so encoding it would
    hand boto3 users a still-encoded Prefix."""
    enc = _encoder(encoding_type)
    parts = [XML_DECL, f"<ListBucketResult{_NS_ATTR}><Name>{xml_escape(bucket)}</Name>",
             f"<Prefix>{xml_escape(prefix)}</Prefix><Marker>{enc(marker)}</Marker>"]
    if delimiter and page.is_truncated:
        parts.append(f"<NextMarker>{enc(page.next_marker)}</NextMarker>")
    parts.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if encoding_type:
        parts.append(f"<EncodingType>{xml_escape(encoding_type)}</EncodingType>")
    parts.append(f"<IsTruncated>{_bool(page.is_truncated)}</IsTruncated>")
    _contents(parts, page, enc, _owner(owner_id, owner_name), owner_of)
    _common_prefixes(parts, page.common_prefixes, enc)
    parts.append("</ListBucketResult>")
    return _doc(parts)


def list_objects_v2_xml(page: ListPage, *, bucket: str, prefix: str, delimiter: str, max_keys: int,
                        start_after: str | None, continuation_token: str | None,
                        next_continuation_token: str | None, fetch_owner: bool, encoding_type: str | None,
                        owner_id: str, owner_name: str, owner_of: OwnerOf | None = None) -> bytes:
    """ListObjectsV2; continuation tokens are opaque and never URL-encoded."""
    enc = _encoder(encoding_type)
    parts = [XML_DECL, f"<ListBucketResult{_NS_ATTR}><Name>{xml_escape(bucket)}</Name>",
             f"<Prefix>{enc(prefix)}</Prefix>"]
    if continuation_token is not None:  # echoed even when empty, as S3 does
        parts.append(f"<ContinuationToken>{xml_escape(continuation_token)}</ContinuationToken>")
    if next_continuation_token:
        parts.append(f"<NextContinuationToken>{xml_escape(next_continuation_token)}</NextContinuationToken>")
    parts.append(f"<KeyCount>{len(page.entries) + len(page.common_prefixes)}</KeyCount>"
                 f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if encoding_type:
        parts.append(f"<EncodingType>{xml_escape(encoding_type)}</EncodingType>")
    parts.append(f"<IsTruncated>{_bool(page.is_truncated)}</IsTruncated>")
    if start_after:
        parts.append(f"<StartAfter>{enc(start_after)}</StartAfter>")
    _contents(parts, page, enc, _owner(owner_id, owner_name) if fetch_owner else "", owner_of)
    _common_prefixes(parts, page.common_prefixes, enc)
    parts.append("</ListBucketResult>")
    return _doc(parts)


def list_object_versions_xml(page: VersionListPage, *, bucket: str, prefix: str, delimiter: str,
                             key_marker: str, version_id_marker: str, max_keys: int,
                             encoding_type: str | None, owner_id: str, owner_name: str,
                             owner_of: OwnerOf | None = None) -> bytes:
    """ListObjectVersions: Version and DeleteMarker elements interleaved in the page's (S3) order."""
    enc = _encoder(encoding_type)
    owner_element = _owners(_owner(owner_id, owner_name), owner_of)
    parts = [XML_DECL, f"<ListVersionsResult{_NS_ATTR}><Name>{xml_escape(bucket)}</Name>",
             f"<Prefix>{enc(prefix)}</Prefix><KeyMarker>{enc(key_marker)}</KeyMarker>",
             f"<VersionIdMarker>{xml_escape(version_id_marker)}</VersionIdMarker>"]
    append = parts.append
    if page.is_truncated:
        append(f"<NextKeyMarker>{enc(page.next_key_marker)}</NextKeyMarker>"
               f"<NextVersionIdMarker>{xml_escape(page.next_version_id_marker)}</NextVersionIdMarker>")
    append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if encoding_type:
        append(f"<EncodingType>{xml_escape(encoding_type)}</EncodingType>")
    append(f"<IsTruncated>{_bool(page.is_truncated)}</IsTruncated>")
    for v in page.versions:
        head = (f"<Key>{enc(v.key)}</Key><VersionId>{xml_escape(v.version_id)}</VersionId>"
                f"<IsLatest>{_bool(v.is_latest)}</IsLatest><LastModified>{iso8601(v.last_modified_ms)}</LastModified>")
        owner = owner_element(v.record)
        if v.is_delete_marker:
            append(f"<DeleteMarker>{head}{owner}</DeleteMarker>")
        else:
            append(f"<Version>{head}<ETag>{_quoted_etag(v.etag)}</ETag>{_checksum_algorithms(v.checksums)}"
                   f"<Size>{v.size}</Size>{owner}<StorageClass>{_storage_class(v.headers)}</StorageClass></Version>")
    _common_prefixes(parts, page.common_prefixes, enc)
    append("</ListVersionsResult>")
    return _doc(parts)


# --- multipart --------------------------------------------------------------------------------------------


def initiate_multipart_xml(bucket: str, key: str, upload_id: str) -> bytes:
    return _simple("InitiateMultipartUploadResult", f"<Bucket>{xml_escape(bucket)}</Bucket>"
                   f"<Key>{xml_escape(key)}</Key><UploadId>{xml_escape(upload_id)}</UploadId>")


def complete_multipart_xml(location: str, bucket: str, key: str, etag: str,
                           checksums: Mapping[str, str]) -> bytes:
    return _simple("CompleteMultipartUploadResult",
                   f"<Location>{xml_escape(location)}</Location><Bucket>{xml_escape(bucket)}</Bucket>"
                   f"<Key>{xml_escape(key)}</Key><ETag>{_quoted_etag(etag)}</ETag>"
                   f"{checksum_elements(checksums, with_type=True)}")


def list_parts_xml(page: PartListPage, upload: Upload, *, part_number_marker: int, max_parts: int,
                   owner_id: str, owner_name: str) -> bytes:
    parts = [XML_DECL, f"<ListPartsResult{_NS_ATTR}><Bucket>{xml_escape(upload.bucket)}</Bucket>",
             f"<Key>{xml_escape(upload.key)}</Key><UploadId>{xml_escape(upload.upload_id)}</UploadId>",
             _owner(owner_id, owner_name, "Initiator"), _owner(owner_id, owner_name),
             f"<StorageClass>{xml_escape(upload.headers.get('x-amz-storage-class', DEFAULT_STORAGE_CLASS))}"
             "</StorageClass>",
             f"<PartNumberMarker>{part_number_marker}</PartNumberMarker>",
             f"<NextPartNumberMarker>{page.next_part_number_marker}</NextPartNumberMarker>",
             f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{_bool(page.is_truncated)}</IsTruncated>"]
    if upload.checksum_algorithm:
        parts.append(f"<ChecksumAlgorithm>{xml_escape(upload.checksum_algorithm.upper())}</ChecksumAlgorithm>")
        if upload.checksum_type:
            parts.append(f"<ChecksumType>{upload.checksum_type}</ChecksumType>")
    append = parts.append
    for p in page.parts:
        append(f"<Part><PartNumber>{p.part_number}</PartNumber>"
               f"<LastModified>{iso8601(p.last_modified_ms)}</LastModified><ETag>{_quoted_etag(p.etag)}</ETag>"
               f"<Size>{p.size}</Size>{checksum_elements(p.checksums, with_type=False)}</Part>")
    append("</ListPartsResult>")
    return _doc(parts)


def list_multipart_uploads_xml(page: UploadListPage, *, bucket: str, prefix: str, delimiter: str,
                               key_marker: str, upload_id_marker: str, max_uploads: int,
                               encoding_type: str | None, owner_id: str, owner_name: str,
                               owners: Mapping[str, tuple[str, str]] | None = None) -> bytes:
    """``owners``: (id, name) by upload id of the uploads another account initiated (ObjectWriter); the others
    are the bucket owner's (``owner_id``, ``owner_name``)."""
    enc = _encoder(encoding_type)
    bucket_owner = _owner(owner_id, owner_name, "Initiator") + _owner(owner_id, owner_name)
    parts = [XML_DECL, f"<ListMultipartUploadsResult{_NS_ATTR}><Bucket>{xml_escape(bucket)}</Bucket>",
             f"<KeyMarker>{enc(key_marker)}</KeyMarker>",
             f"<UploadIdMarker>{xml_escape(upload_id_marker)}</UploadIdMarker>",
             f"<NextKeyMarker>{enc(page.next_key_marker)}</NextKeyMarker>",
             f"<NextUploadIdMarker>{xml_escape(page.next_upload_id_marker)}</NextUploadIdMarker>",
             f"<Prefix>{enc(prefix)}</Prefix>"]
    append = parts.append
    if delimiter:
        append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    append(f"<MaxUploads>{max_uploads}</MaxUploads>")
    if encoding_type:
        append(f"<EncodingType>{xml_escape(encoding_type)}</EncodingType>")
    append(f"<IsTruncated>{_bool(page.is_truncated)}</IsTruncated>")
    for u in page.uploads:
        algorithm = (f"<ChecksumAlgorithm>{xml_escape(u.checksum_algorithm.upper())}</ChecksumAlgorithm>"
                     if u.checksum_algorithm else "")
        other = owners.get(u.upload_id) if owners else None
        owner = _owner(*other, "Initiator") + _owner(*other) if other else bucket_owner
        storage_class = xml_escape(u.headers.get("x-amz-storage-class", DEFAULT_STORAGE_CLASS))
        append(f"<Upload><Key>{enc(u.key)}</Key><UploadId>{xml_escape(u.upload_id)}</UploadId>{owner}"
               f"<StorageClass>{storage_class}</StorageClass><Initiated>{iso8601(u.initiated_ms)}</Initiated>"
               f"{algorithm}</Upload>")
    _common_prefixes(parts, page.common_prefixes, enc)
    append("</ListMultipartUploadsResult>")
    return _doc(parts)


# --- copy and batch delete --------------------------------------------------------------------------------


def copy_object_result_xml(etag: str, last_modified_ms: int, checksums: Mapping[str, str]) -> bytes:
    return _simple("CopyObjectResult", f"<ETag>{_quoted_etag(etag)}</ETag>"
                   f"<LastModified>{iso8601(last_modified_ms)}</LastModified>"
                   f"{checksum_elements(checksums, with_type=True)}")


def copy_part_result_xml(etag: str, last_modified_ms: int, checksums: Mapping[str, str]) -> bytes:
    return _simple("CopyPartResult", f"<ETag>{_quoted_etag(etag)}</ETag>"
                   f"<LastModified>{iso8601(last_modified_ms)}</LastModified>"
                   f"{checksum_elements(checksums, with_type=False)}")


def delete_result_xml(deleted: list[tuple[str, str | None, bool, str | None]],
                      errors: list[tuple[str, str | None, str, str]], quiet: bool) -> bytes:
    """DeleteObjects result; quiet mode reports only the failures."""
    parts = [XML_DECL, f"<DeleteResult{_NS_ATTR}>"]
    append = parts.append
    if not quiet:
        for key, version_id, delete_marker, marker_version_id in deleted:
            append(f"<Deleted><Key>{xml_escape(key)}</Key>")
            if version_id is not None:
                append(f"<VersionId>{xml_escape(version_id)}</VersionId>")
            if delete_marker:
                append("<DeleteMarker>true</DeleteMarker>")
            if marker_version_id is not None:
                append(f"<DeleteMarkerVersionId>{xml_escape(marker_version_id)}</DeleteMarkerVersionId>")
            append("</Deleted>")
    for key, version_id, code, message in errors:
        append(f"<Error><Key>{xml_escape(key)}</Key>")
        if version_id is not None:
            append(f"<VersionId>{xml_escape(version_id)}</VersionId>")
        append(f"<Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message></Error>")
    append("</DeleteResult>")
    return _doc(parts)


def post_response_xml(location: str, bucket: str, key: str, etag: str) -> bytes:
    """POST object's answer to ``success_action_status=201``; without a namespace, as S3 sends it."""
    return (f"{XML_DECL}<PostResponse><Location>{xml_escape(location)}</Location><Bucket>{xml_escape(bucket)}"
            f"</Bucket><Key>{xml_escape(key)}</Key><ETag>{_quoted_etag(etag)}</ETag></PostResponse>").encode()
