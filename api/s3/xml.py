"""One import point for S3 XML: renderers (xml_render), request parsers (xml_parse) and CORS (cors).

The implementation is split by direction to keep each module small; handlers may import from here.
"""

from __future__ import annotations

from s4.api.s3.cors import (
    CorsRule,
    cors_from_record,
    cors_response_headers,
    cors_to_record,
    cors_xml,
    match_cors,
    parse_cors,
    split_header_list,
)
from s4.api.s3.xml_parse import (
    CompletedPart,
    parse_complete_multipart,
    parse_create_bucket,
    parse_delete_objects,
    parse_tagging,
    parse_versioning,
)
from s4.api.s3.xml_render import (
    S3_NS,
    XML_DECL,
    complete_multipart_xml,
    copy_object_result_xml,
    copy_part_result_xml,
    delete_result_xml,
    error_xml,
    http_date,
    initiate_multipart_xml,
    iso8601,
    list_buckets_xml,
    list_multipart_uploads_xml,
    list_object_versions_xml,
    list_objects_v1_xml,
    list_objects_v2_xml,
    list_parts_xml,
    location_xml,
    parse_http_date,
    tagging_xml,
    url_encode,
    versioning_xml,
    xml_escape,
)

__all__ = [
    "S3_NS", "XML_DECL", "CompletedPart", "CorsRule",
    "complete_multipart_xml", "copy_object_result_xml", "copy_part_result_xml", "cors_from_record",
    "cors_response_headers", "cors_to_record", "cors_xml", "delete_result_xml", "error_xml", "http_date",
    "initiate_multipart_xml", "iso8601", "list_buckets_xml", "list_multipart_uploads_xml",
    "list_object_versions_xml", "list_objects_v1_xml", "list_objects_v2_xml", "list_parts_xml",
    "location_xml", "match_cors", "parse_complete_multipart", "parse_cors", "parse_create_bucket",
    "parse_delete_objects", "parse_http_date", "parse_tagging", "parse_versioning", "split_header_list",
    "tagging_xml", "url_encode", "versioning_xml", "xml_escape",
]
