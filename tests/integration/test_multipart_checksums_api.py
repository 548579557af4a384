"""Checksums end to end on multipart uploads (issue 22), through boto3 against a real server: boto3's default
settings (CRC32 on every part) give a composite CRC that comes back on HEAD with ChecksumMode=ENABLED; CRC64NVME
uploads are FULL_OBJECT; a wrong whole-object or part checksum on Complete is refused and changes nothing.
Before the fix a completion dropped the client's CRC and accepted any whole-object value."""

from __future__ import annotations

import base64
import io
import zlib
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from s4.engine.checksums import checksum_of, composite_checksum, crc64nvme_available

MiB = 1024 * 1024
BODIES = [bytes([65 + i]) * (5 * MiB) for i in range(2)] + [b"tail of the object"]


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _upload_parts(s3: Any, bucket: str, key: str, algorithm: str, **create: Any) -> tuple[str, list[dict[str, Any]]]:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, **create)["UploadId"]
    parts = []
    for number, body in enumerate(BODIES, start=1):
        answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=number, Body=body,
                                ChecksumAlgorithm=algorithm)
        parts.append({"ETag": answer["ETag"], "PartNumber": number,
                      f"Checksum{algorithm}": answer[f"Checksum{algorithm}"]})
    return up, parts


def test_boto3_default_multipart_composite_crc_comes_back_on_head(s3: Any, bucket: str) -> None:
    body = b"".join(BODIES)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(body), bucket, "default", Config=config)  # boto3's default checksum settings
    head = s3.head_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")
    expected = composite_checksum("CRC32", [_crc32(b) for b in BODIES])
    assert head["ChecksumCRC32"] == expected and expected.endswith("-3")
    assert head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got["ChecksumCRC32"] == expected
    attrs = s3.get_object_attributes(Bucket=bucket, Key="default", ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {"ChecksumCRC32": expected, "ChecksumType": "COMPOSITE"}
    part = s3.head_object(Bucket=bucket, Key="default", PartNumber=2, ChecksumMode="ENABLED")
    assert part["ChecksumCRC32"] == _crc32(BODIES[1])


def test_complete_answers_and_lists_the_uploads_checksum(s3: Any, bucket: str) -> None:
    up, parts = _upload_parts(s3, bucket, "sha", "SHA256")
    listed = s3.list_parts(Bucket=bucket, Key="sha", UploadId=up)
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("SHA256", "COMPOSITE")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="sha", UploadId=up, MultipartUpload={"Parts": parts})
    expected = composite_checksum("SHA256", [checksum_of("SHA256", b) for b in BODIES])
    assert done["ChecksumSHA256"] == expected and done["ChecksumType"] == "COMPOSITE"


@pytest.mark.skipif(not crc64nvme_available(), reason="awscrt not installed")
def test_crc64nvme_multipart_is_full_object(s3: Any, bucket: str) -> None:
    up, parts = _upload_parts(s3, bucket, "nvme", "CRC64NVME")
    whole = checksum_of("CRC64NVME", b"".join(BODIES))
    done = s3.complete_multipart_upload(Bucket=bucket, Key="nvme", UploadId=up, MultipartUpload={"Parts": parts},
                                        ChecksumCRC64NVME=whole, ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC64NVME"] == whole
    head = s3.head_object(Bucket=bucket, Key="nvme", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC64NVME"], head["ChecksumType"]) == (whole, "FULL_OBJECT")


def test_wrong_full_object_checksum_on_complete_changes_nothing(s3: Any, bucket: str) -> None:
    up, parts = _upload_parts(s3, bucket, "full", "CRC32", ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=up, MultipartUpload={"Parts": parts},
                                     ChecksumCRC32=_crc32(b"not the object"), ChecksumType="FULL_OBJECT")
    assert err.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="full")
    assert missing.value.response["Error"]["Code"] == "404"
    assert len(s3.list_parts(Bucket=bucket, Key="full", UploadId=up)["Parts"]) == 3  # the upload is untouched
    whole = _crc32(b"".join(BODIES))
    done = s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=up, MultipartUpload={"Parts": parts},
                                        ChecksumCRC32=whole, ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC32"] == whole
    head = s3.head_object(Bucket=bucket, Key="full", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (whole, "FULL_OBJECT")


def test_wrong_part_checksum_on_complete_is_invalid_part(s3: Any, bucket: str) -> None:
    up, parts = _upload_parts(s3, bucket, "wrongpart", "CRC32C")
    parts[1]["ChecksumCRC32C"] = checksum_of("CRC32C", b"other bytes")
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket, Key="wrongpart", UploadId=up, MultipartUpload={"Parts": parts})
    assert err.value.response["Error"]["Code"] == "InvalidPart"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="wrongpart")


def test_part_with_another_algorithm_is_refused(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="mix", ChecksumAlgorithm="CRC32")["UploadId"]
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="mix", UploadId=up, PartNumber=1, Body=b"x", ChecksumAlgorithm="SHA1")
    assert err.value.response["Error"]["Code"] == "InvalidRequest"
