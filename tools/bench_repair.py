"""Repair benchmark (federation, part 2): how fast a returning node catches up, and what clients see meanwhile.

    python -m s4.tools.bench_repair [--backlog-mib 256] [--small 4000] [--concurrency 16] [--seconds 5]
                                    [--workers N] [--markdown FILE]

A 3-node pool on 127.0.0.1/.2/.3 (N=3, W=2, R=2; tools/bench/servers.py), the client on this machine talking to
node-1 only:

1. **Baseline**: a 70/30 GET/PUT mix of 4 KiB objects at ``--concurrency`` for ``--seconds``, every node up.
2. **Backlog**: node-3 stopped (SIGTERM); through node-1, ``--backlog-mib`` of 1 MiB objects, ``--small`` 4 KiB
   objects and deletes of every tenth of them (node-1 keeps hints for node-3; its journal holds all of it).
3. **Catch-up**: node-3 started again. From its start the same client mix runs through node-1, phase after phase
   of ``--seconds``, until node-3's health says ``caught_up`` (it pulled every peer's journal up to the head the
   peer reported, so it counts toward quorums again) and node-1 and node-2 hold no hint for it; bounded by
   ``--timeout``.

Reported: the catch-up time (node-3's process start to caught up, and to hints drained), the repair bandwidth
(the backlog's bytes over the catch-up time, and what node-3's data directory grew by), and the client's
throughput and latency during the catch-up against the baseline. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from .bench import workloads
from .bench.__main__ import ACCESS_KEY, SECRET_KEY
from .bench.client import Client
from .bench.servers import (
    POOL_HOSTS,
    POOL_ROOT_PASSWORD,
    Keys,
    LaunchError,
    free_ports,
    pool_env,
    s4_version,
    spawn,
    wait_pool_alive,
    wait_ready,
)
from .bench.servers import Server as BenchServer
from .bench.workloads import Result

MIB = 1 << 20


@dataclass
class Node:
    name: str
    endpoint: str
    env: dict[str, str]
    data: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self, work: Path) -> None:
        self.proc, self.log = spawn(self.name, [sys.executable, "-m", "s4.tools.server"], work, self.env)

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Outcome:
    started: str
    baseline: Result | None = None
    during: list[Result] = field(default_factory=list)
    backlog_bytes: int = 0
    backlog_objects: int = 0
    backlog_deletes: int = 0
    backlog_s: float = 0.0
    serving_s: float | None = None
    ready_s: float | None = None
    drained_s: float | None = None
    grown_bytes: int = 0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)


def start_pool(work: Path, keys: Keys, workers: int | None) -> list[Node]:
    grpc = [f"{h}:{free_ports(1, h)[0]}" for h in POOL_HOSTS]
    http = [f"{h}:{free_ports(1, h)[0]}" for h in POOL_HOSTS]
    nodes = []
    for i in range(len(POOL_HOSTS)):
        data = work / f"node-{i + 1}"
        data.mkdir()
        env = dict(os.environ, S4_DATA_DIR=str(data), S4_ACCESS_KEY_ID=keys.access, S4_SECRET_ACCESS_KEY=keys.secret,
                   **pool_env(grpc, http, i, workers, POOL_ROOT_PASSWORD))
        nodes.append(Node(f"node-{i + 1}", f"http://{http[i]}", env, data))
    for node in nodes:
        node.start(work)
    return nodes


def _get(url: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
        return bytes(resp.read())


def _token(node: Node) -> str:
    body = json.dumps({"username": "root", "password": POOL_ROOT_PASSWORD}).encode()
    request = urllib.request.Request(node.endpoint + "/api/admin/login", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(json.loads(resp.read())["token"])


def hints_for(node: Node, peer: str) -> float:
    text = _get(node.endpoint + "/metrics").decode()
    found = re.search(rf'^s4_cluster_hints_pending\{{peer="{peer}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def mixed_phase(c: Client, bucket: str, prefix: str, concurrency: int, seconds: float, name: str) -> Result:
    """The 70/30 GET/PUT mix of tools/bench over a key set of its own (a PUT phase first fills it)."""
    body = os.urandom(workloads.SMALL)
    keys = 512

    async def op(i: int) -> int:
        path = f"/{bucket}/{prefix}/{i % keys}"
        if i < keys or i % 10 >= 7:
            await c.request("PUT", path, body=workloads.unique_body(body, i))
        else:
            await c.request("GET", path)
        return workloads.SMALL

    return await workloads.timed_loop(name, concurrency, seconds, op)


async def write_backlog(c: Client, bucket: str, mib: int, small: int, concurrency: int, out: Outcome) -> None:
    big = os.urandom(MIB)
    little = os.urandom(workloads.SMALL)
    started = time.perf_counter()
    jobs: list[tuple[str, bytes]] = [(f"backlog/big-{i}", workloads.unique_body(big, i)) for i in range(mib)]
    jobs += [(f"backlog/small-{i}", workloads.unique_body(little, i)) for i in range(small)]
    queue = iter(jobs)

    async def worker() -> None:
        for key, data in queue:
            await c.request("PUT", f"/{bucket}/{key}", body=data)
            out.backlog_bytes += len(data)
            out.backlog_objects += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    doomed = iter([key for key, _ in jobs[::10]])

    async def deleter() -> None:
        for key in doomed:
            await c.request("DELETE", f"/{bucket}/{key}")
            out.backlog_deletes += 1

    await asyncio.gather(*(deleter() for _ in range(concurrency)))
    out.backlog_s = time.perf_counter() - started


async def bench(opts: argparse.Namespace, nodes: list[Node], work: Path) -> Outcome:
    keys = Keys(opts.access_key, opts.secret_key)
    out = Outcome(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_start=os.getloadavg())
    members = [n.proc for n in nodes[1:] if n.proc is not None]
    pool = BenchServer("S4 pool", nodes[0].endpoint, nodes[0].proc, log=nodes[0].log, members=members,
                       nodes=[n.endpoint for n in nodes])
    bucket = f"repair-{uuid.uuid4().hex[:8]}"
    await wait_ready(pool, keys, bucket, opts.startup_timeout)
    await wait_pool_alive(pool, opts.startup_timeout)
    victim = nodes[2]
    async with Client(nodes[0].endpoint, keys.access, keys.secret) as c:
        out.baseline = await mixed_phase(c, bucket, "baseline", opts.concurrency, opts.seconds, "mix, pool whole")
        log(f"baseline: {out.baseline.ops_per_s:,.0f} ops/s")
        victim.stop()
        before = dir_bytes(victim.data)
        await write_backlog(c, bucket, opts.backlog_mib, opts.small, opts.concurrency, out)
        log(f"backlog: {out.backlog_objects} objects, {out.backlog_bytes / MIB:,.1f} MiB, {out.backlog_deletes} "
            f"deletes in {out.backlog_s:.1f} s with {victim.name} down")
        victim.start(work)
        started = time.perf_counter()
        victim_token = ""
        deadline = started + opts.timeout
        phase = 0
        while time.perf_counter() < deadline and (out.ready_s is None or out.drained_s is None):
            phase += 1
            result = await mixed_phase(c, bucket, f"during-{phase}", opts.concurrency, opts.seconds,
                                       "mix, node catching up")
            out.during.append(result)
            try:
                if not victim_token:
                    victim_token = await asyncio.to_thread(_token, victim)
                health = json.loads(await asyncio.to_thread(_get, victim.endpoint + "/api/admin/cluster/health",
                                                            victim_token))
            except OSError:
                continue  # not serving yet
            now = time.perf_counter() - started
            if out.serving_s is None:
                out.serving_s = now
            if out.ready_s is None and health.get("caught_up") is True:
                out.ready_s = now
            pending = sum([await asyncio.to_thread(hints_for, n, victim.name) for n in nodes[:2]])
            if out.ready_s is not None and out.drained_s is None and pending == 0:
                out.drained_s = now
            log(f"catch-up phase {phase}: {result.ops_per_s:,.0f} ops/s, caught_up={health.get('caught_up')}, "
                f"hints pending {pending:.0f}")
    out.grown_bytes = dir_bytes(victim.data) - before
    out.load_end = os.getloadavg()
    return out


def render(opts: argparse.Namespace, out: Outcome) -> str:
    def per_s(value: float, seconds: float | None) -> str:
        return f"{value / MIB / seconds:,.1f}" if seconds else "–"

    base = out.baseline
    ops = sum(r.ops for r in out.during)
    elapsed = sum(r.seconds for r in out.during)
    latencies = sorted(x for r in out.during for x in r.latencies_ms)
    during_ops = ops / elapsed if elapsed else 0.0

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

    base_lat = sorted(base.latencies_ms) if base else []
    ratio = f"{during_ops / base.ops_per_s:.2f}x" if base and base.ops_per_s else "–"
    errors = sum(r.errors for r in out.during) + (base.errors if base else 0)
    lines = [f"## Repair: a returning node catches up ({out.started})", "",
             "Command: `" + shlex.join(["python", "-m", "s4.tools.bench_repair", *sys.argv[1:]]) + "`", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
             f"{platform.python_version()}; load average {'/'.join(f'{v:.1f}' for v in out.load_start)} at start, "
             f"{'/'.join(f'{v:.1f}' for v in out.load_end)} at end. S4 {s4_version()}, 3 nodes on "
             f"127.0.0.1/.2/.3, S4_WORKERS={opts.workers if opts.workers is not None else 'default'}; client on "
             "the same box, talking to node-1.", "",
             f"Backlog written with node-3 down: {out.backlog_objects:,} objects ({opts.backlog_mib} x 1 MiB, "
             f"{opts.small:,} x 4 KiB; {out.backlog_bytes / MIB:,.1f} MiB) and {out.backlog_deletes:,} deletes, in "
             f"{out.backlog_s:.1f} s.", "",
             "| measure | value |", "|---|---:|",
             f"| node-3 start to serving (checked after each client phase) | "
             f"{f'{out.serving_s:.1f} s' if out.serving_s is not None else 'never'} |",
             f"| node-3 start to caught up (counts toward quorums) | "
             f"{f'{out.ready_s:.1f} s' if out.ready_s is not None else 'not within the timeout'} |",
             f"| node-3 start to hints drained | "
             f"{f'{out.drained_s:.1f} s' if out.drained_s is not None else 'not within the timeout'} |",
             f"| repair bandwidth (backlog bytes / time to caught up) | "
             f"{per_s(out.backlog_bytes, out.ready_s)} MiB/s |",
             f"| node-3 data directory grew by | {out.grown_bytes / MIB:,.1f} MiB |",
             f"| client mix, pool whole (c={opts.concurrency}) | {base.ops_per_s if base else 0:,.0f} ops/s, p50 "
             f"{pct(base_lat, 0.5):.2f} ms, p99 {pct(base_lat, 0.99):.2f} ms |",
             f"| client mix while node-3 catches up | {during_ops:,.0f} ops/s, p50 {pct(latencies, 0.5):.2f} ms, "
             f"p99 {pct(latencies, 0.99):.2f} ms ({len(out.during)} phases of {opts.seconds:g} s) |",
             f"| during / whole | {ratio} |",
             f"| failed client requests | {errors} |"]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench_repair", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--access-key", default=ACCESS_KEY)
    p.add_argument("--secret-key", default=SECRET_KEY)
    p.add_argument("--workers", type=int, help="S4_WORKERS of every node")
    p.add_argument("--backlog-mib", type=int, default=256, help="1 MiB objects written while node-3 is down")
    p.add_argument("--small", type=int, default=4000, help="4 KiB objects written while node-3 is down")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each client phase")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the catch-up after this")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--work-dir", help="where the temporary data directories go")
    p.add_argument("--markdown", help="also write the report to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="s4-bench-repair-", dir=opts.work_dir))
    nodes: list[Node] = []
    try:
        nodes = start_pool(work, Keys(opts.access_key, opts.secret_key), opts.workers)
        outcome = uvloop.run(bench(opts, nodes, work))
    except LaunchError as exc:
        log(str(exc))
        return 1
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = render(opts, outcome)
    print(text)
    if opts.markdown:
        Path(opts.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
