"""S3 XML rendering and parsing, checked three ways: golden documents shaped like the AWS API reference
examples, parse/render round trips, and -- the strongest check -- botocore's own response parser and client
(so what boto3 users see is what we meant to send)."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.parsers import RestXMLParser
from hypothesis import given, settings
from hypothesis import strategies as st

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
    versioning_xml,
    xml_escape,
)
from s4.engine.conditions import DeleteConditions
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import (
    Bucket,
    ListEntry,
    ListPage,
    ObjectVersion,
    Part,
    PartListPage,
    Upload,
    UploadListPage,
    VersionListPage,
)

MODEL = botocore.session.get_session().get_service_model("s3")
T0 = 1255369830000  # 2009-10-12T17:50:30.000Z, the AWS examples' timestamp
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "mtd@amazon.com"

# Keys that stress escaping: spaces, unicode, XML specials, URL specials, whitespace controls.
HARD_KEYS = [
    "plain.txt",
    "with space/and more.txt",
    "unicode/ü日本語 🎉.txt",
    "amp&lt<gt>\"quote'.txt",
    "plus+percent%20.txt",
    "tab\tnewline\nkey",
    "cr\rkey",
    " leading and trailing ",
]


def boto_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """Parse a body the way botocore parses an S3 response for ``operation``."""
    shape = MODEL.operation_model(operation).output_shape
    return RestXMLParser().parse({"body": body, "headers": {}, "status_code": status}, shape)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        yield self._body


class FakeS3:
    """A real botocore client whose HTTP layer answers with a canned body: exercises the parser *and*
    botocore's after-call handlers (encoding-type=url decoding, GetBucketLocation)."""

    def __init__(self) -> None:
        session = botocore.session.get_session()
        self.client = session.create_client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                                            aws_secret_access_key="secret")
        self.body = b""
        self.url = ""
        self.client.meta.events.register("before-send.s3", self._send)

    def _send(self, request: Any, **kwargs: Any) -> AWSResponse:
        self.url = request.url
        return AWSResponse(request.url, 200, {}, _Raw(self.body))

    def call(self, method: str, body: bytes, **params: Any) -> dict[str, Any]:
        self.body = body
        return getattr(self.client, method)(**params)


@pytest.fixture(scope="module")
def s3() -> FakeS3:
    return FakeS3()


def canon(xml: bytes | str) -> Any:
    """Order-insensitive structural form of an XML document, for golden comparisons."""
    def walk(e: ElementTree.Element) -> Any:
        return (e.tag, (e.text or "").strip(), sorted((walk(c) for c in e), key=repr))
    return walk(ElementTree.fromstring(xml))


def version(key: str, vid: str = "null", *, size: int = 10, etag: str = "abc", dm: bool = False,
            latest: bool = True, ms: int = T0, checksums: dict[str, str] | None = None) -> ObjectVersion:
    return ObjectVersion(key=key, version_id=vid, last_modified_ms=ms, size=size, etag=etag,
                         is_delete_marker=dm, is_latest=latest, checksums=checksums or {})


def list_page(keys: list[str], prefixes: list[str] | None = None, truncated: bool = False,
              next_marker: str = "") -> ListPage:
    entries = [ListEntry.of(version(k, size=i, etag=f"etag{i}")) for i, k in enumerate(keys)]
    return ListPage(entries, prefixes or [], truncated, next_marker)


def ts(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


# --- timestamps and escaping -------------------------------------------------------------------------------


def test_iso8601_has_milliseconds_and_z() -> None:
    assert iso8601(T0) == "2009-10-12T17:50:30.000Z"
    assert iso8601(T0 + 7) == "2009-10-12T17:50:30.007Z"
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"


def test_http_date_matches_email_utils() -> None:
    assert http_date(T0 + 999) == "Mon, 12 Oct 2009 17:50:30 GMT"
    for ms in (0, T0, 1_700_000_000_123, 4_102_444_800_000):
        assert http_date(ms) == email.utils.formatdate(ms // 1000, usegmt=True)


@pytest.mark.parametrize("text", ["Mon, 12 Oct 2009 17:50:30 GMT", "Monday, 12-Oct-09 17:50:30 GMT",
                                  "Mon Oct 12 17:50:30 2009", " Mon, 12 Oct 2009 17:50:30 GMT "])
def test_parse_http_date_accepts_the_three_rfc7231_forms(text: str) -> None:
    assert parse_http_date(text) == T0


@pytest.mark.parametrize("text", ["", "garbage", "Mon, 32 Oct 2009 17:50:30 GMT", "Mon, 12 Foo 2009 17:50:30 GMT",
                                  "2009-10-12T17:50:30Z", "Mon, 12 Oct 2009 25:50:30 GMT"])
def test_parse_http_date_rejects_junk(text: str) -> None:
    assert parse_http_date(text) is None


@given(st.integers(min_value=0, max_value=253402300799).map(lambda s: s * 1000))
def test_http_date_round_trip(ms: int) -> None:
    assert parse_http_date(http_date(ms)) == ms


def test_xml_escape() -> None:
    assert xml_escape("plain") == "plain"
    assert xml_escape('a&b<c>"d\'') == "a&amp;b&lt;c&gt;&quot;d'"
    assert xml_escape("x\ry") == "x&#13;y"
    assert xml_escape("x\ny\tz") == "x\ny\tz"


# --- golden documents (AWS API reference examples) ---------------------------------------------------------


def test_error_golden() -> None:
    body = error_xml("NoSuchKey", "The resource you requested does not exist", "/mybucket/myfoto.jpg",
                     "4442587FB7D0A2F9", {})
    assert body == (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The resource '
                    b"you requested does not exist</Message><Resource>/mybucket/myfoto.jpg</Resource>"
                    b"<RequestId>4442587FB7D0A2F9</RequestId></Error>")


def test_location_golden() -> None:
    assert location_xml("eu-west-1") == (XML_DECL + f'<LocationConstraint xmlns="{S3_NS}">eu-west-1'
                                         "</LocationConstraint>").encode()
    assert location_xml("us-east-1") == (XML_DECL + f'<LocationConstraint xmlns="{S3_NS}"/>').encode()


def test_initiate_multipart_golden() -> None:
    upload_id = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
    assert initiate_multipart_xml("example-bucket", "example-object", upload_id) == (
        XML_DECL + f'<InitiateMultipartUploadResult xmlns="{S3_NS}"><Bucket>example-bucket</Bucket>'
        f"<Key>example-object</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>").encode()


def test_list_objects_v2_golden() -> None:
    page = ListPage([ListEntry.of(version("my-image.jpg", size=434234,
                                          etag="fba9dede5f27731c9771645a39863328"))])
    body = list_objects_v2_xml(page, bucket="bucket", prefix="", delimiter="", max_keys=1000, start_after=None,
                               continuation_token=None, next_continuation_token=None, fetch_owner=False,
                               encoding_type=None, owner_id=OWNER_ID, owner_name=OWNER_NAME)
    expected = f"""<ListBucketResult xmlns="{S3_NS}">
        <Name>bucket</Name><Prefix/><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
        <Contents>
            <Key>my-image.jpg</Key>
            <LastModified>2009-10-12T17:50:30.000Z</LastModified>
            <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
            <Size>434234</Size>
            <StorageClass>STANDARD</StorageClass>
        </Contents>
    </ListBucketResult>"""
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns=')
    assert canon(body) == canon(expected)


def test_list_objects_v1_golden() -> None:
    page = ListPage([ListEntry.of(version("my-image.jpg", size=434234,
                                          etag="fba9dede5f27731c9771645a39863328"))])
    body = list_objects_v1_xml(page, bucket="bucket", prefix="", delimiter="", marker="", max_keys=1000,
                               encoding_type=None, owner_id=OWNER_ID, owner_name=OWNER_NAME)
    expected = f"""<ListBucketResult xmlns="{S3_NS}">
        <Name>bucket</Name><Prefix/><Marker/><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
        <Contents>
            <Key>my-image.jpg</Key>
            <LastModified>2009-10-12T17:50:30.000Z</LastModified>
            <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
            <Size>434234</Size>
            <StorageClass>STANDARD</StorageClass>
            <Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_NAME}</DisplayName></Owner>
        </Contents>
    </ListBucketResult>"""
    assert canon(body) == canon(expected)


def test_delete_result_golden() -> None:
    body = delete_result_xml([("sample1.txt", None, False, None)],
                             [("sample2.txt", None, "AccessDenied", "Access Denied")], quiet=False)
    expected = f"""<DeleteResult xmlns="{S3_NS}">
        <Deleted><Key>sample1.txt</Key></Deleted>
        <Error><Key>sample2.txt</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
    </DeleteResult>"""
    assert canon(body) == canon(expected)


def test_complete_multipart_golden() -> None:
    body = complete_multipart_xml("http://Example-Bucket.s3.amazonaws.com/Example-Object", "Example-Bucket",
                                  "Example-Object", "3858f62230ac3c915f300c664312c11f-9", {})
    expected = f"""<CompleteMultipartUploadResult xmlns="{S3_NS}">
        <Location>http://Example-Bucket.s3.amazonaws.com/Example-Object</Location>
        <Bucket>Example-Bucket</Bucket><Key>Example-Object</Key>
        <ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
    </CompleteMultipartUploadResult>"""
    assert canon(body) == canon(expected)


def test_versioning_and_tagging_golden() -> None:
    assert versioning_xml("") == (XML_DECL + f'<VersioningConfiguration xmlns="{S3_NS}"/>').encode()
    assert canon(versioning_xml("Enabled")) == canon(
        f'<VersioningConfiguration xmlns="{S3_NS}"><Status>Enabled</Status></VersioningConfiguration>')
    assert canon(tagging_xml({"tag1": "val1", "tag2": "val2"})) == canon(
        f'<Tagging xmlns="{S3_NS}"><TagSet><Tag><Key>tag1</Key><Value>val1</Value></Tag>'
        "<Tag><Key>tag2</Key><Value>val2</Value></Tag></TagSet></Tagging>")


def test_every_document_is_well_formed_utf8_with_declaration() -> None:
    docs = [error_xml("A", "b", None, "r", {"Key": "k"}), list_buckets_xml([], "i", "n"), location_xml("x"),
            initiate_multipart_xml("b", "k", "u"), copy_part_result_xml("e", T0, {}),
            delete_result_xml([], [], quiet=True), tagging_xml({}), versioning_xml("Suspended")]
    for doc in docs:
        assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        ElementTree.fromstring(doc)


# --- botocore: what boto3 users see ------------------------------------------------------------------------


def test_error_through_botocore() -> None:
    body = error_xml("NoSuchKey", "The specified key does not exist.", "/b/k", "REQ1", {"Key": "a&b"})
    parsed = boto_parse("GetObject", body, status=404)
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Message"] == "The specified key does not exist."
    assert parsed["Error"]["Key"] == "a&b"
    assert parsed["Error"]["Resource"] == "/b/k"


def test_list_buckets_through_botocore() -> None:
    buckets = [Bucket("alpha", T0), Bucket("beta", T0 + 1500, region="eu-west-1")]
    parsed = boto_parse("ListBuckets", list_buckets_xml(buckets, OWNER_ID, OWNER_NAME))
    assert parsed["Owner"] == {"ID": OWNER_ID, "DisplayName": OWNER_NAME}
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta"]
    assert [ts(b["CreationDate"]) for b in parsed["Buckets"]] == [T0, T0 + 1500]
    assert [b["BucketRegion"] for b in parsed["Buckets"]] == ["us-east-1", "eu-west-1"]


def test_get_bucket_location_through_client(s3: FakeS3) -> None:
    assert s3.call("get_bucket_location", location_xml("us-east-1"), Bucket="b")["LocationConstraint"] is None
    assert s3.call("get_bucket_location", location_xml("eu-west-1"),
                   Bucket="b")["LocationConstraint"] == "eu-west-1"


def test_list_objects_v2_hard_keys_through_botocore() -> None:
    page = list_page(HARD_KEYS, ["dir one/", "ü&<>/"], truncated=True)
    body = list_objects_v2_xml(page, bucket="bkt", prefix="", delimiter="/", max_keys=10, start_after="a&b",
                               continuation_token="tok&1", next_continuation_token="tok<2>", fetch_owner=True,
                               encoding_type=None, owner_id=OWNER_ID, owner_name=OWNER_NAME)
    parsed = boto_parse("ListObjectsV2", body)
    assert [c["Key"] for c in parsed["Contents"]] == HARD_KEYS
    assert [c["Size"] for c in parsed["Contents"]] == list(range(len(HARD_KEYS)))
    assert [c["ETag"] for c in parsed["Contents"]] == [f'"etag{i}"' for i in range(len(HARD_KEYS))]
    assert all(ts(c["LastModified"]) == T0 for c in parsed["Contents"])
    assert all(c["Owner"] == {"ID": OWNER_ID, "DisplayName": OWNER_NAME} for c in parsed["Contents"])
    assert all(c["StorageClass"] == "STANDARD" for c in parsed["Contents"])
    assert [p["Prefix"] for p in parsed["CommonPrefixes"]] == ["dir one/", "ü&<>/"]
    assert parsed["KeyCount"] == len(HARD_KEYS) + 2
    assert parsed["IsTruncated"] is True
    assert parsed["ContinuationToken"] == "tok&1"
    assert parsed["NextContinuationToken"] == "tok<2>"
    assert parsed["StartAfter"] == "a&b"
    assert parsed["Delimiter"] == "/"
    assert parsed["MaxKeys"] == 10
    assert parsed["Name"] == "bkt"
    assert "EncodingType" not in parsed


def test_list_objects_v2_without_owner_or_tokens() -> None:
    body = list_objects_v2_xml(list_page(["k"]), bucket="b", prefix="p", delimiter="", max_keys=1000,
                               start_after=None, continuation_token=None, next_continuation_token=None,
                               fetch_owner=False, encoding_type=None, owner_id="o", owner_name="n")
    parsed = boto_parse("ListObjectsV2", body)
    assert "Owner" not in parsed["Contents"][0]
    for absent in ("ContinuationToken", "NextContinuationToken", "StartAfter", "Delimiter", "CommonPrefixes"):
        assert absent not in parsed
    assert parsed["Prefix"] == "p"
    assert parsed["IsTruncated"] is False


def test_list_objects_v2_checksum_algorithms() -> None:
    page = ListPage([ListEntry.of(version("k", checksums={"CRC32": "AAAAAA==", "SHA256": "x"}))])
    body = list_objects_v2_xml(page, bucket="b", prefix="", delimiter="", max_keys=1000, start_after=None,
                               continuation_token=None, next_continuation_token=None, fetch_owner=False,
                               encoding_type=None, owner_id="o", owner_name="n")
    contents = boto_parse("ListObjectsV2", body)["Contents"][0]
    assert contents["ChecksumAlgorithm"] == ["CRC32", "SHA256"]
    assert contents["ChecksumType"] == "FULL_OBJECT"


URL_KEYS = [*HARD_KEYS, "ctrl\x01\x1fkey", "slash//double", "100%", "~tilde*star"]


def test_list_objects_v2_url_encoding_through_client(s3: FakeS3) -> None:
    page = list_page(URL_KEYS, ["pre fix+/"], truncated=True)
    body = list_objects_v2_xml(page, bucket="b", prefix="pre fix+", delimiter="/", max_keys=5,
                               start_after="st art+", continuation_token=None, next_continuation_token="t",
                               fetch_owner=False, encoding_type="url", owner_id="o", owner_name="n")
    assert b"\x01" not in body and b"&#1;" not in body
    parsed = s3.call("list_objects_v2", body, Bucket="b", Prefix="pre fix+", Delimiter="/", StartAfter="st art+")
    assert "encoding-type=url" in s3.url
    assert [c["Key"] for c in parsed["Contents"]] == URL_KEYS
    assert [p["Prefix"] for p in parsed["CommonPrefixes"]] == ["pre fix+/"]
    assert parsed["Prefix"] == "pre fix+"
    assert parsed["StartAfter"] == "st art+"
    assert parsed["Delimiter"] == "/"


def test_list_objects_v1_url_encoding_through_client(s3: FakeS3) -> None:
    page = list_page(URL_KEYS, ["a b/"], truncated=True, next_marker="a b/")
    body = list_objects_v1_xml(page, bucket="b", prefix="", delimiter="/", marker="m a+rk", max_keys=7,
                               encoding_type="url", owner_id="o", owner_name="n")
    parsed = s3.call("list_objects", body, Bucket="b", Delimiter="/", Marker="m a+rk")
    assert [c["Key"] for c in parsed["Contents"]] == URL_KEYS
    assert [p["Prefix"] for p in parsed["CommonPrefixes"]] == ["a b/"]
    assert parsed["Marker"] == "m a+rk"
    assert parsed["NextMarker"] == "a b/"
    assert parsed["MaxKeys"] == 7


def test_list_objects_v1_prefix_is_not_url_encoded(s3: FakeS3) -> None:
    """botocore leaves v1's Prefix alone, so we must too, or boto3 users would see it encoded."""
    body = list_objects_v1_xml(list_page([]), bucket="b", prefix="a b+c%", delimiter="", marker="", max_keys=1,
                               encoding_type="url", owner_id="o", owner_name="n")
    assert s3.call("list_objects", body, Bucket="b", Prefix="a b+c%")["Prefix"] == "a b+c%"


def test_list_objects_v1_hard_keys_and_next_marker_rules() -> None:
    page = list_page(HARD_KEYS, truncated=True, next_marker=HARD_KEYS[-1])
    args: dict[str, Any] = dict(bucket="b", prefix="", marker="a&b", max_keys=1000, encoding_type=None,
                                owner_id=OWNER_ID, owner_name=OWNER_NAME)
    parsed = boto_parse("ListObjects", list_objects_v1_xml(page, delimiter="", **args))
    assert [c["Key"] for c in parsed["Contents"]] == HARD_KEYS
    assert parsed["Contents"][0]["Owner"]["ID"] == OWNER_ID
    assert parsed["Marker"] == "a&b"
    assert "NextMarker" not in parsed  # AWS only sends NextMarker when a delimiter was given
    parsed = boto_parse("ListObjects", list_objects_v1_xml(page, delimiter="/", **args))
    assert parsed["NextMarker"] == HARD_KEYS[-1]
    not_truncated = list_page(HARD_KEYS)
    assert "NextMarker" not in boto_parse("ListObjects", list_objects_v1_xml(not_truncated, delimiter="/", **args))


def test_list_object_versions_through_client(s3: FakeS3) -> None:
    versions = [ListEntry.of(v) for v in (version("a b", "v2", latest=True, etag="e2", size=3, ms=T0 + 2000),
                                          version("a b", "v1", dm=True, latest=False, ms=T0 + 1000),
                                          version("a b", "null", latest=False, etag="e0", size=1),
                                          version("ü&<\x02", "v9", dm=True, latest=True))]
    page = VersionListPage(versions, ["dir /"], True, "ü&<\x02", "v9")
    body = list_object_versions_xml(page, bucket="b", prefix="", delimiter="/", key_marker="k m",
                                    version_id_marker="vm", max_keys=4, encoding_type="url",
                                    owner_id=OWNER_ID, owner_name=OWNER_NAME)
    root = ElementTree.fromstring(body)
    assert [e.tag.split("}")[1] for e in root if e.tag.endswith(("Version", "DeleteMarker"))] == [
        "Version", "DeleteMarker", "Version", "DeleteMarker"]
    parsed = s3.call("list_object_versions", body, Bucket="b", Delimiter="/", KeyMarker="k m",
                     VersionIdMarker="vm")
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["ETag"], v["Size"]) for v in parsed["Versions"]] == [
        ("a b", "v2", True, '"e2"', 3), ("a b", "null", False, '"e0"', 1)]
    assert [(d["Key"], d["VersionId"], d["IsLatest"]) for d in parsed["DeleteMarkers"]] == [
        ("a b", "v1", False), ("ü&<\x02", "v9", True)]
    assert ts(parsed["Versions"][0]["LastModified"]) == T0 + 2000
    assert parsed["DeleteMarkers"][0]["Owner"] == {"ID": OWNER_ID, "DisplayName": OWNER_NAME}
    assert parsed["KeyMarker"] == "k m"
    assert parsed["VersionIdMarker"] == "vm"
    assert parsed["NextKeyMarker"] == "ü&<\x02"
    assert parsed["NextVersionIdMarker"] == "v9"
    assert parsed["IsTruncated"] is True
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir /"}]


def test_list_object_versions_untruncated_has_no_next_markers() -> None:
    page = VersionListPage([ListEntry.of(version("k&"))])
    body = list_object_versions_xml(page, bucket="b", prefix="", delimiter="", key_marker="", version_id_marker="",
                                    max_keys=1000, encoding_type=None, owner_id="o", owner_name="n")
    parsed = boto_parse("ListObjectVersions", body)
    assert parsed["Versions"][0]["Key"] == "k&"
    assert "NextKeyMarker" not in parsed and "NextVersionIdMarker" not in parsed
    assert "DeleteMarkers" not in parsed


def test_list_parts_through_botocore() -> None:
    upload = Upload("up&1", "bkt", "a&b <c>", T0, checksum_algorithm="CRC32")
    parts = [Part(1, "e1", 5 << 20, T0, checksums={"CRC32": "AAAAAA=="}), Part(2, "e2", 100, T0 + 1000)]
    body = list_parts_xml(PartListPage(parts, True, 2), upload, part_number_marker=0, max_parts=2,
                          owner_id=OWNER_ID, owner_name=OWNER_NAME)
    parsed = boto_parse("ListParts", body)
    assert (parsed["Bucket"], parsed["Key"], parsed["UploadId"]) == ("bkt", "a&b <c>", "up&1")
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parsed["Parts"]] == [(1, '"e1"', 5 << 20),
                                                                                  (2, '"e2"', 100)]
    assert parsed["Parts"][0]["ChecksumCRC32"] == "AAAAAA=="
    assert ts(parsed["Parts"][1]["LastModified"]) == T0 + 1000
    assert (parsed["PartNumberMarker"], parsed["NextPartNumberMarker"], parsed["MaxParts"]) == (0, 2, 2)
    assert parsed["IsTruncated"] is True
    assert parsed["Initiator"] == {"ID": OWNER_ID, "DisplayName": OWNER_NAME}
    assert parsed["Owner"] == {"ID": OWNER_ID, "DisplayName": OWNER_NAME}
    assert parsed["StorageClass"] == "STANDARD"
    assert parsed["ChecksumAlgorithm"] == "CRC32"


def test_list_multipart_uploads_through_botocore() -> None:
    uploads = [Upload("u1", "b", "a b&", T0), Upload("u2", "b", "ü<", T0 + 1000, checksum_algorithm="SHA256")]
    page = UploadListPage(uploads, ["dir/"], True, "ü<", "u2")
    for encoding in (None, "url"):
        body = list_multipart_uploads_xml(page, bucket="b", prefix="", delimiter="/", key_marker="",
                                          upload_id_marker="", max_uploads=2, encoding_type=encoding,
                                          owner_id=OWNER_ID, owner_name=OWNER_NAME)
        parsed = boto_parse("ListMultipartUploads", body)
        decode: Callable[[str], str] = unquote_plus if encoding == "url" else str
        assert [(decode(u["Key"]), u["UploadId"]) for u in parsed["Uploads"]] == [("a b&", "u1"), ("ü<", "u2")]
        assert [ts(u["Initiated"]) for u in parsed["Uploads"]] == [T0, T0 + 1000]
        assert parsed["Uploads"][1]["ChecksumAlgorithm"] == "SHA256"
        assert parsed["Uploads"][0]["Initiator"]["ID"] == OWNER_ID
        assert decode(parsed["NextKeyMarker"]) == "ü<"
        assert parsed["NextUploadIdMarker"] == "u2"
        assert parsed["MaxUploads"] == 2
        assert parsed["IsTruncated"] is True
        assert parsed["CommonPrefixes"] == [{"Prefix": "dir/"}]
        assert parsed.get("EncodingType") == encoding


def test_complete_multipart_through_botocore() -> None:
    body = complete_multipart_xml("http://h/b/a%20b", "b", "a b&", "abc-2", {"CRC32": "AAAAAA==-2"})
    parsed = boto_parse("CompleteMultipartUpload", body)
    assert parsed["Location"] == "http://h/b/a%20b"
    assert (parsed["Bucket"], parsed["Key"], parsed["ETag"]) == ("b", "a b&", '"abc-2"')
    assert parsed["ChecksumCRC32"] == "AAAAAA==-2"
    assert parsed["ChecksumType"] == "COMPOSITE"


def test_copy_results_through_botocore() -> None:
    parsed = boto_parse("CopyObject", copy_object_result_xml("e", T0, {"SHA256": "s"}))["CopyObjectResult"]
    assert parsed["ETag"] == '"e"' and ts(parsed["LastModified"]) == T0 and parsed["ChecksumSHA256"] == "s"
    parsed = boto_parse("UploadPartCopy", copy_part_result_xml("f", T0 + 5, {"CRC32C": "c"}))["CopyPartResult"]
    assert parsed["ETag"] == '"f"' and ts(parsed["LastModified"]) == T0 + 5 and parsed["ChecksumCRC32C"] == "c"


def test_delete_result_through_botocore() -> None:
    deleted = [("a&b", None, False, None), ("c d", "v1", False, None), ("e", None, True, "dm1"),
               ("f", "dm2", True, "dm2")]
    errors = [("g<", "v3", "AccessDenied", "Access Denied"), ("h", None, "InternalError", "x & y")]
    parsed = boto_parse("DeleteObjects", delete_result_xml(deleted, errors, quiet=False))
    assert parsed["Deleted"] == [{"Key": "a&b"}, {"Key": "c d", "VersionId": "v1"},
                                 {"Key": "e", "DeleteMarker": True, "DeleteMarkerVersionId": "dm1"},
                                 {"Key": "f", "VersionId": "dm2", "DeleteMarker": True,
                                  "DeleteMarkerVersionId": "dm2"}]
    assert parsed["Errors"] == [{"Key": "g<", "VersionId": "v3", "Code": "AccessDenied", "Message": "Access Denied"},
                                {"Key": "h", "Code": "InternalError", "Message": "x & y"}]
    quiet = boto_parse("DeleteObjects", delete_result_xml(deleted, errors, quiet=True))
    assert "Deleted" not in quiet and len(quiet["Errors"]) == 2


def test_tagging_and_versioning_through_botocore() -> None:
    tags = {"a&b": "<v>", "ü": "", "k": "v w"}
    parsed = boto_parse("GetObjectTagging", tagging_xml(tags))
    assert parsed["TagSet"] == [{"Key": k, "Value": v} for k, v in sorted(tags.items())]  # in key order
    assert boto_parse("GetObjectTagging", tagging_xml({}))["TagSet"] == []
    assert boto_parse("GetBucketVersioning", versioning_xml("Enabled"))["Status"] == "Enabled"
    assert boto_parse("GetBucketVersioning", versioning_xml("Suspended"))["Status"] == "Suspended"
    assert "Status" not in boto_parse("GetBucketVersioning", versioning_xml(""))


# --- parsers -----------------------------------------------------------------------------------------------


def _ns(body: str) -> bytes:
    """Put the S3 namespace on the root element of a request body (clients may or may not)."""
    head, sep, tail = body.partition(">")
    return (head + f' xmlns="{S3_NS}"' + sep + tail).encode()


def malformed(fn: Callable[[], object]) -> None:
    with pytest.raises(S3Error) as info:
        fn()
    assert info.value.code is ErrorCode.MALFORMED_XML


def test_parse_create_bucket() -> None:
    assert parse_create_bucket(b"") is None
    assert parse_create_bucket(b"  \n") is None
    body = "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
    assert parse_create_bucket(body.encode()) == "eu-west-1"
    assert parse_create_bucket(_ns(body)) == "eu-west-1"
    assert parse_create_bucket(b"<CreateBucketConfiguration/>") is None
    assert parse_create_bucket(b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>") is None
    malformed(lambda: parse_create_bucket(b"<Bogus/>"))
    malformed(lambda: parse_create_bucket(b"<CreateBucketConfiguration><X/></CreateBucketConfiguration>"))
    malformed(lambda: parse_create_bucket(b'<CreateBucketConfiguration xmlns="urn:other"/>'))


def test_parse_complete_multipart() -> None:
    body = ('<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a1"</ETag></Part>'
            "<Part><ETag>&quot;b2&quot;</ETag><PartNumber> 2 </PartNumber><ChecksumCRC32>AAAA</ChecksumCRC32></Part>"
            "<Part><PartNumber>3</PartNumber><ETag>c3</ETag></Part></CompleteMultipartUpload>")
    expected = [CompletedPart(1, "a1"), CompletedPart(2, "b2", {"CRC32": "AAAA"}), CompletedPart(3, "c3")]
    assert parse_complete_multipart(body.encode()) == expected
    assert parse_complete_multipart(_ns(body)) == expected


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<CompleteMultipartUpload/>", b"<CompleteMultipartUpload></CompleteMultipartUpload>",
    b"<Other><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Other>",
    b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag><Bogus/></Part>"
    b"</CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>a</ETag></Part>"
    b"</CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Thing/></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part>",
])
def test_parse_complete_multipart_malformed(body: bytes) -> None:
    malformed(lambda: parse_complete_multipart(body))


def test_parse_delete_objects() -> None:
    body = ("<Delete><Quiet>true</Quiet><Object><Key> spaced key </Key></Object>"
            "<Object><Key>a&amp;b</Key><VersionId>v1</VersionId></Object><Object><Key>ü&#13;x</Key></Object></Delete>")
    assert parse_delete_objects(body.encode()) == (True, [(" spaced key ", None, DeleteConditions()),
                                                          ("a&b", "v1", DeleteConditions()),
                                                          ("ü\rx", None, DeleteConditions())])
    assert parse_delete_objects(_ns(body))[0] is True
    assert parse_delete_objects(b"<Delete><Object><Key>k</Key></Object></Delete>") == (False, [("k", None,
                                                                                                DeleteConditions())])
    assert parse_delete_objects(b"<Delete><Quiet>false</Quiet><Object><Key>k</Key></Object></Delete>")[0] is False


def test_parse_delete_objects_conditional_fields() -> None:
    """ETag, LastModifiedTime (RFC 822 as the SDKs send it, or ISO 8601) and Size become the entry's conditions."""
    body = (b"<Delete><Object><Key>k</Key><ETag>\"e1\"</ETag><LastModifiedTime>Thu, 01 Jan 2015 00:00:00 GMT"
            b"</LastModifiedTime><Size>3</Size></Object><Object><Key>j</Key><VersionId>v</VersionId>"
            b"<LastModifiedTime>2015-01-01T00:00:01.000Z</LastModifiedTime></Object></Delete>")
    assert parse_delete_objects(body)[1] == [("k", None, DeleteConditions('"e1"', 1420070400000, 3)),
                                             ("j", "v", DeleteConditions(None, 1420070401000, None))]


@pytest.mark.parametrize("inner", [b"<Size>big</Size>", b"<Size>-1</Size>",
                                   b"<LastModifiedTime>soon</LastModifiedTime>",
                                   b"<LastModifiedTime>2015-01-01T00:00:00</LastModifiedTime>",
                                   b"<ETag>a</ETag><ETag>b</ETag>"])
def test_parse_delete_objects_bad_conditional_fields_are_malformed(inner: bytes) -> None:
    malformed(lambda: parse_delete_objects(b"<Delete><Object><Key>k</Key>" + inner + b"</Object></Delete>"))


def test_parse_delete_objects_limits() -> None:
    def body(n: int) -> bytes:
        return ("<Delete>" + "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(n)) + "</Delete>").encode()
    assert len(parse_delete_objects(body(1000))[1]) == 1000
    malformed(lambda: parse_delete_objects(body(1001)))
    malformed(lambda: parse_delete_objects(body(0)))


@pytest.mark.parametrize("body", [
    b"", b"<Delete", b"<Delete/>", b"<Delete><Quiet>true</Quiet></Delete>",
    b"<Remove><Object><Key>k</Key></Object></Remove>",
    b"<Delete><Object><VersionId>v</VersionId></Object></Delete>",
    b"<Delete><Object><Key>k</Key><Key>j</Key></Object></Delete>",
    b"<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>",
    b"<Delete><Object><Key>k<b/></Key></Object></Delete>",
    b"<Delete><Object><Key>k</Key><Extra/></Object></Delete>",
    b'<!DOCTYPE x [<!ENTITY e "boom">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    b'<?xml version="1.0" encoding="bogus"?><Delete/>',
    b"\xff\xfe<\x00",
])
def test_parse_delete_objects_malformed(body: bytes) -> None:
    malformed(lambda: parse_delete_objects(body))


def test_parse_tagging() -> None:
    body = ("<Tagging><TagSet><Tag><Key>a b</Key><Value>x+y=z</Value></Tag><Tag><Key>ü.:/@_-</Key><Value/></Tag>"
            "</TagSet></Tagging>")
    assert parse_tagging(body.encode(), max_tags=10) == {"a b": "x+y=z", "ü.:/@_-": ""}
    assert parse_tagging(_ns(body), max_tags=10) == {"a b": "x+y=z", "ü.:/@_-": ""}
    assert parse_tagging(b"<Tagging><TagSet/></Tagging>", max_tags=10) == {}


def _tags(*pairs: tuple[str, str]) -> bytes:
    inner = "".join(f"<Tag><Key>{xml_escape(k)}</Key><Value>{xml_escape(v)}</Value></Tag>" for k, v in pairs)
    return f"<Tagging><TagSet>{inner}</TagSet></Tagging>".encode()


@pytest.mark.parametrize(("pairs", "message"), [
    ((("k" * 129, "v"),), "The TagKey you have provided is too long, max 128"),
    ((("k", "v" * 257),), "The TagValue you have provided is too long, max 256"),
    ((("k", "1"), ("k", "2")), "Cannot provide multiple Tags with the same key"),
    (tuple((f"k{i}", "v") for i in range(11)), "Object tags cannot be greater than 10"),
    ((("", "v"),), "The TagKey you have provided is invalid"),
    ((("k!", "v"),), "The TagKey you have provided is invalid"),
    ((("k", "v<"),), "The TagValue you have provided is invalid"),
    ((("aws:x", "v"),), "Your TagKey cannot be prefixed with aws:"),
])
def test_parse_tagging_invalid(pairs: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_tagging(_tags(*pairs), max_tags=10)
    assert info.value.code is ErrorCode.INVALID_TAG
    assert info.value.message == message


def test_parse_tagging_boundaries() -> None:
    assert len(parse_tagging(_tags(*((f"k{i}", "v") for i in range(10))), max_tags=10)) == 10
    assert parse_tagging(_tags(("k" * 128, "v" * 256)), max_tags=10) == {"k" * 128: "v" * 256}
    assert len(parse_tagging(_tags(*((f"k{i}", "v") for i in range(50))), max_tags=50)) == 50


@pytest.mark.parametrize("body", [
    b"", b"<Tagging/>", b"<Tagging><TagSet/><TagSet/></Tagging>", b"<Tags><TagSet/></Tags>",
    b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Item><Key>k</Key><Value>v</Value></Item></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value><Key>j</Key></Tag></TagSet></Tagging>",
])
def test_parse_tagging_malformed(body: bytes) -> None:
    malformed(lambda: parse_tagging(body, max_tags=10))


def test_parse_versioning() -> None:
    assert parse_versioning(b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>") == "Enabled"
    assert parse_versioning(_ns("<VersioningConfiguration><Status>Suspended</Status>"
                                "<MfaDelete>Disabled</MfaDelete></VersioningConfiguration>")) == "Suspended"
    with pytest.raises(S3Error) as info:
        parse_versioning(b"<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Enabled</MfaDelete>"
                         b"</VersioningConfiguration>")
    assert info.value.code is ErrorCode.NOT_IMPLEMENTED
    with pytest.raises(S3Error) as info:
        parse_versioning(b"<VersioningConfiguration/>")
    assert info.value.code is ErrorCode.ILLEGAL_VERSIONING_CONFIGURATION


@pytest.mark.parametrize("body", [
    b"", b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>enabled</Status></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>Enabled</Status><Status>Enabled</Status></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Maybe</MfaDelete></VersioningConfiguration>",
    b"<Versioning><Status>Enabled</Status></Versioning>",
])
def test_parse_versioning_malformed(body: bytes) -> None:
    malformed(lambda: parse_versioning(body))


# --- round trips -------------------------------------------------------------------------------------------

# Text XML 1.0 can carry (and hence S3 keys a client can send in an XML body).
xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff")
                   .filter(lambda c: c >= " " or c in "\t\n\r"), max_size=40)
tag_text = st.text(st.sampled_from("abcXYZ019 _.:/=+-@üß日"), max_size=20)


@given(st.dictionaries(tag_text.filter(lambda k: k and not k.startswith("aws:")), tag_text, max_size=10))
def test_tagging_round_trip(tags: dict[str, str]) -> None:
    assert parse_tagging(tagging_xml(tags), max_tags=10) == tags


@given(st.lists(st.tuples(xml_text, st.none() | st.text("abc123", min_size=1, max_size=8)), min_size=1,
                max_size=50), st.booleans())
def test_delete_objects_round_trip(objects: list[tuple[str, str | None]], quiet: bool) -> None:
    inner = "".join(f"<Object><Key>{xml_escape(k)}</Key>" + (f"<VersionId>{v}</VersionId>" if v else "")
                    + "</Object>" for k, v in objects)
    body = f"<Delete><Quiet>{'true' if quiet else 'false'}</Quiet>{inner}</Delete>".encode()
    assert parse_delete_objects(body) == (quiet, [(k, v, DeleteConditions()) for k, v in objects])


@given(st.lists(xml_text, max_size=20))
def test_list_keys_round_trip_through_botocore(keys: list[str]) -> None:
    body = list_objects_v2_xml(list_page(keys), bucket="b", prefix="", delimiter="", max_keys=1000,
                               start_after=None, continuation_token=None, next_continuation_token=None,
                               fetch_owner=False, encoding_type=None, owner_id="o", owner_name="n")
    assert [c["Key"] for c in boto_parse("ListObjectsV2", body).get("Contents", [])] == keys


# --- fuzz: parsers only ever raise S3Error -----------------------------------------------------------------

PARSERS: list[Callable[[bytes], object]] = [
    parse_create_bucket, parse_complete_multipart, parse_delete_objects, parse_versioning,
    lambda b: parse_tagging(b, max_tags=10),
]
VOCAB = ["CreateBucketConfiguration", "LocationConstraint", "CompleteMultipartUpload", "Part", "PartNumber", "ETag",
         "ChecksumCRC32", "Checksum", "Delete", "Quiet", "Object", "Key", "VersionId", "Tagging", "TagSet", "Tag",
         "Value", "VersioningConfiguration", "Status", "MfaDelete", "Other"]
TEXTS = st.sampled_from(["", "1", "0", "-3", "true", "Enabled", "Suspended", "Disabled", '"e"', "x" * 300,
                         "k", "aws:k", "99999999999999999999"]) | xml_text


def _element() -> st.SearchStrategy[str]:
    leaf = st.builds(lambda t, x: f"<{t}>{xml_escape(x)}</{t}>", st.sampled_from(VOCAB), TEXTS)
    return st.recursive(leaf, lambda kids: st.builds(lambda t, cs: f"<{t}>{''.join(cs)}</{t}>",
                                                     st.sampled_from(VOCAB), st.lists(kids, max_size=4)),
                        max_leaves=12)


def _only_s3_errors(body: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(body)
        except S3Error:
            pass


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_s3error(body: bytes) -> None:
    _only_s3_errors(body)


@settings(max_examples=500)
@given(_element(), st.booleans())
def test_random_structures_only_raise_s3error(doc: str, namespaced: bool) -> None:
    _only_s3_errors(_ns(doc) if namespaced else doc.encode())
