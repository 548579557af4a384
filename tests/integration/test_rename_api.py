"""RenameObject through boto3: single keys, whole prefixes, every condition header and the hard cases."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.exceptions import ClientError


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def body(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def put_all(s3: Any, bucket: str, names: list[str]) -> None:
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode())


def test_rename_single_key(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a.txt", "other"])
    etag = s3.head_object(Bucket=bucket, Key="a.txt")["ETag"]
    s3.rename_object(Bucket=bucket, Key="dir/b.txt", RenameSource=f"/{bucket}/a.txt")
    assert keys(s3, bucket) == ["dir/b.txt", "other"]
    assert body(s3, bucket, "dir/b.txt") == b"a.txt"
    assert s3.head_object(Bucket=bucket, Key="dir/b.txt")["ETag"] == etag
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="a.txt")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_rename_prefix_moves_everything(s3: Any, bucket: str) -> None:
    names = ["photos/2024/a.jpg", "photos/2024/b.jpg", "photos/c.jpg", "photos/", "photosx", "photos.txt"]
    put_all(s3, bucket, names)
    s3.rename_object(Bucket=bucket, Key="albums/old/", RenameSource=f"/{bucket}/photos/")
    assert keys(s3, bucket) == ["albums/old/", "albums/old/2024/a.jpg", "albums/old/2024/b.jpg", "albums/old/c.jpg",
                                "photos.txt", "photosx"]
    assert body(s3, bucket, "albums/old/2024/b.jpg") == b"photos/2024/b.jpg"
    listed = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["albums/"]


def test_rename_missing_source(s3: Any, bucket: str) -> None:
    for key, src in (("x", "nope"), ("y/", "nope/")):
        with pytest.raises(ClientError) as exc:
            s3.rename_object(Bucket=bucket, Key=key, RenameSource=f"/{bucket}/{src}")
        assert error(exc) == ("NoSuchKey", 404)


def test_rename_prefix_into_own_subtree_refused(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a/1"])
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="a/b/", RenameSource=f"/{bucket}/a/")
    assert error(exc) == ("InvalidRequest", 400)
    assert keys(s3, bucket) == ["a/1"]


def test_rename_prefix_onto_existing_refused_unless_merge(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["src/1", "src/sub/2", "dst/1", "dst/3"])
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="dst/", RenameSource=f"/{bucket}/src/")
    assert error(exc) == ("DestinationAlreadyExists", 409)
    assert keys(s3, bucket) == ["dst/1", "dst/3", "src/1", "src/sub/2"]

    def merge_header(request: Any, **_: Any) -> None:
        request.headers["x-amz-s4-rename-merge"] = "true"

    s3.meta.events.register("before-sign.s3.RenameObject", merge_header)
    try:
        s3.rename_object(Bucket=bucket, Key="dst/", RenameSource=f"/{bucket}/src/")
    finally:
        s3.meta.events.unregister("before-sign.s3.RenameObject", merge_header)
    assert keys(s3, bucket) == ["dst/1", "dst/3", "dst/sub/2"]
    assert body(s3, bucket, "dst/1") == b"src/1"  # the source wins on a conflict


def test_rename_key_overwrites_in_unversioned_bucket(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a", "b"])
    s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a")
    assert keys(s3, bucket) == ["b"]
    assert body(s3, bucket, "b") == b"a"


def test_rename_destination_conditions(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a", "b"])
    b_etag = s3.head_object(Bucket=bucket, Key="b")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", DestinationIfNoneMatch="*")
    assert error(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", DestinationIfMatch='"0000"')
    assert error(exc) == ("PreconditionFailed", 412)
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", DestinationIfUnmodifiedSince=past)
    assert error(exc) == ("PreconditionFailed", 412)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", DestinationIfModifiedSince=future)
    assert error(exc) == ("PreconditionFailed", 412)
    assert keys(s3, bucket) == ["a", "b"]
    s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", DestinationIfMatch=b_etag,
                     DestinationIfModifiedSince=past, DestinationIfUnmodifiedSince=future)
    assert keys(s3, bucket) == ["b"]
    s3.rename_object(Bucket=bucket, Key="c", RenameSource=f"/{bucket}/b", DestinationIfNoneMatch="*")
    assert keys(s3, bucket) == ["c"]


def test_rename_source_conditions(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a"])
    etag = s3.head_object(Bucket=bucket, Key="a")["ETag"]
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    failing = [{"SourceIfMatch": '"0000"'}, {"SourceIfNoneMatch": etag}, {"SourceIfModifiedSince": future},
               {"SourceIfUnmodifiedSince": past}]
    for condition in failing:
        with pytest.raises(ClientError) as exc:
            s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", **condition)
        assert error(exc) == ("PreconditionFailed", 412), condition
    assert keys(s3, bucket) == ["a"]
    s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a", SourceIfMatch=etag,
                     SourceIfNoneMatch='"0000"', SourceIfModifiedSince=past, SourceIfUnmodifiedSince=future)
    assert keys(s3, bucket) == ["b"]


def test_rename_client_token_idempotent(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["p/1", "p/2"])
    for _ in range(3):  # retries of the same request succeed without doing anything more
        s3.rename_object(Bucket=bucket, Key="q/", RenameSource=f"/{bucket}/p/", ClientToken="token-1")
    assert keys(s3, bucket) == ["q/1", "q/2"]
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="r/", RenameSource=f"/{bucket}/q/", ClientToken="token-1")
    assert error(exc) == ("IdempotencyParameterMismatch", 400)
    assert keys(s3, bucket) == ["q/1", "q/2"]


def test_rename_versioned_history_moves(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="docs/f", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="docs/f", Body=b"two")["VersionId"]
    s3.rename_object(Bucket=bucket, Key="archive/", RenameSource=f"/{bucket}/docs/")
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions] == [
        ("archive/f", v2, True), ("archive/f", v1, False)]
    assert s3.get_object(Bucket=bucket, Key="archive/f", VersionId=v1)["Body"].read() == b"one"
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    with pytest.raises(ClientError) as exc:  # would drop x's history: refused in a versioned bucket
        s3.rename_object(Bucket=bucket, Key="x", RenameSource=f"/{bucket}/archive/f")
    assert error(exc) == ("DestinationAlreadyExists", 409)


def test_rename_moves_inflight_multipart_upload(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="in/progress.bin")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="in/progress.bin", UploadId=upload, PartNumber=1, Body=b"data")
    put_all(s3, bucket, ["in/done"])
    s3.rename_object(Bucket=bucket, Key="out/", RenameSource=f"/{bucket}/in/")
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("out/progress.bin", upload)]
    s3.complete_multipart_upload(Bucket=bucket, Key="out/progress.bin", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert keys(s3, bucket) == ["out/done", "out/progress.bin"]


def test_rename_then_put_to_old_prefix(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["old/1"])
    s3.rename_object(Bucket=bucket, Key="new/", RenameSource=f"/{bucket}/old/")
    put_all(s3, bucket, ["old/2"])  # a write after the rename creates the old prefix afresh
    assert keys(s3, bucket) == ["new/1", "old/2"]


def test_rename_source_must_be_same_bucket(s3: Any, bucket: str) -> None:
    put_all(s3, bucket, ["a"])
    with pytest.raises(ClientError) as exc:
        s3.rename_object(Bucket=bucket, Key="b", RenameSource="/some-other-bucket/a")
    assert error(exc) == ("InvalidRequest", 400)


def test_s4_admin_rename_cli(server: Any, s3: Any, bucket: str) -> None:
    import subprocess

    from helpers.server import ACCESS_KEY, SECRET_KEY

    put_all(s3, bucket, ["cli/a", "cli/b/c", "keep"])
    done = subprocess.run(["s4-admin", "--endpoint", server.endpoint, "--access-key", ACCESS_KEY, "--secret-key",
                           SECRET_KEY, "rename", bucket, "cli/", "moved/"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "renamed" in done.stdout
    assert keys(s3, bucket) == ["keep", "moved/a", "moved/b/c"]
    done = subprocess.run(["s4-admin", "--endpoint", server.endpoint, "--access-key", ACCESS_KEY, "--secret-key",
                           SECRET_KEY, "rename", bucket, "missing/", "x/"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "NoSuchKey" in done.stderr
