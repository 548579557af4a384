"""Bucket policies against a real server (issue 21): Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus, anonymous
access a policy grants, an explicit Deny beating a role's allow, aws:SourceIp over loopback addresses, and the log
line every refusal leaves."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD, iam_server
from helpers.s3client import account_client as client
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = iam_server(tmp_path_factory.mktemp("policy") / "data")
    yield proc
    proc.stop()


@pytest.fixture
def root(srv: ServerProcess) -> Any:
    return client(srv.endpoint)


@pytest.fixture
def bucket(root: Any) -> str:
    name = f"pol-{uuid.uuid4().hex[:12]}"
    root.create_bucket(Bucket=name)
    return name


def new_user(srv: ServerProcess, role: str) -> tuple[str, Any]:
    """(username, boto3 client) of a fresh IAM user with ``role``."""
    e = srv.endpoint
    token = requests.post(f"{e}/api/admin/login", json={"username": "root", "password": ROOT_PASSWORD},
                          timeout=30).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    name = f"u_{uuid.uuid4().hex[:10]}"
    user = requests.post(f"{e}/api/admin/users", headers=auth, timeout=30,
                         json={"username": name, "password": "pass-word-1", "role": role}).json()
    keys = requests.post(f"{e}/api/admin/users/{user['id']}/credentials", headers=auth, timeout=30).json()
    return name, client(e, keys["access_key"], keys["secret_key"])


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_put_get_delete_bucket_policy(root: Any, bucket: str) -> None:
    """PutBucketPolicy answered NotImplemented before issue 21; now the document round-trips unchanged."""
    with pytest.raises(ClientError) as exc:
        root.get_bucket_policy(Bucket=bucket)
    assert code(exc) == "NoSuchBucketPolicy"
    doc = policy({"Sid": "Read", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                  "Resource": f"arn:aws:s3:::{bucket}/*"})
    resp = root.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert root.get_bucket_policy(Bucket=bucket)["Policy"] == doc
    assert root.delete_bucket_policy(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        root.get_bucket_policy(Bucket=bucket)
    assert code(exc) == "NoSuchBucketPolicy"
    with pytest.raises(ClientError) as exc:
        root.get_bucket_policy(Bucket=f"missing-{uuid.uuid4().hex[:8]}")
    assert code(exc) == "NoSuchBucket"


@pytest.mark.parametrize(("doc", "message"), [
    ("not json", "Policies must be valid JSON and the first byte must be '{'"),
    ("{", "This policy contains invalid Json"),
    ('{"Version": "2012-10-17"}', "Missing required field Statement"),
    (json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}),
     "Missing required field Principal"),
    (json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:Fly", "Resource": "*"}]}),
     "Policy has invalid action"),
    (json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                "Resource": "arn:aws:s3:::some-other-bucket/*"}]}), "Policy has invalid resource"),
])
def test_malformed_policy_is_refused_and_changes_nothing(root: Any, bucket: str, doc: str, message: str) -> None:
    good = policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                   "Resource": f"arn:aws:s3:::{bucket}/*"})
    root.put_bucket_policy(Bucket=bucket, Policy=good)
    with pytest.raises(ClientError) as exc:
        root.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert code(exc) == "MalformedPolicy"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert exc.value.response["Error"]["Message"] == message
    assert root.get_bucket_policy(Bucket=bucket)["Policy"] == good


def test_bucket_policy_status(root: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        root.get_bucket_policy_status(Bucket=bucket)
    assert code(exc) == "NoSuchBucketPolicy"
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}))
    assert root.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"IpAddress": {"aws:SourceIp": "10.1.0.0/16"}}}))
    assert root.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/alice"}, "Action": "s3:*",
         "Resource": f"arn:aws:s3:::{bucket}/*"}))
    assert root.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False


def test_anonymous_get_allowed_by_bucket_policy(srv: ServerProcess, root: Any, bucket: str) -> None:
    root.put_object(Bucket=bucket, Key="public/a.txt", Body=b"hello")
    root.put_object(Bucket=bucket, Key="private/b.txt", Body=b"secret")
    url = f"{srv.endpoint}/{bucket}"
    assert requests.get(f"{url}/public/a.txt", timeout=30).status_code == 403  # no policy: as before
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/public/*"}))
    resp = requests.get(f"{url}/public/a.txt", timeout=30)
    assert resp.status_code == 200 and resp.content == b"hello"
    assert requests.head(f"{url}/public/a.txt", timeout=30).status_code == 200
    for denied in (requests.get(f"{url}/private/b.txt", timeout=30), requests.get(url, timeout=30),
                   requests.put(f"{url}/public/new.txt", data=b"x", timeout=30),
                   requests.delete(f"{url}/public/a.txt", timeout=30)):
        assert denied.status_code == 403 and b"<Code>AccessDenied</Code>" in denied.content
        assert b"secret" not in denied.content
    assert root.get_object(Bucket=bucket, Key="public/a.txt")["Body"].read() == b"hello"
    root.delete_bucket_policy(Bucket=bucket)
    assert requests.get(f"{url}/public/a.txt", timeout=30).status_code == 403
    # Requests S4 cannot route (a form POST to the bucket, an unsupported sub-resource) are still AccessDenied to
    # an anonymous caller, never MethodNotAllowed or NotImplemented, as before anonymous requests reached routing.
    for resp in (requests.post(url, files={"key": (None, "x"), "file": ("x", b"x")}, timeout=30),
                 requests.get(f"{url}?logging", timeout=30)):
        assert resp.status_code == 403 and b"<Code>AccessDenied</Code>" in resp.content
    assert f"actor=anonymous operation=GetObject action=s3:GetObject resource=arn:aws:s3:::{bucket}/private/b.txt " \
           "decided-by=no allow" in srv.log()


def test_anonymous_list_with_prefix_condition(srv: ServerProcess, root: Any, bucket: str) -> None:
    root.put_object(Bucket=bucket, Key="docs/x", Body=b"x")
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": "docs/*"}}}))
    ok = requests.get(f"{srv.endpoint}/{bucket}?list-type=2&prefix=docs/", timeout=30)
    assert ok.status_code == 200 and b"<Key>docs/x</Key>" in ok.content
    assert requests.get(f"{srv.endpoint}/{bucket}?list-type=2", timeout=30).status_code == 403


def test_explicit_deny_beats_writer_role(srv: ServerProcess, root: Any, bucket: str) -> None:
    name, writer = new_user(srv, "Writer")
    writer.put_object(Bucket=bucket, Key="keep.txt", Body=b"k")
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "NoDelete", "Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{name}"},
         "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"], "Resource": f"arn:aws:s3:::{bucket}/*"}))
    with pytest.raises(ClientError) as exc:
        writer.delete_object(Bucket=bucket, Key="keep.txt")
    assert code(exc) == "AccessDenied"
    result = writer.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep.txt"}]})
    assert [e["Code"] for e in result["Errors"]] == ["AccessDenied"] and not result.get("Deleted")
    writer.put_object(Bucket=bucket, Key="other.txt", Body=b"o")  # the role still allows the rest
    assert root.get_object(Bucket=bucket, Key="keep.txt")["Body"].read() == b"k"
    root.delete_object(Bucket=bucket, Key="other.txt")  # the deny names that user only
    assert f"actor=arn:aws:iam::{ACCOUNT}:user/{name} operation=DeleteObject action=s3:DeleteObject " \
           f"resource=arn:aws:s3:::{bucket}/keep.txt decided-by=explicit deny (statement 'NoDelete')" in srv.log()


def test_policy_allow_extends_reader_role(srv: ServerProcess, root: Any, bucket: str) -> None:
    name, reader = new_user(srv, "Reader")
    with pytest.raises(ClientError) as exc:
        reader.put_object(Bucket=bucket, Key="inbox/r.txt", Body=b"r")
    assert code(exc) == "AccessDenied"
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{name}"}, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/inbox/${{aws:username}}/*"}))
    reader.put_object(Bucket=bucket, Key=f"inbox/{name}/r.txt", Body=b"r")
    with pytest.raises(ClientError) as exc:
        reader.put_object(Bucket=bucket, Key="inbox/someone-else/r.txt", Body=b"r")
    assert code(exc) == "AccessDenied"


def _get_from(srv: ServerProcess, source_ip: str, path: str) -> int:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30, source_address=(source_ip, 0))
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_source_ip_condition(srv: ServerProcess, root: Any, bucket: str) -> None:
    root.put_object(Bucket=bucket, Key="k", Body=b"v")
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "FromTwo", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.2/32"}}},
        {"Sid": "NotFromThree", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.3"}}}))
    assert _get_from(srv, "127.0.0.2", f"/{bucket}/k") == 200
    assert _get_from(srv, "127.0.0.1", f"/{bucket}/k") == 403
    assert _get_from(srv, "127.0.0.3", f"/{bucket}/k") == 403
    assert "decided-by=explicit deny (statement 'NotFromThree')" in srv.log()


def test_superuser_can_always_manage_the_policy(root: Any, bucket: str) -> None:
    """A policy denying everything to everyone cannot lock the bucket's policy away from a SuperUser."""
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}))
    with pytest.raises(ClientError) as exc:
        root.list_objects_v2(Bucket=bucket)
    assert code(exc) == "AccessDenied"
    root.get_bucket_policy(Bucket=bucket)
    root.delete_bucket_policy(Bucket=bucket)
    root.list_objects_v2(Bucket=bucket)


def test_policy_survives_restart(tmp_path: Any) -> None:
    """The journal is the source of truth: the policy is an event, replayed into the bucket config view."""
    proc = ServerProcess(tmp_path / "data").start()
    try:
        s3 = client(proc.endpoint)
        s3.create_bucket(Bucket="restart-policy")
        doc = policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                      "Resource": "arn:aws:s3:::restart-policy/*"})
        s3.put_bucket_policy(Bucket="restart-policy", Policy=doc)
        s3.put_object(Bucket="restart-policy", Key="k", Body=b"v")
        proc.stop()
        proc.start()
        assert client(proc.endpoint).get_bucket_policy(Bucket="restart-policy")["Policy"] == doc
        assert requests.get(f"{proc.endpoint}/restart-policy/k", timeout=30).content == b"v"
    finally:
        proc.stop()


def _signed_post(url: str, body: bytes) -> requests.Response:
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return requests.post(url, data=body, headers=dict(request.headers), timeout=60)


def test_sql_reads_only_objects_the_policy_allows(srv: ServerProcess, root: Any, bucket: str) -> None:
    """?sql checks s3:GetObject on every object its globs match, not only s3:ListBucket on the bucket."""
    root.put_object(Bucket=bucket, Key="open/a.csv", Body=b"id,v\n1,2\n")
    root.put_object(Bucket=bucket, Key="secret/b.csv", Body=b"id,v\n3,4\n")
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "NoSecrets", "Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/secret/*"}))
    url = f"{srv.endpoint}/{bucket}?sql"
    ok = _signed_post(url, json.dumps({"sql": "SELECT * FROM 'open/*.csv'"}).encode())
    assert ok.status_code == 200, ok.text
    denied = _signed_post(url, json.dumps({"sql": "SELECT * FROM '*/*.csv'"}).encode())
    assert denied.status_code == 403 and denied.json()["code"] == "AccessDenied"
    assert "decided-by=explicit deny (statement 'NoSecrets')" in srv.log()


def test_console_browsing_obeys_policy(srv: ServerProcess, root: Any, bucket: str) -> None:
    """The admin API's object listing is the same decision: a Deny for the console user refuses it."""
    e = srv.endpoint
    tok = requests.post(f"{e}/api/admin/login", json={"username": "root", "password": ROOT_PASSWORD},
                        timeout=30).json()["token"]
    auth = {"Authorization": f"Bearer {tok}"}
    assert requests.get(f"{e}/api/admin/buckets/{bucket}/objects", headers=auth, timeout=30).status_code == 200
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/root"}, "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}"}))
    resp = requests.get(f"{e}/api/admin/buckets/{bucket}/objects", headers=auth, timeout=30)
    assert resp.status_code == 403, resp.text
    root.list_objects_v2(Bucket=bucket)  # the legacy pair is the account root, not the console user


def test_anonymous_upload_allowed_by_policy(srv: ServerProcess, root: Any, bucket: str) -> None:
    """An unsigned body (no signature, no aws-chunked framing) is stored when a policy allows s3:PutObject."""
    root.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "DropBox", "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/dropbox/*"}))
    resp = requests.put(f"{srv.endpoint}/{bucket}/dropbox/note.txt", data=b"left here", timeout=30)
    assert resp.status_code == 200, resp.text
    assert root.get_object(Bucket=bucket, Key="dropbox/note.txt")["Body"].read() == b"left here"
    assert requests.put(f"{srv.endpoint}/{bucket}/elsewhere.txt", data=b"x", timeout=30).status_code == 403
    assert requests.get(f"{srv.endpoint}/{bucket}/dropbox/note.txt", timeout=30).status_code == 403


def _outcome(fn: Any) -> str:
    try:
        fn()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


def test_each_operation_is_denied_by_its_own_s3_action(srv: ServerProcess, root: Any, bucket: str) -> None:
    """The S3 action name per operation (api/s3/access.py ACTIONS): a Deny of exactly that action refuses the
    operation to a Writer; without it the same call is not refused."""
    name, w = new_user(srv, "Writer")
    root.put_object(Bucket=bucket, Key="k", Body=b"v")
    root.put_object(Bucket=bucket, Key="src", Body=b"s")
    vid = root.put_object(Bucket=bucket, Key="v", Body=b"1").get("VersionId", "null")
    upload = root.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    cors = {"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]}
    life = {"Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "x/"}, "Expiration": {"Days": 1}}]}
    b = bucket
    cases: list[tuple[str, Any]] = [
        ("s3:ListBucket", lambda: w.list_objects(Bucket=b)),
        ("s3:ListBucket", lambda: w.list_objects_v2(Bucket=b)),
        ("s3:ListBucket", lambda: w.head_bucket(Bucket=b)),
        ("s3:ListBucketVersions", lambda: w.list_object_versions(Bucket=b)),
        ("s3:ListBucketMultipartUploads", lambda: w.list_multipart_uploads(Bucket=b)),
        ("s3:GetBucketLocation", lambda: w.get_bucket_location(Bucket=b)),
        ("s3:GetBucketVersioning", lambda: w.get_bucket_versioning(Bucket=b)),
        ("s3:PutBucketVersioning", lambda: w.put_bucket_versioning(
            Bucket=b, VersioningConfiguration={"Status": "Suspended"})),
        ("s3:PutBucketCORS", lambda: w.put_bucket_cors(Bucket=b, CORSConfiguration=cors)),
        ("s3:GetBucketCORS", lambda: w.get_bucket_cors(Bucket=b)),
        ("s3:PutBucketCORS", lambda: w.delete_bucket_cors(Bucket=b)),
        ("s3:PutBucketTagging", lambda: w.put_bucket_tagging(
            Bucket=b, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})),
        ("s3:GetBucketTagging", lambda: w.get_bucket_tagging(Bucket=b)),
        ("s3:PutBucketTagging", lambda: w.delete_bucket_tagging(Bucket=b)),
        ("s3:PutLifecycleConfiguration", lambda: w.put_bucket_lifecycle_configuration(
            Bucket=b, LifecycleConfiguration=life)),
        ("s3:GetLifecycleConfiguration", lambda: w.get_bucket_lifecycle_configuration(Bucket=b)),
        ("s3:PutLifecycleConfiguration", lambda: w.delete_bucket_lifecycle(Bucket=b)),
        ("s3:GetBucketAcl", lambda: w.get_bucket_acl(Bucket=b)),
        ("s3:GetObject", lambda: w.get_object(Bucket=b, Key="k")),
        ("s3:GetObject", lambda: w.head_object(Bucket=b, Key="k")),
        ("s3:GetObjectVersion", lambda: w.get_object(Bucket=b, Key="v", VersionId=vid)),
        ("s3:PutObject", lambda: w.put_object(Bucket=b, Key="new", Body=b"n")),
        ("s3:PutObject", lambda: w.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "src"})),
        ("s3:GetObject", lambda: w.copy_object(Bucket=b, Key="copy2", CopySource={"Bucket": b, "Key": "src"})),
        ("s3:PutObjectTagging", lambda: w.put_object_tagging(
            Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})),
        ("s3:GetObjectTagging", lambda: w.get_object_tagging(Bucket=b, Key="k")),
        ("s3:DeleteObjectTagging", lambda: w.delete_object_tagging(Bucket=b, Key="k")),
        ("s3:GetObjectAcl", lambda: w.get_object_acl(Bucket=b, Key="k")),
        ("s3:PutObject", lambda: w.create_multipart_upload(Bucket=b, Key="mp2")),
        ("s3:PutObject", lambda: w.upload_part(Bucket=b, Key="mp", UploadId=upload, PartNumber=1, Body=b"p")),
        ("s3:ListMultipartUploadParts", lambda: w.list_parts(Bucket=b, Key="mp", UploadId=upload)),
        ("s3:GetBucketPolicy", lambda: w.get_bucket_policy(Bucket=b)),
        ("s3:AbortMultipartUpload", lambda: w.abort_multipart_upload(Bucket=b, Key="mp", UploadId=upload)),
        ("s3:DeleteObject", lambda: w.delete_object(Bucket=b, Key="k")),
    ]
    for action, call in cases:
        root.put_bucket_policy(Bucket=b, Policy=policy(
            {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{name}"}, "Action": action,
             "Resource": [f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*"]}))
        assert _outcome(call) in ("AccessDenied", "403"), action  # a HEAD's 403 has no body to name the code
        root.delete_bucket_policy(Bucket=b)
        assert _outcome(call) not in ("AccessDenied", "403"), action


_words = st.sampled_from(["*", "s3:GetObject", "s3:Get*", "s3:Fly", "", "Allow", "Deny", "2012-10-17", "AWS",
                          "arn:aws:s3:::{b}", "arn:aws:s3:::{b}/*", "arn:aws:s3:::other/*", ACCOUNT,
                          f"arn:aws:iam::{ACCOUNT}:root", "127.0.0.0/8", "not-an-ip", "StringEquals", "IpAddress",
                          "aws:SourceIp", "s3:prefix", "Bogus", "${aws:username}"])
_scalars = st.one_of(_words, st.text(max_size=6), st.integers(), st.booleans(), st.none())
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_words, inner, max_size=3)), max_leaves=12)
_statement = st.fixed_dictionaries({}, optional={
    "Sid": _words, "Effect": st.sampled_from(["Allow", "Deny", "allow"]), "Principal": _values,
    "NotPrincipal": _values, "Action": _values, "NotAction": _values, "Resource": _values, "Condition": _values})
_documents = st.one_of(
    st.fixed_dictionaries({}, optional={"Version": _words, "Statement": st.one_of(
        st.lists(_statement, max_size=3), _statement, _values), "Id": _scalars}).map(json.dumps),
    st.text(max_size=80))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_documents)
def test_any_policy_document_over_http_is_stored_or_malformed_policy_never_500(srv: ServerProcess, doc: str) -> None:
    """Issue 21's "a malformed policy is MalformedPolicy, never 500", through the whole request path (routing,
    body limits, BlockPublicPolicy, the event), not only the parser (tests/property/test_policy_documents.py)."""
    s3 = client(srv.endpoint)
    name = f"polh-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    text = doc.replace("{b}", name)
    try:
        s3.put_bucket_policy(Bucket=name, Policy=text)
    except ClientError as exc:
        answer = (exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"])
        assert answer == ("MalformedPolicy", 400), exc.response
        with pytest.raises(ClientError) as none:
            s3.get_bucket_policy(Bucket=name)
        assert code(none) == "NoSuchBucketPolicy"  # refused: nothing stored
    else:
        assert s3.get_bucket_policy(Bucket=name)["Policy"] == text
    s3.delete_bucket_policy(Bucket=name)
    s3.delete_bucket(Bucket=name)
