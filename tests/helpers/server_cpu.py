"""CPU per request of a real S4 server, per process and per thread, under a fixed request count.

``python -m tests.helpers.server_cpu [--python OTHER_PYTHON ...] [--requests N] [--rounds R]`` starts one server
per build as the benchmark starts it (``tools/bench/servers.start_s4``: ``python -m s4.tools.server`` with the
default worker count, access log on), then, per round and build (the order reversed every round), sends N
sequential 4 KiB PUTs, N GETs and N HEADs of them and N DELETEs over one keep-alive connection (c=1). Around each
phase every thread of the server's process tree is read from ``/proc/<pid>/task/<tid>/schedstat`` (CPU time in
ns, exact where the ``stat`` ticks are 10 ms), so the table says which process (supervisor, worker) and which
thread spent the CPU of a request. Threads are named from ``py-spy dump`` when py-spy is installed (the Python
thread names), else from ``comm``.

CPU per request is what a loaded machine hardly moves (docs/performance.md); this adds where it goes. The figures
include what a phase leaves running after its last answer (group commit, the access log's flush): the phase
ends after ``--settle`` seconds. Background loops (scrubber, sweeps) are measured the same way in every phase;
``--idle`` measures them alone for as long as a phase took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from s4.tools.bench.client import Client
from s4.tools.bench.servers import Keys, Server, start_s4, wait_ready
from s4.tools.bench.workloads import unique_body

PROC = Path("/proc")
SIZE = 4096
PHASES = ("PUT", "GET", "HEAD", "DELETE")


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            try:
                stat = (PROC / entry.name / "stat").read_text()
            except OSError:
                continue
            children[int(stat[stat.rfind(")") + 2:].split()[1])].append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "supervisor"
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    if b"--worker-id" in argv:
        return "worker"  # the workers are summed: which one took the connection is the kernel's choice
    return "child " + Path(argv[0].decode(errors="replace")).name


def snapshot(root: int) -> dict[tuple[int, int], int]:
    """(pid, tid) -> CPU ns so far, for every thread of the tree under ``root``."""
    out = {}
    for pid in _tree(root):
        try:
            tids = os.listdir(PROC / str(pid) / "task")
        except OSError:
            continue
        for tid in tids:
            try:
                out[(pid, int(tid))] = int((PROC / str(pid) / "task" / tid / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return out


_PYSPY_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\)(?:: "([^"]+)")?', re.M)


def thread_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from ``py-spy dump --native``'s headers (empty without py-spy)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {}
    try:
        out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    names = {}
    for m in _PYSPY_THREAD.finditer(out):
        names[int(m.group(1), 0)] = m.group(2) or m.group(1)
    return names


def comm(pid: int, tid: int) -> str:
    try:
        return (PROC / str(pid) / "task" / str(tid) / "comm").read_text().strip()
    except OSError:
        return "?"


@dataclass
class Build:
    label: str
    server: Server
    names: dict[tuple[int, int], str] = field(default_factory=dict)
    # (phase, role, thread) -> [ns over every round], and the request counts
    cpu: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def root(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def name(self, pid: int, tid: int) -> str:
        if (pid, tid) not in self.names:
            self.names[(pid, tid)] = "main" if pid == tid else comm(pid, tid)
        return self.names[(pid, tid)]

    def add(self, phase: str, before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> None:
        for key, ns in after.items():
            used = ns - before.get(key, 0)
            if used:
                self.cpu[(phase, _role(key[0], self.root), self.name(*key))] += used


def spy(root: int, out: Path, rate: int) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the whole tree under ``root`` (raw collapsed stacks, native frames) until stopped."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    cmd = [exe, "record", "--pid", str(root), "--subprocesses", "--native", "--threads",
           "--rate", str(rate), "--format", "raw", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # py-spy attaches to every process before the phase starts
    return proc


def stop_spy(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


async def run_phase(build: Build, phase: str, c: Client, bucket: str, prefix: str, n: int, settle: float,
                    spy_to: Path | None = None, rate: int = 200) -> None:
    body = os.urandom(SIZE)
    recorder = spy(build.root, spy_to / f"{build.label}-{phase}.txt", rate) if spy_to is not None else None
    before = snapshot(build.root)
    for i in range(n):
        path = f"/{bucket}/{prefix}/{i}"
        if phase == "PUT":
            await c.request("PUT", path, body=unique_body(body, i))
        elif phase == "IDLE":
            await asyncio.sleep(0.0003)
        else:
            await c.request(phase, path)
    await asyncio.sleep(settle)
    after = snapshot(build.root)
    stop_spy(recorder)
    if spy_to is None:
        build.add(phase, before, after)
        build.requests[phase] += n


async def main_async(opts: argparse.Namespace) -> list[Build]:
    keys = Keys(secrets.token_hex(8).upper(), secrets.token_hex(16))
    work = Path(tempfile.mkdtemp(prefix="s4-server-cpu-"))
    builds: list[Build] = []
    try:
        pythons = [None, *opts.python]
        for i, python in enumerate(pythons):
            server = start_s4(work, keys, opts.workers, python)
            builds.append(Build("this" if python is None else f"other{i}", server))
        bucket = "cpu"
        for b in builds:
            await wait_ready(b.server, keys, bucket, 120)
        phases = [*PHASES, *(["IDLE"] if opts.idle else [])]
        for b in builds:  # warm-up: imports, caches, volumes opened; not measured
            async with Client(b.server.endpoint, keys.access, keys.secret) as c:
                for phase in PHASES:
                    await run_phase(Build(b.label, b.server), phase, c, bucket, "warm", opts.warmup, 0)
            for pid in _tree(b.root):  # Python thread names, once every thread has started
                for tid, nm in thread_names(pid).items():
                    b.names[(pid, tid)] = nm
        if opts.spy is not None:  # one profiled pass per build, not counted in the table
            opts.spy.mkdir(parents=True, exist_ok=True)
            for b in builds:
                async with Client(b.server.endpoint, keys.access, keys.secret) as c:
                    for phase in PHASES:
                        await run_phase(b, phase, c, bucket, "spy", opts.spy_requests, opts.settle, opts.spy,
                                        opts.spy_rate)
        for r in range(opts.rounds):
            order = builds if r % 2 == 0 else builds[::-1]
            for b in order:
                async with Client(b.server.endpoint, keys.access, keys.secret) as c:
                    for phase in phases:
                        await run_phase(b, phase, c, bucket, f"r{r}", opts.requests, opts.settle)
        return builds
    finally:
        for b in builds:
            b.server.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(builds: list[Build]) -> str:
    lines = []
    phases = sorted({p for b in builds for p, _, _ in b.cpu}, key=lambda p: (PHASES + ("IDLE",)).index(p))
    for phase in phases:
        rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * len(builds))
        for i, b in enumerate(builds):
            n = b.requests[phase]
            for (p, role, thread), ns in b.cpu.items():
                if p == phase:
                    rows[(role, thread)][i] += ns / 1000 / n
        lines.append(f"\n{phase} (µs of CPU per request; {' / '.join(b.label for b in builds)})")
        for (role, thread), us in sorted(rows.items(), key=lambda kv: -max(kv[1])):
            if max(us) >= 0.5:
                lines.append(f"  {role:12} {thread:28} " + " ".join(f"{u:9.1f}" for u in us))
        totals = [sum(v[i] for v in rows.values()) for i in range(len(builds))]
        lines.append(f"  {'total':41} " + " ".join(f"{u:9.1f}" for u in totals))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", default=[], help="another build's interpreter (its virtualenv)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None, help="S4_WORKERS (default: the server's own default)")
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--idle", action="store_true", help="also an idle phase as long as the requests' count")
    ap.add_argument("--spy", type=Path, help="also record each phase once per build with py-spy, into this folder")
    ap.add_argument("--spy-requests", type=int, default=3000)
    ap.add_argument("--spy-rate", type=int, default=200)
    opts = ap.parse_args()
    started = time.monotonic()
    builds = asyncio.run(main_async(opts))
    print(report(builds))
    print(f"\n({time.monotonic() - started:.0f} s; {opts.rounds} rounds of {opts.requests} requests per phase)")


if __name__ == "__main__":
    main()
