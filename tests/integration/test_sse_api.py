"""Server-side encryption through boto3 against real servers (issue 22): SSE-S3, bucket default encryption, SSE-C
(PUT/GET/HEAD/ranges/copy/multipart, wrong and missing keys), no plaintext or key in the data directory, SSE-C over
plain HTTP refused by default, and kill -9 in the middle of an encrypted multipart upload."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
MIB = 1024 * 1024


def sse_c(key: bytes, copy_source: bool = False) -> dict[str, Any]:
    prefix = "CopySourceSSECustomer" if copy_source else "SSECustomer"
    return {f"{prefix}Algorithm": "AES256", f"{prefix}Key": key}  # boto3 sends it base64 with its MD5


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def marker_body(size: int, tag: bytes) -> bytes:
    """A body that is easy to search for on disk: a unique marker repeated."""
    unit = b"<plaintext-" + tag + b">"
    return (unit * (size // len(unit) + 1))[:size]


ROOT_PASSWORD = "sse-root-password-1"


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("sse") / "data", env={
        "S4_SSE_C_ALLOW_HTTP": "true", "S4_ROOT_PASSWORD": ROOT_PASSWORD}).start()
    yield proc
    proc.stop()


def admin(server: ServerProcess, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
    token = requests.post(f"{server.endpoint}/api/admin/login", json={"username": "root", "password": ROOT_PASSWORD},
                          timeout=30).json()["token"]
    return requests.request(method, f"{server.endpoint}{path}", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def s3e(sse_server: ServerProcess) -> Any:
    return make_client(sse_server.endpoint)


@pytest.fixture
def ebucket(s3e: Any) -> str:
    name = f"sse-{uuid.uuid4().hex[:12]}"
    s3e.create_bucket(Bucket=name)
    return name


def test_sse_s3_put_get_head_and_ranges(s3e: Any, ebucket: str) -> None:
    body = os.urandom(300_001)
    put = s3e.put_object(Bucket=ebucket, Key="k", Body=body, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # SSE-S3 single PUT: the plaintext MD5, as AWS
    got = s3e.get_object(Bucket=ebucket, Key="k")
    assert got["Body"].read() == body and got["ServerSideEncryption"] == "AES256"
    assert s3e.head_object(Bucket=ebucket, Key="k")["ServerSideEncryption"] == "AES256"
    for first, last in [(0, 0), (65535, 65536), (65536, 131071), (299_990, 300_000), (1, 299_999)]:
        part = s3e.get_object(Bucket=ebucket, Key="k", Range=f"bytes={first}-{last}")
        assert part["Body"].read() == body[first:last + 1]
    listed = s3e.list_objects_v2(Bucket=ebucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("k", len(body))]


def test_bucket_default_encryption_applies_to_new_objects(s3e: Any, ebucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3e.get_bucket_encryption(Bucket=ebucket)
    assert err(exc) == (404, "ServerSideEncryptionConfigurationNotFoundError")
    s3e.put_object(Bucket=ebucket, Key="before", Body=b"plain")
    s3e.put_bucket_encryption(Bucket=ebucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    rules = s3e.get_bucket_encryption(Bucket=ebucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    put = s3e.put_object(Bucket=ebucket, Key="after", Body=b"secret")
    assert put["ServerSideEncryption"] == "AES256"
    assert s3e.head_object(Bucket=ebucket, Key="after")["ServerSideEncryption"] == "AES256"
    assert "ServerSideEncryption" not in s3e.head_object(Bucket=ebucket, Key="before")
    assert s3e.get_object(Bucket=ebucket, Key="after")["Body"].read() == b"secret"
    with pytest.raises(ClientError) as exc:  # no default aws/s3 KMS key: a key id is required; AES256 stays
        s3e.put_bucket_encryption(Bucket=ebucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    assert err(exc) == (400, "InvalidArgument")
    assert s3e.put_object(Bucket=ebucket, Key="still", Body=b"s")["ServerSideEncryption"] == "AES256"
    s3e.delete_bucket_encryption(Bucket=ebucket)
    with pytest.raises(ClientError) as exc:
        s3e.get_bucket_encryption(Bucket=ebucket)
    assert err(exc)[0] == 404
    assert "ServerSideEncryption" not in s3e.put_object(Bucket=ebucket, Key="later", Body=b"p")


def test_sse_c_keys_are_required_and_checked(s3e: Any, ebucket: str) -> None:
    body = os.urandom(200_000)
    put = s3e.put_object(Bucket=ebucket, Key="c", Body=body, **sse_c(KEY_A))
    md5_a = base64.b64encode(hashlib.md5(KEY_A).digest()).decode()
    assert put["SSECustomerAlgorithm"] == "AES256" and put["SSECustomerKeyMD5"] == md5_a
    assert put["ETag"] != f'"{hashlib.md5(body).hexdigest()}"'  # SSE-C: not the plaintext's MD5 (AWS)
    for call in (s3e.get_object, s3e.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=ebucket, Key="c")
        assert err(exc)[0] == 400
        with pytest.raises(ClientError) as exc:
            call(Bucket=ebucket, Key="c", **sse_c(KEY_B))
        assert err(exc)[0] == 403
    head = s3e.head_object(Bucket=ebucket, Key="c", **sse_c(KEY_A))
    assert head["SSECustomerAlgorithm"] == "AES256" and head["ContentLength"] == len(body)
    assert s3e.get_object(Bucket=ebucket, Key="c", **sse_c(KEY_A))["Body"].read() == body
    for first, last in [(0, 9), (65530, 65560), (131072, 199_999)]:
        got = s3e.get_object(Bucket=ebucket, Key="c", Range=f"bytes={first}-{last}", **sse_c(KEY_A))
        assert got["Body"].read() == body[first:last + 1]
    s3e.put_object(Bucket=ebucket, Key="p", Body=b"x")
    with pytest.raises(ClientError) as exc:  # a customer key for a plaintext object
        s3e.get_object(Bucket=ebucket, Key="p", **sse_c(KEY_A))
    assert err(exc)[0] == 400
    with pytest.raises(ClientError) as exc:  # a bad key MD5: nothing stored
        s3e.put_object(Bucket=ebucket, Key="bad", Body=b"x", SSECustomerAlgorithm="AES256",
                       SSECustomerKey=base64.b64encode(KEY_A).decode(), SSECustomerKeyMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert err(exc)[0] == 400
    assert "bad" not in [o["Key"] for o in s3e.list_objects_v2(Bucket=ebucket)["Contents"]]


def test_copy_object_between_encryption_modes(s3e: Any, ebucket: str) -> None:
    body = os.urandom(150_000)
    s3e.put_object(Bucket=ebucket, Key="src-c", Body=body, **sse_c(KEY_A))
    with pytest.raises(ClientError) as exc:  # the source's key is needed
        s3e.copy_object(Bucket=ebucket, Key="x", CopySource=f"{ebucket}/src-c")
    assert err(exc)[0] == 400
    out = s3e.copy_object(Bucket=ebucket, Key="to-s3", CopySource=f"{ebucket}/src-c", ServerSideEncryption="AES256",
                          **sse_c(KEY_A, copy_source=True))
    assert out["ServerSideEncryption"] == "AES256"
    assert s3e.get_object(Bucket=ebucket, Key="to-s3")["Body"].read() == body
    s3e.copy_object(Bucket=ebucket, Key="to-c", CopySource=f"{ebucket}/to-s3", **sse_c(KEY_B))
    assert s3e.get_object(Bucket=ebucket, Key="to-c", **sse_c(KEY_B))["Body"].read() == body
    s3e.copy_object(Bucket=ebucket, Key="to-plain", CopySource=f"{ebucket}/to-c", **sse_c(KEY_B, copy_source=True))
    plain = s3e.get_object(Bucket=ebucket, Key="to-plain")
    assert plain["Body"].read() == body and "ServerSideEncryption" not in plain
    s3e.copy_object(Bucket=ebucket, Key="c-in-place", CopySource=f"{ebucket}/to-plain")
    s3e.copy_object(Bucket=ebucket, Key="c-in-place", CopySource=f"{ebucket}/c-in-place", **sse_c(KEY_A))
    assert s3e.get_object(Bucket=ebucket, Key="c-in-place", **sse_c(KEY_A))["Body"].read() == body


def _multipart(s3: Any, bucket: str, key: str, parts: list[bytes], extra: dict[str, str],
               create_extra: dict[str, str] | None = None) -> str:
    """An upload of these parts; ``extra`` on every call (SSE-C), ``create_extra`` on the create only."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra, **(create_extra or {}))["UploadId"]
    etags = []
    for number, data in enumerate(parts, 1):
        etags.append(s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data,
                                    **extra)["ETag"])
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}, **extra)
    return upload


def test_multipart_sse_c_and_sse_s3(s3e: Any, ebucket: str) -> None:
    parts = [os.urandom(5 * MIB + 1), os.urandom(5 * MIB), os.urandom(1234)]
    body = b"".join(parts)
    _multipart(s3e, ebucket, "mc", parts, sse_c(KEY_A))
    got = s3e.get_object(Bucket=ebucket, Key="mc", **sse_c(KEY_A))
    assert got["Body"].read() == body and got["SSECustomerAlgorithm"] == "AES256"
    edge = len(parts[0])
    for first, last in [(edge - 3, edge + 3), (edge - 1, 2 * edge), (len(body) - 1300, len(body) - 1)]:
        ranged = s3e.get_object(Bucket=ebucket, Key="mc", Range=f"bytes={first}-{last}", **sse_c(KEY_A))
        assert ranged["Body"].read() == body[first:last + 1]
    second = s3e.get_object(Bucket=ebucket, Key="mc", PartNumber=2, **sse_c(KEY_A))
    assert second["Body"].read() == parts[1]
    with pytest.raises(ClientError) as exc:
        s3e.get_object(Bucket=ebucket, Key="mc", **sse_c(KEY_B))
    assert err(exc)[0] == 403
    # a re-sent SSE-C part keeps its ETag (not the plaintext MD5, but the same bytes under the same key); the
    # completion needs the upload's key too
    upload = s3e.create_multipart_upload(Bucket=ebucket, Key="mc3", **sse_c(KEY_A))["UploadId"]
    sent = [s3e.upload_part(Bucket=ebucket, Key="mc3", UploadId=upload, PartNumber=1, Body=parts[2],
                            **sse_c(KEY_A))["ETag"] for _ in range(2)]
    assert sent[0] == sent[1] != f'"{hashlib.md5(parts[2]).hexdigest()}"'
    for extra in ({}, sse_c(KEY_B)):
        with pytest.raises(ClientError) as exc:
            s3e.complete_multipart_upload(Bucket=ebucket, Key="mc3", UploadId=upload, MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": sent[0]}]}, **extra)
        assert err(exc)[0] == 400
    s3e.complete_multipart_upload(Bucket=ebucket, Key="mc3", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": sent[0]}]}, **sse_c(KEY_A))
    assert s3e.get_object(Bucket=ebucket, Key="mc3", **sse_c(KEY_A))["Body"].read() == parts[2]
    # every part needs the upload's key: another key or none is refused and stores nothing
    upload = s3e.create_multipart_upload(Bucket=ebucket, Key="mc2", **sse_c(KEY_A))["UploadId"]
    for extra in (sse_c(KEY_B), {}):
        with pytest.raises(ClientError) as exc:
            s3e.upload_part(Bucket=ebucket, Key="mc2", UploadId=upload, PartNumber=1, Body=b"x", **extra)
        assert err(exc)[0] == 400
    assert s3e.list_parts(Bucket=ebucket, Key="mc2", UploadId=upload).get("Parts", []) == []
    # SSE-S3 with boto3's default checksums (aws-chunked with a CRC trailer)
    _multipart(s3e, ebucket, "ms", parts, {}, {"ServerSideEncryption": "AES256"})
    explicit = s3e.get_object(Bucket=ebucket, Key="ms")
    assert explicit["Body"].read() == body and explicit["ServerSideEncryption"] == "AES256"
    s3e.put_bucket_encryption(Bucket=ebucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    upload = s3e.create_multipart_upload(Bucket=ebucket, Key="md")
    assert upload["ServerSideEncryption"] == "AES256"
    etags = [s3e.upload_part(Bucket=ebucket, Key="md", UploadId=upload["UploadId"], PartNumber=n, Body=data)["ETag"]
             for n, data in enumerate(parts, 1)]
    assert etags[0] == f'"{hashlib.md5(parts[0]).hexdigest()}"'
    done = s3e.complete_multipart_upload(Bucket=ebucket, Key="md", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert done["ServerSideEncryption"] == "AES256"
    got = s3e.get_object(Bucket=ebucket, Key="md")
    assert got["Body"].read() == body and got["ServerSideEncryption"] == "AES256"


def test_data_directory_holds_no_plaintext_and_no_customer_key(sse_server: ServerProcess, s3e: Any,
                                                               ebucket: str) -> None:
    tag = uuid.uuid4().hex.encode()
    key = os.urandom(32)
    s3e.put_object(Bucket=ebucket, Key="s3", Body=marker_body(100_000, tag), ServerSideEncryption="AES256")
    s3e.put_object(Bucket=ebucket, Key="c", Body=marker_body(5000, tag), **sse_c(key))
    _multipart(s3e, ebucket, "m", [marker_body(5 * MIB, tag), marker_body(10, tag)], sse_c(key))
    s3e.copy_object(Bucket=ebucket, Key="cp", CopySource=f"{ebucket}/c", ServerSideEncryption="AES256",
                    **sse_c(key, copy_source=True))
    assert s3e.get_object(Bucket=ebucket, Key="cp")["Body"].read() == marker_body(5000, tag)
    key_id = f"disk-{uuid.uuid4().hex[:8]}"  # SSE-KMS too, single and multipart, across a rotation
    assert admin(sse_server, "POST", "/api/admin/kms/keys", {"key_id": key_id}).status_code == 201
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}
    s3e.put_object(Bucket=ebucket, Key="kms", Body=marker_body(70_000, tag), **kms)
    assert admin(sse_server, "POST", f"/api/admin/kms/keys/{key_id}/rotate").status_code == 200
    _multipart(s3e, ebucket, "kms-m", [marker_body(5 * MIB, tag), marker_body(10, tag)], {}, kms)
    assert s3e.get_object(Bucket=ebucket, Key="kms-m", Range="bytes=0-99")["Body"].read() == marker_body(100, tag)
    # the master key lives in sse.key (like iam.key) and nowhere else; the KMS keys' material is only ever stored
    # wrapped under it (searched for in clear by tests/unit/engine/test_kms.py test_no_key_material_in_clear_on_disk)
    master_file = Path(sse_server.data_dir) / "sse.key"
    master = bytes.fromhex(master_file.read_text().strip())
    needles = [b"<plaintext-" + tag, key, base64.b64encode(key), hashlib.md5(key).digest(),
               base64.b64encode(hashlib.md5(key).digest()), master, master.hex().encode(), base64.b64encode(master)]
    files = [p for p in Path(sse_server.data_dir).rglob("*") if p.is_file() and p != master_file]
    assert any(p.suffix == ".vol" for p in files) and any("journal" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{path} holds a plaintext or key byte string"
    log = Path(sse_server.log_path).read_bytes()
    for needle in needles:
        assert needle not in log


def test_sse_c_over_plain_http_is_refused_by_default(s3: Any, bucket: str) -> None:
    """The session server runs with the default settings: SSE-C over http is 400, as AWS; nothing is stored."""
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", **sse_c(KEY_A))
    assert err(exc) == (400, "InvalidRequest")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def _send_half_a_part(server: ServerProcess, bucket: str, key: str, upload: str,
                      size: int) -> http.client.HTTPConnection:
    """Start an SSE-C UploadPart of ``size`` bytes and send only half of the body (the request stays open)."""
    path = f"/{bucket}/{key}?partNumber=2&uploadId={upload}"
    headers = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "content-length": str(size),
               "x-amz-server-side-encryption-customer-algorithm": "AES256",
               "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY_A).decode(),
               "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(KEY_A).digest()).decode()}
    request = AWSRequest(method="PUT", url=server.endpoint + path, headers=headers)
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.putrequest("PUT", path, skip_accept_encoding=True, skip_host=False)
    for name, value in request.headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(os.urandom(size // 2))
    return conn


@pytest.mark.crash
def test_kill_9_during_an_encrypted_multipart_upload(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"S4_SSE_C_ALLOW_HTTP": "true", "S4_WORKERS": "1"}).start()
    try:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="crash")
        part1 = os.urandom(5 * MIB)
        upload = s3.create_multipart_upload(Bucket="crash", Key="big", **sse_c(KEY_A))["UploadId"]
        etag1 = s3.upload_part(Bucket="crash", Key="big", UploadId=upload, PartNumber=1, Body=part1,
                               **sse_c(KEY_A))["ETag"]
        conn = _send_half_a_part(server, "crash", "big", upload, 5 * MIB)
        server.kill_group()  # SIGKILL mid-body of part 2
        conn.close()
        server.start()
        s3 = make_client(server.endpoint)
        listed = s3.list_parts(Bucket="crash", Key="big", UploadId=upload)["Parts"]
        assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, etag1)]
        part2 = os.urandom(3 * MIB + 7)
        etag2 = s3.upload_part(Bucket="crash", Key="big", UploadId=upload, PartNumber=2, Body=part2,
                               **sse_c(KEY_A))["ETag"]
        s3.complete_multipart_upload(Bucket="crash", Key="big", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]}, **sse_c(KEY_A))
        server.kill_group()  # and once more after the acknowledged completion
        server.start()
        s3 = make_client(server.endpoint)
        got = s3.get_object(Bucket="crash", Key="big", **sse_c(KEY_A))
        assert got["Body"].read() == part1 + part2
        ranged = s3.get_object(Bucket="crash", Key="big", Range=f"bytes={5 * MIB - 5}-{5 * MIB + 5}", **sse_c(KEY_A))
        assert ranged["Body"].read() == (part1 + part2)[5 * MIB - 5:5 * MIB + 6]
    finally:
        server.stop()


def test_sse_kms_with_the_built_in_kms(sse_server: ServerProcess, s3e: Any, ebucket: str) -> None:
    key_id = f"key-{uuid.uuid4().hex[:8]}"
    created = admin(sse_server, "POST", "/api/admin/kms/keys", {"key_id": key_id})
    assert created.status_code == 201 and created.json()["enabled"] is True
    assert admin(sse_server, "POST", "/api/admin/kms/keys", {"key_id": key_id}).status_code == 409
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}
    old = os.urandom(70_000)
    put = s3e.put_object(Bucket=ebucket, Key="old", Body=old, **kms)
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key_id)
    head = s3e.head_object(Bucket=ebucket, Key="old")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)
    rotated = admin(sse_server, "POST", f"/api/admin/kms/keys/{key_id}/rotate")
    assert rotated.status_code == 200 and rotated.json()["versions"] == 2
    new = os.urandom(1000)
    s3e.put_object(Bucket=ebucket, Key="new", Body=new, **kms)
    assert s3e.get_object(Bucket=ebucket, Key="old")["Body"].read() == old  # rotation keeps old objects readable
    assert s3e.get_object(Bucket=ebucket, Key="new", Range="bytes=10-19")["Body"].read() == new[10:20]
    assert admin(sse_server, "PUT", f"/api/admin/kms/keys/{key_id}", {"enabled": False}).json()["enabled"] is False
    for name in ("old", "new"):
        with pytest.raises(ClientError) as exc:
            s3e.get_object(Bucket=ebucket, Key=name)
        assert err(exc) == (400, "KMS.DisabledException")
    with pytest.raises(ClientError) as exc:
        s3e.put_object(Bucket=ebucket, Key="refused", Body=b"x", **kms)
    assert err(exc) == (400, "KMS.DisabledException")
    admin(sse_server, "PUT", f"/api/admin/kms/keys/{key_id}", {"enabled": True})
    assert s3e.get_object(Bucket=ebucket, Key="old")["Body"].read() == old
    listed = admin(sse_server, "GET", "/api/admin/kms/keys").json()["keys"]
    assert key_id in [k["key_id"] for k in listed] and "material" not in str(listed)
    for bad in ({"ServerSideEncryption": "aws:kms"}, {"SSEKMSKeyId": key_id},
                {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "no-such-key"}):
        with pytest.raises(ClientError) as exc:
            s3e.put_object(Bucket=ebucket, Key="bad", Body=b"x", **bad)
        assert err(exc)[0] == 400
    s3e.put_bucket_encryption(Bucket=ebucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id},
         "BucketKeyEnabled": True}]})
    rule = s3e.get_bucket_encryption(Bucket=ebucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}
    by_default = s3e.put_object(Bucket=ebucket, Key="default", Body=b"d")
    assert (by_default["ServerSideEncryption"], by_default["SSEKMSKeyId"]) == ("aws:kms", key_id)
    assert by_default["BucketKeyEnabled"] is True
    parts = [os.urandom(5 * MIB), os.urandom(100)]
    _multipart(s3e, ebucket, "kms-mp", parts, {}, kms)
    assert s3e.get_object(Bucket=ebucket, Key="kms-mp")["Body"].read() == b"".join(parts)
    def add_sse(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["x-amz-server-side-encryption"] = "aws:kms"

    reader = make_client(sse_server.endpoint)
    reader.meta.events.register("before-call.s3.GetObject", add_sse)
    with pytest.raises(ClientError) as exc:  # the SSE header on a read is refused, as AWS
        reader.get_object(Bucket=ebucket, Key="old")
    assert err(exc) == (400, "InvalidArgument")
    cli = subprocess.run([sys.executable, "-m", "s4.tools.admin_cli", "--endpoint", sse_server.endpoint,
                          "--username", "root", "--password", ROOT_PASSWORD, "kms", "list"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and key_id in cli.stdout, cli.stderr


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_every_mode_through_the_aws_cli(sse_server: ServerProcess, s3e: Any, ebucket: str, tmp_path: Path) -> None:
    key_id = f"cli-{uuid.uuid4().hex[:8]}"
    assert admin(sse_server, "POST", "/api/admin/kms/keys", {"key_id": key_id}).status_code == 201
    body = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(body)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    customer = "0123456789abcdef0123456789abcdef"  # the CLI takes the raw 32-byte key
    modes = {"s3": ["--sse", "AES256"], "kms": ["--sse", "aws:kms", "--sse-kms-key-id", key_id],
             "c": ["--sse-c", "AES256", "--sse-c-key", customer]}
    for name, flags in modes.items():
        url = f"s3://{ebucket}/cli-{name}"
        for cmd in (["aws", "--endpoint-url", sse_server.endpoint, "s3", "cp", str(tmp_path / "in.bin"), url, *flags],
                    ["aws", "--endpoint-url", sse_server.endpoint, "s3", "cp", url, str(tmp_path / f"{name}.out"),
                     *(flags if name == "c" else [])]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"
        assert (tmp_path / f"{name}.out").read_bytes() == body
    assert s3e.head_object(Bucket=ebucket, Key="cli-s3")["ServerSideEncryption"] == "AES256"
    assert s3e.head_object(Bucket=ebucket, Key="cli-kms")["SSEKMSKeyId"] == key_id
    assert s3e.head_object(Bucket=ebucket, Key="cli-c", SSECustomerAlgorithm="AES256",
                           SSECustomerKey=customer)["SSECustomerAlgorithm"] == "AES256"
