"""CPU per request of a real S4 server, per process and per thread, under a fixed request count.

``python -m tests.helpers.server_cpu [--python OTHER_PYTHON ...] [--requests N] [--rounds R] [--concurrency C,...]
[--phases PUT,GET,HEAD,DELETE]`` starts one server per build as the benchmark starts it
(``tools/bench/servers.start_s4``: ``python -m s4.tools.server`` with the default worker count, access log on),
then, per round, concurrency and build (the order reversed every round), sends N 4 KiB PUTs, N GETs and N HEADs of
them and N DELETEs, from C tasks over C keep-alive connections (default c=1: one connection, sequential). The same
``--python`` twice is an A/A pair: how far two identical servers' figures fall apart on this machine now. Around
each phase every thread of the server's process tree is read from ``/proc/<pid>/task/<tid>/schedstat`` (CPU time in
ns, exact where the ``stat`` ticks are 10 ms), so the table says which process (supervisor, worker) and which
thread spent the CPU of a request. Threads are named from ``py-spy dump`` when py-spy is installed (the Python
thread names), else from ``comm``.

CPU per request is what a loaded machine hardly moves (docs/performance.md); this adds where it goes. The figures
include what a phase leaves running after its last answer (group commit, the access log's flush): the phase
ends after ``--settle`` seconds. Background loops (scrubber, sweeps) are measured the same way in every phase;
``--idle`` measures them alone for as long as a phase took.

Beside the CPU, each thread's voluntary and forced context switches are counted (``/proc/.../status``): per
request the voluntary ones say how well an event loop batches (a loop that finds several requests ready per
wake-up blocks less than once per request); the forced ones how often the machine's load took the core away.
Per process, user and system time (``stat``, in ticks) and read and write system calls (``io``) are summed too.
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


def process_counters(root: int) -> dict[int, tuple[int, int, int, int]]:
    """pid -> (user ticks, system ticks, read system calls, write system calls) so far, per process of the tree."""
    out = {}
    for pid in _tree(root):
        try:
            stat = (PROC / str(pid) / "stat").read_text()
            io = dict(line.split(": ") for line in (PROC / str(pid) / "io").read_text().splitlines())
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[pid] = (int(fields[11]), int(fields[12]), int(io["syscr"]), int(io["syscw"]))
    return out


def snapshot(root: int) -> dict[tuple[int, int], tuple[int, int, int]]:
    """(pid, tid) -> (CPU ns, voluntary and forced context switches) so far, per thread of the tree under ``root``."""
    out = {}
    for pid in _tree(root):
        try:
            tids = os.listdir(PROC / str(pid) / "task")
        except OSError:
            continue
        for tid in tids:
            try:
                task = PROC / str(pid) / "task" / tid
                ns = int((task / "schedstat").read_text().split()[0])
                status = (task / "status").read_text()
                voluntary = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
                forced = int(status.split("\nnonvoluntary_ctxt_switches:")[1].split()[0])
                out[(pid, int(tid))] = (ns, voluntary, forced)
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
    switches: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # (phase, role) -> [user ticks, system ticks, read calls, write calls]
    counters: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # phase -> [wall seconds of the requests, this client's CPU seconds], for the rate and the client's share
    client: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))

    @property
    def root(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def name(self, pid: int, tid: int) -> str:
        if (pid, tid) not in self.names:
            self.names[(pid, tid)] = "main" if pid == tid else comm(pid, tid)
        return self.names[(pid, tid)]

    def add(self, phase: str, before: dict[tuple[int, int], tuple[int, int, int]],
            after: dict[tuple[int, int], tuple[int, int, int]]) -> None:
        for key, (ns, voluntary, forced) in after.items():
            ns0, voluntary0, forced0 = before.get(key, (0, 0, 0))
            if ns - ns0:
                row = (phase, _role(key[0], self.root), self.name(*key))
                self.cpu[row] += ns - ns0
                self.switches[row][0] += voluntary - voluntary0
                self.switches[row][1] += forced - forced0

    def add_counters(self, phase: str, before: dict[int, tuple[int, int, int, int]],
                     after: dict[int, tuple[int, int, int, int]]) -> None:
        for pid, now in after.items():
            then = before.get(pid, (0, 0, 0, 0))
            sums = self.counters[(phase, _role(pid, self.root))]
            for i in range(4):
                sums[i] += now[i] - then[i]


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
                    spy_to: Path | None = None, rate: int = 200, concurrency: int = 1) -> None:
    body = os.urandom(SIZE)
    recorder = spy(build.root, spy_to / f"{build.label}-{phase}.txt", rate) if spy_to is not None else None
    before, counters = snapshot(build.root), process_counters(build.root)
    counter = iter(range(n))

    async def task() -> None:
        for i in counter:  # the tasks share one counter: N requests in all, C in flight
            path = f"/{bucket}/{prefix}/{i}"
            if phase == "PUT":
                await c.request("PUT", path, body=unique_body(body, i))
            elif phase == "IDLE":
                await asyncio.sleep(0.0003)
            else:
                await c.request(phase, path)

    wall, own = time.perf_counter(), time.process_time()
    await asyncio.gather(*(task() for _ in range(1 if phase == "IDLE" else concurrency)))
    wall, own = time.perf_counter() - wall, time.process_time() - own
    await asyncio.sleep(settle)
    after, counters_after = snapshot(build.root), process_counters(build.root)
    stop_spy(recorder)
    if spy_to is None:
        label = phase if concurrency == 1 else f"{phase} c={concurrency}"
        build.add(label, before, after)
        build.add_counters(label, counters, counters_after)
        build.client[label][0] += wall
        build.client[label][1] += own
        build.requests[label] += n


async def main_async(opts: argparse.Namespace) -> list[Build]:
    keys = Keys(secrets.token_hex(8).upper(), secrets.token_hex(16))
    work = Path(tempfile.mkdtemp(prefix="s4-server-cpu-"))
    builds: list[Build] = []
    try:
        pythons = [None, *opts.python]
        for i, python in enumerate(pythons):
            (work / str(i)).mkdir()  # start_s4 names its data directory by build kind: one folder per build
            server = start_s4(work / str(i), keys, opts.workers, python)
            builds.append(Build("this" if python is None else f"other{i}", server))
        bucket = "cpu"
        for b in builds:
            await wait_ready(b.server, keys, bucket, 120)
        phases = [*opts.phases, *(["IDLE"] if opts.idle else [])]
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
            for conc in opts.concurrency:
                order = builds if r % 2 == 0 else builds[::-1]
                for b in order:
                    async with Client(b.server.endpoint, keys.access, keys.secret) as c:
                        for phase in phases:
                            await run_phase(b, phase, c, bucket, f"r{r}c{conc}", opts.requests, opts.settle,
                                            concurrency=conc)
        return builds
    finally:
        for b in builds:
            b.server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _phase_order(label: str) -> tuple[int, int]:
    name, _, conc = label.partition(" c=")
    return (PHASES + ("IDLE",)).index(name), int(conc or 1)


def report(builds: list[Build]) -> str:
    lines = []
    phases = sorted({p for b in builds for p, _, _ in b.cpu}, key=_phase_order)
    for phase in phases:
        rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * len(builds))
        wakes: dict[tuple[str, str], list[str]] = defaultdict(lambda: [""] * len(builds))
        for i, b in enumerate(builds):
            n = b.requests[phase]
            for (p, role, thread), ns in b.cpu.items():
                if p == phase:
                    rows[(role, thread)][i] += ns / 1000 / n
                    voluntary, forced = b.switches[(p, role, thread)]
                    wakes[(role, thread)][i] = f"{voluntary / n:5.2f}+{forced / n:4.2f}"
        lines.append(f"\n{phase} (µs of CPU per request, then voluntary+forced context switches per request; "
                     f"{' / '.join(b.label for b in builds)})")
        for (role, thread), us in sorted(rows.items(), key=lambda kv: -max(kv[1])):
            if max(us) >= 0.5:
                lines.append(f"  {role:12} {thread:28} " + " ".join(f"{u:9.1f}" for u in us) + "   "
                             + " ".join(wakes[(role, thread)]))
        totals = [sum(v[i] for v in rows.values()) for i in range(len(builds))]
        lines.append(f"  {'total':41} " + " ".join(f"{u:9.1f}" for u in totals))
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        for role in sorted({r for b in builds for p, r in b.counters if p == phase}):
            cells = []
            for b in builds:
                user, system, reads, writes = b.counters.get((phase, role), [0, 0, 0, 0])
                n = b.requests[phase]
                cells.append(f"user {user * tick_us / n:6.1f} sys {system * tick_us / n:6.1f} µs, "
                             f"read {reads / n:5.2f} write {writes / n:5.2f} calls")
            lines.append(f"  {role:12} per request: " + " | ".join(cells))
        lines.append("  rate, client CPU: " + " | ".join(
            f"{b.requests[phase] / b.client[phase][0]:7.0f} req/s, client "
            f"{b.client[phase][1] / b.requests[phase] * 1e6:5.1f} µs/req" for b in builds if b.client[phase][0]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", default=[], help="another build's interpreter (its virtualenv)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--phases", type=lambda v: [p for p in v.split(",") if p], default=list(PHASES),
                    help="comma list of PUT, GET, HEAD, DELETE (GET and HEAD read what PUT stored)")
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1],
                    help="comma list: each phase is measured at each (C connections, C requests in flight)")
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
