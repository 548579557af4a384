"""Multi-process serving (S4_WORKERS=2): real supervisor + worker processes, real boto3 clients.

* keep-alive connections of one client are spread over the workers (one SO_REUSEPORT socket each);
* writers on different workers racing on the same keys end in one consistent last-writer-wins state;
* a worker killed with SIGKILL is replaced, and only the requests it held fail;
* SIGKILL of the supervisor takes its workers down (no orphan keeps the port);
* SIGKILL of the whole process group during a write load loses nothing acknowledged (crash marker).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from helpers.s3client import make_client
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

from s4.tools.bench.signer import Signer

WORKERS = {"S4_WORKERS": "2"}
NO_RETRIES = {"retries": {"total_max_attempts": 1, "mode": "standard"}, "max_pool_connections": 1}


def _wait(predicate: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _volume_bytes_by_worker(data_dir: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for vol in (data_dir / "volumes").glob("w*.vol"):
        worker = vol.name.split("-")[0]
        sizes[worker] = sizes.get(worker, 0) + vol.stat().st_size
    return sizes


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = ServerProcess(tmp_path_factory.mktemp("mp") / "data", env=WORKERS).start(60)
    yield server
    server.stop()


def test_two_workers_serve_and_share_one_journal(node: ServerProcess) -> None:
    assert len(node.worker_pids()) == 2
    assert "2 worker processes" in node.log()


def _connection_owners(port: int, pids: list[int]) -> dict[int, int]:
    """Worker pid -> how many accepted connections on ``port`` it holds (from /proc: socket inodes per process)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # ESTABLISHED, server side
                    inodes[fields[9]] = 0
    owners: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                owners[pid] = owners.get(pid, 0) + 1
    return owners


def test_keep_alive_connections_of_one_client_are_spread_over_the_workers(node: ServerProcess) -> None:
    port = int(node.endpoint.rsplit(":", 1)[1])
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    try:
        for conn in connections:  # one request each, so every connection is accepted and stays open (keep-alive)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: s4\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 ")
        owners = _connection_owners(port, node.worker_pids())
        assert sum(owners.values()) >= 32
        assert len(owners) == 2 and min(owners.values()) >= 4, owners  # all on one worker: 2 in 2^32 by chance
    finally:
        for conn in connections:
            conn.close()


def _owner_of(conn: http.client.HTTPConnection, port: int, pids: list[int]) -> int:
    """The worker pid holding the server side of ``conn`` (from /proc: the socket whose peer is its local port)."""
    local = conn.sock.getsockname()[1]
    inode = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and int(fields[2].rsplit(":", 1)[1], 16) == local:
                    inode = fields[9]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return 0


def _send(conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b"",
          query: dict[str, str] | None = None, signed: bool = True) -> int:
    host = conn.host + f":{conn.port}"
    headers = Signer(ACCESS_KEY, SECRET_KEY).headers(method, host, path, query=query) if signed else {}
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    conn.request(method, target, body=body, headers={**headers, "content-length": str(len(body))})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def test_bucket_policy_put_through_one_worker_applies_to_the_next_request_on_the_other(node: ServerProcess) -> None:
    """Access control reads the policy from the views on every request: no worker may keep a copy that another
    worker's change does not reach (a per-process cache invalidated only by its own writes would fail here)."""
    make_client(node.endpoint).create_bucket(Bucket="mp-policy")
    make_client(node.endpoint).put_object(Bucket="mp-policy", Key="open/k", Body=b"x")
    by_worker: dict[int, http.client.HTTPConnection] = {}
    for _ in range(64):  # the kernel hashes each connection to a worker: two owners after a few
        conn = http.client.HTTPConnection(node.host, node.port, timeout=30)
        assert _send(conn, "HEAD", "/mp-policy/open/k") == 200
        if by_worker.setdefault(_owner_of(conn, node.port, node.worker_pids()), conn) is not conn:
            conn.close()  # a worker already found
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2 and 0 not in by_worker, by_worker
    one, other = by_worker.values()

    def policy(prefix: str) -> bytes:
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::mp-policy/{prefix}/*"}]}).encode()

    assert _send(other, "GET", "/mp-policy/open/k", signed=False) == 403  # no policy: anonymous refused
    assert _send(one, "PUT", "/mp-policy", policy("open"), {"policy": ""}) == 204
    assert _send(other, "GET", "/mp-policy/open/k", signed=False) == 200  # the very next request, other worker
    assert _send(other, "PUT", "/mp-policy", policy("elsewhere"), {"policy": ""}) == 204  # replaced
    assert _send(one, "GET", "/mp-policy/open/k", signed=False) == 403
    assert _send(one, "PUT", "/mp-policy", policy("open"), {"policy": ""}) == 204
    assert _send(other, "GET", "/mp-policy/open/k", signed=False) == 200
    assert _send(one, "DELETE", "/mp-policy", query={"policy": ""}) == 204
    assert _send(other, "GET", "/mp-policy/open/k", signed=False) == 403
    for conn in by_worker.values():
        conn.close()


def test_concurrent_writers_on_different_workers_end_last_writer_wins(node: ServerProcess) -> None:
    s3 = make_client(node.endpoint)
    s3.create_bucket(Bucket="lww")
    s3.put_bucket_versioning(Bucket="lww", VersioningConfiguration={"Status": "Enabled"})
    keys = [f"key-{i}" for i in range(8)]
    writers, rounds = 8, 12
    written: dict[str, set[bytes]] = {k: set() for k in keys}
    lock = threading.Lock()

    def writer(w: int) -> None:
        client = make_client(node.endpoint, max_pool_connections=1)  # one connection each: spread over workers
        for r in range(rounds):
            for key in keys:
                body = f"writer {w} round {r} {key} ".encode() * (1 + (w * 7 + r) % 40)
                client.put_object(Bucket="lww", Key=key, Body=body)
                with lock:
                    written[key].add(body)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))

    by_worker = _volume_bytes_by_worker(node.data_dir)
    assert by_worker.get("w01", 0) > 0 and by_worker.get("w02", 0) > 0, by_worker

    for key in keys:
        versions = s3.list_object_versions(Bucket="lww", Prefix=key)["Versions"]
        versions = [v for v in versions if v["Key"] == key]
        assert len(versions) == writers * rounds  # every acknowledged write is one version, none lost or doubled
        latest = [v for v in versions if v["IsLatest"]]
        assert len(latest) == 1 and versions[0] is latest[0]  # newest first, exactly one latest
        current = s3.get_object(Bucket="lww", Key=key)
        body = current["Body"].read()
        assert body in written[key]
        assert current["VersionId"] == latest[0]["VersionId"]
        assert s3.get_object(Bucket="lww", Key=key, VersionId=latest[0]["VersionId"])["Body"].read() == body
        # every version holds bytes somebody wrote to this key
        for v in random.sample(versions, 5):
            assert s3.get_object(Bucket="lww", Key=key, VersionId=v["VersionId"])["Body"].read() in written[key]


def test_killed_worker_is_replaced_and_only_its_requests_fail(node: ServerProcess) -> None:
    s3 = make_client(node.endpoint)
    s3.create_bucket(Bucket="survivor")
    before = node.worker_pids()
    victim = before[0]
    stop = threading.Event()
    acked: dict[str, bytes] = {}
    failures: list[str] = []
    lock = threading.Lock()
    threads = 6

    def load(t: int) -> None:
        client = make_client(node.endpoint, **NO_RETRIES)
        n = 0
        while not stop.is_set():
            key, body = f"t{t}/{n}", os.urandom(random.randint(1, 64 * 1024))
            n += 1
            try:
                client.put_object(Bucket="survivor", Key=key, Body=body)
                with lock:
                    acked[key] = body
                assert client.get_object(Bucket="survivor", Key=key)["Body"].read() == body
            except (BotoCoreError, ClientError) as exc:
                with lock:
                    failures.append(f"{key}: {exc}")

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(load, t) for t in range(threads)]
        try:
            time.sleep(1.5)
            os.kill(victim, 9)
            assert _wait(lambda: len(node.worker_pids()) == 2 and victim not in node.worker_pids()), node.log()
            time.sleep(1.5)
        finally:
            stop.set()
        for fut in futures:
            fut.result()

    assert len(failures) <= threads, failures  # at most the one request per client the dead worker held
    assert len(acked) > 20
    client = make_client(node.endpoint)
    for key, body in acked.items():
        assert client.get_object(Bucket="survivor", Key=key)["Body"].read() == body
    assert "starting a replacement" in node.log()


def test_supervisor_death_takes_the_workers_down(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env=WORKERS).start(60)
    workers = server.worker_pids()
    assert len(workers) == 2
    assert server.proc is not None
    server.proc.kill()  # the supervisor only
    server.proc.wait()
    assert _wait(lambda: not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers), 15)
    restarted = ServerProcess(tmp_path / "data", env=WORKERS, port=server.port).start(60)  # the port is free
    try:
        assert len(restarted.worker_pids()) == 2
    finally:
        restarted.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


_acked_lock = threading.Lock()


def _write_until(stop: threading.Event, endpoint: str, prefix: str, acked: dict[str, str]) -> None:
    """PUT new keys until told to stop; record the digest of every acknowledged one."""
    client = make_client(endpoint, **NO_RETRIES)
    n = 0
    while not stop.is_set():
        key = f"{prefix}/{n}"
        n += 1
        body = os.urandom(random.choice((100, 5000, 300_000, 2_000_000)))
        try:
            client.put_object(Bucket="crash", Key=key, Body=body)
        except (BotoCoreError, ClientError):
            continue
        with _acked_lock:
            acked[key] = hashlib.sha256(body).hexdigest()


@pytest.mark.crash
def test_kill_9_of_the_process_group_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[str, str] = {}
    for round_no in range(3):
        server = ServerProcess(data, env=WORKERS).start(60)
        s3 = make_client(server.endpoint)
        if round_no == 0:
            s3.create_bucket(Bucket="crash")
        for key, digest in acked.items():  # everything acknowledged in earlier rounds survived
            assert hashlib.sha256(s3.get_object(Bucket="crash", Key=key)["Body"].read()).hexdigest() == digest
        stop = threading.Event()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(_write_until, stop, server.endpoint, f"r{round_no}/t{t}", acked)
                       for t in range(8)]
            time.sleep(random.uniform(1.0, 3.0))
            server.kill_group()
            stop.set()
            for fut in futures:
                fut.result()
    final = ServerProcess(data, env=WORKERS).start(60)
    try:
        s3 = make_client(final.endpoint)
        for key, digest in acked.items():
            assert hashlib.sha256(s3.get_object(Bucket="crash", Key=key)["Body"].read()).hexdigest() == digest
    finally:
        final.stop()
    verify = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "verify", "--data-dir", str(data)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
