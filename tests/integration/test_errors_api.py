"""The S3 error codes not covered elsewhere, each with its HTTP status, and proof that bad input changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess


def signed(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
           when: dt.datetime | None = None) -> requests.Response:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth = S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
    if when is None:
        auth.add_auth(request)
    else:  # sign as if the client's clock said ``when``
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            auth.add_auth(request)
    prepared = request.prepare()
    return requests.request(method, prepared.url, data=body, headers=dict(prepared.headers), timeout=30)


def code(resp: requests.Response) -> str:
    return resp.text.split("<Code>")[1].split("</Code>")[0]


def test_request_time_too_skewed(server: ServerProcess, s3: Any, bucket: str) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    resp = signed("GET", f"{server.endpoint}/{bucket}", when=old)
    assert (resp.status_code, code(resp)) == (403, "RequestTimeTooSkewed")
    fresh = signed("GET", f"{server.endpoint}/{bucket}", when=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    assert fresh.status_code == 200  # within the 15-minute window


def test_malformed_xml_changes_nothing(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for query, body in (("tagging", b"<Tagging><TagSet><Tag><Key>a"), ("versioning", b"not xml"),
                        ("cors", b"<CORSConfiguration><Bogus/></CORSConfiguration>"), ("delete", b"<Delete/>")):
        method = "POST" if query == "delete" else "PUT"
        path = f"{bucket}/k" if query == "tagging" else bucket
        target = f"{server.endpoint}/{path}?{query}"
        resp = signed(method, target, body)
        assert (resp.status_code, code(resp)) == (400, "MalformedXML"), query
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_method_not_allowed(server: ServerProcess, s3: Any, bucket: str) -> None:
    resp = signed("PATCH", f"{server.endpoint}/{bucket}/k")
    assert (resp.status_code, code(resp)) == (405, "MethodNotAllowed")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k", VersionId=marker)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"


def test_acl_grants_on_an_owner_enforced_bucket(s3: Any, bucket: str) -> None:
    """NotImplemented before issue 21; a new bucket is BucketOwnerEnforced: ACLs disabled, as AWS answers."""
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert exc.value.response["Error"]["Code"] == "AccessControlListNotSupported"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:  # even the owner's own full control: ACLs are disabled (AWS)
        s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert exc.value.response["Error"]["Code"] == "AccessControlListNotSupported"
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"][0]["Permission"] == "FULL_CONTROL"  # reading still works


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("limit") / "data", env={"S4_MAX_UPLOAD_SIZE": "64KB"}).start()
    yield proc
    proc.stop()


def test_entity_too_large_changes_nothing(small_limit_server: ServerProcess) -> None:
    s3 = make_client(small_limit_server.endpoint)
    s3.create_bucket(Bucket="limits")
    s3.put_object(Bucket="limits", Key="ok", Body=b"a" * 65536)
    for key, size in (("big", 65537), ("ok", 200_000)):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="limits", Key=key, Body=b"b" * size)
        assert exc.value.response["Error"]["Code"] == "EntityTooLarge"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="limits")["Contents"]] == ["ok"]
    assert s3.get_object(Bucket="limits", Key="ok")["Body"].read() == b"a" * 65536
    # the limit holds for unsigned raw bodies without Content-Length checks too (chunked transfer)
    def gen() -> Iterator[bytes]:
        for _ in range(20):
            yield b"c" * 10_000

    url = f"{small_limit_server.endpoint}/limits/streamed"
    request = AWSRequest(method="PUT", url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.prepare().headers.items() if k.lower() != "content-length"}
    resp = requests.put(url, data=gen(), headers=headers, timeout=30)
    assert resp.status_code == 400 and code(resp) == "EntityTooLarge"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="limits")["Contents"]] == ["ok"]


def test_unsupported_subresources_are_not_implemented_and_change_nothing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:  # implemented since issue 21: an empty statement list is malformed
        s3.put_bucket_policy(Bucket=bucket, Policy='{"Version": "2012-10-17", "Statement": []}')
    assert exc.value.response["Error"]["Code"] == "MalformedPolicy"
    calls = [
        lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms:dsse"}}]}),  # others: issue 22
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "NotImplemented"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_responses_carry_one_server_header(server: ServerProcess, s3: Any, bucket: str) -> None:
    """The app's own "Server: S4" only (uvicorn's default header would add a second one)."""
    import http.client
    from urllib.parse import urlsplit

    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert signed("GET", f"{server.endpoint}/{bucket}/k").headers["Server"] == "S4"
    url = urlsplit(server.endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.request("GET", "/")  # unsigned: the 403 comes from the same response path
        raw = conn.getresponse()
        raw.read()
    finally:
        conn.close()
    assert raw.status == 403 and raw.msg.get_all("Server") == ["S4"]
