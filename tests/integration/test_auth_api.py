"""Authentication against a real server: signatures, presigned URLs, anonymous access, payload hashes, vhosts."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ACCESS_KEY, SECRET_KEY


def error_code(text: str) -> str:
    root = ElementTree.fromstring(text)
    return root.findtext("Code") or ""


def client_with(endpoint: str, access: str, secret: str, **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(**config) if config else None)


@pytest.fixture
def v4(server: Any) -> Any:
    return make_client(server.endpoint, signature_version="s3v4")


# --- header signatures -----------------------------------------------------------------------------------------

def test_wrong_secret_is_signature_does_not_match(server: Any, bucket: str) -> None:
    bad = client_with(server.endpoint, ACCESS_KEY, "wrong-secret")
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_unknown_access_key(server: Any, bucket: str) -> None:
    bad = client_with(server.endpoint, "AKIDUNKNOWN", SECRET_KEY)
    with pytest.raises(ClientError) as exc:
        bad.get_object(Bucket=bucket, Key="k")
    assert exc.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_anonymous_is_access_denied(server: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret")
    for url in (f"{server.endpoint}/{bucket}/k", f"{server.endpoint}/{bucket}", f"{server.endpoint}/"):
        r = requests.get(url)
        assert r.status_code == 403, url
        assert r.headers["Content-Type"].startswith("application/xml")
        assert error_code(r.text) == "AccessDenied"
        assert b"secret" not in r.content
    assert requests.put(f"{server.endpoint}/{bucket}/anon", data=b"x").status_code == 403
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


# --- presigned URLs --------------------------------------------------------------------------------------------

def test_presigned_v4_get_put_head_delete(v4: Any, s3: Any, bucket: str) -> None:
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p.txt"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in put_url
    r = requests.put(put_url, data=b"presigned body")
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(b"presigned body").hexdigest()}"'

    get_url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p.txt"}, ExpiresIn=300)
    r = requests.get(get_url)
    assert r.status_code == 200
    assert r.content == b"presigned body"

    head_url = v4.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": "p.txt"}, ExpiresIn=300)
    r = requests.head(head_url)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(b"presigned body"))

    del_url = v4.generate_presigned_url("delete_object", Params={"Bucket": bucket, "Key": "p.txt"}, ExpiresIn=300)
    r = requests.delete(del_url)
    assert r.status_code == 204
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="p.txt")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_presigned_v4_get_with_response_override(v4: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"data")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "o",
                                                          "ResponseContentDisposition": "attachment; filename=x"})
    r = requests.get(url)
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == "attachment; filename=x"


def test_presigned_default_client_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="d k+ü", Body=b"default presign")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "d k+ü"}, ExpiresIn=300)
    r = requests.get(url)
    assert r.status_code == 200, r.text
    assert r.content == b"default presign"


def test_presigned_expired(v4: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e", Body=b"x")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "e"}, ExpiresIn=1)
    time.sleep(2.1)
    r = requests.get(url)
    assert r.status_code == 403
    assert error_code(r.text) == "AccessDenied"
    assert "expired" in r.text.lower()


def test_presigned_default_client_expired(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e2", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "e2"}, ExpiresIn=1)
    time.sleep(2.1)
    r = requests.get(url)
    assert r.status_code == 403
    assert error_code(r.text) == "AccessDenied"


def _presign(endpoint: str, method: str, path: str, expires: int) -> str:
    """A SigV4 presigned URL with any X-Amz-Expires (botocore's own presigner refuses 0 and negatives)."""
    req = AWSRequest(method=method, url=f"{endpoint}{path}")
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1", expires=expires).add_auth(req)
    return str(req.url)


@pytest.mark.parametrize("expires", [0, 609901, -7, -1000])
def test_presigned_expires_zero_or_out_of_range_is_403(server: Any, s3: Any, bucket: str, expires: int) -> None:
    """X-Amz-Expires 0 (expired as signed), above a week, or negative: 403 as S3 answers, for GET and PUT alike
    (they were 400), and a refused PUT stores nothing."""
    s3.put_object(Bucket=bucket, Key="foo", Body=b"old")
    get = requests.get(_presign(server.endpoint, "GET", f"/{bucket}/foo", expires))
    assert (get.status_code, error_code(get.text)) == (403, "AccessDenied")
    put = requests.put(_presign(server.endpoint, "PUT", f"/{bucket}/foo", expires), data=b"new")
    assert (put.status_code, error_code(put.text)) == (403, "AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="foo")["Body"].read() == b"old"
    assert requests.get(_presign(server.endpoint, "GET", f"/{bucket}/foo", 60)).content == b"old"


def _retarget(url: str, key: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rsplit("/", 1)[0] + "/" + key
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _replace_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, value if k == name else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def test_presigned_tampered(v4: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"A")
    s3.put_object(Bucket=bucket, Key="b", Body=b"B")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=300)
    assert requests.get(url).content == b"A"
    other_key = requests.get(_retarget(url, "b"))
    assert other_key.status_code == 403
    assert error_code(other_key.text) == "SignatureDoesNotMatch"
    longer = requests.get(_replace_param(url, "X-Amz-Expires", "3600"))
    assert longer.status_code == 403
    assert error_code(longer.text) == "SignatureDoesNotMatch"
    sig = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    bad_sig = requests.get(_replace_param(url, "X-Amz-Signature", flipped))
    assert bad_sig.status_code == 403
    assert error_code(bad_sig.text) == "SignatureDoesNotMatch"


def test_presigned_v2_tampered(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"A")
    s3.put_object(Bucket=bucket, Key="b", Body=b"B")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=300)
    r = requests.get(_retarget(url, "b"))
    assert r.status_code == 403
    assert error_code(r.text) == "SignatureDoesNotMatch"


# --- payload hash ----------------------------------------------------------------------------------------------

class _ClaimedHashAuth(S3SigV4Auth):
    """S3SigV4Auth that signs the caller's x-amz-content-sha256 claim instead of hashing the body itself."""

    def __init__(self, claimed: str) -> None:
        super().__init__(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
        self.claimed = claimed

    def payload(self, request: AWSRequest) -> str:
        return self.claimed


def _signed(method: str, url: str, body: bytes, headers: dict[str, str]) -> AWSRequest:
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    _ClaimedHashAuth(headers["x-amz-content-sha256"]).add_auth(req)
    return req.prepare()


def test_payload_sha256_mismatch(server: Any, s3: Any, bucket: str) -> None:
    body = b"the real body"
    wrong = hashlib.sha256(b"a different body").hexdigest()
    prepared = _signed("PUT", f"{server.endpoint}/{bucket}/sha", body, {"x-amz-content-sha256": wrong})
    assert prepared.headers["x-amz-content-sha256"] == wrong
    r = requests.put(prepared.url, data=body, headers=dict(prepared.headers))
    assert r.status_code == 400
    assert error_code(r.text) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="sha")


def test_payload_sha256_match(server: Any, s3: Any, bucket: str) -> None:
    body = b"the real body"
    prepared = _signed("PUT", f"{server.endpoint}/{bucket}/sha", body,
                       {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    r = requests.put(prepared.url, data=body, headers=dict(prepared.headers))
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="sha")["Body"].read() == body


def test_signed_header_modified_after_signing(server: Any, bucket: str) -> None:
    body = b"x"
    prepared = _signed("PUT", f"{server.endpoint}/{bucket}/hdr", body,
                       {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "x-amz-meta-a": "1"})
    headers = dict(prepared.headers)
    headers["x-amz-meta-a"] = "2"
    r = requests.put(prepared.url, data=body, headers=headers)
    assert r.status_code == 403
    assert error_code(r.text) == "SignatureDoesNotMatch"


# --- virtual-host style ----------------------------------------------------------------------------------------

def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 80)
    except OSError:
        return False
    return True


def test_virtual_host_style_client(server: Any, s3: Any) -> None:
    name = f"vh-{uuid.uuid4().hex[:10]}"
    if not _resolves(f"{name}.localhost"):
        pytest.skip(f"{name}.localhost does not resolve on this machine (no *.localhost resolver in "
                    "/etc/hosts or nss-myhostname); the raw Host-header vhost test covers the server side")
    vh = make_client(f"http://localhost:{server.port}", s3={"addressing_style": "virtual"})
    vh.create_bucket(Bucket=name)
    vh.put_object(Bucket=name, Key="a/b.txt", Body=b"vhost")
    assert vh.get_object(Bucket=name, Key="a/b.txt")["Body"].read() == b"vhost"
    assert [o["Key"] for o in vh.list_objects_v2(Bucket=name)["Contents"]] == ["a/b.txt"]
    assert s3.get_object(Bucket=name, Key="a/b.txt")["Body"].read() == b"vhost"


def test_virtual_host_style_raw_host_header(server: Any, s3: Any, bucket: str) -> None:
    """Connect to 127.0.0.1 but sign and send Host: <bucket>.localhost:<port> (no DNS needed)."""
    s3.put_object(Bucket=bucket, Key="dir/v.txt", Body=b"vhost raw")
    host = f"{bucket}.localhost:{server.port}"
    prepared = _signed("GET", f"http://{host}/dir/v.txt", b"",
                       {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    headers = dict(prepared.headers)
    headers["Host"] = host
    r = requests.get(f"{server.endpoint}/dir/v.txt", headers=headers)
    assert r.status_code == 200, r.text
    assert r.content == b"vhost raw"
    listing = _signed("GET", f"http://{host}/?list-type=2", b"",
                      {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    headers = dict(listing.headers)
    headers["Host"] = host
    r = requests.get(f"{server.endpoint}/?list-type=2", headers=headers)
    assert r.status_code == 200, r.text
    assert "<Key>dir/v.txt</Key>" in r.text
    assert f"<Name>{bucket}</Name>" in r.text
