"""Issue 18, the HTTP input layer: each defect as a request against a real server.

Item 5 (invalid UTF-8 keys), item 7 (Expect: 100-continue answered before validation), and the smaller defects:
500s on bad numbers, an empty uploadId, an empty bucket segment, response-* overrides that are not UTF-8 or carry
CR/LF/NUL, a half-closed client losing its upload, and security headers ignored with 200. boto3 is used where it
can send the input; raw sockets where it cannot (or where the exact bytes on the wire are the point).
"""

from __future__ import annotations

import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

READ_TIMEOUT_S = 20.0


def _signed_headers(server: ServerProcess, method: str, target: str, body: bytes = b"",
                    headers: dict[str, str] | None = None, secret: str = SECRET_KEY) -> dict[str, str]:
    """SigV4 headers for ``target`` (raw path + query, exactly as it goes on the wire)."""
    request = AWSRequest(method=method, url=server.endpoint + target, data=body, headers=dict(headers or {}))
    S3SigV4Auth(Credentials(ACCESS_KEY, secret), "s3", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def _connect(server: ServerProcess) -> socket.socket:
    url = urlsplit(server.endpoint)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=READ_TIMEOUT_S)
    return sock


def _head(server: ServerProcess, method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line + headers, body) of one response (Content-Length framed), skipping nothing."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def _raw(server: ServerProcess, method: str, target: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """A signed request sent byte for byte; (status, head, body)."""
    sent = {**_signed_headers(server, method, target, body, headers), "Content-Length": str(len(body))}
    with _connect(server) as sock:
        sock.sendall(_head(server, method, target, sent) + body)
        head, payload = _read_response(sock)
    return int(head.split(b" ", 2)[1]), head, payload


def _code(payload: bytes) -> str:
    return payload.split(b"<Code>")[1].split(b"</Code>")[0].decode() if b"<Code>" in payload else ""


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- item 5: invalid UTF-8 --------------------------------------------------------------------------------------


def test_issue18_invalid_utf8_key_never_overwrites_another(server: ServerProcess, s3: Any, bucket: str) -> None:
    for target in (f"/{bucket}/u%fe", f"/{bucket}/u%ff", f"/{bucket}/u%c3"):
        status, _, payload = _raw(server, "PUT", target, b"bytes")
        assert (status, _code(payload)) == (400, "InvalidURI"), target
    assert _keys(s3, bucket) == []
    s3.put_object(Bucket=bucket, Key="u\u00fe", Body=b"thorn")  # the valid UTF-8 spelling still works
    status, _, payload = _raw(server, "PUT", f"/{bucket}/u%ff", b"other")
    assert (status, _code(payload)) == (400, "InvalidURI")
    assert s3.get_object(Bucket=bucket, Key="u\u00fe")["Body"].read() == b"thorn"


def test_issue18_invalid_utf8_in_every_decoded_string(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    cases = [
        ("GET", "/buck%ffet", {}, "InvalidURI"),
        ("GET", f"/{bucket}?prefix=%ff", {}, "InvalidURI"),
        ("GET", f"/{bucket}?marker=a%fe", {}, "InvalidURI"),
        ("GET", f"/{bucket}?list-type=2&start-after=%c3", {}, "InvalidURI"),
        ("GET", f"/{bucket}?versions&key-marker=%ff", {}, "InvalidURI"),
        ("GET", f"/{bucket}/k?versionId=%ff", {}, "InvalidURI"),
        ("PUT", f"/{bucket}/copy", {"x-amz-copy-source": f"/{bucket}/k%ff"}, "InvalidArgument"),
        ("PUT", f"/{bucket}/renamed?renameObject", {"x-amz-rename-source": f"/{bucket}/k%fe"}, "InvalidArgument"),
    ]
    for method, target, headers, code in cases:
        status, _, payload = _raw(server, method, target, headers=headers)
        assert (status, _code(payload)) == (400, code), target
    assert _keys(s3, bucket) == ["k"]


# -- item 7: Expect: 100-continue -------------------------------------------------------------------------------


def _expect_continue(server: ServerProcess, target: str, declared: int, *, secret: str = SECRET_KEY,
                     body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[bytes, bytes, bool]:
    """Send headers with Expect: 100-continue and wait. Returns (first response head, its body, whether the
    server then closed the connection). With ``body``, a 100 Continue is answered by sending it."""
    sent = {**_signed_headers(server, "PUT", target, body or b"", headers, secret=secret),
            "Content-Length": str(declared), "Expect": "100-continue"}
    with _connect(server) as sock:
        sock.sendall(_head(server, "PUT", target, sent))
        head, payload = _read_response(sock)
        if head.startswith(b"HTTP/1.1 100") and body is not None:
            assert not payload  # nothing after "100 Continue" until the body is sent
            sock.sendall(body)
            head, payload = _read_response(sock)
            return head, payload, False
        return head, payload, _closed_by_server(sock)


def test_issue18_expect_continue_refused_requests_get_no_100(server: ServerProcess, s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    cases = [
        (f"/{bucket}/bad-signature", 5, "wrong-secret", 403, "SignatureDoesNotMatch"),
        (f"/no-such-bucket-{uuid.uuid4().hex[:8]}/k", 5, SECRET_KEY, 404, "NoSuchBucket"),
        (f"/{bucket}/huge", 6 * 1024**4, SECRET_KEY, 400, "EntityTooLarge"),
        (f"/{bucket}/mp?partNumber=1&uploadId={'0' * 40}", 5, SECRET_KEY, 404, "NoSuchUpload"),
        (f"/{bucket}/mp?partNumber=0&uploadId={upload}", 5, SECRET_KEY, 400, "InvalidArgument"),
        (f"/{bucket}?tagging", 6 * 1024**3, SECRET_KEY, 400, "MalformedXML"),
    ]
    for target, declared, secret, status, code in cases:
        head, payload, closed = _expect_continue(server, target, declared, secret=secret)
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), (target, head)
        assert _code(payload) == code, target
        assert b"connection: close" in head.lower() and closed, target  # the body never comes: close
    assert _keys(s3, bucket) == []


def test_issue18_expect_continue_accepted_gets_100_then_200(server: ServerProcess, s3: Any, bucket: str) -> None:
    head, _, _ = _expect_continue(server, f"/{bucket}/k", 5, body=b"hello")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"


def test_issue18_declared_body_never_sent_still_gets_its_error(server: ServerProcess, bucket: str) -> None:
    """No Expect, a Content-Length, and no body: the refusal must not wait for bytes that never come."""
    sent = {**_signed_headers(server, "PUT", f"/{bucket}/k", b"x" * 100, secret="wrong-secret"),
            "Content-Length": "100"}
    with _connect(server) as sock:
        sock.sendall(_head(server, "PUT", f"/{bucket}/k", sent))
        head, payload = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 403 ") and _code(payload) == "SignatureDoesNotMatch"


def test_body_longer_than_content_length_gets_its_request_answered(server: ServerProcess, s3: Any,
                                                                   bucket: str) -> None:
    """A body longer than its Content-Length (s3-tests' contentlength_mismatch_below): the declared bytes are the
    request, answered as such (their checksum does not match: 400 BadDigest, nothing stored); the surplus starts
    no request and is dropped with the connection. It used to be answered first, with a bare 400 that the client
    read as its PUT's answer."""
    body = b"bar"
    checksum = {"x-amz-checksum-crc32": "dv+Mqg=="}  # of b"bar"; the signature covers the 2 declared bytes
    for expect in ({}, {"Expect": "100-continue"}):
        sent = {**_signed_headers(server, "PUT", f"/{bucket}/foo", body[:-1], {**checksum, **expect}),
                "Content-Length": str(len(body) - 1)}
        with _connect(server) as sock:
            sock.sendall(_head(server, "PUT", f"/{bucket}/foo", sent))
            if expect:
                head, _ = _read_response(sock)
                assert head.startswith(b"HTTP/1.1 100 "), head
            sock.sendall(body)
            head, payload = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 400 ") and _code(payload) == "BadDigest", (head, payload)
            assert b"connection: close" in head.lower() and _closed_by_server(sock)
    assert _keys(s3, bucket) == []


# -- smaller defects: numbers, uploadId, empty bucket segment ----------------------------------------------------


def test_issue18_bad_numbers_are_s3_errors_not_500(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    huge = "1" * 5000
    cases: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
        ("GET", f"/{bucket}/k?partNumber=%C2%B2", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}/k?partNumber={huge}", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}/k?partNumber=%D9%A3", b"", {}, 400, "InvalidArgument"),  # an Arabic-Indic 3
        ("PUT", f"/{bucket}/mp?partNumber=%C2%B2&uploadId={upload}", b"x", {}, 400, "InvalidArgument"),
        ("PUT", f"/{bucket}/mp?partNumber={huge}&uploadId={upload}", b"x", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}/mp?uploadId={upload}&part-number-marker={huge}", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}/mp?uploadId={upload}&part-number-marker=%C2%B2", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}?max-keys={huge}", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}?max-keys=1_0", b"", {}, 400, "InvalidArgument"),
        ("GET", f"/{bucket}/k", b"", {"Range": f"bytes={huge}-"}, 416, "InvalidRange"),
        ("PUT", f"/{bucket}/mp?partNumber=2&uploadId={upload}", b"",
         {"x-amz-copy-source": f"/{bucket}/k", "x-amz-copy-source-range": f"bytes=0-{huge}"}, 416, "InvalidRange"),
        ("PUT", f"/{bucket}/chunked", b"0\r\n\r\n",
         {"x-amz-decoded-content-length": huge, "Content-Encoding": "aws-chunked"}, 400, "EntityTooLarge"),
    ]
    for number in ("-1", "4294967296", "0", "10001", "111111111111111111"):
        xml = (f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
               "</CompleteMultipartUpload>").encode()
        cases.append(("POST", f"/{bucket}/mp?uploadId={upload}", xml, {}, 400, "InvalidArgument"))
    for number in ("99999999999999999999", "\u00b2"):
        xml = (f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
               "</CompleteMultipartUpload>").encode()
        cases.append(("POST", f"/{bucket}/mp?uploadId={upload}", xml, {}, 400, "MalformedXML"))
    for method, target, body, headers, status, code in cases:
        got, _, payload = _raw(server, method, target, body, headers)
        assert (got, _code(payload)) == (status, code), (method, target[:90], body[:90])
    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    assert _keys(s3, bucket) == ["k"]


def test_issue18_empty_or_impossible_upload_id_is_no_such_upload(server: ServerProcess, s3: Any,
                                                                  bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    xml = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>"
    for upload in ("", "u" * 600):
        for method, query, body in (("PUT", "&partNumber=1", b"x"), ("POST", "", xml), ("GET", "", b""),
                                    ("DELETE", "", b"")):
            status, _, payload = _raw(server, method, f"/{bucket}/k?uploadId={upload}{query}", body)
            assert (status, _code(payload)) == (404, "NoSuchUpload"), (method, len(upload))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_issue18_empty_bucket_segment_is_invalid_bucket_name(server: ServerProcess) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, _, payload = _raw(server, method, "//key", b"x" if method == "PUT" else b"")
        assert (status, _code(payload)) == (400, "InvalidBucketName"), method


# -- response-* overrides ----------------------------------------------------------------------------------------


def test_issue18_response_overrides_are_checked_not_crashing(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ContentType="text/plain")
    cases = [("response-content-type=%FF", "InvalidURI"),
             ("response-content-type=a%0d%0aX-Injected:%201", "InvalidArgument"),
             ("response-content-disposition=a%0Ab", "InvalidArgument"),
             ("response-cache-control=a%00b", "InvalidArgument")]
    for query, code in cases:
        for method in ("GET", "HEAD"):
            status, head, payload = _raw(server, method, f"/{bucket}/k?{query}")
            assert status == 400, (method, query)
            assert code in (_code(payload) if method == "GET" else head.decode()), (method, query)
            assert b"x-injected" not in head.lower() and b"etag:" not in head.lower(), query
    # a valid UTF-8 value comes back as its UTF-8 bytes
    status, head, payload = _raw(server, "GET", f"/{bucket}/k?response-content-disposition="
                                 "attachment%3B%20filename%3D%C3%A9.txt")
    assert (status, payload) == (200, b"x")
    assert "content-disposition: attachment; filename=\u00e9.txt".encode() in head.lower()


# -- half-closed client ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 300_000])
def test_issue18_half_close_after_full_body_is_stored_and_answered(server: ServerProcess, s3: Any, bucket: str,
                                                                    size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    target = f"/{bucket}/half-{size}"
    sent = {**_signed_headers(server, "PUT", target, body), "Content-Length": str(size)}
    with _connect(server) as sock:
        sock.sendall(_head(server, "PUT", target, sent) + body)
        sock.shutdown(socket.SHUT_WR)
        head, _ = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert _closed_by_server(sock)
    assert s3.get_object(Bucket=bucket, Key=f"half-{size}")["Body"].read() == body


def test_issue18_half_close_mid_body_stores_nothing(server: ServerProcess, s3: Any, bucket: str) -> None:
    body = b"y" * 1000
    target = f"/{bucket}/cut"
    sent = {**_signed_headers(server, "PUT", target, body), "Content-Length": str(len(body))}
    with _connect(server) as sock:
        sock.sendall(_head(server, "PUT", target, sent) + body[:400])
        sock.shutdown(socket.SHUT_WR)
        assert _closed_by_server(sock)  # closed, and no acknowledgement of a cut body
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="cut")


# -- security headers --------------------------------------------------------------------------------------------


def _refused(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"], exc.value.response["Error"]["Code"]


def test_issue18_security_headers_are_refused_not_ignored(s3: Any, bucket: str) -> None:
    key_material = "k" * 32
    put = [
        # issue 21: ACLs exist; a new bucket is BucketOwnerEnforced (ACLs disabled), so a grant is refused
        ({"ACL": "public-read"}, (400, "AccessControlListNotSupported")),
        ({"ACL": "authenticated-read"}, (400, "AccessControlListNotSupported")),
        ({"GrantRead": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'},
         (400, "AccessControlListNotSupported")),
        ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}, (400, "KMS.NotFoundException")),
        # issue 22: AES256 and SSE-C are served; SSE-C over plain HTTP is refused as AWS does (S4_SSE_C_ALLOW_HTTP)
        ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key_material}, (400, "InvalidRequest")),
        ({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": "2099-01-01T00:00:00Z"},
         (400, "InvalidRequest")),
        ({"ObjectLockLegalHoldStatus": "ON"}, (400, "InvalidRequest")),
    ]
    for extra, expected in put:
        assert _refused(lambda extra=extra: s3.put_object(Bucket=bucket, Key="p", Body=b"x", **extra)) == expected
        assert _refused(lambda extra=extra: s3.create_multipart_upload(Bucket=bucket, Key="m", **extra)) == expected
    s3.put_object(Bucket=bucket, Key="src", Body=b"s")
    for extra, expected in put:
        assert _refused(lambda extra=extra: s3.copy_object(Bucket=bucket, Key="c", CopySource=f"{bucket}/src",
                                                           **extra)) == expected
    assert _refused(lambda: s3.create_bucket(Bucket=f"pub-{uuid.uuid4().hex[:10]}",
                                             ACL="public-read")) == (400, "InvalidBucketAclWithObjectOwnership")
    assert _refused(lambda: s3.put_object_acl(Bucket=bucket, Key="src", ACL="public-read")) == \
        (400, "AccessControlListNotSupported")
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    grant_all_users = {"Owner": {"ID": owner}, "Grants": [
        {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
         "Permission": "READ"}]}
    assert _refused(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=grant_all_users)) == \
        (400, "AccessControlListNotSupported")
    assert _keys(s3, bucket) == ["src"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_issue18_harmless_acls_keep_working(s3: Any, bucket: str) -> None:
    """What clients send by default is accepted on a write. Setting an ACL afterwards is refused while ACLs are
    disabled (BucketOwnerEnforced, the default: AWS answers AccessControlListNotSupported even for the owner's own
    full control) and accepted once the bucket has ACLs (ObjectWriter)."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"1", ACL="private")
    s3.put_object(Bucket=bucket, Key="b", Body=b"2", ACL="bucket-owner-full-control")
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]  # the default account's canonical id (issue 21)
    owner_only = {"Owner": {"ID": owner}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": owner}, "Permission": "FULL_CONTROL"}]}
    for refused in (lambda: s3.put_object_acl(Bucket=bucket, Key="a", ACL="private"),
                    lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=owner_only)):
        with pytest.raises(ClientError) as denied:
            refused()
        assert denied.value.response["Error"]["Code"] == "AccessControlListNotSupported"
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    s3.put_object_acl(Bucket=bucket, Key="a", ACL="private")
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=owner_only)
    assert _keys(s3, bucket) == ["a", "b"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="c", Body=b"3", ACL="no-such-acl")
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"
