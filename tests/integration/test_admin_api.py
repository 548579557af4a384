"""The admin API and IAM against a real server: the README's curl examples, every error status, token revocation,
login throttling, and role enforcement on S3 with boto3 and the AWS CLI using generated credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
import requests
from botocore.exceptions import ClientError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

ROOT_PASSWORD = "password12345"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("iam") / "data",
                         env={"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET}).start()
    yield proc
    proc.stop()


def login(endpoint: str, username: str = "root", password: str = ROOT_PASSWORD) -> str:
    resp = requests.post(f"{endpoint}/api/admin/login", json={"username": username, "password": password},
                         timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user(endpoint: str, token: str, role: str, password: str = "pass-word-1") -> dict[str, Any]:
    resp = requests.post(f"{endpoint}/api/admin/users", headers=bearer(token), timeout=30,
                         json={"username": f"u_{uuid.uuid4().hex[:10]}", "password": password, "role": role})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def credentials(endpoint: str, token: str, user_id: str) -> tuple[str, str]:
    resp = requests.post(f"{endpoint}/api/admin/users/{user_id}/credentials", headers=bearer(token), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_key"], resp.json()["secret_key"]


def s3_client(endpoint: str, access: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1")


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_readme_curl_examples(iam: ServerProcess, tmp_path: Path) -> None:
    e = iam.endpoint
    resp = requests.post(f"{e}/api/admin/login", headers={"Content-Type": "application/json"},
                         data='{"username":"root","password":"password12345"}', timeout=30)
    assert resp.status_code == 200 and set(resp.json()) == {"token", "expires_at"}
    assert resp.json()["expires_at"].endswith("Z")
    token = resp.json()["token"]

    users = requests.get(f"{e}/api/admin/users", headers=bearer(token), timeout=30).json()["users"]
    root = next(u for u in users if u["username"] == "root")
    assert set(root) == {"id", "username", "role", "access_key", "created_at", "updated_at", "is_active",
                         "account", "account_id", "canonical_id", "email"}  # issue 21: accounts
    assert root["role"] == "SuperUser" and root["is_active"] is True and root["access_key"] is None

    resp = requests.post(f"{e}/api/admin/users", headers={**bearer(token), "Content-Type": "application/json"},
                         data='{"username":"alice","password":"alice123","role":"Writer"}', timeout=30)
    assert resp.status_code == 201, resp.text
    alice = resp.json()
    assert alice["username"] == "alice" and alice["role"] == "Writer" and alice["access_key"] is None
    uuid.UUID(alice["id"])

    resp = requests.post(f"{e}/api/admin/users/{alice['id']}/credentials", headers=bearer(token), timeout=30)
    assert resp.status_code == 200
    access, secret = resp.json()["access_key"], resp.json()["secret_key"]
    assert access.startswith("S4AK") and len(secret) == 40
    shown = requests.get(f"{e}/api/admin/users/{alice['id']}", headers=bearer(token), timeout=30).json()
    assert shown["access_key"] == access and "secret_key" not in shown

    # the generated credentials work with boto3 (Writer) and with the AWS CLI
    s3 = s3_client(e, access, secret)
    bucket = f"alice-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hi from alice")
    if shutil.which("aws"):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
                   AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
        done = subprocess.run(["aws", "--endpoint-url", e, "s3", "ls", f"s3://{bucket}"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "hello.txt" in done.stdout, done.stderr

    resp = requests.put(f"{e}/api/admin/users/{alice['id']}",
                        headers={**bearer(token), "Content-Type": "application/json"}, data='{"role":"Reader"}',
                        timeout=30)
    assert resp.status_code == 200 and resp.json()["role"] == "Reader"
    with pytest.raises(ClientError) as err:  # the new role applies to the very next request
        s3.put_object(Bucket=bucket, Key="more.txt", Body=b"x")
    assert error_code(err) == "AccessDenied"
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hi from alice"

    resp = requests.delete(f"{e}/api/admin/users/{alice['id']}/credentials", headers=bearer(token), timeout=30)
    assert resp.status_code == 204
    with pytest.raises(ClientError) as err:  # a deleted credential is refused at once
        s3.list_objects_v2(Bucket=bucket)
    assert error_code(err) == "InvalidAccessKeyId"

    resp = requests.delete(f"{e}/api/admin/users/{alice['id']}", headers=bearer(token), timeout=30)
    assert resp.status_code == 204
    assert requests.get(f"{e}/api/admin/users/{alice['id']}", headers=bearer(token), timeout=30).status_code == 404


def test_error_statuses(iam: ServerProcess) -> None:
    e = iam.endpoint
    token = login(e)
    h = bearer(token)
    users = f"{e}/api/admin/users"

    def check(resp: requests.Response, status: int) -> None:
        assert resp.status_code == status, resp.text
        assert isinstance(resp.json()["error"], str) and resp.json()["error"]

    # 400: invalid input
    for body in ({"username": "ab", "password": "pass-word-1", "role": "Reader"},
                 {"username": "bad name!", "password": "pass-word-1", "role": "Reader"},
                 {"username": "x" * 33, "password": "pass-word-1", "role": "Reader"},
                 {"username": "okname", "password": "pass-word-1", "role": "Admin"},
                 {"username": "okname", "password": "short", "role": "Reader"},
                 {"username": "okname", "password": 12345678, "role": "Reader"},
                 {"username": "okname", "role": "Reader"}):
        check(requests.post(users, headers=h, json=body, timeout=30), 400)
    check(requests.post(users, headers=h, data="{not json", timeout=30), 400)
    check(requests.post(users, headers=h, data="[1, 2]", timeout=30), 400)
    check(requests.post(f"{e}/api/admin/login", data="nope", timeout=30), 400)
    check(requests.post(f"{e}/api/admin/login", json={"username": "root"}, timeout=30), 400)
    user = new_user(e, token, "Reader")
    check(requests.put(f"{users}/{user['id']}", headers=h, json={"role": "God"}, timeout=30), 400)
    check(requests.put(f"{users}/{user['id']}", headers=h, json={"is_active": "yes"}, timeout=30), 400)
    check(requests.put(f"{users}/{user['id']}", headers=h, json={"username": "x"}, timeout=30), 400)

    # 401: missing, malformed, tampered, expired, wrong-secret tokens; wrong password
    check(requests.get(users, timeout=30), 401)
    check(requests.get(users, headers={"Authorization": "Basic abc"}, timeout=30), 401)
    check(requests.get(users, headers=bearer("not-a-jwt"), timeout=30), 401)
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{sig}"
    check(requests.get(users, headers=bearer(tampered), timeout=30), 401)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    expired = jwt.encode(dict(claims, iat=int(time.time()) - 100_000, exp=int(time.time()) - 10), JWT_SECRET,
                         algorithm="HS256")
    check(requests.get(users, headers=bearer(expired), timeout=30), 401)
    forged = jwt.encode(claims, "some-other-secret-that-is-long-enough", algorithm="HS256")
    check(requests.get(users, headers=bearer(forged), timeout=30), 401)
    none_alg = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    check(requests.get(users, headers=bearer(none_alg), timeout=30), 401)
    check(requests.post(f"{e}/api/admin/login", json={"username": "root", "password": "wrong-password"},
                        timeout=30), 401)
    check(requests.post(f"{e}/api/admin/login", json={"username": "nobody_here", "password": "x" * 10},
                        timeout=30), 401)

    # 403: a valid token of a user who is not SuperUser
    for role in ("Reader", "Writer"):
        weak = new_user(e, token, role)
        weak_token = login(e, weak["username"], "pass-word-1")
        check(requests.get(users, headers=bearer(weak_token), timeout=30), 403)
        check(requests.post(f"{users}/{weak['id']}/credentials", headers=bearer(weak_token), timeout=30), 403)
        check(requests.get(f"{e}/api/admin/bucket-stats", headers=bearer(weak_token), timeout=30), 403)

    # 404: unknown user (every route that takes an id), unknown path
    missing = str(uuid.uuid4())
    check(requests.get(f"{users}/{missing}", headers=h, timeout=30), 404)
    check(requests.put(f"{users}/{missing}", headers=h, json={"role": "Reader"}, timeout=30), 404)
    check(requests.delete(f"{users}/{missing}", headers=h, timeout=30), 404)
    check(requests.post(f"{users}/{missing}/credentials", headers=h, timeout=30), 404)
    check(requests.delete(f"{users}/{user['id']}/credentials", headers=h, timeout=30), 404)  # has none
    check(requests.get(f"{e}/api/admin/nothing-here", headers=h, timeout=30), 404)

    # 409: duplicate username
    check(requests.post(users, headers=h, json={"username": user["username"], "password": "pass-word-1",
                                                "role": "Writer"}, timeout=30), 409)
    # 405 and self-lock-out protection
    check(requests.patch(users, headers=h, json={}, timeout=30), 405)
    root_id = next(u["id"] for u in requests.get(users, headers=h, timeout=30).json()["users"]
                   if u["username"] == "root")
    check(requests.delete(f"{users}/{root_id}", headers=h, timeout=30), 400)
    check(requests.put(f"{users}/{root_id}", headers=h, json={"is_active": False}, timeout=30), 400)


def test_password_change_and_deactivation_revoke_tokens(iam: ServerProcess) -> None:
    e = iam.endpoint
    root = login(e)
    ops = new_user(e, root, "SuperUser", password="first-password")
    ops_token = login(e, ops["username"], "first-password")
    url = f"{e}/api/admin/users"
    assert requests.get(url, headers=bearer(ops_token), timeout=30).status_code == 200

    assert requests.put(f"{url}/{ops['id']}", headers=bearer(root), json={"password": "second-password"},
                        timeout=30).status_code == 200
    assert requests.get(url, headers=bearer(ops_token), timeout=30).status_code == 401
    assert requests.post(f"{e}/api/admin/login", json={"username": ops["username"], "password": "first-password"},
                         timeout=30).status_code == 401
    ops_token = login(e, ops["username"], "second-password")
    assert requests.put(f"{url}/{ops['id']}", headers=bearer(root), json={"role": "SuperUser"},
                        timeout=30).status_code == 200  # a role no-op does not revoke
    assert requests.get(url, headers=bearer(ops_token), timeout=30).status_code == 200

    access, secret = credentials(e, root, ops["id"])
    s3 = s3_client(e, access, secret)
    s3.list_buckets()
    assert requests.put(f"{url}/{ops['id']}", headers=bearer(root), json={"is_active": False},
                        timeout=30).status_code == 200
    assert requests.get(url, headers=bearer(ops_token), timeout=30).status_code == 401
    assert requests.post(f"{e}/api/admin/login", json={"username": ops["username"], "password": "second-password"},
                         timeout=30).status_code == 401
    with pytest.raises(ClientError) as err:  # deactivated users are refused on S3 at once
        s3.list_buckets()
    assert error_code(err) == "InvalidAccessKeyId"
    requests.put(f"{url}/{ops['id']}", headers=bearer(root), json={"is_active": True}, timeout=30)
    s3.list_buckets()
    assert requests.get(url, headers=bearer(ops_token), timeout=30).status_code == 401  # stays revoked


def test_login_throttling(iam: ServerProcess) -> None:
    """Node-wide: each attempt is a new connection, so the guesses land on different worker processes."""
    e = iam.endpoint
    victim = new_user(e, login(e), "Reader", password="right-password")
    wrong = {"username": victim["username"], "password": "wrong-password"}
    for _ in range(5):
        assert requests.post(f"{e}/api/admin/login", json=wrong, timeout=30).status_code == 401
    resp = requests.post(f"{e}/api/admin/login", json={"username": victim["username"], "password": "right-password"},
                         timeout=30)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1 and "error" in resp.json()
    login(e)  # other usernames are not affected
    time.sleep(int(resp.headers["Retry-After"]) + 0.2)
    login(e, victim["username"], "right-password")  # after the wait, a right password works and resets
    for _ in range(4):
        assert requests.post(f"{e}/api/admin/login", json=wrong, timeout=30).status_code == 401
    login(e, victim["username"], "right-password")


def test_role_matrix(iam: ServerProcess) -> None:
    e = iam.endpoint
    token = login(e)
    legacy = s3_client(e, ACCESS_KEY, SECRET_KEY)  # the legacy pair keeps SuperUser rights
    bucket = f"roles-{uuid.uuid4().hex[:8]}"
    legacy.create_bucket(Bucket=bucket)
    legacy.put_object(Bucket=bucket, Key="seed.txt", Body=b"seed")

    reader = s3_client(e, *credentials(e, token, new_user(e, token, "Reader")["id"]))
    assert bucket in [b["Name"] for b in reader.list_buckets()["Buckets"]]
    assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket)["Contents"]] == ["seed.txt"]
    assert reader.get_object(Bucket=bucket, Key="seed.txt")["Body"].read() == b"seed"
    reader.head_object(Bucket=bucket, Key="seed.txt")
    reader.get_bucket_versioning(Bucket=bucket)
    denied = [lambda: reader.put_object(Bucket=bucket, Key="r.txt", Body=b"x"),
              lambda: reader.delete_object(Bucket=bucket, Key="seed.txt"),
              lambda: reader.create_bucket(Bucket=f"r-{uuid.uuid4().hex[:8]}"),
              lambda: reader.delete_bucket(Bucket=bucket),
              lambda: reader.create_multipart_upload(Bucket=bucket, Key="mp"),
              lambda: reader.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "seed.txt"}]}),
              lambda: reader.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "seed.txt"})]
    for call in denied:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == "AccessDenied"
    assert legacy.get_object(Bucket=bucket, Key="seed.txt")["Body"].read() == b"seed"

    writer = s3_client(e, *credentials(e, token, new_user(e, token, "Writer")["id"]))
    own = f"w-{uuid.uuid4().hex[:8]}"
    writer.create_bucket(Bucket=own)
    writer.put_object(Bucket=own, Key="a.txt", Body=b"a")
    writer.copy_object(Bucket=own, Key="b.txt", CopySource={"Bucket": own, "Key": "a.txt"})
    writer.delete_object(Bucket=own, Key="a.txt")
    writer.delete_object(Bucket=own, Key="b.txt")
    writer.delete_bucket(Bucket=own)
    writer.put_object(Bucket=bucket, Key="w.txt", Body=b"w")
    assert legacy.get_object(Bucket=bucket, Key="w.txt")["Body"].read() == b"w"

    superuser = s3_client(e, *credentials(e, token, new_user(e, token, "SuperUser")["id"]))
    superuser.delete_object(Bucket=bucket, Key="w.txt")

    with pytest.raises(ClientError) as err:  # a made-up S4AK key is unknown
        s3_client(e, "S4AK" + "A" * 16, "x" * 40).list_buckets()
    assert error_code(err) == "InvalidAccessKeyId"


def test_stats(iam: ServerProcess) -> None:
    e = iam.endpoint
    legacy = s3_client(e, ACCESS_KEY, SECRET_KEY)
    bucket = f"stats-{uuid.uuid4().hex[:8]}"
    legacy.create_bucket(Bucket=bucket)
    for key in ("one", "two"):  # same bytes twice: one blob, two references
        legacy.put_object(Bucket=bucket, Key=key, Body=b"same bytes" * 100)
    stats = requests.get(f"{e}/api/stats", timeout=30).json()  # no auth
    assert set(stats) == {"uptime_seconds", "buckets_count", "objects_count", "storage_used_bytes",
                          "dedup_unique_blobs", "dedup_total_references", "dedup_ratio"}
    assert stats["buckets_count"] >= 1 and stats["objects_count"] >= 2 and stats["storage_used_bytes"] >= 2000
    assert stats["dedup_total_references"] > stats["dedup_unique_blobs"] >= 1 and stats["dedup_ratio"] > 1

    token = login(e)
    doc = requests.get(f"{e}/api/admin/bucket-stats", headers=bearer(token), timeout=30).json()
    row = next(b for b in doc["buckets"] if b["name"] == bucket)
    assert row == {"name": bucket, "objects_count": 2, "storage_used_bytes": 2000, "created_at": row["created_at"]}
    assert doc["total_storage_bytes"] >= 2000


def test_admin_buckets_create_and_list(iam: ServerProcess) -> None:
    e = iam.endpoint
    h = bearer(login(e))
    name = f"console-{uuid.uuid4().hex[:8]}"
    url = f"{e}/api/admin/buckets/{name}"

    resp = requests.put(url, headers=h, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"name": name}
    legacy = s3_client(e, ACCESS_KEY, SECRET_KEY)
    legacy.head_bucket(Bucket=name)  # the same bucket S3 clients see
    resp = requests.put(url, headers=h, timeout=30)
    assert resp.status_code == 409 and resp.json()["error"]
    for bad in ("Bad_Name", "ab", "x" * 64, "192.168.1.1", "-dash"):
        resp = requests.put(f"{e}/api/admin/buckets/{bad}", headers=h, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"], bad

    etags = {}
    for key, ctype in (("a.txt", "text/plain"), ("dir/b.json", "application/json"), ("dir/sub/c.bin", ""),
                       ("z.txt", "text/plain")):
        extra = {"ContentType": ctype} if ctype else {}
        etags[key] = legacy.put_object(Bucket=name, Key=key, Body=key.encode() * 10, **extra)["ETag"].strip('"')
    legacy.put_object(Bucket=name, Key="gone.txt", Body=b"x")
    legacy.delete_object(Bucket=name, Key="gone.txt")

    doc = requests.get(f"{url}/objects", headers=h, timeout=30).json()
    assert set(doc) == {"objects", "common_prefixes", "is_truncated", "next_continuation_token"}
    assert [o["key"] for o in doc["objects"]] == ["a.txt", "z.txt"] and doc["common_prefixes"] == ["dir/"]
    assert doc["is_truncated"] is False and doc["next_continuation_token"] is None
    first = doc["objects"][0]
    assert set(first) == {"key", "size", "content_type", "last_modified", "etag"}
    assert first["size"] == 50 and first["content_type"] == "text/plain" and first["etag"] == etags["a.txt"]
    head = legacy.head_object(Bucket=name, Key="a.txt")
    assert first["last_modified"] == head["LastModified"].strftime("%Y-%m-%dT%H:%M:%SZ")

    doc = requests.get(f"{url}/objects", params={"prefix": "dir/"}, headers=h, timeout=30).json()
    assert [o["key"] for o in doc["objects"]] == ["dir/b.json"] and doc["common_prefixes"] == ["dir/sub/"]
    assert doc["objects"][0]["content_type"] == "application/json"
    doc = requests.get(f"{url}/objects", params={"delimiter": ""}, headers=h, timeout=30).json()
    assert [o["key"] for o in doc["objects"]] == ["a.txt", "dir/b.json", "dir/sub/c.bin", "z.txt"]
    assert doc["common_prefixes"] == []

    # pages of one entry (a common prefix counts as one), resumed with the opaque token
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"max-keys": "1", **({"continuation-token": token} if token else {})}
        doc = requests.get(f"{url}/objects", params=params, headers=h, timeout=30).json()
        seen += [o["key"] for o in doc["objects"]] + doc["common_prefixes"]
        if not doc["is_truncated"]:
            assert doc["next_continuation_token"] is None
            break
        token = doc["next_continuation_token"]
        assert isinstance(token, str) and token
    assert seen == ["a.txt", "dir/", "z.txt"]

    for params in ({"max-keys": "many"}, {"max-keys": "-1"}, {"prefix": ["a", "b"]}):
        resp = requests.get(f"{url}/objects", params=params, headers=h, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]
    for method, path in (("GET", "/objects"), ("DELETE", "")):
        resp = requests.request(method, f"{e}/api/admin/buckets/no-such-{uuid.uuid4().hex[:8]}{path}", headers=h,
                                timeout=30)
        assert resp.status_code == 404 and resp.json()["error"]


def test_admin_buckets_need_superuser(iam: ServerProcess) -> None:
    e = iam.endpoint
    token = login(e)
    name = f"guarded-{uuid.uuid4().hex[:8]}"
    requests.put(f"{e}/api/admin/buckets/{name}", headers=bearer(token), timeout=30).raise_for_status()
    writer = new_user(e, token, "Writer")
    weak = bearer(login(e, writer["username"], "pass-word-1"))
    for method, path in (("PUT", f"other-{uuid.uuid4().hex[:8]}"), ("DELETE", name), ("GET", f"{name}/objects")):
        resp = requests.request(method, f"{e}/api/admin/buckets/{path}", headers=weak, timeout=30)
        assert resp.status_code == 403 and resp.json()["error"]
        resp = requests.request(method, f"{e}/api/admin/buckets/{path}", timeout=30)
        assert resp.status_code == 401
    assert requests.delete(f"{e}/api/admin/buckets/{name}", headers=bearer(token), timeout=30).status_code == 204


def test_admin_bucket_delete_and_force(iam: ServerProcess) -> None:
    e = iam.endpoint
    h = bearer(login(e))
    legacy = s3_client(e, ACCESS_KEY, SECRET_KEY)

    empty = f"empty-{uuid.uuid4().hex[:8]}"
    requests.put(f"{e}/api/admin/buckets/{empty}", headers=h, timeout=30).raise_for_status()
    resp = requests.delete(f"{e}/api/admin/buckets/{empty}", headers=h, timeout=30)
    assert resp.status_code == 204 and resp.content == b""
    with pytest.raises(ClientError):
        legacy.head_bucket(Bucket=empty)

    name = f"full-{uuid.uuid4().hex[:8]}"
    url = f"{e}/api/admin/buckets/{name}"
    requests.put(url, headers=h, timeout=30).raise_for_status()
    legacy.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):  # versions of one key, a delete marker, other keys under prefixes
        legacy.put_object(Bucket=name, Key="doc.txt", Body=f"v{i}".encode())
    legacy.delete_object(Bucket=name, Key="doc.txt")
    for i in range(30):
        legacy.put_object(Bucket=name, Key=f"logs/{i:03d}.log", Body=b"line\n" * i)
    upload = legacy.create_multipart_upload(Bucket=name, Key="big.bin")["UploadId"]
    legacy.upload_part(Bucket=name, Key="big.bin", UploadId=upload, PartNumber=1, Body=b"p" * 1024)

    resp = requests.delete(url, headers=h, timeout=30)
    assert resp.status_code == 409 and resp.json()["error"]
    resp = requests.delete(url, params={"force": "maybe"}, headers=h, timeout=30)
    assert resp.status_code == 400
    legacy.head_bucket(Bucket=name)  # neither refusal changed anything
    assert len(legacy.list_object_versions(Bucket=name)["Versions"]) == 33

    resp = requests.delete(url, params={"force": "true"}, headers=h, timeout=30)
    assert resp.status_code == 204, resp.text
    with pytest.raises(ClientError) as err:
        legacy.head_bucket(Bucket=name)
    assert err.value.response["Error"]["Code"] in ("404", "NoSuchBucket")
    assert requests.get(f"{url}/objects", headers=h, timeout=30).status_code == 404

    # everything went through journaled commands, attributed to the admin who asked
    done = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "dump", "--data-dir", str(iam.data_dir),
                           "--bucket", name], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    by_root = [ev for ev in events if ev["actor"] == "user:root"]
    kinds = [ev["type"] for ev in by_root]
    assert kinds.count("object.version_removed") == 34  # 3 versions + 1 delete marker + 30 keys
    assert kinds.count("multipart.aborted") == 1 and kinds[-1] == "bucket.deleted"
    assert kinds[0] == "bucket.created"

    # the name is free again, and the new bucket is empty
    requests.put(url, headers=h, timeout=30).raise_for_status()
    doc = requests.get(f"{url}/objects", headers=h, timeout=30).json()
    assert doc["objects"] == [] and doc["common_prefixes"] == []
    assert "Versions" not in legacy.list_object_versions(Bucket=name)
    assert requests.delete(url, params={"force": "true"}, headers=h, timeout=30).status_code == 204


def test_iam_disabled(server: ServerProcess) -> None:
    """The session server runs without S4_ROOT_PASSWORD: only /api/stats answers."""
    for method, path in (("POST", "/api/admin/login"), ("GET", "/api/admin/users"),
                         ("GET", "/api/admin/bucket-stats"), ("PUT", "/api/admin/buckets/some-bucket"),
                         ("GET", "/api/admin/buckets/some-bucket/objects")):
        resp = requests.request(method, server.endpoint + path, json={"username": "root", "password": "x"},
                                timeout=30)
        assert resp.status_code == 404 and resp.json() == {"error": "IAM is disabled"}
    assert requests.get(server.endpoint + "/api/stats", timeout=30).status_code == 200
