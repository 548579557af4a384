"""GetObjectAttributes against a real server with boto3: the asked attributes only, parts paged, checksums of a
single PUT and of every part, versions, and S3's errors."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
MiB = 1024 * 1024


def test_single_put_has_no_parts_and_answers_what_was_asked(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="obj", Body=b"foo")["ETag"].strip('"')
    got = s3.get_object_attributes(Bucket=bucket, Key="obj", ObjectAttributes=ALL)
    assert (got["ETag"], got["ObjectSize"], got["StorageClass"]) == (etag, 3, "STANDARD")
    assert "ObjectParts" not in got and "VersionId" not in got  # (boto3 sends a CRC32 by default: Checksum)
    only = s3.get_object_attributes(Bucket=bucket, Key="obj", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == 3 and "ETag" not in only and "StorageClass" not in only


def test_checksum_of_a_put(s3: Any, bucket: str) -> None:
    body = b"A" * 1024
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="ck", Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=sha)
    got = s3.get_object_attributes(Bucket=bucket, Key="ck", ObjectAttributes=ALL)
    assert got["Checksum"]["ChecksumSHA256"] == sha
    assert got["Checksum"]["ChecksumType"] == "FULL_OBJECT"


def test_multipart_parts_paged_with_each_parts_checksum(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    bodies = [bytes([65 + i]) * (5 * MiB) for i in range(5)] + [b"tail"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
        answer = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=number, Body=body,
                                ChecksumAlgorithm="SHA256", ChecksumSHA256=sha)
        parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": sha})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    whole = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=ALL)
    assert whole["ObjectSize"] == 5 * 5 * MiB + 4 and whole["ETag"] == done["ETag"].strip('"')
    listed = whole["ObjectParts"]
    assert (listed["TotalPartsCount"], listed["IsTruncated"]) == (6, False)
    assert [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in listed["Parts"]] == [
        (p["PartNumber"], len(b), p["ChecksumSHA256"]) for p, b in zip(parts, bodies, strict=True)]
    page = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1,
                                    PartNumberMarker=3)["ObjectParts"]
    assert (page["PartNumberMarker"], page["NextPartNumberMarker"], page["MaxParts"], page["IsTruncated"]) == (
        3, 4, 1, True)
    assert [p["PartNumber"] for p in page["Parts"]] == [4]
    last = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=10,
                                    PartNumberMarker=4)["ObjectParts"]
    assert [p["PartNumber"] for p in last["Parts"]] == [5, 6] and last["IsTruncated"] is False


def test_versions_and_errors(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="v", Body=b"one")
    s3.put_object(Bucket=bucket, Key="v", Body=b"three")
    old = s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=first["VersionId"], ObjectAttributes=ALL)
    assert (old["VersionId"], old["ObjectSize"]) == (first["VersionId"], 3)
    assert s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=ALL)["ObjectSize"] == 5
    with pytest.raises(ClientError) as missing:
        s3.get_object_attributes(Bucket=bucket, Key="nope", ObjectAttributes=ALL)
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as bad:
        s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=["Colour"])
    assert bad.value.response["Error"]["Code"] == "InvalidArgument"
