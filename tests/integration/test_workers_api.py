"""Background workers on a real server: admin API triggers and status, the ``s4-admin`` CLI, multipart TTL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.server import ServerProcess
from integration.conftest import make_client

ROOT_PASSWORD = "password12345"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("workers") / "data", env={
        "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "x" * 32, "S4_VOLUME_SIZE": "262144",
        "S4_COMPACTION_MULTIPART_TTL_SECS": "1", "S4_LIFECYCLE_INTERVAL_HOURS": "24"}).start()
    yield proc
    proc.stop()


def call(srv: ServerProcess, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    req = urllib.request.Request(srv.endpoint + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def token(srv: ServerProcess) -> str:
    return str(call(srv, "POST", "/api/admin/login", body={"username": "root", "password": ROOT_PASSWORD})["token"])


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
    t = token(srv)
    dry = call(srv, "POST", "/api/admin/compaction/run?dry_run=true&threshold=0.3", t)
    assert dry["dry_run"] and dry["done"].get("would_compact", 0) > 0
    done = call(srv, "POST", "/api/admin/compaction/run?threshold=0.3&max_volumes=100", t)
    assert done["done"]["abort_upload"] == 1 and done["done"]["volumes_deleted"] > 0, done
    for i in range(25, 30):
        assert s3.get_object(Bucket="wkr", Key=f"o{i}")["Body"].read() == bytes([i]) * 40_000
    status = call(srv, "GET", "/api/admin/compaction/status", t)
    assert status["runs"] == 2 and status["last_run"]["done"] == done["done"]
    scrub = call(srv, "POST", "/api/admin/scrubber/run", t)
    assert scrub["examined"]["blobs"] >= 5 and "bad_blobs" not in scrub["done"]
    assert call(srv, "GET", "/api/admin/scrubber/status", t)["bad_blobs"] == []
    life = call(srv, "POST", "/api/admin/lifecycle/run?dry_run=true", t)
    assert life["worker"] == "lifecycle" and life["dry_run"]
    assert call(srv, "GET", "/api/admin/lifecycle/status", t)["runs"] == 1


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
