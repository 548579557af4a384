"""The s4-server entry point: zero-config start with printed dev keys, refusal of bad settings, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from helpers.server import free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S4_", "AWS_"))}
    env.update(extra)
    return env


def wait_ready(url: str, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def test_zero_config_start_prints_working_dev_keys(tmp_path: Path) -> None:
    port = free_port()
    # No S4_* configuration at all except the port (9000 may be taken on a test machine); data goes to the
    # system temp dir, which TMPDIR points at.
    env = clean_env(TMPDIR=str(tmp_path), S4_BIND=f"127.0.0.1:{port}")
    with subprocess.Popen([sys.executable, "-m", "s4.tools.server"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # the block closes the pipe
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            banner = "".join(proc.stdout.readline() for _ in range(4)) if proc.stdout else ""
            access = re.search(r"Access key: (\S+)", banner)
            secret = re.search(r"Secret key: (\S+)", banner)
            assert access and secret, banner
            assert f"aws --endpoint-url http://127.0.0.1:{port} s3 ls" in banner
            assert (tmp_path / "s4-data" / "journal").is_dir()
            s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=access.group(1),
                              aws_secret_access_key=secret.group(1), region_name="us-east-1")
            s3.create_bucket(Bucket="zero-config")
            assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["zero-config"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bad_setting_stops_startup_naming_it(tmp_path: Path) -> None:
    env = clean_env(S4_DATA_DIR=str(tmp_path), S4_MAX_UPLOAD_SIZE="huge")
    done = subprocess.run([sys.executable, "-m", "s4.tools.server"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "S4_MAX_UPLOAD_SIZE" in done.stderr
    done = subprocess.run([sys.executable, "-m", "s4.tools.server"], env=clean_env(S4_BOGUS="1"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "S4_BOGUS" in done.stderr


def test_config_file_is_read(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[server]\nbind = "127.0.0.1:{port}"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    with subprocess.Popen([sys.executable, "-m", "s4.tools.server", "--config", str(cfg)],
                          env=clean_env(S4_ACCESS_KEY_ID="k", S4_SECRET_ACCESS_KEY="s"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # the block closes the pipe
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            assert (tmp_path / "data" / "views").is_dir()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
