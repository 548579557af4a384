"""Multi-process serving (``S4_WORKERS`` > 1): this process owns the journal; N children serve HTTP.

The supervisor opens the Engine (journal, replay, the LMDB writer, the sequencer) and the node's background
jobs, binds one listening socket per worker on the same port (SO_REUSEPORT: the kernel spreads connections
evenly over them; one shared socket let whichever worker woke first accept every keep-alive connection of a
client) and starts ``S4_WORKERS`` HTTP worker processes, each inheriting its own. The supervisor keeps every
socket open, so connections queued on a dead worker's socket wait for its replacement instead of being reset.
Each worker gets one end of a socketpair: its
commands travel over it to the sequencer here, which group-commits the commands of every worker together
(engine/remote). Workers append object bytes to volumes of their own and read LMDB and volumes directly.

A worker that dies is replaced (same worker id, so it resumes its own volumes). If the supervisor dies, the
kernel kills the workers (PR_SET_PDEATHSIG), so the node goes down as one and recovers on restart by replay:
nothing is acknowledged before its event is durable in the journal, whichever process answered.

This module never imports s4.api: workers are separate ``s4-server`` processes (tools/server.py).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from s4.engine import Engine
from s4.engine.ports import KeyReadPort, ReplicationPort
from s4.engine.remote import SequencerService, WorkerLink
from s4.engine.sequencer import Sequencer

log = logging.getLogger("s4.supervisor")
RESTART_BACKOFF_S = 1.0
SHUTDOWN_GRACE_S = 35.0


@dataclass
class _Child:
    worker_id: int
    proc: subprocess.Popen[bytes]
    link: WorkerLink
    started: float = field(default_factory=time.monotonic)


def bind_listeners(host: str, port: int, count: int, attempts: int = 50) -> list[socket.socket]:
    """``count`` listening sockets on one port (SO_REUSEPORT), one per worker.

    The port is first bound once without SO_REUSEPORT, so a port another server (or a second S4 by mistake) already
    holds is refused instead of silently sharing its connections. Retries briefly while a previous node's killed
    workers release the port. Port 0 picks a free port for all of them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = host.strip("[]")
    for attempt in range(attempts):
        listeners: list[socket.socket] = []
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:  # exclusive check: is the port free?
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((address, port))
                chosen = probe.getsockname()[1]
            for _ in range(count):
                listeners.append(_reuseport_listener(family, address, chosen))
            return listeners
        except OSError:
            for sock in listeners:  # never leave a bound socket behind: it would take a share of the connections
                sock.close()
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _reuseport_listener(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, engine: Engine, sequencer: Sequencer, background: object, listeners: list[socket.socket],
                 worker_argv: list[str], worker_env: dict[str, str],
                 replication: ReplicationPort | None = None, key_reads: KeyReadPort | None = None) -> None:
        """``sequencer``: the one that commits ``engine``'s commands (its local commit path's, engine/ports.py);
        the workers' commands are committed by it too, in the same batches, and (a cluster node) answered once
        ``replication`` has them on the write quorum. ``engine.cluster`` (the cluster status, run here) answers the
        workers' health requests."""
        self.engine = engine
        self.sequencer = sequencer
        self.replication = replication
        self.key_reads = key_reads
        self.background = background
        self.listeners = listeners  # worker i (from 1) serves listeners[i - 1]
        self.count = len(listeners)
        self.worker_argv = worker_argv
        self.worker_env = worker_env
        self.children: dict[int, _Child] = {}
        self._stopping = asyncio.Event()
        self._stop_requested = False  # set from a signal handler before the event loop runs, too
        self.service: SequencerService | None = None
        self.console_listener: socket.socket | None = None  # the web console's socket, shared by every worker

    def request_stop(self) -> None:
        self._stop_requested = True

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT; then stop the workers gracefully (they finish in-flight requests)."""
        loop = asyncio.get_running_loop()
        self.service = SequencerService(self.sequencer, self.background, loop, self.engine.login_throttle,
                                        self.engine.cluster, self.replication, self.key_reads,
                                        self.engine.names)
        self.service.blob_repair = self.engine.blob_repair  # workers' reads of a bad blob are healed here
        self.service.blob_push = self.engine.blob_push  # and their large bodies' chunks pushed to the peers
        self.service.iam_feed = self.engine.iam_feed  # and an access key they do not know is looked for here
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        for worker_id in range(1, self.count + 1):
            await self._spawn(worker_id)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.2)
                if self._stopping.is_set() or self._stop_requested:
                    break  # (Ctrl-C also reaches the workers: their exits now are not deaths to repair)
                await self._replace_dead_workers()
        finally:
            await self._stop_children()

    async def _spawn(self, worker_id: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fd = self.listeners[worker_id - 1].fileno()
        argv = [*self.worker_argv, "--worker-id", str(worker_id), "--listen-fd", str(listen_fd),
                "--sequencer-fd", str(theirs.fileno()), "--parent-pid", str(os.getpid())]
        fds = [listen_fd, theirs.fileno()]
        if self.console_listener is not None:
            argv += ["--console-fd", str(self.console_listener.fileno())]
            fds.append(self.console_listener.fileno())
        proc = subprocess.Popen(argv, env=self.worker_env, pass_fds=tuple(fds))
        theirs.close()
        assert self.service is not None
        link = await self.service.attach(ours, f"worker-{worker_id}")
        self.children[worker_id] = _Child(worker_id, proc, link)
        log.info("worker %d started (pid %d)", worker_id, proc.pid)

    async def _replace_dead_workers(self) -> None:
        for worker_id, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            log.warning("worker %d (pid %d) exited with %s; starting a replacement", worker_id, child.proc.pid,
                        code)
            child.link.close()
            self._forget_process(child.proc.pid)
            if time.monotonic() - child.started < RESTART_BACKOFF_S:
                await asyncio.sleep(RESTART_BACKOFF_S)  # a worker that dies at start-up must not spin the supervisor
            await self._spawn(worker_id)

    def _forget_process(self, pid: int) -> None:
        """Release what a dead worker held: stale LMDB reader slots, its per-process metric files."""
        stale = self.engine.views.env.reader_check()
        if stale:
            log.info("cleared %d stale LMDB reader slot(s)", stale)
        directory = self.worker_env.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            from prometheus_client import multiprocess

            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, directory)

    async def _stop_children(self) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for child in self.children.values():
            while child.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if child.proc.poll() is None:
                log.warning("worker %d did not stop in time; killing it", child.worker_id)
                child.proc.kill()
                child.proc.wait()
            child.link.close()
        for listener in self.listeners:
            listener.close()
        if self.console_listener is not None:
            self.console_listener.close()


METRICS_PREFIX = "s4-metrics-"


def metrics_dir() -> Path:
    """Per-process metric files of the workers (prometheus_client multiprocess mode), fresh at every start.

    Not in the data directory: prometheus_client grows its files sparsely and writes them through mmap, and a write
    into a hole of a file on a full filesystem is a SIGBUS that kills the process. A full data disk must get 507
    answers, never dead workers, so the files live in memory (``/dev/shm`` where it exists, else the system's temp
    directory), in a directory named after this process; directories left by processes that died are removed."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    for stale in base.glob(METRICS_PREFIX + "*"):
        pid = stale.name[len(METRICS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-", dir=base))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_command(config_path: str | None, log_level: str) -> list[str]:
    argv = [sys.executable, "-m", "s4.tools.server", "--log-level", log_level]
    if config_path:
        argv += ["--config", config_path]
    return argv


def die_with_parent(parent_pid: int) -> None:
    """In a worker: be killed when the supervisor dies, however it dies (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("PR_SET_PDEATHSIG unavailable: workers rely on the sequencer channel closing")
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)
