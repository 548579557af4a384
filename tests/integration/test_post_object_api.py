"""POST object (issue 21): browser form uploads with a plain HTTP client (requests) against a real server, signed
with SigV4 (botocore's generate_presigned_post) and SigV2 (HMAC-SHA1 of the policy, by hand); expired policies,
failed conditions, content-length-range, redirects and status answers; anonymous forms; the signer's own access
(role, bucket policy); and the multipart/form-data bypass: a form posted anywhere but ``POST /bucket`` is an
ordinary request, authenticated by its headers, and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import fromstring

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers.admin_api import admin_call, iam_server, root_token
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WAIT_S = 60


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = iam_server(tmp_path_factory.mktemp("postobj") / "data")
    yield proc
    proc.stop()


def client(endpoint: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(signature_version="s3v4",
                                                               s3={"addressing_style": "path"}))


@pytest.fixture
def s3(srv: ServerProcess) -> Any:
    return client(srv.endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def expiration(seconds: int = 600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def v2_form(bucket: str, conditions: list[Any], fields: dict[str, str], *, expires_in: int = 600,
            access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str]:
    """A SigV2-signed form: base64 policy, base64 HMAC-SHA1 of it under the secret (as s3-tests signs)."""
    doc = {"expiration": expiration(expires_in), "conditions": [{"bucket": bucket}, *conditions]}
    policy = base64.b64encode(json.dumps(doc).encode()).decode()
    signature = base64.b64encode(hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    return {**fields, "AWSAccessKeyId": access, "policy": policy, "signature": signature}


def post(srv: ServerProcess, bucket: str, fields: dict[str, str], data: bytes | str = b"hello form",
         filename: str = "upload.txt", query: str = "", path: str = "") -> requests.Response:
    """``fields`` then ``file``, in order, as a browser sends the form."""
    files: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields.items()]
    files.append(("file", (filename, data, "application/octet-stream")))
    url = f"{srv.endpoint}/{bucket}{path}" + (f"?{query}" if query else "")
    return requests.post(url, files=files, allow_redirects=False, timeout=WAIT_S)


def error(resp: requests.Response) -> tuple[str, str]:
    root = fromstring(resp.content)
    return root.findtext("Code") or "", root.findtext("Message") or ""


def missing(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def test_post_object_sigv4_form_from_botocore_stores_like_put(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """botocore's own presigned POST (SigV4: x-amz-algorithm/credential/date/signature), uploaded by requests."""
    conditions = [["starts-with", "$key", "uploads/"], ["starts-with", "$Content-Type", "text/"],
                  ["content-length-range", 1, 1024], {"x-amz-meta-owner": "ann"}, ["starts-with", "$tagging", ""]]
    fields = {"Content-Type": "text/plain", "x-amz-meta-owner": "ann",
              "tagging": "<Tagging><TagSet><Tag><Key>team</Key><Value>blue</Value></Tag></TagSet></Tagging>"}
    signed = s3.generate_presigned_post(bucket, "uploads/${filename}", Fields=fields, Conditions=conditions,
                                        ExpiresIn=600)
    assert "x-amz-signature" in signed["fields"]
    files = [(name, (None, value)) for name, value in signed["fields"].items()]
    files.append(("file", ("notes.txt", b"form bytes", "text/plain")))
    resp = requests.post(signed["url"], files=files, timeout=WAIT_S)
    assert resp.status_code == 204, resp.text
    got = s3.get_object(Bucket=bucket, Key="uploads/notes.txt")
    assert got["Body"].read() == b"form bytes"
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"owner": "ann"}
    assert resp.headers["ETag"] == got["ETag"] == f'"{hashlib.md5(b"form bytes").hexdigest()}"'
    tags = s3.get_object_tagging(Bucket=bucket, Key="uploads/notes.txt")["TagSet"]
    assert tags == [{"Key": "team", "Value": "blue"}]
    assert resp.headers["Location"].endswith(f"/{bucket}/uploads/notes.txt")
    request_id = resp.headers["x-amz-request-id"]
    deadline = time.monotonic() + WAIT_S  # the access log line is written after the response
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((json.loads(text) for text in srv.log().splitlines()
                     if text.startswith('{"time":') and request_id in text), None)
    assert line is not None and line["operation"] == "PostObject" and line["actor"] == ACCESS_KEY


def test_post_object_sigv2_form_answers_201_with_post_response(srv: ServerProcess, s3: Any, bucket: str) -> None:
    fields = v2_form(bucket, [["eq", "$key", "v2.txt"], {"success_action_status": "201"}],
                     {"key": "v2.txt", "success_action_status": "201"})
    resp = post(srv, bucket, fields, b"v2 bytes")
    assert resp.status_code == 201, resp.text
    root = fromstring(resp.content)
    assert (root.tag, root.findtext("Bucket"), root.findtext("Key")) == ("PostResponse", bucket, "v2.txt")
    etag = s3.head_object(Bucket=bucket, Key="v2.txt")["ETag"]
    assert root.findtext("ETag") == etag and root.findtext("Location", "").endswith(f"/{bucket}/v2.txt")


def test_post_object_success_action_redirect_is_303_with_bucket_key_etag(srv: ServerProcess, s3: Any,
                                                                         bucket: str) -> None:
    target = "https://example.com/done?from=form"
    fields = v2_form(bucket, [["starts-with", "$key", ""], ["eq", "$success_action_redirect", target]],
                     {"key": "dir/r é.txt", "success_action_redirect": target})
    resp = post(srv, bucket, fields)
    assert resp.status_code == 303, resp.text
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://example.com/done"
    query = parse_qs(location.query)
    etag = s3.head_object(Bucket=bucket, Key="dir/r é.txt")["ETag"]
    assert query == {"from": ["form"], "bucket": [bucket], "key": ["dir/r é.txt"], "etag": [etag]}


@pytest.mark.parametrize(("status", "answer"), [("200", 200), ("204", 204), ("404", 204), ("", 204), ("2O1", 204)])
def test_post_object_success_action_status(srv: ServerProcess, s3: Any, bucket: str, status: str,
                                           answer: int) -> None:
    """200 and 204 answer with no body; anything else than 200/201/204 is ignored (204), as S3 does."""
    fields = v2_form(bucket, [["eq", "$key", "s"], {"success_action_status": status}],
                     {"key": "s", "success_action_status": status})
    resp = post(srv, bucket, fields)
    assert (resp.status_code, resp.content) == (answer, b"")
    assert resp.headers["ETag"] == s3.head_object(Bucket=bucket, Key="s")["ETag"]


def test_post_object_expired_policy_is_access_denied_and_stores_nothing(srv: ServerProcess, s3: Any,
                                                                        bucket: str) -> None:
    fields = v2_form(bucket, [["eq", "$key", "late.txt"]], {"key": "late.txt"}, expires_in=-60)
    resp = post(srv, bucket, fields)
    assert resp.status_code == 403
    assert error(resp) == ("AccessDenied", "Invalid according to Policy: Policy expired.")
    assert missing(s3, bucket, "late.txt")
    assert (f"access denied: actor={ACCESS_KEY} operation=PostObject resource=arn:aws:s3:::{bucket}/late.txt "
            "decided-by=Invalid according to Policy: Policy expired.") in srv.log()  # logged before the answer


@pytest.mark.parametrize(("conditions", "fields", "message"), [
    ([["starts-with", "$key", "inbox/"]], {"key": "outbox/x"}, 'Policy Condition failed: ["starts-with", "$key"'),
    ([["eq", "$key", "x"], ["eq", "$x-amz-meta-a", ""]], {"key": "x", "x-amz-meta-a": "1"},
     'Policy Condition failed: ["eq", "$x-amz-meta-a", ""]'),
    ([["eq", "$key", "x"]], {"key": "x", "Content-Type": "text/html"}, "Extra input fields: content-type"),
])
def test_post_object_condition_failures_are_access_denied(srv: ServerProcess, s3: Any, bucket: str,
                                                          conditions: list[Any], fields: dict[str, str],
                                                          message: str) -> None:
    resp = post(srv, bucket, v2_form(bucket, conditions, fields))
    assert resp.status_code == 403
    code, text = error(resp)
    assert code == "AccessDenied" and text.startswith(f"Invalid according to Policy: {message}")
    assert missing(s3, bucket, fields["key"])


def test_post_object_policy_for_another_bucket_is_refused(srv: ServerProcess, s3: Any, bucket: str) -> None:
    other = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    resp = post(srv, other, v2_form(bucket, [["eq", "$key", "x"]], {"key": "x", "bucket": bucket}))
    assert resp.status_code == 403 and "Condition failed" in error(resp)[1]
    assert missing(s3, other, "x")


@pytest.mark.parametrize(("size", "code"), [(11, "EntityTooLarge"), (4, "EntityTooSmall"),
                                            (200_000, "EntityTooLarge")])
def test_post_object_content_length_range(srv: ServerProcess, s3: Any, bucket: str, size: int, code: str) -> None:
    fields = v2_form(bucket, [["eq", "$key", "sized"], ["content-length-range", 5, 10]], {"key": "sized"})
    resp = post(srv, bucket, fields, b"x" * size)
    assert resp.status_code == 400 and error(resp)[0] == code
    assert missing(s3, bucket, "sized")
    assert post(srv, bucket, fields, b"x" * 10).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="sized")["Body"].read() == b"x" * 10


def test_post_object_signature_errors(srv: ServerProcess, s3: Any, bucket: str) -> None:
    fields = v2_form(bucket, [["eq", "$key", "sig"]], {"key": "sig"})
    bad = {**fields, "signature": base64.b64encode(b"0" * 20).decode()}
    assert error(post(srv, bucket, bad))[0] == "SignatureDoesNotMatch"
    assert error(post(srv, bucket, {**fields, "AWSAccessKeyId": "nobody"}))[0] == "InvalidAccessKeyId"
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    resp = post(srv, bucket, unsigned)
    assert resp.status_code == 400 and error(resp)[0] == "InvalidArgument"
    forged = {**fields, "key": "other"}  # a valid signature over a policy the form does not satisfy
    assert post(srv, bucket, forged).status_code == 403
    assert all(missing(s3, bucket, k) for k in ("sig", "other"))


@pytest.mark.parametrize(("doc", "message"), [({"conditions": []}, "Policy missing expiration"),
                                             ({"expiration": "2099-01-01 00:00:00", "conditions": []},
                                              "Invalid 'expiration'"),
                                             ({"expiration": "2099-01-01T00:00:00Z", "conditions": [{}]},
                                              "Invalid Condition")])
def test_post_object_malformed_policy_is_400(srv: ServerProcess, bucket: str, doc: dict[str, Any],
                                             message: str) -> None:
    policy = base64.b64encode(json.dumps(doc).encode()).decode()
    signature = base64.b64encode(hmac.new(SECRET_KEY.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    resp = post(srv, bucket, {"key": "k", "AWSAccessKeyId": ACCESS_KEY, "policy": policy, "signature": signature})
    assert resp.status_code == 400
    assert error(resp)[0] == "InvalidPolicyDocument" and message in error(resp)[1]


def test_post_object_form_errors(srv: ServerProcess, s3: Any, bucket: str) -> None:
    fields = v2_form(bucket, [["starts-with", "$key", ""]], {})
    assert error(post(srv, bucket, fields))[0] == "InvalidArgument"  # no key field
    no_file = requests.post(f"{srv.endpoint}/{bucket}", files=[("key", (None, "k"))], timeout=WAIT_S)
    assert no_file.status_code == 400 and error(no_file)[0] == "IncorrectNumberOfFilesInPostRequest"
    not_form = requests.post(f"{srv.endpoint}/{bucket}", data=b"key=k", timeout=WAIT_S,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert not_form.status_code == 412 and error(not_form)[0] == "PreconditionFailed"
    broken = requests.post(f"{srv.endpoint}/{bucket}", data=b"--b\r\nno headers end", timeout=WAIT_S,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert broken.status_code == 400 and error(broken)[0] == "MalformedPOSTRequest"
    assert missing(s3, bucket, "k")
    long_key = v2_form(bucket, [["starts-with", "$key", ""]], {"key": "k" * 1025})
    resp = post(srv, bucket, long_key)
    assert resp.status_code == 400 and error(resp)[0] == "KeyTooLongError"


def test_post_object_body_ending_inside_the_file_stores_nothing(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """A complete HTTP request (chunked) whose form ends inside the file field, without its closing boundary."""
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="key"\r\n\r\ncut\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\npartial file bytes')
    resp = requests.post(f"{srv.endpoint}/{bucket}", data=iter([body]), timeout=WAIT_S,
                         headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert resp.status_code in (400, 403)  # anonymous: refused by access control or by the form
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    resp = requests.post(f"{srv.endpoint}/{bucket}", data=iter([body]), timeout=WAIT_S,
                         headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert resp.status_code == 400 and error(resp)[0] == "IncompleteBody"
    assert missing(s3, bucket, "cut")


def test_post_object_anonymous_needs_a_policy_allowing_anonymous_put(srv: ServerProcess, s3: Any,
                                                                     bucket: str) -> None:
    resp = post(srv, bucket, {"key": "anon.txt"})
    assert resp.status_code == 403 and error(resp) == ("AccessDenied", "Access Denied")
    assert missing(s3, bucket, "anon.txt")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/drop/*"}]}))
    assert post(srv, bucket, {"key": "anon.txt"}).status_code == 403  # outside the allowed prefix
    assert post(srv, bucket, {"key": "drop/anon.txt"}).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="drop/anon.txt")["Body"].read() == b"hello form"


def new_user(srv: ServerProcess, role: str) -> tuple[str, str, str]:
    """(username, access key, secret key) of a fresh IAM user with ``role``."""
    token = root_token(srv)
    name = f"u_{uuid.uuid4().hex[:10]}"
    user = admin_call(srv, "POST", "/api/admin/users", token, {"username": name, "password": "pass-word-1",
                                                                "role": role})
    keys = admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    return name, keys["access_key"], keys["secret_key"]


def test_post_object_signer_needs_put_object(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """A valid form signed by a Reader is refused (the role does not allow s3:PutObject); a Writer's passes unless
    the bucket policy denies it (explicit Deny beats the role)."""
    _, reader_key, reader_secret = new_user(srv, "Reader")
    fields = v2_form(bucket, [["eq", "$key", "r.txt"]], {"key": "r.txt"}, access=reader_key, secret=reader_secret)
    resp = post(srv, bucket, fields)
    assert resp.status_code == 403 and error(resp) == ("AccessDenied", "Access Denied")
    assert missing(s3, bucket, "r.txt")
    writer, writer_key, writer_secret = new_user(srv, "Writer")
    fields = v2_form(bucket, [["starts-with", "$key", ""]], {"key": "w.txt"}, access=writer_key,
                     secret=writer_secret)
    assert post(srv, bucket, fields).status_code == 204
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "NoWriterUploads", "Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{writer}"},
        "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    assert post(srv, bucket, {**fields, "key": "w2.txt"}).status_code == 403
    assert missing(s3, bucket, "w2.txt")


def test_post_object_request_context_is_the_form(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """Bucket policy conditions see a form upload as AWS describes it: s3:authType POST, and the form's fields as
    the request's headers (s3:x-amz-acl)."""
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "NoForms", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/noforms/*", "Condition": {"StringEquals": {"s3:authType": "POST"}}},
        {"Sid": "OwnerFull", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/acl/*",
         "Condition": {"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}}]}))
    form = v2_form(bucket, [["starts-with", "$key", ""], ["starts-with", "$acl", ""]], {"key": "noforms/a"})
    assert post(srv, bucket, form).status_code == 403
    s3.put_object(Bucket=bucket, Key="noforms/a", Body=b"a PUT is not a form")
    assert post(srv, bucket, {**form, "key": "acl/a"}).status_code == 403
    assert post(srv, bucket, {**form, "key": "acl/a", "acl": "bucket-owner-full-control"}).status_code == 204


# -- the bypass: only POST /bucket (no query) is a form upload ------------------------------------------------------
BYPASS_TARGETS = [("", "delete"), ("", "uploads"), ("", "uploadId=abc"), ("", "sql"), ("", "select&select-type=2"),
                  ("", "restore"), ("", "policy"), ("", "x-id=PostObject"), ("/victim", ""), ("/victim", "uploads"),
                  ("/victim", "uploadId=abc"), ("/victim", "select&select-type=2"), ("/victim", "restore"),
                  ("/victim", "tagging"), ("/new-key", "")]


@pytest.mark.parametrize(("path", "query"), BYPASS_TARGETS, ids=[f"{p or '/'}?{q}" for p, q in BYPASS_TARGETS])
def test_multipart_form_data_bypass_is_refused_and_changes_nothing(srv: ServerProcess, s3: Any, bucket: str,
                                                                   path: str, query: str) -> None:
    """A multipart/form-data POST anywhere but ``POST /bucket`` gets the normal authentication: unsigned, it is
    AccessDenied, even when its form carries a valid form signature (which only ever authorizes POST object)."""
    s3.put_object(Bucket=bucket, Key="victim", Body=b"keep me")
    body = (b'<Delete><Object><Key>victim</Key></Object></Delete>' if query == "delete" else
            b"SELECT * FROM s3object")
    fields = v2_form(bucket, [["starts-with", "$key", ""], ["starts-with", "$Content-Type", ""]],
                     {"key": "victim", "Content-Type": "text/plain"})
    for form in ({"key": "victim"}, fields):
        resp = post(srv, bucket, form, body, query=query, path=path)
        assert resp.status_code == 403, (resp.status_code, resp.text)
        assert error(resp)[0] == "AccessDenied"
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == b"keep me"
    assert missing(s3, bucket, "new-key")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["victim"]


# -- any form: an S3 answer, never a 500 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_bucket(srv: ServerProcess) -> str:
    """A bucket anyone may upload to, so generated forms reach the upload itself."""
    name = f"post-fuzz-{uuid.uuid4().hex[:8]}"
    s3 = client(srv.endpoint)
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{name}/*"}]}))
    return name


FIELD_NAMES = st.sampled_from([
    "key", "file", "File", "x-amz-meta-b", "Expires", "policy", "AWSAccessKeyId", "signature", "x-amz-signature",
    "x-amz-credential", "x-amz-algorithm", "x-amz-date", "acl", "tagging", "Content-Type", "success_action_status",
    "success_action_redirect", "x-amz-meta-a", "x-amz-checksum-crc32", "Cache-Control", "x-ignore-me", "bucket", ""])
FIELD_VALUES = st.one_of(st.binary(max_size=24), st.sampled_from([
    b"k", b"${filename}", b"201", b"303", b"http://example.com/", b"public-read", b"private", b"\xff\xfe", b"a\r\nb",
    b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>", b"<Tagging>", b"e30=",
    base64.b64encode(b'{"expiration": "2099-01-01T00:00:00Z", "conditions": []}'), b"AAAAAAAA", b"ceph"]))
HEADER_LINES = st.sampled_from([b"", b"", b"", b"", b"Content-Type: text/plain\r\n", b"X-Other: 1\r\n",
                                b"Content-Transfer-Encoding: base64\r\n",
                                b"Content-Type: text/plain; charset=bogus\r\n"])
PLAIN = 'form-data; name="{}"'
DISPOSITIONS = st.sampled_from([PLAIN, PLAIN, PLAIN, 'form-data; name="{}"; filename="f.txt"', "form-data; name={}",
                                "form-data; name=\"{}\"; filename*=UTF-8''%C3%A9",
                                "form-data; name=\"{}\"; filename*=bogus''%FF", "attachment"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(FIELD_NAMES, DISPOSITIONS, HEADER_LINES, FIELD_VALUES), max_size=5),
       st.sampled_from([None, b"k", b"dir/${filename}"]), st.booleans(),
       st.one_of(st.none(), st.none(), st.integers(0, 400)), st.sampled_from(["XyZ", "a" * 70, "x y"]))
def test_post_object_any_form_gets_an_s3_answer_never_500(srv: ServerProcess, open_bucket: str,
                                                          parts: list[tuple[str, str, bytes, bytes]],
                                                          key: bytes | None, with_file: bool, cut: int | None,
                                                          boundary: str) -> None:
    """Generated forms around a valid skeleton (a key first, a file last): any field, disposition, part header and
    value, a body cut anywhere."""
    if key is not None:
        parts = [("key", PLAIN, b"", key), *parts]
    if with_file:
        parts = [*parts, ("file", 'form-data; name="{}"; filename="f.txt"', b"", b"file bytes")]
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition.format(name).encode() +
                    b"\r\n" + header + b"\r\n" + value + b"\r\n" for name, disposition, header, value in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    if cut is not None:
        body = body[:cut]
    resp = requests.post(f"{srv.endpoint}/{open_bucket}", data=body, timeout=WAIT_S,
                         headers={"Content-Type": f'multipart/form-data; boundary="{boundary}"'})
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert error(resp)[0]  # an S3 error document
