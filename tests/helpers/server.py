"""A real s4-server process on a free 127.0.0.x port (127.0.0.1 unless told), for integration and crash tests."""

from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


# boto3 clients of each endpoint (helpers/s3client.py). A stopped server leaves their pooled connections dead; they
# are closed with it, so no socket is left for the garbage collector to warn about (filterwarnings = error). A
# closed client still works: its next request opens a new connection (a restarted server on the same port).
_CLIENTS: dict[str, list[Any]] = {}


def track_client(endpoint: str, client: Any) -> Any:
    _CLIENTS.setdefault(endpoint, []).append(client)
    return client


def _close_clients(endpoint: str) -> None:
    for client in _CLIENTS.pop(endpoint, []):
        client.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Starts ``s4-server`` with a data dir and env overrides; logs go to files printed on failure."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None,
                 nofile: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host  # a loopback address: the cluster tests run nodes on 127.0.0.1, .2 and .3
        self.port = port or free_port(host)
        self.extra_env = env or {}
        self.nofile = nofile  # an open-files limit (soft and hard) for the server process
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.extra_env.get("S4_TLS_CERT") else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
        env.update(S4_DATA_DIR=str(self.data_dir), S4_BIND=f"{self.host}:{self.port}", S4_ACCESS_KEY_ID=ACCESS_KEY,
                   S4_SECRET_ACCESS_KEY=SECRET_KEY, S4_CONSOLE_BIND="off")  # console tests ask for one
        env.update(self.extra_env)
        nofile = self.nofile
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        # The child gets its own copy of the log descriptor; the parent's is closed as soon as it has started.
        with open(self.log_path, "ab") as log:
            # A session of its own, so kill_group() can SIGKILL the supervisor and its workers at once.
            self.proc = subprocess.Popen([sys.executable, "-m", "s4.tools.server"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s4-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                unverified = ssl._create_unverified_context()  # readiness only; TLS tests verify on their own
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1, context=unverified) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill_group()  # never leave a half-started node (and its workers) running after the test
        raise RuntimeError(f"s4-server did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        _close_clients(self.endpoint)
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL every process of the server (supervisor and workers) in the same instant."""
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        _close_clients(self.endpoint)

    def worker_pids(self) -> list[int]:
        """PIDs of the HTTP worker processes (children of the supervisor); empty in single-process mode."""
        if self.proc is None:
            return []
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended since the listing (a dead worker's channel threads do)
            pids.extend(int(pid) for pid in children)
        return sorted(pids)
