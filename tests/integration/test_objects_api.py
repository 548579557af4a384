"""Object and bucket operations against a real server, with boto3 defaults (aws-chunked + trailer checksums)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
import zlib
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.s3client import make_client


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- basic put/get/head/delete ---------------------------------------------------------------------------------

def test_put_get_head_delete(s3: Any, bucket: str) -> None:
    body = b"hello world\n" * 100
    put = s3.put_object(Bucket=bucket, Key="dir/obj.txt", Body=body)
    assert put["ETag"] == f'"{md5_hex(body)}"'
    got = s3.get_object(Bucket=bucket, Key="dir/obj.txt")
    assert got["Body"].read() == body
    assert got["ETag"] == f'"{md5_hex(body)}"'
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=bucket, Key="dir/obj.txt")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == f'"{md5_hex(body)}"'
    assert head["AcceptRanges"] == "bytes"
    deleted = s3.delete_object(Bucket=bucket, Key="dir/obj.txt")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="dir/obj.txt")
    assert err(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="dir/obj.txt")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # deleting a missing key is still 204
    assert s3.delete_object(Bucket=bucket, Key="never")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b""
    assert got["ETag"] == f'"{md5_hex(b"")}"'
    assert got["ContentLength"] == 0


def test_metadata_and_standard_headers_round_trip(s3: Any, bucket: str) -> None:
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    s3.put_object(Bucket=bucket, Key="m", Body=b"x", Metadata={"color": "blue", "owner-name": "Ann"},
                  ContentType="text/plain; charset=utf-8", ContentEncoding="identity",
                  ContentDisposition='attachment; filename="a.txt"', CacheControl="max-age=60",
                  ContentLanguage="en-GB", Expires=expires)
    for resp in (s3.head_object(Bucket=bucket, Key="m"), s3.get_object(Bucket=bucket, Key="m")):
        assert resp["Metadata"] == {"color": "blue", "owner-name": "Ann"}
        assert resp["ContentType"] == "text/plain; charset=utf-8"
        assert resp["ContentEncoding"] == "identity"
        assert resp["ContentDisposition"] == 'attachment; filename="a.txt"'
        assert resp["CacheControl"] == "max-age=60"
        assert resp["ContentLanguage"] == "en-GB"
        assert resp["Expires"] == expires


def test_aws_chunked_is_removed_from_the_stored_content_encoding(s3: Any, bucket: str) -> None:
    """Issue 25: ``aws-chunked`` frames the request body; it is not an encoding of the object, so it is not kept."""
    cases = [("gzip", "gzip"), ("deflate, gzip", "deflate, gzip"), ("gzip, aws-chunked", "gzip"),
             ("aws-chunked, gzip", "gzip"), ("AWS-Chunked,gzip", "gzip"), ("aws-chunked", None),
             ("aws-chunked, aws-chunked", None)]
    for sent, kept in cases:
        s3.put_object(Bucket=bucket, Key="enc", Body=b"x", ContentEncoding=sent)
        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-enc", ContentEncoding=sent)["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key="mp-enc", UploadId=upload, PartNumber=1, Body=b"y")["ETag"]
        s3.complete_multipart_upload(Bucket=bucket, Key="mp-enc", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        s3.copy_object(Bucket=bucket, Key="copy-enc", CopySource=f"{bucket}/enc", MetadataDirective="REPLACE",
                       ContentEncoding=sent)
        for key in ("enc", "mp-enc", "copy-enc"):
            assert s3.head_object(Bucket=bucket, Key=key).get("ContentEncoding") == kept, (sent, key)


# --- ranges and parts --------------------------------------------------------------------------------------------

BODY = bytes(range(256)) * 4  # 1024 bytes



RANGES = [
    ("bytes=0-9", 0, 9),
    ("bytes=100-199", 100, 199),
    ("bytes=1000-", 1000, 1023),
    ("bytes=-24", 1000, 1023),
    ("bytes=1000-5000", 1000, 1023),
    ("bytes=-5000", 0, 1023),
]


@pytest.mark.parametrize(("header", "start", "end"), RANGES)
def test_range_get(s3: Any, bucket: str, header: str, start: int, end: int) -> None:
    _check_range(s3, bucket, header, start, end)


@pytest.mark.parametrize(("header", "start", "end"), RANGES)
def test_range_get_without_checksum_mode(server: Any, bucket: str, header: str, start: int, end: int) -> None:
    """Same ranges with a client that does not ask for checksums: the range logic itself."""
    _check_range(make_client(server.endpoint, response_checksum_validation="when_required"), bucket, header,
                 start, end)


def _check_range(s3: Any, bucket: str, header: str, start: int, end: int) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=BODY)
    got = s3.get_object(Bucket=bucket, Key="r", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {start}-{end}/1024"
    assert got["ContentLength"] == end - start + 1
    assert got["Body"].read() == BODY[start:end + 1]


def test_range_unsatisfiable(s3: Any, bucket: str) -> None:
    _check_unsatisfiable(s3, bucket)


def test_range_unsatisfiable_without_checksum_mode(server: Any, bucket: str) -> None:
    _check_unsatisfiable(make_client(server.endpoint, response_checksum_validation="when_required"), bucket)


def test_range_unsatisfiable_raw(server: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=BODY)
    url = make_client(server.endpoint, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "r"})
    r = requests.get(url, headers={"Range": "bytes=5000-"})
    assert r.status_code == 416
    assert "<Code>InvalidRange</Code>" in r.text
    assert r.headers["Content-Range"] == "bytes */1024"


def _check_unsatisfiable(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=BODY)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=1024-2000")
    assert err(exc) == ("InvalidRange", 416)
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */1024"


def test_part_number_get_on_multipart_object(s3: Any, bucket: str) -> None:
    p1, p2 = b"a" * (5 * 1024 * 1024), b"b" * 1234
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["PartsCount"] == 2
    assert got["ContentRange"] == f"bytes {len(p1)}-{len(p1) + len(p2) - 1}/{len(p1) + len(p2)}"
    assert got["Body"].read() == p2
    head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=1)
    assert head["ContentLength"] == len(p1)
    assert head["PartsCount"] == 2
    # issue 25: a part number past the object's parts is 400 InvalidPart (for HEAD too), not 416
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert err(exc) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    s3.put_object(Bucket=bucket, Key="single", Body=b"body")
    assert s3.get_object(Bucket=bucket, Key="single", PartNumber=1)["Body"].read() == b"body"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=2)
    assert err(exc) == ("InvalidPart", 400)


def test_response_overrides(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"data", ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="o", ResponseContentType="application/x-custom",
                        ResponseContentDisposition="inline; filename=z", ResponseCacheControl="no-store",
                        ResponseContentLanguage="fr", ResponseContentEncoding="gzip",
                        ResponseExpires=dt.datetime(2031, 5, 6, tzinfo=dt.UTC))
    assert got["ContentType"] == "application/x-custom"
    assert got["ContentDisposition"] == "inline; filename=z"
    assert got["CacheControl"] == "no-store"
    assert got["ContentLanguage"] == "fr"
    assert got["ContentEncoding"] == "gzip"
    assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Tue, 06 May 2031 00:00:00 GMT"
    assert got["Body"].read() == b"data"


# --- conditionals ----------------------------------------------------------------------------------------------

def test_conditional_reads(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"cond")
    etag = put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="c")
    modified: dt.datetime = head["LastModified"]
    past = modified - dt.timedelta(days=1)
    future = modified + dt.timedelta(days=1)

    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"cond"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert err(exc) == ("PreconditionFailed", 412)

    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"nope"')["Body"].read() == b"cond"

    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)["Body"].read() == b"cond"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=future)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304

    assert s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=future)["Body"].read() == b"cond"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert err(exc) == ("PreconditionFailed", 412)

    # HEAD: 412 with no body
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_conditional_write_if_none_match_star(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert err(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


# --- copy -------------------------------------------------------------------------------------------------------

def test_copy_object_copy_directive_same_bucket(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", Metadata={"k": "v"}, ContentType="text/x-src")
    res = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert res["CopyObjectResult"]["ETag"] == f'"{md5_hex(b"copy me")}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"copy me"
    assert got["Metadata"] == {"k": "v"}
    assert got["ContentType"] == "text/x-src"


def test_copy_object_replace_directive_other_bucket(s3: Any, bucket: str) -> None:
    other = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"old": "1"}, ContentType="text/old")
    s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"new": "2"}, ContentType="text/new")
    got = s3.get_object(Bucket=other, Key="dst")
    assert got["Body"].read() == b"payload"
    assert got["Metadata"] == {"new": "2"}
    assert got["ContentType"] == "text/new"


def test_copy_object_to_itself_requires_replace(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="self", Body=b"s", Metadata={"a": "1"})
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert err(exc) == ("InvalidRequest", 400)
    s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                   MetadataDirective="REPLACE", Metadata={"a": "2"})
    assert s3.head_object(Bucket=bucket, Key="self")["Metadata"] == {"a": "2"}


def test_copy_source_if_match_failure(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="src", Body=b"abc")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                       CopySourceIfMatch='"ffffffffffffffffffffffffffffffff"')
    assert err(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="dst")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   CopySourceIfMatch=put["ETag"])
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"abc"


def test_copy_missing_source(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})
    assert err(exc) == ("NoSuchKey", 404)


# --- DeleteObjects ----------------------------------------------------------------------------------------------

def test_delete_objects_verbose_and_quiet(s3: Any, bucket: str) -> None:
    for k in ("a", "b", "c", "d"):
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    verbose = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]})
    assert sorted(d["Key"] for d in verbose["Deleted"]) == ["a", "b", "zz"]
    assert "Errors" not in verbose
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet
    assert "Errors" not in quiet
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["d"]


# --- tagging ----------------------------------------------------------------------------------------------------

def test_object_tagging(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1&b=two%20words")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [
        {"Key": "a", "Value": "1"}, {"Key": "b", "Value": "two words"}]
    assert s3.get_object(Bucket=bucket, Key="t")["TagCount"] == 2
    # the header's order is not kept: a tag set reads back in key order, whichever way it was written
    s3.put_object(Bucket=bucket, Key="order", Body=b"x", Tagging="foo=bar&bar")
    assert s3.get_object_tagging(Bucket=bucket, Key="order")["TagSet"] == [
        {"Key": "bar", "Value": ""}, {"Key": "foo", "Value": "bar"}]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "x", "Value": "y"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "x", "Value": "y"}]
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="missing")
    assert err(exc) == ("NoSuchKey", 404)


# --- digests and checksums --------------------------------------------------------------------------------------

def test_content_md5_wrong_is_bad_digest(s3: Any, bucket: str) -> None:
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"body", ContentMD5=wrong)
    assert err(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="md5")
    right = base64.b64encode(hashlib.md5(b"body").digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=b"body", ContentMD5=right)
    assert s3.get_object(Bucket=bucket, Key="md5")["Body"].read() == b"body"


def test_content_md5_malformed_is_invalid_digest(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"body", ContentMD5="not-base64!!")
    assert err(exc) == ("InvalidDigest", 400)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_checksum_sha256_round_trip(s3: Any, bucket: str) -> None:
    body = b"checksummed body" * 50
    expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="sha", Body=body, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == expected
    got = s3.get_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == expected
    assert got["Body"].read() == body
    head = s3.head_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected


def test_checksum_crc32c_round_trip(s3: Any, bucket: str) -> None:
    body = b"crc32c body " * 31
    expected = base64.b64encode(_crc32c(body).to_bytes(4, "big")).decode()
    put = s3.put_object(Bucket=bucket, Key="crc", Body=body, ChecksumAlgorithm="CRC32C")
    assert put["ChecksumCRC32C"] == expected
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == expected
    assert got["Body"].read() == body


def test_default_checksum_crc32_stored(s3: Any, bucket: str) -> None:
    """boto3 >= 1.36 sends a CRC32 trailer by default; the server must keep and return it."""
    body = b"default checksum"
    expected = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    s3.put_object(Bucket=bucket, Key="d", Body=body)
    got = s3.get_object(Bucket=bucket, Key="d", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == expected


def test_wrong_checksum_header_is_bad_digest(s3: Any, bucket: str) -> None:
    wrong = base64.b64encode(hashlib.sha256(b"nope").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"body", ChecksumSHA256=wrong)
    assert err(exc)[1] == 400
    assert err(exc)[0] in ("BadDigest", "XAmzContentChecksumMismatch")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")


# --- error codes ------------------------------------------------------------------------------------------------

def test_no_such_key_and_bucket(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert err(exc) == ("NoSuchKey", 404)
    assert exc.value.response["Error"]["Key"] == "nope"
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=missing, Key="k")
    assert err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=missing, Key="k", Body=b"x")
    assert err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=missing)
    assert err(exc) == ("NoSuchBucket", 404)


# --- buckets ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ab", "UPPERcase", "bad_underscore", "-leading", "192.168.1.1", "a..b",
                                  "x" * 64])
def test_create_bucket_invalid_name(s3: Any, name: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name)
    assert err(exc) == ("InvalidBucketName", 400)


def test_bucket_lifecycle(s3: Any) -> None:
    name = f"life-{uuid.uuid4().hex[:12]}"
    created = s3.create_bucket(Bucket=name)
    assert created["Location"] == f"/{name}"
    s3.put_object(Bucket=name, Key="kept", Body=b"x")
    again = s3.create_bucket(Bucket=name)  # us-east-1: re-creating one's own bucket is 200 and changes nothing
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == ["kept"]
    s3.delete_object(Bucket=name, Key="kept")
    head = s3.head_bucket(Bucket=name)
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    loc = s3.get_bucket_location(Bucket=name)
    assert loc["LocationConstraint"] is None  # us-east-1 is reported as an empty constraint
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert err(exc) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="k")
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert err(exc) == ("NoSuchBucket", 404)


# --- versioning -------------------------------------------------------------------------------------------------

def test_versioning(s3: Any, bucket: str) -> None:
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"two")["VersionId"]
    assert v1 and v2 and v1 != v2 and v1 != "null"
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"two"
    got1 = s3.get_object(Bucket=bucket, Key="v", VersionId=v1)
    assert got1["Body"].read() == b"one"
    assert got1["VersionId"] == v1
    marker = s3.delete_object(Bucket=bucket, Key="v")
    assert marker["DeleteMarker"] is True
    marker_id = marker["VersionId"]
    assert marker_id not in (v1, v2)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="v")
    assert err(exc) == ("NoSuchKey", 404)
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v2)["Body"].read() == b"two"
    versions = s3.list_object_versions(Bucket=bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [(v2, False), (v1, False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in versions["DeleteMarkers"]] == [(marker_id, True)]
    # removing the delete marker restores v2
    s3.delete_object(Bucket=bucket, Key="v", VersionId=marker_id)
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"two"
    # permanently deleting a version
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"one"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_get_missing_version(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="v", Body=b"one")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="v", VersionId="doesnotexist")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)
    assert exc.value.response["Error"]["Code"] in ("NoSuchVersion", "InvalidArgument")


# --- bucket tagging and CORS ------------------------------------------------------------------------------------

def test_bucket_tagging(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert err(exc) == ("NoSuchTagSet", 404)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "env", "Value": "test"},
                                                             {"Key": "team", "Value": "s4"}]})
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "test"), ("team", "s4")]
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert err(exc) == ("NoSuchTagSet", 404)


def test_cors_config_and_preflight(server: Any, s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert err(exc) == ("NoSuchCORSConfiguration", 404)
    rules = [{"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["GET", "PUT"],
              "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 300}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://app.example.com"]
    assert got[0]["AllowedMethods"] == ["GET", "PUT"]
    assert got[0]["MaxAgeSeconds"] == 300
    url = f"{server.endpoint}/{bucket}/some-key"
    ok = requests.options(url, headers={"Origin": "https://app.example.com",
                                        "Access-Control-Request-Method": "PUT",
                                        "Access-Control-Request-Headers": "content-type"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Max-Age"] == "300"
    denied = requests.options(url, headers={"Origin": "https://evil.example.com",
                                            "Access-Control-Request-Method": "GET"})
    assert denied.status_code == 403
    assert "Access-Control-Allow-Origin" not in denied.headers
    bad_method = requests.options(url, headers={"Origin": "https://app.example.com",
                                                "Access-Control-Request-Method": "DELETE"})
    assert bad_method.status_code == 403
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert err(exc) == ("NoSuchCORSConfiguration", 404)
    gone = requests.options(url, headers={"Origin": "https://app.example.com",
                                          "Access-Control-Request-Method": "GET"})
    assert gone.status_code == 403


# --- request ids and health -------------------------------------------------------------------------------------

def test_request_id_on_success_and_error(server: Any, s3: Any, bucket: str) -> None:
    ok = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert ok["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="missing")
    rid = exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    assert rid
    assert exc.value.response["Error"].get("RequestId", rid) == rid
    anon = requests.get(f"{server.endpoint}/{bucket}/k")
    assert anon.status_code == 403
    assert anon.headers["x-amz-request-id"]
    assert f"<RequestId>{anon.headers['x-amz-request-id']}</RequestId>" in anon.text


@pytest.mark.parametrize("path", ["/health", "/minio/health/live", "/minio/health/ready"])
def test_health_without_auth(server: Any, path: str) -> None:
    r = requests.get(server.endpoint + path)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["x-amz-request-id"]
    h = requests.head(server.endpoint + path)
    assert h.status_code == 200


def test_last_modified_is_http_date(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="lm", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="lm")
    now = dt.datetime.now(dt.UTC)
    assert abs((now - head["LastModified"]).total_seconds()) < 120
    raw = head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
    assert raw == format_datetime(head["LastModified"].astimezone(dt.UTC), usegmt=True)


def test_put_without_content_length_is_411_and_stores_nothing(s3: Any, bucket: str) -> None:
    """A PUT with neither Content-Length nor Transfer-Encoding has an empty body in HTTP/1.1: S3 answers 411
    MissingContentLength instead of storing an empty object. A chunked body of unknown length is still taken."""
    import http.client
    from urllib.parse import urlsplit

    def put(key: str, chunked: bool) -> tuple[int, bytes]:
        url = urlsplit(s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}))
        conn = http.client.HTTPConnection(url.netloc, timeout=30)
        try:
            if chunked:
                conn.request("PUT", f"{url.path}?{url.query}", body=iter([b"ab", b"c"]), encode_chunked=True)
            else:
                conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
                conn.endheaders()
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    status, body = put("no-length", chunked=False)
    assert status == 411 and b"<Code>MissingContentLength</Code>" in body
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="no-length")
    assert exc.value.response["Error"]["Code"] == "404"
    assert put("chunked", chunked=True)[0] == 200
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == b"abc"


def test_recreating_an_owned_bucket_outside_us_east_1_is_409(tmp_path: Any) -> None:
    """S3's legacy 200 for re-creating one's own bucket is us-east-1's alone; every other region answers 409."""
    from helpers.server import ServerProcess
    server = ServerProcess(tmp_path / "data", env={"S4_REGION": "eu-west-1"}).start()
    try:
        client = make_client(server.endpoint, "eu-west-1")
        client.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        with pytest.raises(ClientError) as exc:
            client.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert err(exc) == ("BucketAlreadyOwnedByYou", 409)
    finally:
        server.stop()


def test_delete_in_a_deleted_bucket_is_no_such_bucket(s3: Any, bucket: str) -> None:
    """s3-tests' object_delete_key_bucket_gone: the bucket is gone, so the delete names it (404 NoSuchBucket),
    never a 204 for a key that cannot exist."""
    s3.put_object(Bucket=bucket, Key="foo", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="foo")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="foo")
    assert err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "foo"}]})
    assert err(exc) == ("NoSuchBucket", 404)


def test_unknown_canned_acl_is_400_not_501(s3: Any, bucket: str) -> None:
    """An x-amz-acl value S3 does not define is bad input (400 InvalidArgument) and changes nothing."""
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-everything")
    assert err(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=f"{bucket}-acl", ACL="public-everything")
    assert err(exc) == ("InvalidArgument", 400)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert f"{bucket}-acl" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
