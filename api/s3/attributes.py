"""GetObjectAttributes (``GET /bucket/key?attributes``): a version's ETag, checksums, parts, storage class and size
without its body, as tools that verify uploads (and the AWS SDKs' transfer managers) ask for them."""

from __future__ import annotations

import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import NULL_VERSION, ObjectVersion
from s4.engine.names import MAX_PART_NUMBER

from ..inputs import parse_int
from . import sse
from .call import Call
from .xml_render import S3_NS, XML_DECL, checksum_elements, http_date, xml_escape

#: The attributes a client may ask for, as S3 names them in ``x-amz-object-attributes``.
ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})
#: Parts listed per page when ``x-amz-max-parts`` is absent (S3's default).
DEFAULT_MAX_PARTS = 1000


def requested_attributes(value: str | None) -> list[str]:
    """``x-amz-object-attributes``: a comma-separated list (botocore sends one header); at least one, each known."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    if not names:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The x-amz-object-attributes header specifying the attributes to "
                      "be retrieved is either missing or empty", ArgumentName="x-amz-object-attributes")
    unknown = [name for name in names if name not in ATTRIBUTES]
    if unknown:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, f"Invalid attribute name specified: {unknown[0]}",
                      ArgumentName="x-amz-object-attributes", ArgumentValue=unknown[0])
    return names


async def get_object_attributes(call: Call, resp: falcon.asgi.Response) -> None:
    wanted = requested_attributes(call.headers.get("x-amz-object-attributes"))
    max_parts = parse_int(call.headers.get("x-amz-max-parts", str(DEFAULT_MAX_PARTS)), "x-amz-max-parts",
                          minimum=0, maximum=DEFAULT_MAX_PARTS)
    marker = parse_int(call.headers.get("x-amz-part-number-marker", "0"), "x-amz-part-number-marker",
                       minimum=0, maximum=MAX_PART_NUMBER)
    await call.engine.settle_key(call.bucket, call.key)
    version = call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))
    sse.keys_for_serving(call, version, body=False)  # SSE-C: its key is needed, as AWS (400 without, 403 wrong)
    resp.set_header("Last-Modified", http_date(version.last_modified_ms))
    if version.version_id != NULL_VERSION or call.engine.get_bucket(call.bucket).versioning:
        resp.set_header("x-amz-version-id", version.version_id)
    resp.content_type = "application/xml"
    resp.data = object_attributes_xml(version, wanted, max_parts, marker)


def object_attributes_xml(version: ObjectVersion, wanted: list[str], max_parts: int, marker: int) -> bytes:
    """The ``GetObjectAttributesResponse`` document with the asked attributes only. ``ObjectParts`` exists for
    multipart objects alone (S3 omits it for a single PUT), its parts paged after ``marker``."""
    out = [f'{XML_DECL}<GetObjectAttributesResponse xmlns="{S3_NS}">']
    if "ETag" in wanted:
        out.append(f"<ETag>{xml_escape(version.etag)}</ETag>")
    if "Checksum" in wanted and version.checksums:
        out.append(f"<Checksum>{checksum_elements(version.checksums, with_type=True)}</Checksum>")
    if "ObjectParts" in wanted and version.part_sizes:
        out.append(_parts(version, max_parts, marker))
    if "StorageClass" in wanted:
        out.append("<StorageClass>STANDARD</StorageClass>")
    if "ObjectSize" in wanted:
        out.append(f"<ObjectSize>{version.size}</ObjectSize>")
    out.append("</GetObjectAttributesResponse>")
    return "".join(out).encode("utf-8")


def _parts(version: ObjectVersion, max_parts: int, marker: int) -> str:
    sizes = version.part_sizes
    checksums = version.part_checksums
    numbers = [n for n in range(1, len(sizes) + 1) if n > marker]
    page, truncated = numbers[:max_parts], len(numbers) > max_parts
    out = [f"<ObjectParts><PartsCount>{len(sizes)}</PartsCount>",  # the wire name of TotalPartsCount
           f"<PartNumberMarker>{marker}</PartNumberMarker>",
           f"<NextPartNumberMarker>{page[-1] if page else marker}</NextPartNumberMarker>",
           f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
    for number in page:
        part_checksums = checksums[number - 1] if number <= len(checksums) else {}
        out.append(f"<Part><PartNumber>{number}</PartNumber><Size>{sizes[number - 1]}</Size>"
                   f"{checksum_elements(part_checksums, with_type=False)}</Part>")
    out.append("</ObjectParts>")
    return "".join(out)


