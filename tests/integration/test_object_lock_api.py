"""Object Lock through boto3 and the admin API against real servers (issue 22): buckets created with Object Lock,
default retention, per-version retention and legal hold, the x-amz-object-lock-* headers, DeleteObjects answering
AccessDenied per locked key, the governance bypass granted or refused by the one policy evaluator, and a retention
that neither the lifecycle job nor the admin API's force delete can remove (the server's clock moved past the
lifecycle rule with libfaketime, still inside the retention). Before issue 22 every lock request was refused."""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.faketime import faketime_env
from helpers.s3client import make_client
from helpers.server import ServerProcess

ROOT_PASSWORD = "password12345"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
ADMIN_ENV = {"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET}
UTC = datetime.UTC


def _future(days: float) -> datetime.datetime:
    return (datetime.datetime.now(UTC) + datetime.timedelta(days=days)).replace(microsecond=0)


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def lock_bucket(s3: Any) -> str:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_lock_configuration_round_trip(s3: Any, lock_bucket: str, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled"}
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration=conf)
    assert s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"] == conf
    with pytest.raises(ClientError) as err:
        s3.put_bucket_versioning(Bucket=lock_bucket, VersioningConfiguration={"Status": "Suspended"})
    assert _code(err) == "InvalidBucketState"
    with pytest.raises(ClientError) as err:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert _code(err) == "ObjectLockConfigurationNotFoundError"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")
    assert _code(err) == "InvalidRequest"
    s3.put_object(Bucket=lock_bucket, Key="d", Body=b"x")  # the default retention applies
    head = s3.head_object(Bucket=lock_bucket, Key="d")
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] > datetime.datetime.now(UTC)


def test_lock_headers_retention_and_legal_hold(s3: Any, lock_bucket: str) -> None:
    until = _future(2)
    put = s3.put_object(Bucket=lock_bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=lock_bucket, Key="k")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == (
        "GOVERNANCE", until, "ON")
    assert s3.get_object_retention(Bucket=lock_bucket, Key="k")["Retention"] == {"Mode": "GOVERNANCE",
                                                                                 "RetainUntilDate": until}
    with pytest.raises(ClientError) as err:  # the legal hold yields to nothing, not even the bypass
        s3.delete_object(Bucket=lock_bucket, Key="k", VersionId=put["VersionId"], BypassGovernanceRetention=True)
    assert _code(err) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="k", LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=lock_bucket, Key="k")["LegalHold"] == {"Status": "OFF"}
    with pytest.raises(ClientError) as err:
        s3.put_object_retention(Bucket=lock_bucket, Key="k", Retention={"Mode": "GOVERNANCE",
                                                                       "RetainUntilDate": _future(1)})
    assert _code(err) == "AccessDenied"  # shortening GOVERNANCE needs the bypass
    s3.put_object_retention(Bucket=lock_bucket, Key="k", BypassGovernanceRetention=True,  # a mode change: bypass
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": _future(3)})
    with pytest.raises(ClientError) as err:
        s3.put_object_retention(Bucket=lock_bucket, Key="k", BypassGovernanceRetention=True,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": _future(1)})
    assert _code(err) == "AccessDenied"
    marker = s3.delete_object(Bucket=lock_bucket, Key="k")  # no version id: a delete marker, as S3
    assert marker["DeleteMarker"] is True
    assert s3.get_object(Bucket=lock_bucket, Key="k", VersionId=put["VersionId"])["Body"].read() == b"x"


def test_delete_objects_of_locked_versions_answers_access_denied_per_key(s3: Any, lock_bucket: str) -> None:
    locked = s3.put_object(Bucket=lock_bucket, Key="locked", Body=b"l", ObjectLockMode="COMPLIANCE",
                           ObjectLockRetainUntilDate=_future(1))["VersionId"]
    held = s3.put_object(Bucket=lock_bucket, Key="held", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
    free = s3.put_object(Bucket=lock_bucket, Key="free", Body=b"f")["VersionId"]
    answer = s3.delete_objects(Bucket=lock_bucket, BypassGovernanceRetention=True, Delete={"Objects": [
        {"Key": "locked", "VersionId": locked}, {"Key": "held", "VersionId": held},
        {"Key": "free", "VersionId": free}]})
    assert sorted((e["Key"], e["VersionId"], e["Code"]) for e in answer["Errors"]) == [
        ("held", held, "AccessDenied"), ("locked", locked, "AccessDenied")]
    assert [(d["Key"], d["VersionId"]) for d in answer["Deleted"]] == [("free", free)]
    versions = s3.list_object_versions(Bucket=lock_bucket)["Versions"]
    assert sorted(v["Key"] for v in versions) == ["held", "locked"]


def test_governance_bypass_allowed_or_denied_by_permission(s3: Any, lock_bucket: str) -> None:
    version = s3.put_object(Bucket=lock_bucket, Key="gov", Body=b"g", ObjectLockMode="GOVERNANCE",
                            ObjectLockRetainUntilDate=_future(1))["VersionId"]
    deny = {"Version": "2012-10-17", "Statement": [{
        "Sid": "NoBypass", "Effect": "Deny", "Principal": "*", "Action": "s3:BypassGovernanceRetention",
        "Resource": f"arn:aws:s3:::{lock_bucket}/*"}]}
    s3.put_bucket_policy(Bucket=lock_bucket, Policy=json.dumps(deny))
    with pytest.raises(ClientError) as err:
        s3.delete_object(Bucket=lock_bucket, Key="gov", VersionId=version, BypassGovernanceRetention=True)
    assert _code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        s3.put_object_retention(Bucket=lock_bucket, Key="gov", BypassGovernanceRetention=True,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": _future(0.5)})
    assert _code(err) == "AccessDenied"
    s3.delete_bucket_policy(Bucket=lock_bucket)
    s3.delete_object(Bucket=lock_bucket, Key="gov", VersionId=version, BypassGovernanceRetention=True)
    assert "Versions" not in s3.list_object_versions(Bucket=lock_bucket)


def test_multipart_and_copy_take_the_requests_lock(s3: Any, lock_bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=lock_bucket, Key="mp", ObjectLockLegalHoldStatus="ON")["UploadId"]
    etag = s3.upload_part(Bucket=lock_bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part")["ETag"]
    done = s3.complete_multipart_upload(Bucket=lock_bucket, Key="mp", UploadId=up,
                                        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    with pytest.raises(ClientError) as err:
        s3.delete_object(Bucket=lock_bucket, Key="mp", VersionId=done["VersionId"])
    assert _code(err) == "AccessDenied"
    copy = s3.copy_object(Bucket=lock_bucket, Key="copy", CopySource={"Bucket": lock_bucket, "Key": "mp"},
                          ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=_future(1))
    head = s3.head_object(Bucket=lock_bucket, Key="copy", VersionId=copy["VersionId"])
    assert head["ObjectLockMode"] == "COMPLIANCE" and "ObjectLockLegalHoldStatus" not in head  # not the source's


@pytest.fixture
def restarted(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def _admin(srv: ServerProcess, method: str, path: str) -> requests.Response:
    token = requests.post(f"{srv.endpoint}/api/admin/login", json={"username": "root", "password": ROOT_PASSWORD},
                          timeout=30).json()["token"]
    return requests.request(method, f"{srv.endpoint}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=60)


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (libfaketime)")
def test_retention_that_lifecycle_and_the_admin_api_both_fail_to_remove(
        tmp_path: Path, restarted: list[ServerProcess]) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, env=ADMIN_ENV)
    restarted.append(first.start())
    s3 = make_client(first.endpoint)
    s3.create_bucket(Bucket="worm", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="worm", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}}})
    s3.put_bucket_lifecycle_configuration(Bucket="worm", LifecycleConfiguration={"Rules": [{
        "ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    old = s3.put_object(Bucket="worm", Key="record", Body=b"kept for 30 days")["VersionId"]
    new = s3.put_object(Bucket="worm", Key="record", Body=b"also kept")["VersionId"]
    first.stop()
    later = ServerProcess(data, env={**ADMIN_ENV, **faketime_env(5 * 86400)})  # both rules due, retention not
    restarted.append(later.start())
    s3 = make_client(later.endpoint)
    ran = _admin(later, "POST", "/api/admin/lifecycle/run")
    assert ran.status_code == 200, ran.text
    assert any("AccessDenied" in e for e in ran.json()["errors"]), ran.json()
    refused = _admin(later, "DELETE", "/api/admin/buckets/worm?force=true")
    assert refused.status_code == 403, refused.text
    assert "Object Lock" in refused.json()["error"]
    later.stop()  # read back on the real clock (SigV4 refuses a client 5 days behind the server)
    again = ServerProcess(data, env=ADMIN_ENV)
    restarted.append(again.start())
    s3 = make_client(again.endpoint)
    for version, body in ((old, b"kept for 30 days"), (new, b"also kept")):
        assert s3.get_object(Bucket="worm", Key="record", VersionId=version)["Body"].read() == body
