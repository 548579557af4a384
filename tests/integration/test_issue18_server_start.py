"""Issue 18, smaller defects of start-up, with real ``s4-server`` processes: a private data directory (files 0600,
directories 0700), dev secrets printed at the first start only, settings S4 cannot honour stop start-up, and
S4_NODE_ID names the node of a fresh data directory and must match a stored one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, so that a file created without an explicit mode would be world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_issue18_data_directory_is_private(tmp_path: Path, umask_022: None) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, env={"S4_ROOT_PASSWORD": "password12345", "S4_WORKERS": "1"}).start()
    try:
        s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        s3.create_bucket(Bucket="private")
        s3.put_object(Bucket="private", Key="k", Body=b"secret bytes")
        server.stop(signal.SIGKILL)  # what is on disk while a node runs (the unsynced-views marker included)
    finally:
        server.stop()
    seen: dict[str, int] = {}
    for path in [data_dir, *data_dir.rglob("*")]:
        seen[str(path.relative_to(data_dir))] = stat.S_IMODE(path.stat().st_mode)
    for name in ("journal", "views", "volumes", "node_id", "LOCK", "iam.key", "views/data.mdb", "views/lock.mdb"):
        assert name in seen, sorted(seen)
    assert any(name.startswith("volumes/w00-") for name in seen) and any(n.endswith(".s4j") for n in seen)
    loose = {name: oct(mode) for name, mode in seen.items() if mode & 0o077}
    assert not loose, f"readable by others: {loose}"
    dirs = {name for name in seen if (data_dir / name).is_dir() or name == "."}
    assert all(seen[name] == 0o700 for name in dirs), {n: oct(seen[n]) for n in dirs}


def _run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "s4.tools.server"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _banner_then_stop(env: dict[str, str], port: int) -> str:
    """Start a server, read its banner lines (up to the listening line and the key lines), stop it."""
    proc = _run(env)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for _ in range(50):  # bounded: the banner is the first few lines
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Try:" in line or "printed at the first start only" in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        return "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_issue18_dev_secret_printed_at_first_start_only(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S4_", "AWS_"))}
    env.update(S4_DATA_DIR=str(tmp_path / "data"), S4_BIND=f"127.0.0.1:{port}", S4_WORKERS="1")
    first = _banner_then_stop(env, port)
    assert "Secret key: " in first, first
    secret = first.split("Secret key: ")[1].split()[0]
    second = _banner_then_stop(env, port)
    assert "printed at the first start only" in second and "dev-credentials.json" in second, second
    assert secret not in second and "Secret key" not in second


def _refused(data_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(S4_DATA_DIR=str(data_dir), S4_BIND=f"127.0.0.1:{free_port()}", S4_ACCESS_KEY_ID=ACCESS_KEY,
               S4_SECRET_ACCESS_KEY=SECRET_KEY, S4_WORKERS="1", **extra)
    try:
        done = subprocess.run([sys.executable, "-m", "s4.tools.server"], env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"s4-server started with {extra}") from None
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    return done


def test_issue18_federation_setting_stops_startup(tmp_path: Path) -> None:
    done = _refused(tmp_path / "data", S4_MODE="cluster")  # issue 19: cluster mode needs its settings
    assert "S4_MODE=cluster needs S4_NODE_ID" in done.stderr
    done = _refused(tmp_path / "data", S4_SEEDS="10.0.1.1:9100")
    assert "S4_SEEDS: only used with S4_MODE=cluster" in done.stderr
    done = _refused(tmp_path / "data", S4_GC_GRACE_DAYS="1")  # issue 20: a cluster setting, refused alone
    assert "S4_GC_GRACE_DAYS: only used with S4_MODE=cluster" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_issue18_node_id_names_a_fresh_node_and_must_match(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, env={"S4_NODE_ID": "node-1", "S4_WORKERS": "1"}).start()
    server.stop()
    assert (data_dir / "node_id").read_text() == "node-1"
    done = _refused(data_dir, S4_NODE_ID="node-2")
    assert "'node-2'" in done.stderr and "'node-1'" in done.stderr and str(data_dir) in done.stderr
    assert (data_dir / "node_id").read_text() == "node-1"
    ServerProcess(data_dir, env={"S4_NODE_ID": "node-1", "S4_WORKERS": "1"}).start().stop()
