"""Multipart uploads against a real server."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def upload(s3: Any, bucket: str, key: str, parts: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body)["ETag"]
        assert etag == f'"{hashlib.md5(body).hexdigest()}"'
        done.append({"PartNumber": n, "ETag": etag})
    return up, done


def test_complete_multipart(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail" * 100]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="application/x-mp",
                                    Metadata={"m": "1"})
    assert up["Bucket"] == bucket and up["Key"] == "mp"
    upload_id = up["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    res = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id,
                                       MultipartUpload={"Parts": done})
    assert res["ETag"] == multipart_etag(parts)
    assert res["Key"] == "mp" and res["Bucket"] == bucket
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ETag"] == multipart_etag(parts)
    assert got["ContentType"] == "application/x-mp"
    assert got["Metadata"] == {"m": "1"}
    assert got["ContentLength"] == sum(len(p) for p in parts)
    assert got["Body"].read() == b"".join(parts)
    # the upload is gone after completion
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    assert err(exc) == ("NoSuchUpload", 404)


def test_list_parts_and_uploads(s3: Any, bucket: str) -> None:
    parts = [b"a" * (5 * MiB), b"b" * 1000, b"c" * 10]
    up, done = upload(s3, bucket, "lp", parts)
    other = s3.create_multipart_upload(Bucket=bucket, Key="other/x")["UploadId"]
    listed = s3.list_parts(Bucket=bucket, Key="lp", UploadId=up)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (d["PartNumber"], d["ETag"], len(b)) for d, b in zip(done, parts, strict=True)]
    assert listed["IsTruncated"] is False
    page1 = s3.list_parts(Bucket=bucket, Key="lp", UploadId=up, MaxParts=2)
    assert [p["PartNumber"] for p in page1["Parts"]] == [1, 2]
    assert page1["IsTruncated"] is True
    assert page1["NextPartNumberMarker"] == 2
    page2 = s3.list_parts(Bucket=bucket, Key="lp", UploadId=up, PartNumberMarker=2)
    assert [p["PartNumber"] for p in page2["Parts"]] == [3]
    uploads = s3.list_multipart_uploads(Bucket=bucket)
    assert sorted((u["Key"], u["UploadId"]) for u in uploads["Uploads"]) == [("lp", up), ("other/x", other)]
    pref = s3.list_multipart_uploads(Bucket=bucket, Prefix="other/")
    assert [(u["Key"], u["UploadId"]) for u in pref["Uploads"]] == [("other/x", other)]
    delim = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in delim["Uploads"]] == ["lp"]
    assert [p["Prefix"] for p in delim["CommonPrefixes"]] == ["other/"]
    # replacing a part keeps one entry with the new ETag
    new = s3.upload_part(Bucket=bucket, Key="lp", UploadId=up, PartNumber=3, Body=b"z" * 20)["ETag"]
    listed = s3.list_parts(Bucket=bucket, Key="lp", UploadId=up)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]][-1] == (3, new, 20)
    assert len(listed["Parts"]) == 3


def test_abort(s3: Any, bucket: str) -> None:
    up, _ = upload(s3, bucket, "ab", [b"x" * 100])
    assert s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=up)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="ab", UploadId=up)
    assert err(exc) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="ab", UploadId=up, PartNumber=2, Body=b"y")
    assert err(exc) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="ab", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert err(exc) == ("NoSuchUpload", 404)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="ab")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_invalid_part_wrong_etag(s3: Any, bucket: str) -> None:
    up, done = upload(s3, bucket, "ip", [b"a" * (5 * MiB), b"b"])
    done[1]["ETag"] = '"00000000000000000000000000000000"'
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="ip", UploadId=up, MultipartUpload={"Parts": done})
    assert err(exc) == ("InvalidPart", 400)
    # a part number never uploaded
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="ip", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": done[0]["ETag"]}, {"PartNumber": 7, "ETag": done[0]["ETag"]}]})
    assert err(exc) == ("InvalidPart", 400)
    # the upload survives a failed completion
    assert len(s3.list_parts(Bucket=bucket, Key="ip", UploadId=up)["Parts"]) == 2


def test_invalid_part_order(s3: Any, bucket: str) -> None:
    up, done = upload(s3, bucket, "po", [b"a" * (5 * MiB), b"b" * (5 * MiB), b"c"])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="po", UploadId=up,
                                     MultipartUpload={"Parts": [done[1], done[0], done[2]]})
    assert err(exc) == ("InvalidPartOrder", 400)


def test_part_resent_while_first_copy_uploads_completes_with_the_last_to_finish(s3: Any, bucket: str) -> None:
    """A client that re-sent part 1 lists both answers; the completion uses the copy stored last, and a list whose
    last entry for the number names the replaced copy is refused, leaving the upload intact."""
    up = s3.create_multipart_upload(Bucket=bucket, Key="re")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="re", UploadId=up, PartNumber=1, Body=b"B" * 100)["ETag"]
    last = s3.upload_part(Bucket=bucket, Key="re", UploadId=up, PartNumber=1, Body=b"A" * 100)["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": last}, {"PartNumber": 1, "ETag": first}]})
    assert err(exc) == ("InvalidPart", 400)
    s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 1, "ETag": last}]})
    assert s3.get_object(Bucket=bucket, Key="re")["Body"].read() == b"A" * 100


def test_entity_too_small(s3: Any, bucket: str) -> None:
    up, done = upload(s3, bucket, "small", [b"a" * (5 * MiB - 1), b"b" * 10])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=up, MultipartUpload={"Parts": done})
    assert err(exc) == ("EntityTooSmall", 400)
    # a single small part is fine (the last part may be small)
    up2, done2 = upload(s3, bucket, "single", [b"only"])
    res = s3.complete_multipart_upload(Bucket=bucket, Key="single", UploadId=up2, MultipartUpload={"Parts": done2})
    assert res["ETag"] == multipart_etag([b"only"])
    assert s3.get_object(Bucket=bucket, Key="single")["Body"].read() == b"only"


def test_upload_part_copy_with_range(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MiB + 123)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    first = 5 * MiB
    r1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{first - 1}")
    assert r1["CopyPartResult"]["ETag"] == f'"{hashlib.md5(source[:first]).hexdigest()}"'
    r2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes={first}-{len(source) - 1}")
    assert r2["CopyPartResult"]["ETag"] == f'"{hashlib.md5(source[first:]).hexdigest()}"'
    parts = [source[:first], source[first:]]
    listed = s3.list_parts(Bucket=bucket, Key="dst", UploadId=up)
    assert [p["Size"] for p in listed["Parts"]] == [first, len(source) - first]
    res = s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    assert res["ETag"] == multipart_etag(parts)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == source


def test_upload_part_copy_bad_range(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=5-100")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 416)
    assert exc.value.response["Error"]["Code"] in ("InvalidArgument", "InvalidRange")


def test_upload_fileobj_transfer_manager(s3: Any, bucket: str) -> None:
    data = os.urandom(40 * MiB + 4321)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    chunks = [data[i:i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    assert len(chunks) == 6
    assert head["ETag"] == multipart_etag(chunks)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big.bin", out, Config=cfg)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert got == data


def test_invalid_part_number(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="pn")["UploadId"]
    for bad in (0, 10001):
        with pytest.raises(ClientError) as exc:
            s3.upload_part(Bucket=bucket, Key="pn", UploadId=up, PartNumber=bad, Body=b"x")
        assert err(exc) == ("InvalidArgument", 400)


def test_no_such_upload_for_unknown_id(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="k", UploadId="not-a-real-upload", PartNumber=1, Body=b"x")
    assert err(exc) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as exc:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId="not-a-real-upload")
    assert err(exc) == ("NoSuchUpload", 404)
