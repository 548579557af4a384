"""Conditional deletes (issue 25): DeleteObject's If-Match / x-amz-if-match-last-modified-time / x-amz-if-match-size
and the ETag / LastModifiedTime / Size of DeleteObjects entries, on current objects and on named versions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess

OLD = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def status(resp: dict[str, Any]) -> int:
    return int(resp["ResponseMetadata"]["HTTPStatusCode"])


def exists(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
    except ClientError:
        return False
    return True


@pytest.fixture
def versioned(s3: Any, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.mark.parametrize("condition", ["etag", "mtime", "size"])
def test_conditional_delete_object_refuses_a_mismatch_and_keeps_the_object(s3: Any, bucket: str,
                                                                          condition: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"abc")["ETag"]
    mtime = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    bad = {"etag": {"IfMatch": '"0123"'}, "mtime": {"IfMatchLastModifiedTime": OLD}, "size": {"IfMatchSize": 4}}
    good = {"etag": {"IfMatch": etag}, "mtime": {"IfMatchLastModifiedTime": mtime}, "size": {"IfMatchSize": 3}}
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", **bad[condition])
    assert code(exc) == ("PreconditionFailed", 412)
    assert exists(s3, bucket, "k")
    assert status(s3.delete_object(Bucket=bucket, Key="k", **good[condition])) == 204
    assert not exists(s3, bucket, "k")
    # nothing left to delete: S3 answers 204 whatever the condition
    assert status(s3.delete_object(Bucket=bucket, Key="k", **bad[condition])) == 204


def test_conditional_delete_object_if_match_star_and_all_three_together(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"abcd")["ETag"]
    mtime = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    with pytest.raises(ClientError) as exc:  # two conditions hold, the size does not
        s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag, IfMatchLastModifiedTime=mtime, IfMatchSize=3)
    assert code(exc) == ("PreconditionFailed", 412)
    s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag, IfMatchLastModifiedTime=mtime, IfMatchSize=4)
    assert not exists(s3, bucket, "k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert not exists(s3, bucket, "k")


def test_conditional_delete_object_current_in_versioned_bucket(s3: Any, versioned: str) -> None:
    # no object data under the key (nothing, then only the delete marker the first call lays): conditions pass
    for _ in range(2):
        assert status(s3.delete_object(Bucket=versioned, Key="k", IfMatch='"0123"', IfMatchSize=7)) == 204
    s3.delete_objects(Bucket=versioned, Delete={"Objects": [
        {"Key": "k", "VersionId": m["VersionId"]} for m in s3.list_object_versions(Bucket=versioned)["DeleteMarkers"]]})
    put = s3.put_object(Bucket=versioned, Key="k", Body=b"abc")
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=versioned, Key="k", IfMatch='"0123"')
    assert code(exc) == ("PreconditionFailed", 412)
    assert s3.delete_object(Bucket=versioned, Key="k", IfMatch=put["ETag"])["DeleteMarker"] is True
    # the current version is now a delete marker: it has no ETag or size, so only If-Match: * matches it
    for bad in ({"IfMatch": put["ETag"]}, {"IfMatchSize": 0}, {"IfMatchLastModifiedTime": OLD}):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=versioned, Key="k", **bad)
        assert code(exc) == ("PreconditionFailed", 412)
    assert s3.delete_object(Bucket=versioned, Key="k", IfMatch="*")["DeleteMarker"] is True
    versions = s3.list_object_versions(Bucket=versioned)
    assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 2
    # once the object's only data version is gone, only markers remain: the key no longer exists, conditions pass
    s3.delete_object(Bucket=versioned, Key="k", VersionId=put["VersionId"])
    assert status(s3.delete_object(Bucket=versioned, Key="k", IfMatch=put["ETag"])) == 204


def test_conditional_delete_object_named_version(s3: Any, versioned: str) -> None:
    first = s3.put_object(Bucket=versioned, Key="k", Body=b"abc")
    s3.put_object(Bucket=versioned, Key="k", Body=b"newer")  # the condition applies to the named version
    mtime = s3.head_object(Bucket=versioned, Key="k", VersionId=first["VersionId"])["LastModified"]
    for bad in ({"IfMatch": '"0123"'}, {"IfMatchSize": 5}, {"IfMatchLastModifiedTime": OLD}):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=versioned, Key="k", VersionId=first["VersionId"], **bad)
        assert code(exc) == ("PreconditionFailed", 412)
    assert exists(s3, versioned, "k", first["VersionId"])
    resp = s3.delete_object(Bucket=versioned, Key="k", VersionId=first["VersionId"], IfMatch=first["ETag"],
                            IfMatchSize=3, IfMatchLastModifiedTime=mtime)
    assert "DeleteMarker" not in resp
    assert not exists(s3, versioned, "k", first["VersionId"])
    assert exists(s3, versioned, "k")
    assert status(s3.delete_object(Bucket=versioned, Key="k", VersionId=first["VersionId"], IfMatch='"0"')) == 204


def with_header(server: ServerProcess, operation: str, name: str, value: str) -> Any:
    """A client that adds one raw header to every ``operation`` request (values boto3 would not send)."""
    client = make_client(server.endpoint)

    def add(request: Any, **_: Any) -> None:
        request.headers[name] = value
    client.meta.events.register(f"before-sign.s3.{operation}", add)
    return client


def test_conditional_delete_object_rejects_unparseable_conditions(s3: Any, server: ServerProcess,
                                                                  bucket: str) -> None:
    """A condition that does not parse is a 400 and the object stays (never silently an unconditional delete)."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    for header, value in (("x-amz-if-match-size", "three"), ("x-amz-if-match-size", "-1"),
                          ("x-amz-if-match-last-modified-time", "yesterday")):
        with pytest.raises(ClientError) as exc:
            with_header(server, "DeleteObject", header, value).delete_object(Bucket=bucket, Key="k")
        assert code(exc) == ("InvalidArgument", 400), (header, value)
    assert exists(s3, bucket, "k")


@pytest.mark.parametrize("field", ["ETag", "LastModifiedTime", "Size"])
def test_conditional_delete_objects_answers_precondition_failed_per_key(s3: Any, bucket: str, field: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"abc")["ETag"]
    s3.put_object(Bucket=bucket, Key="other", Body=b"zz")
    mtime = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    bad: dict[str, Any] = {"ETag": '"0123"', "LastModifiedTime": OLD, "Size": 4}
    good: dict[str, Any] = {"ETag": etag, "LastModifiedTime": mtime, "Size": 3}
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", field: bad[field]}, {"Key": "other"}]})
    assert [(e["Key"], e["Code"]) for e in resp["Errors"]] == [("k", "PreconditionFailed")]
    assert [d["Key"] for d in resp["Deleted"]] == ["other"]
    assert exists(s3, bucket, "k")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", field: good[field]}]})
    assert [d["Key"] for d in resp["Deleted"]] == ["k"] and "Errors" not in resp
    assert not exists(s3, bucket, "k")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", field: bad[field]}]})
    assert [d["Key"] for d in resp["Deleted"]] == ["k"] and "Errors" not in resp


def test_conditional_delete_objects_on_versions(s3: Any, versioned: str) -> None:
    first = s3.put_object(Bucket=versioned, Key="k", Body=b"abc")
    s3.put_object(Bucket=versioned, Key="k", Body=b"newer")
    resp = s3.delete_objects(Bucket=versioned, Delete={"Objects": [
        {"Key": "k", "VersionId": first["VersionId"], "ETag": '"0123"'}]})
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in resp["Errors"]] == [
        ("k", first["VersionId"], "PreconditionFailed")]
    resp = s3.delete_objects(Bucket=versioned, Delete={"Objects": [
        {"Key": "k", "VersionId": first["VersionId"], "ETag": first["ETag"], "Size": 3}]})
    assert [(d["Key"], d["VersionId"]) for d in resp["Deleted"]] == [("k", first["VersionId"])]
    assert "DeleteMarker" not in resp["Deleted"][0]
    # the current version: a matching ETag lays a delete marker, which then fails every ETag condition
    current = s3.head_object(Bucket=versioned, Key="k")["ETag"]
    resp = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "k", "ETag": current}]})
    assert resp["Deleted"][0]["DeleteMarker"] is True
    resp = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "k", "ETag": current}]})
    assert resp["Errors"][0]["Code"] == "PreconditionFailed"
