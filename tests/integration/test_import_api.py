"""The import path of PutObject/DeleteObject (api/s3/imports.py, engine/imports.py): a SuperUser's
``x-amz-s4-import-*`` headers journal the source's Last-Modified, keep versions in the order written, never store
one source version twice, and are refused to anyone else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.s3client import make_client
from helpers.server import ServerProcess

from s4.tools.importer import HEADERS_PARAM, SOURCE_HEADER, TIME_HEADER, _with_headers

ENV = {"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "i" * 32}
OLD = datetime(2021, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("import-api") / "data", env=ENV).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def s3(srv: ServerProcess) -> Any:
    return _with_headers(make_client(srv.endpoint))


@pytest.fixture
def versioned(s3: Any) -> str:
    name = f"imp-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def stamp(when: datetime, source: str) -> dict[str, dict[str, str]]:
    return {HEADERS_PARAM: {TIME_HEADER: when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                            SOURCE_HEADER: source}}


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_import_put_keeps_source_last_modified_and_order(s3: Any, versioned: str) -> None:
    """Two versions imported oldest first: each listed with its source time (to the ms), the later one latest,
    although both were written now."""
    s3.put_object(Bucket=versioned, Key="k", Body=b"one", **stamp(OLD, "src-1"))
    s3.put_object(Bucket=versioned, Key="k", Body=b"two", **stamp(OLD + timedelta(days=30), "src-2"))
    versions = s3.list_object_versions(Bucket=versioned)["Versions"]
    assert [(v["LastModified"], v["IsLatest"], v["Size"]) for v in versions] == [
        (OLD + timedelta(days=30), True, 3), (OLD, False, 3)]
    head = s3.head_object(Bucket=versioned, Key="k")
    assert head["LastModified"] == (OLD + timedelta(days=30)).replace(microsecond=0)
    assert s3.get_object(Bucket=versioned, Key="k")["Body"].read() == b"two"


def test_import_delete_marker_keeps_source_time(s3: Any, versioned: str) -> None:
    s3.put_object(Bucket=versioned, Key="gone", Body=b"x", **stamp(OLD, "v1"))
    answer = s3.delete_object(Bucket=versioned, Key="gone", **stamp(OLD + timedelta(hours=1), "dm1"))
    assert answer["DeleteMarker"] is True
    markers = s3.list_object_versions(Bucket=versioned)["DeleteMarkers"]
    assert [(m["LastModified"], m["IsLatest"]) for m in markers] == [(OLD + timedelta(hours=1), True)]


def test_import_resent_source_version_is_not_stored_twice(s3: Any, versioned: str) -> None:
    """An importer killed after S4 committed resends: S4 answers with the version it has and writes nothing."""
    first = s3.put_object(Bucket=versioned, Key="k", Body=b"same", **stamp(OLD, "src-a"))
    again = s3.put_object(Bucket=versioned, Key="k", Body=b"same", **stamp(OLD, "src-a"))
    assert again["VersionId"] == first["VersionId"]
    m1 = s3.delete_object(Bucket=versioned, Key="k", **stamp(OLD + timedelta(1), "dm-a"))
    m2 = s3.delete_object(Bucket=versioned, Key="k", **stamp(OLD + timedelta(1), "dm-a"))
    assert m1["VersionId"] == m2["VersionId"]
    listed = s3.list_object_versions(Bucket=versioned)
    assert len(listed["Versions"]) == 1 and len(listed["DeleteMarkers"]) == 1


def test_import_headers_refused_for_non_superuser(srv: ServerProcess, s3: Any, versioned: str) -> None:
    """A Writer may not backdate Last-Modified (it would dodge lifecycle ages): AccessDenied, nothing stored."""
    token = root_token(srv)
    user = admin_call(srv, "POST", "/api/admin/users", token,
                      {"username": f"w_{uuid.uuid4().hex[:8]}", "password": "pass-word-1", "role": "Writer"})
    keys = admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    import boto3

    writer = _with_headers(boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=keys["access_key"],
                                        aws_secret_access_key=keys["secret_key"], region_name="us-east-1"))
    try:
        writer.put_object(Bucket=versioned, Key="plain", Body=b"ok")  # the user may write: only the stamp is refused
        with pytest.raises(ClientError) as put:
            writer.put_object(Bucket=versioned, Key="k", Body=b"x", **stamp(OLD, "s"))
        with pytest.raises(ClientError) as delete:
            writer.delete_object(Bucket=versioned, Key="plain", **stamp(OLD, "d"))
    finally:
        writer.close()
    assert code(put) == code(delete) == "AccessDenied"
    listed = s3.list_object_versions(Bucket=versioned)
    assert [v["Key"] for v in listed["Versions"]] == ["plain"] and "DeleteMarkers" not in listed


@pytest.mark.parametrize("headers", [
    {TIME_HEADER: "2021-01-01T00:00:00Z"},  # no source id
    {TIME_HEADER: "yesterday", SOURCE_HEADER: "s"},
    {TIME_HEADER: "2021-01-01T00:00:00", SOURCE_HEADER: "s"},  # no zone
    {TIME_HEADER: "2999-01-01T00:00:00Z", SOURCE_HEADER: "s"},  # in the future
    {TIME_HEADER: "2021-01-01T00:00:00Z", SOURCE_HEADER: "s" * 257},
])
def test_import_bad_stamp_is_invalid_argument(s3: Any, versioned: str, headers: dict[str, str]) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=versioned, Key="k", Body=b"x", **{HEADERS_PARAM: headers})
    assert code(exc) == "InvalidArgument"
    assert "Versions" not in s3.list_object_versions(Bucket=versioned)


def test_import_lifecycle_counts_from_source_time(srv: ServerProcess, s3: Any, versioned: str) -> None:
    """Lifecycle ages do not restart at migration: an object imported with a time 10 days ago expires under a
    1-day rule on the next run, one written now does not."""
    s3.put_bucket_lifecycle_configuration(Bucket=versioned, LifecycleConfiguration={"Rules": [
        {"ID": "old", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]})
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    s3.put_object(Bucket=versioned, Key="imported", Body=b"x", **stamp(ten_days_ago, "life-1"))
    s3.put_object(Bucket=versioned, Key="fresh", Body=b"y")
    admin_call(srv, "POST", "/api/admin/lifecycle/run", root_token(srv))
    current = {o["Key"] for o in s3.list_objects_v2(Bucket=versioned).get("Contents", [])}
    assert current == {"fresh"}


def test_import_state_file_torn_line_ignored(tmp_path: Path) -> None:
    """A kill mid-append leaves a partial identity: it is not taken as copied (that version is resent)."""
    from s4.tools.importer import State

    path = tmp_path / "state"
    path.write_text("a" * 64 + "\n" + "b" * 20)
    state = State(path)
    try:
        assert state.done == {"a" * 64}
    finally:
        state.close()


def _multipart(s3: Any, bucket: str, source: str) -> dict[str, Any]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
    return dict(s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
                                             **stamp(OLD, source)))


def test_import_multipart_completion_keeps_source_time_once(s3: Any, versioned: str) -> None:
    """Large objects are imported as multipart uploads: the stamp on the completion sets Last-Modified, and a
    resent one completes nothing (its upload is aborted, no second version)."""
    first = _multipart(s3, versioned, "mp-1")
    again = _multipart(s3, versioned, "mp-1")
    assert again["VersionId"] == first["VersionId"]
    versions = s3.list_object_versions(Bucket=versioned)["Versions"]
    assert [(v["VersionId"], v["LastModified"]) for v in versions] == [(first["VersionId"], OLD)]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=versioned)


def test_import_headers_on_other_operations_are_invalid_request(s3: Any, versioned: str) -> None:
    """A CopyObject (or CreateMultipartUpload) sent the stamp would write a version stamped now: refused, nothing
    written."""
    s3.put_object(Bucket=versioned, Key="src", Body=b"x")
    with pytest.raises(ClientError) as copy:
        s3.copy_object(Bucket=versioned, Key="dst", CopySource={"Bucket": versioned, "Key": "src"},
                       **stamp(OLD, "c"))
    with pytest.raises(ClientError) as create:
        s3.create_multipart_upload(Bucket=versioned, Key="dst", **stamp(OLD, "m"))
    assert code(copy) == code(create) == "InvalidRequest"
    assert [v["Key"] for v in s3.list_object_versions(Bucket=versioned)["Versions"]] == ["src"]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=versioned)
