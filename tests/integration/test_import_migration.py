"""``s4-admin import`` from real S3 servers (moto's server, SeaweedFS) into a real S4: a versioned bucket arrives
identical, an interrupted import resumes copying only what is missing, and ``--watch`` follows the source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.import_sources import Source, describe, moto_source, seaweedfs_source
from helpers.s3client import make_client
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

from s4.tools.importer import SourceVersion, list_source

SOURCES = {"moto": moto_source, "seaweedfs": seaweedfs_source}


@pytest.fixture(scope="module")
def s4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("import-s4") / "data",
                         env={"S4_WORKERS": "1", "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "m" * 32}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=list(SOURCES))
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    with SOURCES[request.param](tmp_path_factory.mktemp(request.param)) as src:
        yield src


def importer(s4: ServerProcess, src: Source, bucket: str, *args: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "s4.tools.admin_cli", "--endpoint", s4.endpoint, "import",
            "--source-endpoint", src.endpoint, "--source-access-key", "source-access-key",
            "--source-secret-key", "source-secret-key", "--source-bucket", bucket, "--state", str(state), *args]


def env(keys: tuple[str, str] = (ACCESS_KEY, SECRET_KEY)) -> dict[str, str]:
    """The S4 side's keys from the usual AWS variables (as an operator would set them)."""
    return dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1])


def superuser_keys(s4: ServerProcess) -> tuple[str, str]:
    """Keys of a fresh SuperUser IAM user: the access log names each request's key, so two runs can be told apart."""
    token = root_token(s4)
    user = admin_call(s4, "POST", "/api/admin/users", token,
                      {"username": f"su_{uuid.uuid4().hex[:8]}", "password": "pass-word-1", "role": "SuperUser"})
    keys = admin_call(s4, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    return keys["access_key"], keys["secret_key"]


def run_import(s4: ServerProcess, src: Source, bucket: str, *args: str, state: Path,
               keys: tuple[str, str] = (ACCESS_KEY, SECRET_KEY)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(importer(s4, src, bucket, *args, state=state), env=env(keys), capture_output=True,
                          text=True, timeout=300)


def versioned_source(src: Source) -> str:
    """Several versions per key with metadata, content headers and tags, and delete markers (one not latest)."""
    c = src.client
    bucket = f"mig-{uuid.uuid4().hex[:10]}"
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for n in range(3):
        c.put_object(Bucket=bucket, Key="docs/a.txt", Body=f"version {n} of a".encode() * (n + 1),
                     ContentType="text/plain", ContentEncoding="identity", ContentDisposition=f"inline; n={n}",
                     ContentLanguage="en", CacheControl="max-age=60", Expires="Wed, 21 Oct 2037 07:28:00 GMT",
                     Metadata={"rev": str(n), "owner": "alice"}, Tagging=f"rev={n}&team=blue")
        time.sleep(0.01)  # distinct Last-Modified (the sources stamp ms)
    c.put_object(Bucket=bucket, Key="b.bin", Body=b"\x00\x01" * 100)
    time.sleep(0.01)
    c.delete_object(Bucket=bucket, Key="b.bin")  # the latest is a delete marker
    time.sleep(0.01)
    c.put_object(Bucket=bucket, Key="c", Body=b"first")
    time.sleep(0.01)
    c.delete_object(Bucket=bucket, Key="c")
    time.sleep(0.01)
    c.put_object(Bucket=bucket, Key="c", Body=b"back again", Metadata={"k": "v"})  # a marker that is not latest
    return bucket


def multipart_source(src: Source, bucket: str) -> str:
    """An object uploaded in two parts (5 MiB + 1 KiB) with metadata and tags: its ``md5-2`` ETag."""
    c = src.client
    upload = c.create_multipart_upload(Bucket=bucket, Key="big", Metadata={"kind": "parts"}, Tagging="p=2",
                                       ContentType="application/x-big")["UploadId"]
    parts = []
    for number, size in ((1, 5 * 1024 * 1024), (2, 1024)):
        sent = c.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=number, Body=os.urandom(size))
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
    return str(c.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload,
                                           MultipartUpload={"Parts": parts})["ETag"]).strip('"')


def test_import_versioned_bucket_arrives_identical(s4: ServerProcess, source: Source, tmp_path: Path) -> None:
    bucket = versioned_source(source)
    etag = multipart_source(source, bucket)
    done = run_import(s4, source, bucket, "--all-versions", "--verify", state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"verify": "identical", "differences": 0}
    dest = make_client(s4.endpoint)
    assert describe(dest, bucket) == describe(source.client, bucket)
    # copied with the source's part sizes: the same multipart ETag (where the source answers HEAD ?partNumber=)
    assert dest.head_object(Bucket=bucket, Key="big")["ETag"].strip('"') == etag
    # a second run finds everything in its state file and sends nothing
    again = run_import(s4, source, bucket, "--all-versions", state=tmp_path / "state")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout.splitlines()[-1])
    assert report["copied"] == report["delete_markers"] == 0 and report["already_copied"] == 9


def test_import_verify_reports_differences(s4: ServerProcess, source: Source, tmp_path: Path) -> None:
    """--verify exits 1 and names a key whose bytes changed in S4 after the copy."""
    bucket = f"ver-{uuid.uuid4().hex[:10]}"
    source.client.create_bucket(Bucket=bucket)
    source.client.put_object(Bucket=bucket, Key="x", Body=b"source bytes")
    assert run_import(s4, source, bucket, state=tmp_path / "state").returncode == 0
    make_client(s4.endpoint).put_object(Bucket=bucket, Key="x", Body=b"other bytes!")
    checked = run_import(s4, source, bucket, "--verify", state=tmp_path / "state")
    assert checked.returncode == 1
    assert "x (version 1 of 1): ETag" in checked.stderr


def s4_writes(s4: ServerProcess, bucket: str, keys: tuple[str, str]) -> int:
    """PutObject and DeleteObject requests S4 logged for ``bucket`` signed with ``keys`` (the access log, one JSON
    line each): read once a sentinel request those keys send afterwards is logged (one HTTP process, in order)."""
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    client = boto3.client("s3", endpoint_url=s4.endpoint, aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                          region_name="us-east-1")
    try:
        client.put_object(Bucket=bucket, Key=sentinel, Body=b"")
        client.delete_object(Bucket=bucket, Key=sentinel)
    finally:
        client.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in s4.log().splitlines() if line.startswith('{"time"')]
        if any(e.get("key") == sentinel and e["operation"] == "DeleteObject" for e in lines):
            return sum(1 for e in lines if e.get("bucket") == bucket and e.get("actor") == keys[0]
                       and e.get("key", "").startswith("obj-") and e["operation"] in ("PutObject", "DeleteObject"))
        time.sleep(0.1)
    raise AssertionError("the sentinel request was never logged")


def test_import_interrupted_resumes_only_missing(s4: ServerProcess, source: Source, tmp_path: Path) -> None:
    """kill -9 midway; the restart sends S4 exactly the objects the state file does not hold, and S4 ends with
    each object once (an object S4 committed but the importer had not recorded is answered, not stored again).
    The two runs sign with different SuperUser keys, so S4's access log tells their requests apart."""
    bucket = f"int-{uuid.uuid4().hex[:10]}"
    source.client.create_bucket(Bucket=bucket)
    total = 40
    for n in range(total):
        source.client.put_object(Bucket=bucket, Key=f"obj-{n:03}", Body=os.urandom(2048))
    state = tmp_path / "state"
    proc = subprocess.Popen(importer(s4, source, bucket, "--workers", "2", state=state), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and state.read_text().count("\n") >= 8:
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    recorded = sum(1 for line in state.read_text().splitlines() if len(line) == 64)
    assert 8 <= recorded < total, "the import was not interrupted midway"
    second = superuser_keys(s4)
    resumed = run_import(s4, source, bucket, "--verify", state=state, keys=second)
    assert resumed.returncode == 0, resumed.stderr
    assert s4_writes(s4, bucket, second) == total - recorded  # only what the state file did not hold
    first_run = s4_writes(s4, bucket, (ACCESS_KEY, SECRET_KEY))
    assert recorded <= first_run <= recorded + 2  # at most --workers requests were in flight when killed
    listed = make_client(s4.endpoint).list_object_versions(Bucket=bucket, Prefix="obj-")
    assert len(listed["Versions"]) == total and "DeleteMarkers" not in listed


def wait_for(what: str, check: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("mode", ["current", "all-versions"])
def test_import_watch_applies_source_changes(s4: ServerProcess, source: Source, tmp_path: Path, mode: str) -> None:
    """A new object and a deletion at the source reach S4 while --watch runs; SIGINT stops it cleanly (exit 0).
    Current versions only: the key is deleted in S4; every version: the source's delete marker arrives, with its
    time."""
    bucket = f"wat-{uuid.uuid4().hex[:10]}"
    source.client.create_bucket(Bucket=bucket)
    if mode == "all-versions":
        source.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    source.client.put_object(Bucket=bucket, Key="stays", Body=b"1")
    source.client.put_object(Bucket=bucket, Key="goes", Body=b"2")
    extra = ["--all-versions"] if mode == "all-versions" else []
    proc = subprocess.Popen(importer(s4, source, bucket, "--watch", "--interval", "1", *extra,
                                     state=tmp_path / "state"),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dest = make_client(s4.endpoint)

    def keys() -> set[str]:
        try:
            return {o["Key"] for o in dest.list_objects_v2(Bucket=bucket).get("Contents", [])}
        except dest.exceptions.NoSuchBucket:
            return set()

    try:
        wait_for("the first pass", lambda: keys() == {"stays", "goes"})
        source.client.put_object(Bucket=bucket, Key="new", Body=b"3")
        source.client.delete_object(Bucket=bucket, Key="goes")
        wait_for("the change at the source", lambda: keys() == {"stays", "new"})
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    if mode == "current":
        assert (report["deleted"], report["delete_markers"]) == (1, 0)
        return
    assert (report["deleted"], report["delete_markers"]) == (0, 1)
    theirs = source.client.list_object_versions(Bucket=bucket)["DeleteMarkers"]
    ours = dest.list_object_versions(Bucket=bucket)["DeleteMarkers"]
    assert [(m["Key"], int(m["LastModified"].timestamp())) for m in ours] == \
        [(m["Key"], int(m["LastModified"].timestamp())) for m in theirs]


def test_list_source_orders_versions_oldest_first(source: Source) -> None:
    bucket = versioned_source(source)
    listing = list_source(source.client, bucket, all_versions=True)
    a: list[SourceVersion] = listing["docs/a.txt"]
    assert [v.size for v in a] == [len(f"version {n} of a".encode() * (n + 1)) for n in range(3)]
    assert [v.delete_marker for v in listing["c"]] == [False, True, False]
