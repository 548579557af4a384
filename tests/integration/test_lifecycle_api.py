"""Bucket lifecycle configuration over S3: boto3 round trips, AWS's validation errors, the README's AWS CLI
commands run as written, and the ``x-amz-expiration`` header."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err.get("Message", "")


def test_round_trip_and_delete(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _error(exc)[0] == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}},
        {"ID": "tagged", "Status": "Disabled",
         "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}], "ObjectSizeGreaterThan": 10,
                            "ObjectSizeLessThan": 1000}},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2}},
        {"ID": "markers", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"ExpiredObjectDeleteMarker": True},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got[0] == rules[0]
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "k", "Value": "v"}]
    assert got[1]["Filter"]["And"]["ObjectSizeGreaterThan"] == 10
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2}
    assert got[2]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert got[2]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _error(exc)[0] == "NoSuchLifecycleConfiguration"


def test_legacy_prefix_and_date(s3: Any, bucket: str) -> None:
    import datetime as dt

    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    s3.put_bucket_lifecycle(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "old", "Status": "Enabled", "Prefix": "tmp/", "Expiration": {"Date": when}}]})
    rule = s3.get_bucket_lifecycle(Bucket=bucket)["Rules"][0]
    assert rule["Prefix"] == "tmp/" and rule["Expiration"]["Date"] == when


@pytest.mark.parametrize(("rule", "code", "message"), [
    ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 0}},
     "InvalidArgument", "'Days' for Expiration action must be a positive integer"),
    ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 0}},
     "InvalidArgument", "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    ({"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "a", "Value": "b"}},
      "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
     "InvalidArgument", "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    ({"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "a", "Value": "b"}},
      "Expiration": {"ExpiredObjectDeleteMarker": True}},
     "InvalidArgument", "ExpiredObjectDeleteMarker cannot be specified with tags."),
    ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}},
     "InvalidArgument", "At least one action needs to be specified in a rule"),
    ({"ID": "x" * 256, "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
     "InvalidArgument", "ID length should not exceed allowed limit of 255"),
    ({"ID": "x", "Status": "Maybe", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
     "MalformedXML", ""),
])
def test_validation_errors(s3: Any, bucket: str, rule: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    got_code, got_message = _error(exc)
    assert got_code == code
    if message:
        assert got_message == message


def test_duplicate_ids(s3: Any, bucket: str) -> None:
    rule = {"ID": "same", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule, rule]})
    assert _error(exc) == ("InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule")


def test_expiration_header(s3: Any, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}]})
    s3.put_object(Bucket=bucket, Key="logs/a", Body=b"x")
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="logs/a")
    assert head["Expiration"].startswith('expiry-date="') and head["Expiration"].endswith(
        'GMT", rule-id="expire-logs"')
    assert "00:00:00 GMT" in head["Expiration"]
    assert "Expiration" in s3.get_object(Bucket=bucket, Key="logs/a")
    assert "Expiration" not in s3.head_object(Bucket=bucket, Key="data/a")


def test_put_object_answers_expiration_header(s3: Any, bucket: str) -> None:
    """PutObject (and CopyObject, CompleteMultipartUpload) tell the writer when the new version expires
    (``x-amz-expiration``), as GET/HEAD do; they said nothing (s3-tests test_lifecycle_expiration_header_put)."""
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "rule1", "Status": "Enabled", "Filter": {"Prefix": "days1/"}, "Expiration": {"Days": 1}}]})
    put = s3.put_object(Bucket=bucket, Key="days1/foo", Body=b"bar")
    assert put["Expiration"] == s3.head_object(Bucket=bucket, Key="days1/foo")["Expiration"]
    assert put["Expiration"].endswith('GMT", rule-id="rule1"')
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="other/foo", Body=b"bar")
    copied = s3.copy_object(Bucket=bucket, Key="days1/copy", CopySource={"Bucket": bucket, "Key": "other/foo"})
    assert copied["Expiration"].endswith('rule-id="rule1"')
    upload = s3.create_multipart_upload(Bucket=bucket, Key="days1/mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="days1/mp", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="days1/mp", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert done["Expiration"].endswith('rule-id="rule1"')


def _readme_block() -> str:
    text = README.read_text()
    section = text.split("## Lifecycle, compaction and scrubbing", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_readme_lifecycle_commands(server: ServerProcess, s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="mybucket")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    script = _readme_block().replace("http://localhost:9000", server.endpoint)
    lines = script.splitlines()
    heredoc_end = lines.index("JSON")
    setup = "\n".join(lines[: heredoc_end + 1])
    subprocess.run(["bash", "-c", setup], cwd=tmp_path, env=env, check=True, timeout=60)
    assert json.loads((tmp_path / "lifecycle.json").read_text())["Rules"][0]["ID"] == "expire-logs"
    outputs = []
    for line in lines[heredoc_end + 1:]:
        if not line.startswith("aws "):
            continue
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert len(outputs) == 3
    got = json.loads(outputs[1])["Rules"]
    assert [r["ID"] for r in got] == ["expire-logs", "cleanup-old-versions"]
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    with pytest.raises(ClientError):
        s3.get_bucket_lifecycle_configuration(Bucket="mybucket")
    s3.delete_bucket(Bucket="mybucket")


def test_rule_without_id_gets_a_generated_one_that_stays(s3: Any, bucket: str) -> None:
    """Issue 25: a rule sent without an ID is named by the server; the name is stored, so GETs agree."""
    rules = [{"Expiration": {"Days": 31}, "Prefix": "test1/", "Status": "Enabled"},
             {"ID": "mine", "Expiration": {"Days": 120}, "Prefix": "test2/", "Status": "Enabled"}]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    first = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] != "" for r in first] == [True, True] and first[1]["ID"] == "mine"
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == first


def test_transition_with_invalid_date_is_a_client_error(s3: Any, bucket: str) -> None:
    """Issue 25: a malformed transition is 400 (the client's mistake) before S4 says it has no transitions (501)."""
    def put(transition: dict[str, Any]) -> tuple[str, int]:
        rules = [{"ID": "r", "Prefix": "p/", "Status": "Enabled", "Transitions": [transition]}]
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]

    assert put({"Date": "20220927", "StorageClass": "GLACIER"})[1] == 400  # botocore sends epoch second 20220927
    assert put({"Date": "2022-09-27T12:00:00Z", "StorageClass": "GLACIER"}) == ("InvalidArgument", 400)
    assert put({"Date": "2022-09-27T00:00:00Z", "StorageClass": "GLACIER"}) == ("NotImplemented", 501)
    assert put({"Days": 30, "StorageClass": "GLACIER"}) == ("NotImplemented", 501)
