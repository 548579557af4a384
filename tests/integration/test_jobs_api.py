"""Background jobs on a real server: admin API triggers and status, the ``s4-admin`` CLI, multipart TTL, and
the space test (200 MiB written, 80% deleted, compaction: the data directory under 2x the live bytes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.s3client import make_client
from helpers.server import ServerProcess

START_TIMEOUT_S = 120.0  # worker processes and the root password's argon2 hash are slow on a loaded machine


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("jobs") / "data", env={
        "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "x" * 32, "S4_VOLUME_SIZE": "262144",
        "S4_COMPACTION_MULTIPART_TTL_SECS": "1", "S4_LIFECYCLE_INTERVAL_HOURS": "24"}).start(START_TIMEOUT_S)
    yield proc
    proc.stop()






def test_admin_runs_and_status(srv: ServerProcess) -> None:
    s3 = make_client(srv.endpoint)
    s3.create_bucket(Bucket="wkr")
    for i in range(30):
        s3.put_object(Bucket="wkr", Key=f"o{i}", Body=bytes([i]) * 40_000)
    for i in range(25):
        s3.delete_object(Bucket="wkr", Key=f"o{i}")
    upload = s3.create_multipart_upload(Bucket="wkr", Key="abandoned")["UploadId"]
    s3.upload_part(Bucket="wkr", Key="abandoned", UploadId=upload, PartNumber=1, Body=b"p" * 50_000)
    time.sleep(1.2)
    t = root_token(srv)
    dry = admin_call(srv, "POST", "/api/admin/compaction/run?dry_run=true&threshold=0.3", t)
    assert dry["dry_run"] and dry["done"].get("would_compact", 0) > 0
    done = admin_call(srv, "POST", "/api/admin/compaction/run?threshold=0.3&max_volumes=100", t)
    assert done["done"]["abort_upload"] == 1 and done["done"]["volumes_deleted"] > 0, done
    for i in range(25, 30):
        assert s3.get_object(Bucket="wkr", Key=f"o{i}")["Body"].read() == bytes([i]) * 40_000
    status = admin_call(srv, "GET", "/api/admin/compaction/status", t)
    assert status["runs"] == 2 and status["last_run"]["done"] == done["done"]
    scrub = admin_call(srv, "POST", "/api/admin/scrubber/run", t)
    assert scrub["examined"]["blobs"] >= 5 and "bad_blobs" not in scrub["done"]
    assert admin_call(srv, "GET", "/api/admin/scrubber/status", t)["bad_blobs"] == []
    life = admin_call(srv, "POST", "/api/admin/lifecycle/run?dry_run=true", t)
    assert life["worker"] == "lifecycle" and life["dry_run"]
    assert admin_call(srv, "GET", "/api/admin/lifecycle/status", t)["runs"] == 1


def test_cli(srv: ServerProcess, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "s4.tools.admin_cli", "--endpoint", srv.endpoint, "--username", "root",
            "--password", ROOT_PASSWORD]
    for argv in (["compaction", "run", "--dry-run", "--threshold", "0.5"], ["lifecycle", "run"],
                 ["scrubber", "run"], ["scrubber", "status"]):
        done = subprocess.run(base + argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["worker"] == argv[0]
    bad = subprocess.run([*base[:-1], "wrong", "lifecycle", "run"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr


MiB = 1024 * 1024


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk, sum of file sizes) of every file under ``path``, as ``du`` and ``ls`` count."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


@pytest.mark.slow
def test_space_reclaimed_after_deleting_most_data(tmp_path: Path) -> None:
    """The issue's space test, end to end: 200 MiB over S3, 80% deleted, one compaction run over the admin API;
    the whole data directory (volumes, journal, views) then holds less than twice the live bytes, and every
    remaining object reads back byte-exact."""
    srv = ServerProcess(tmp_path / "data", env={"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "y" * 32,
                                                "S4_VOLUME_SIZE": str(8 * MiB)}).start(START_TIMEOUT_S)
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="space")
        digests = {}
        for i in range(100):  # 100 x 2 MiB of incompressible, undeduplicable bytes
            data = os.urandom(2 * MiB)
            s3.put_object(Bucket="space", Key=f"obj/{i:03d}", Body=data)
            digests[f"obj/{i:03d}"] = hashlib.sha256(data).hexdigest()
        before = disk_usage(srv.data_dir)
        assert min(before) >= 200 * MiB, before
        for key in [k for i, k in enumerate(sorted(digests)) if i % 5]:
            s3.delete_object(Bucket="space", Key=key)
            del digests[key]
        live = 2 * MiB * len(digests)
        assert live == 40 * MiB
        report = admin_call(srv, "POST", "/api/admin/compaction/run", root_token(srv))
        assert not report["errors"] and report["done"]["volumes_deleted"] > 0, report
        after = disk_usage(srv.data_dir)
        assert max(after) < 2 * live, (before, after, live, report["done"])
        for key, digest in digests.items():
            got = s3.get_object(Bucket="space", Key=key)["Body"].read()
            assert hashlib.sha256(got).hexdigest() == digest, key
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="space")["Contents"]] == sorted(digests)
    finally:
        srv.stop()
    srv.start(START_TIMEOUT_S)  # the journal replays to the same state: the space stays reclaimed, the bytes readable
    try:
        s3 = make_client(srv.endpoint)
        assert max(disk_usage(srv.data_dir)) < 2 * live
        for key, digest in digests.items():
            got = s3.get_object(Bucket="space", Key=key)["Body"].read()
            assert hashlib.sha256(got).hexdigest() == digest, key
    finally:
        srv.stop()
