"""Issue 18, items 1 and 3, with real processes: one data directory per server, and no acknowledged write dropped
by journal recovery.

1. A second ``s4-server`` (or ``s4-journal repair``) on a data directory a server holds exits non-zero naming the
   directory and the holder's PID, touching nothing; the first keeps serving, and everything it acknowledged is
   there after a restart. ``s4-journal verify`` runs beside it.
3. A flipped bit in the journal's last record after acknowledged PUTs (the views applied it, so it was committed)
   or in a middle record: start-up refuses with CorruptJournalError's message (segment, offset, why), no
   traceback, and ``s4-journal verify`` fails. ``s4-journal repair --yes`` is the way out, and says what it lost.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port

from s4.journal.framing import HEADER_BYTES
from s4.journal.segment import SEGMENT_HEADER_BYTES, list_segments
from s4.tools.replay import iter_events, scan_journal

pytestmark = pytest.mark.crash
BUCKET = "issue18"
RUN_TIMEOUT_S = 120


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}))


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(S4_DATA_DIR=str(data_dir), S4_BIND=f"127.0.0.1:{free_port()}", S4_ACCESS_KEY_ID=ACCESS_KEY,
               S4_SECRET_ACCESS_KEY=SECRET_KEY, S4_WORKERS="1")
    env.update(extra)
    return env


def run_server_to_exit(data_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """An ``s4-server`` that is expected to refuse: it must exit by itself (a bounded wait)."""
    try:
        return subprocess.run([sys.executable, "-m", "s4.tools.server"], env=server_env(data_dir, **extra),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:  # it started serving: the lock did not hold
        raise AssertionError(f"the second server did not refuse:\n{exc.stdout!r}\n{exc.stderr!r}") from None


def journal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    return subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", *args], env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)


def put_objects(s3: Any, prefix: str, count: int) -> dict[str, bytes]:
    bodies = {f"{prefix}/{i}": os.urandom(100 + i * 37) for i in range(count)}
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return bodies


def assert_served(s3: Any, bodies: dict[str, bytes]) -> None:
    for key, body in bodies.items():
        got = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest(), key


def assert_refused_cleanly(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_issue18_second_server_on_the_same_data_dir_refuses(tmp_path: Path, workers: str) -> None:
    """With S4_WORKERS=2 the supervisor holds the lock and its workers serve regardless."""
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir, env={"S4_WORKERS": workers}).start()
    try:
        s3 = client(first.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        bodies = put_objects(s3, "before", 20)
        segments_before = {p.name: p.read_bytes() for p in list_segments(data_dir / "journal")}
        assert first.proc is not None

        output = assert_refused_cleanly(run_server_to_exit(data_dir))
        assert str(data_dir) in output and f"pid {first.proc.pid}" in output, output
        # The second server touched nothing: no recovery, no truncation, no new volume of its own.
        assert {p.name: p.read_bytes() for p in list_segments(data_dir / "journal")} == segments_before

        bodies |= put_objects(s3, "after", 20)  # the first keeps serving, reads and writes
        assert_served(s3, bodies)
        first.stop()
        first.start()
        assert_served(client(first.endpoint), bodies)
        keys = [o["Key"] for o in client(first.endpoint).list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert keys == sorted(bodies)
    finally:
        first.stop()


def test_issue18_repair_refused_while_a_server_runs_verify_allowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir).start()
    try:
        s3 = client(server.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        bodies = put_objects(s3, "k", 10)
        assert server.proc is not None
        before = {p.name: p.read_bytes() for p in list_segments(data_dir / "journal")}

        repair = journal_cli("repair", "--data-dir", str(data_dir), "--yes")
        output = assert_refused_cleanly(repair)
        assert str(data_dir) in output and f"pid {server.proc.pid}" in output, output
        assert {p.name: p.read_bytes() for p in list_segments(data_dir / "journal")} == before

        verify = journal_cli("verify", "--data-dir", str(data_dir))
        assert verify.returncode == 0 and "OK: no problems found" in verify.stdout, verify.stdout + verify.stderr
        dump = journal_cli("dump", "--data-dir", str(data_dir))
        assert dump.returncode == 0 and dump.stdout.count("\n") >= 11
        assert_served(s3, bodies)
    finally:
        server.stop()


def _last_record_offset(segment: Path) -> int:
    """Start of the last record of a segment (walk the frames by their length fields)."""
    data = segment.read_bytes()
    pos, last = SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES
    while pos < len(data):
        last = pos
        pos += HEADER_BYTES + int.from_bytes(data[pos : pos + 4], "little")
    return last


def _flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x10]))


def _seed(data_dir: Path, stop_signal: int) -> tuple[dict[str, bytes], Path]:
    """A server that acknowledged a bucket and 12 PUTs (one record each), then stopped."""
    server = ServerProcess(data_dir).start()
    try:
        s3 = client(server.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        bodies = put_objects(s3, "k", 12)
    finally:
        server.stop(stop_signal)
    return bodies, list_segments(data_dir / "journal")[-1]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_issue18_flipped_bit_in_the_last_record_refuses_and_verify_fails(tmp_path: Path, stop_signal: int) -> None:
    data_dir = tmp_path / "data"
    bodies, segment = _seed(data_dir, stop_signal)
    journal = scan_journal(data_dir / "journal")
    lost = list(iter_events(data_dir / "journal", journal.last_seq))[-1].payload["key"]
    assert lost == "k/11"  # the last record is the last acknowledged PUT
    last_start = _last_record_offset(segment)
    _flip_bit(segment, segment.stat().st_size - 3)  # inside the payload of the last (acknowledged) record
    damaged = segment.read_bytes()

    output = assert_refused_cleanly(run_server_to_exit(data_dir))
    assert f"journal corrupt in segment {segment.name} at offset {last_start}" in output, output
    assert "payload checksum mismatch" in output and "committed" in output, output
    assert segment.read_bytes() == damaged  # refusing truncated nothing

    verify = journal_cli("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 1, verify.stdout
    assert "committed" in verify.stdout and "refuses to start" in verify.stdout, verify.stdout

    # The operator's way out (docs/operations.md): repair drops the damaged record on purpose, says so, and
    # rebuilds the views; everything before it is served.
    repair = journal_cli("repair", "--data-dir", str(data_dir), "--yes")
    assert repair.returncode == 0 and "LOST: seq" in repair.stdout and "rebuilt the views" in repair.stdout, (
        repair.stdout + repair.stderr)
    server = ServerProcess(data_dir).start()
    try:
        s3 = client(server.endpoint)
        assert_served(s3, {k: v for k, v in bodies.items() if k != lost})
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket=BUCKET, Key=lost)
    finally:
        server.stop()


def test_issue18_flipped_bit_in_a_middle_record_refuses(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _seed(data_dir, signal.SIGTERM)
    segment = list_segments(data_dir / "journal")[-1]
    events_before = scan_journal(data_dir / "journal").last_seq
    data = segment.read_bytes()
    pos, starts = SEGMENT_HEADER_BYTES, []
    while pos < len(data):
        starts.append(pos)
        pos += HEADER_BYTES + int.from_bytes(data[pos : pos + 4], "little")
    middle = starts[len(starts) // 2]
    _flip_bit(segment, middle + HEADER_BYTES + 5)

    output = assert_refused_cleanly(run_server_to_exit(data_dir))
    assert f"journal corrupt in segment {segment.name} at offset {middle}" in output, output
    verify = journal_cli("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 1 and "corruption" in verify.stdout, verify.stdout
    assert scan_journal(data_dir / "journal").last_seq < events_before
