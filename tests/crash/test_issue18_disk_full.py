"""Disk full on a real node (issue 18 item 9): a small tmpfs is filled through S3 until the server answers 507
InsufficientStorage (never 500). Deletes and aborts still work, the server stays up, compaction brings the space
back, PUTs work again, and after a restart every acknowledged object reads back byte-exact and
``s4-journal verify`` passes.

Needs root to mount the tmpfs (CI runs as root); skipped with the reason where mounting is impossible.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.server import ServerProcess
from integration.conftest import make_client

pytestmark = pytest.mark.crash
START_TIMEOUT_S = 120.0
MiB = 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("64m")`` mounts a tmpfs of that size and returns it; unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for srv in started:
        srv.stop()


def start(servers: list[ServerProcess], data_dir: Path, **env: str) -> ServerProcess:
    srv = ServerProcess(data_dir, env={"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "x" * 32,
                                       "S4_LIFECYCLE_ENABLED": "false", "S4_COMPACTION_INTERVAL_HOURS": "1000",
                                       "S4_COMPACTION_FULL_TIME": "", **env})
    servers.append(srv.start(START_TIMEOUT_S))
    return srv




def compact(srv: ServerProcess) -> dict[str, Any]:
    return admin_call(srv, "POST", "/api/admin/compaction/run?threshold=0.01&max_volumes=1000", root_token(srv))  # type: ignore[no-any-return]


def error_of(exc: ClientError) -> tuple[int, str, str]:
    err = exc.response["Error"]
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], err.get("Code", ""), err.get("Message", "")


def assert_disk_full(exc: ClientError) -> None:
    status, code, message = error_of(exc)
    assert (status, code) == (507, "InsufficientStorage"), error_of(exc)
    assert "disk is full" in message


def fill(s3: Any, bucket: str, size: int, limit: int, prefix: str = "o") -> dict[str, bytes]:
    """PUT objects of ``size`` random bytes (4 at a time) until the server answers 507; every other answer must be
    a 200. Returns the acknowledged objects."""
    stored: dict[str, bytes] = {}
    full = False

    def one(i: int) -> tuple[str, bytes, ClientError | None]:
        key, body = f"{prefix}{i:05d}", os.urandom(size)
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except ClientError as exc:
            return key, body, exc
        return key, body, None

    with ThreadPoolExecutor(4) as pool:
        for start_at in range(0, limit, 4):
            for key, body, exc in pool.map(one, range(start_at, start_at + 4)):
                if exc is None:
                    stored[key] = body
                else:
                    assert_disk_full(exc)
                    full = True
            if full:
                return stored
    raise AssertionError(f"{limit} PUTs of {size} bytes never filled the disk")


def verify_journal(data_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def read_back(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key


def put_when_room(s3: Any, bucket: str, key: str, body: bytes, timeout_s: float = 90.0) -> None:
    """PUT until it is accepted: freed space shows once the worker processes drop the retired volumes' descriptors
    (every few seconds) and compaction has run again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            return
        except ClientError as exc:
            assert_disk_full(exc)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_issue18_disk_full_507_deletes_work_and_space_comes_back(tmpfs: Callable[[str], Path],
                                                                  servers: list[ServerProcess]) -> None:
    data_dir = tmpfs("64m")
    srv = start(servers, data_dir, S4_VOLUME_SIZE="4MB", S4_WORKERS="2")
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    s3.create_bucket(Bucket="fill")
    upload = s3.create_multipart_upload(Bucket="fill", Key="pending")["UploadId"]
    s3.upload_part(Bucket="fill", Key="pending", UploadId=upload, PartNumber=1, Body=os.urandom(MiB))

    stored = fill(s3, "fill", MiB, limit=400)
    assert len(stored) >= 20
    for i in range(8):  # one at a time now: after this 507 nothing else writes
        try:
            s3.put_object(Bucket="fill", Key=f"last{i}", Body=(body := os.urandom(MiB)))
        except ClientError as exc:
            assert_disk_full(exc)
            break
        stored[f"last{i}"] = body
    with pytest.raises(ClientError) as exc:  # still full: refused again, clearly
        s3.put_object(Bucket="fill", Key="more", Body=os.urandom(MiB))
    assert_disk_full(exc.value)

    s3.abort_multipart_upload(Bucket="fill", Key="pending", UploadId=upload)  # aborts use the reserve
    keys = sorted(stored)
    doomed = keys[: len(keys) * 3 // 4]  # the oldest: whole volumes become dead
    for key in doomed:
        s3.delete_object(Bucket="fill", Key=key)
        del stored[key]
    read_back(s3, "fill", stored)  # the server stayed up and serves what it acknowledged

    report = compact(srv)
    assert report["done"].get("volumes_deleted", 0) > 0, report
    put_when_room(s3, "fill", "after", b"a" * MiB)
    stored["after"] = b"a" * MiB
    compact(srv)  # now with the space the first pass freed: the partly live volumes too
    extra = os.urandom(4 * MiB)
    put_when_room(s3, "fill", "after-big", extra)
    stored["after-big"] = extra

    srv.stop()
    verify_journal(data_dir)
    srv = start(servers, data_dir, S4_VOLUME_SIZE="4MB", S4_WORKERS="2")
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    read_back(s3, "fill", stored)
    for key in doomed[:5]:
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket="fill", Key=key)
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_issue18_no_reserve_enospc_is_507_and_nothing_acknowledged_is_lost(tmpfs: Callable[[str], Path],
                                                                           servers: list[ServerProcess]) -> None:
    """With the reserve off (S4_DISK_RESERVE=0) the volume writes themselves hit ENOSPC: still a clean 507."""
    data_dir = tmpfs("32m")
    srv = start(servers, data_dir, S4_VOLUME_SIZE="4MB", S4_WORKERS="1", S4_DISK_RESERVE="0")
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    s3.create_bucket(Bucket="fill")
    stored = fill(s3, "fill", 3 * MiB // 2, limit=200)
    with urllib.request.urlopen(srv.endpoint + "/health", timeout=10) as resp:
        assert resp.status == 200
    read_back(s3, "fill", stored)
    freed = 0
    for key in sorted(stored)[:4]:
        try:
            s3.delete_object(Bucket="fill", Key=key)
        except ClientError as exc:  # with no reserve a delete may find no room for its record: 507, not 500
            assert_disk_full(exc)
            continue
        del stored[key]
        freed += 1
    srv.stop()
    verify_journal(data_dir)
    srv = start(servers, data_dir, S4_VOLUME_SIZE="4MB", S4_WORKERS="1", S4_DISK_RESERVE="0")
    read_back(make_client(srv.endpoint, retries={"max_attempts": 1}), "fill", stored)


@pytest.mark.parametrize("reserve", ["default", "0"])
def test_issue18_metadata_fill_of_journal_and_views_is_507(tmpfs: Callable[[str], Path],
                                                           servers: list[ServerProcess], reserve: str) -> None:
    """Empty objects use no volume bytes: the journal and LMDB fill the disk instead (with no reserve, until an
    LMDB commit or a journal write fails with ENOSPC)."""
    data_dir = tmpfs("8m")
    env = {"S4_WORKERS": "1"} if reserve == "default" else {"S4_WORKERS": "1", "S4_DISK_RESERVE": reserve}
    srv = start(servers, data_dir, **env)
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    s3.create_bucket(Bucket="meta")
    stored: dict[str, bytes] = {}
    full = False
    meta = {f"m{i}": "v" * 200 for i in range(8)}  # about 1.6 KiB of metadata per version record

    def one(i: int) -> tuple[str, ClientError | None]:
        key = f"empty/{i:06d}/" + "k" * 200
        try:
            s3.put_object(Bucket="meta", Key=key, Body=b"", Metadata=meta)
        except ClientError as exc:
            return key, exc
        return key, None

    with ThreadPoolExecutor(8) as pool:
        for start_at in range(0, 40_000, 64):
            for key, exc in pool.map(one, range(start_at, start_at + 64)):
                if exc is None:
                    stored[key] = b""
                else:
                    assert_disk_full(exc)
                    full = True
            if full:
                break
    assert full, "the metadata never filled the disk"
    for key in sorted(stored)[:50]:
        try:
            s3.delete_object(Bucket="meta", Key=key)
        except ClientError as exc:
            assert reserve == "0", "with the reserve a delete always finds room"
            assert_disk_full(exc)
            continue
        del stored[key]
    srv.stop()
    verify_journal(data_dir)
    srv = start(servers, data_dir, **env)
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    for key in list(stored)[::50]:
        s3.head_object(Bucket="meta", Key=key)


def test_issue18_a_full_disk_never_kills_a_worker_through_its_metrics_files(
        tmpfs: Callable[[str], Path], servers: list[ServerProcess]) -> None:
    """prometheus_client's multiprocess files are sparse and written through mmap: on a full filesystem, a write
    into one of their holes (a metric series a worker had not used yet) is a SIGBUS that kills the worker and drops
    its connections. Filled to the last byte, the server must keep answering every request (the workers' metric
    files are not on the data disk)."""
    data_dir = tmpfs("24m")
    srv = start(servers, data_dir, S4_VOLUME_SIZE="4MB", S4_WORKERS="2")
    s3 = make_client(srv.endpoint, retries={"max_attempts": 1})
    s3.create_bucket(Bucket="fill")
    stored = fill(s3, "fill", MiB, limit=200)
    with open(data_dir / "ballast", "wb", buffering=0) as ballast:  # the reserve too, by another writer
        for _ in range(10_000):
            try:
                ballast.write(bytes(64 * 1024))
            except OSError:
                break
    key = next(iter(stored))
    calls: list[Callable[[], Any]] = [
        lambda: s3.get_bucket_versioning(Bucket="fill"), lambda: s3.list_multipart_uploads(Bucket="fill"),
        lambda: s3.get_bucket_location(Bucket="fill"), lambda: s3.head_bucket(Bucket="fill"),
        lambda: s3.list_objects_v2(Bucket="fill", MaxKeys=5), lambda: s3.list_object_versions(Bucket="fill"),
        lambda: s3.get_bucket_tagging(Bucket="fill"), lambda: s3.get_bucket_cors(Bucket="fill"),
        lambda: s3.get_bucket_lifecycle_configuration(Bucket="fill"), lambda: s3.get_object_tagging(
            Bucket="fill", Key=key), lambda: s3.get_object_acl(Bucket="fill", Key=key),
        lambda: s3.head_object(Bucket="fill", Key=key), lambda: s3.list_buckets(),
        lambda: s3.put_object(Bucket="fill", Key="one-more", Body=b"x" * 4096)]
    for _ in range(4):  # several connections, so both workers serve each kind of request
        for call in calls:
            try:
                call()
            except ClientError as exc:  # an S3 answer (a 404 for a missing config, a 507): the worker is alive
                assert error_of(exc)[0] in (404, 507), error_of(exc)
    assert "exited with" not in srv.log(), srv.log()[-3000:]
    assert s3.get_object(Bucket="fill", Key=key)["Body"].read() == stored[key]
