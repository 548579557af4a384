"""Issue 18, item 4: every key S3 allows (up to 1,024 bytes of UTF-8, any segment lengths) works in every
operation, and the `tokens` database no longer mixes two key spaces (a bucket named `mpu`).

LMDB refuses keys over 511 bytes; before the fix a 504-byte single-segment key, a multipart upload of a key over
~458 bytes and a rename to a 600-byte key answered 500.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024

# Shapes that cross the namespace's piece boundary (480 bytes) and LMDB's key limit (511) in different places.
SHAPES = {
    "one-504": "k" * 504,
    "one-1024": "z" * 1024,
    "one-1024-utf8": "é" * 512,
    "slashes": "/" * 1023 + "x",
    "long-dir": "d" * 700 + "/" + "leaf",
    "long-dir-slash": "d" * 700 + "/",
    "dir-480": "p" * 479 + "/" + "q" * 500,
    "dir-960": "p" * 959 + "/" + "r",
    "shared-a": "s" * 900 + "a",
    "shared-b": "s" * 900 + "b",
    "shared-dir": "s" * 900 + "/c",
    "shared-dot": "s" * 900 + ".c",
    "short": "s",
}


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def all_keys(s3: Any, bucket: str, page_size: int, **kwargs: Any) -> tuple[list[str], list[str]]:
    """Every key and common prefix of a v2 listing, page by page (bounded)."""
    keys: list[str] = []
    prefixes: list[str] = []
    args: dict[str, Any] = {"Bucket": bucket, "MaxKeys": page_size, **kwargs}
    for _ in range(200):
        page = s3.list_objects_v2(**args)
        keys += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            return keys, prefixes
        args["ContinuationToken"] = page["NextContinuationToken"]
    raise AssertionError("listing did not end")


def sort_bytes(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode())


def test_issue18_504_byte_key_put_get_head_delete_list(s3: Any, bucket: str) -> None:
    key = "k" * 504
    s3.put_object(Bucket=bucket, Key=key, Body=b"long")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"long"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 4
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket, Prefix="k" * 500)["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key=key)
    assert err(exc)[1] == 404


def test_issue18_every_key_shape_in_every_listing(s3: Any, bucket: str) -> None:
    keys = sort_bytes(SHAPES.values())
    for key in keys:
        assert len(key.encode()) <= 1024
        s3.put_object(Bucket=bucket, Key=key, Body=hashlib.sha256(key.encode()).digest())
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == hashlib.sha256(key.encode()).digest()
    for page_size in (1, 2, 1000):
        assert all_keys(s3, bucket, page_size) == (keys, [])
        listed, prefixes = all_keys(s3, bucket, page_size, Delimiter="/")
        cps = {k[: k.index("/") + 1] for k in keys if "/" in k}
        assert listed == [k for k in keys if "/" not in k]
        assert prefixes == sort_bytes(cps)
    start = "s" * 900
    assert all_keys(s3, bucket, 2, StartAfter=start)[0] == [k for k in keys if k.encode() > start.encode()]
    assert all_keys(s3, bucket, 2, Prefix=start)[0] == [k for k in keys if k.startswith(start)]
    listed, prefixes = all_keys(s3, bucket, 1, Prefix="s" * 900, Delimiter="/")
    assert listed == ["s" * 900 + ".c", "s" * 900 + "a", "s" * 900 + "b"]
    assert prefixes == ["s" * 900 + "/"]
    listed, prefixes = all_keys(s3, bucket, 1, Prefix="d" * 700 + "/", Delimiter="/")
    assert listed == ["d" * 700 + "/", "d" * 700 + "/leaf"]
    # v1 with a marker longer than any key, and one that is itself a long common prefix
    v1 = s3.list_objects(Bucket=bucket, Marker="z" * 2000)
    assert [o["Key"] for o in v1["Contents"]] == ["é" * 512]
    marker = "p" * 959 + "/"  # a common prefix itself: the listing resumes after everything under it
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=marker)
    assert [p["Prefix"] for p in v1.get("CommonPrefixes", [])] == sort_bytes(
        {k[: k.index("/") + 1] for k in keys if "/" in k and k[: k.index("/") + 1].encode() > marker.encode()})
    assert [o["Key"] for o in v1.get("Contents", [])] == [
        k for k in keys if "/" not in k and k.encode() > marker.encode()]
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)


def test_issue18_1025_byte_key_is_key_too_long(s3: Any, bucket: str) -> None:
    for key in ("x" * 1025, "é" * 512 + "x", "a/" * 512 + "b"):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert err(exc) == ("KeyTooLongError", 400)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_issue18_multipart_of_a_1000_byte_key(s3: Any, bucket: str) -> None:
    key = "m" * 600 + "/" + "n" * 399
    other = "m" * 600 + "/" + "o" * 399
    parts = [b"a" * (5 * MiB), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    up2 = s3.create_multipart_upload(Bucket=bucket, Key=other)["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    listed = s3.list_multipart_uploads(Bucket=bucket, Prefix="m" * 600)
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [(key, up), (other, up2)]
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=1)
    assert [u["Key"] for u in page["Uploads"]] == [key] and page["IsTruncated"]
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker=page["NextKeyMarker"],
                                     UploadIdMarker=page["NextUploadIdMarker"])
    assert [u["Key"] for u in page["Uploads"]] == [other]
    grouped = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["m" * 600 + "/"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]] == [1, 2]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done})
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts)
    s3.abort_multipart_upload(Bucket=bucket, Key=other, UploadId=up2)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_issue18_rename_to_600_byte_key_and_prefix_under_long_names(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"one")
    dst = "r" * 600
    s3.rename_object(Bucket=bucket, Key=dst, RenameSource=f"/{bucket}/src", ClientToken="t" * 1000)
    assert s3.get_object(Bucket=bucket, Key=dst)["Body"].read() == b"one"
    # the same long client token again is an idempotent retry
    s3.rename_object(Bucket=bucket, Key=dst, RenameSource=f"/{bucket}/src", ClientToken="t" * 1000)
    long_dir = "L" * 500 + "/"
    names = [long_dir + "a", long_dir + "b" * 400, long_dir + "sub/" + "c" * 300, "L" * 500 + "0"]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode())
    up = s3.create_multipart_upload(Bucket=bucket, Key=long_dir + "up" * 200)["UploadId"]
    new_dir = "N" * 480 + "/" + "M" * 200 + "/"
    s3.rename_object(Bucket=bucket, Key=new_dir, RenameSource=f"/{bucket}/{long_dir}")
    moved = [new_dir + n[len(long_dir):] for n in names[:3]]
    assert all_keys(s3, bucket, 2)[0] == sort_bytes([*moved, names[3], dst])
    for old, new in zip(names, moved, strict=False):
        assert s3.get_object(Bucket=bucket, Key=new)["Body"].read() == old.encode()
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(new_dir + "up" * 200, up)]


def test_issue18_versions_and_tags_on_long_keys(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    key = "v" * 1000 + "/é"
    ids = [s3.put_object(Bucket=bucket, Key=key, Body=str(i).encode())["VersionId"] for i in range(3)]
    s3.delete_object(Bucket=bucket, Key=key)
    listed = s3.list_object_versions(Bucket=bucket, Prefix="v" * 1000)
    assert [v["VersionId"] for v in listed["Versions"]] == ids[::-1]
    assert len(listed["DeleteMarkers"]) == 1
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    rest = s3.list_object_versions(Bucket=bucket, KeyMarker=page["NextKeyMarker"],
                                   VersionIdMarker=page["NextVersionIdMarker"])
    assert [v["VersionId"] for v in rest["Versions"]] == ids[:2][::-1]
    s3.put_object_tagging(Bucket=bucket, Key=key, VersionId=ids[0], Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=ids[0])["TagSet"] == [{"Key": "k", "Value": "v"}]
    assert s3.get_object(Bucket=bucket, Key=key, VersionId=ids[1])["Body"].read() == b"1"
    with pytest.raises(ClientError) as exc:  # a version id no server could have issued, longer than LMDB allows
        s3.get_object(Bucket=bucket, Key=key, VersionId="x" * 600)
    assert err(exc)[1] in (400, 404)


def test_issue18_long_upload_id_is_no_such_upload(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="k", UploadId="u" * 600)
    assert err(exc) == ("NoSuchUpload", 404)


def test_issue18_deleting_bucket_mpu_keeps_completed_upload_records(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="obj", UploadId=up, PartNumber=1, Body=b"part")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=up, MultipartUpload=parts)
    try:
        s3.create_bucket(Bucket="mpu")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    s3.delete_bucket(Bucket="mpu")
    retry = s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=up, MultipartUpload=parts)
    assert retry["ETag"] == first["ETag"]
