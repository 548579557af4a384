"""One benchmark run: start the servers, run every step on each of them in turn for ``rounds`` rounds, report.

Within a round each step (say "4 KiB at concurrency 16") runs on S4, then on each peer, back to back, and the
order is reversed every other round (S4, peers... then ...peers, S4), so load from other work on the machine lands
on every server alike. All servers stay up for the whole run; only the one being measured gets requests.

``--cluster 3`` adds a 3-node S4 pool (127.0.0.1/.2/.3) as one more server: the client talks to node 1, which
coordinates every write (quorum replication to the other two) and serves every read; its CPU is the three
nodes' together. The report then carries a pool/single table against the issue's bar.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import uvloop

from . import report, workloads
from .client import Client
from .disk import CHUNK, sequential_write
from .rss import RssSampler, trees_cpu_seconds, wait_idle
from .servers import BASELINE, PEERS, Keys, Server, start_s4, start_s4_pool, wait_pool_alive, wait_ready
from .workloads import Result


@dataclass
class Options:
    keys: Keys
    endpoint: str | None = None
    peers: list[str] = field(default_factory=list)
    s4_workers: int | None = None
    baseline: str | None = None  # another interpreter's S4 (another checkout), measured beside this one
    cluster: int = 0  # 0: no pool; 3: also a 3-node S4 pool, measured against the single S4
    rounds: int = 2
    concurrency: list[int] = field(default_factory=lambda: [1, 16, 64])
    seconds: float = 5.0
    large_mib: int = 64
    large_count: int = 4
    multipart_mib: int = 256
    list_keys: list[int] = field(default_factory=lambda: [10_000])
    fill_concurrency: int = 64
    list_budget: float = 600.0
    preload: int = 0
    preload_size: int = workloads.SMALL
    disk_mib: int = 1024
    work_dir: str | None = None
    keep: bool = False
    startup_timeout: float = 120.0
    settle: float = 10.0
    argv: list[str] = field(default_factory=list)


@dataclass
class Target:
    server: Server
    bucket: str
    results: list[Result] = field(default_factory=list)
    filled: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Step:
    label: str
    run: Callable[[Client, Target], Awaitable[list[Result]]]
    small: bool = False  # also run on servers that only answer the 4 KiB workloads (the no-op ceiling)


@dataclass
class Outcome:
    targets: list[Target]
    disk: list[Result]
    peaks: dict[str, dict[str, int | None]]
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    started: str


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ordered(items: Sequence[Target], round_no: int) -> list[Target]:
    """Round 0 in the given order, round 1 reversed, and so on."""
    return list(items) if round_no % 2 == 0 else list(reversed(items))


async def _small(conc: int, seconds: float, c: Client, t: Target) -> list[Result]:
    return await workloads.small_objects(c, t.bucket, conc, seconds)


async def _large(mib: int, count: int, c: Client, t: Target) -> list[Result]:
    return await workloads.large_objects(c, t.bucket, mib, count)


async def _multipart(mib: int, c: Client, t: Target) -> list[Result]:
    return [await workloads.multipart(c, t.bucket, mib)]


async def _listing(keys: int, fill_conc: int, budget: float, seconds: float, c: Client, t: Target) -> list[Result]:
    """List ``keys`` keys (whole passes for at least ``seconds``); the first round on a server fills them first
    (and reports that fill's PUT rate)."""
    prefix = workloads.list_prefix_name(keys)
    out = []
    if keys not in t.filled:
        out.append(await workloads.fill(c, t.bucket, prefix, keys, fill_conc))
        t.filled.add(keys)
    out.append(await workloads.listing(c, t.bucket, prefix, keys, budget, seconds))
    return out


def build_steps(opts: Options) -> list[Step]:
    steps = [Step(f"4 KiB c={c}", partial(_small, c, opts.seconds), small=True) for c in opts.concurrency]
    if opts.large_mib and opts.large_count:
        steps.append(Step(f"{opts.large_mib} MiB", partial(_large, opts.large_mib, opts.large_count)))
    if opts.multipart_mib:
        steps.append(Step(f"multipart {opts.multipart_mib} MiB", partial(_multipart, opts.multipart_mib)))
    steps += [Step(f"list {n:,}", partial(_listing, n, opts.fill_concurrency, opts.list_budget, opts.seconds))
              for n in opts.list_keys if n]
    return steps


def summary(results: Sequence[Result]) -> str:
    return "; ".join(f"{r.name} c={r.concurrency} {report.fmt_value(r.value, r.unit)} {r.unit}"
                     + (f" ({r.errors} err)" if r.errors else "")
                     + (f" (busy {r.drain_s:.1f} s after)" if r.drain_s and r.drain_s >= 0.1 else "") for r in results)


async def run_step(step: Step, t: Target, keys: Keys) -> list[Result]:
    pids = t.server.pids  # none for an S4 started elsewhere (--endpoint): its CPU is not measured
    probe = partial(trees_cpu_seconds, pids) if pids else None
    token = workloads.SERVER_CPU.set(probe)
    drain = workloads.SERVER_DRAIN.set(partial(wait_idle, pids) if pids and t.server.drains else None)
    try:
        async with Client(t.server.endpoint, keys.access, keys.secret, keys.region) as c:
            return await step.run(c, t)
    finally:
        workloads.SERVER_DRAIN.reset(drain)
        workloads.SERVER_CPU.reset(token)


async def bench(opts: Options, servers: list[Server], work: Path, sampler: RssSampler) -> Outcome:
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    targets = [Target(s, f"bench-{uuid.uuid4().hex[:10]}") for s in servers]
    for t in targets:
        if t.server.nodes:  # a pool: a write needs a quorum, so every node alive first
            await wait_pool_alive(t.server, opts.startup_timeout)
        await wait_ready(t.server, opts.keys, t.bucket, opts.startup_timeout)
        log(f"{t.server.name} ready at {t.server.endpoint}")
    if opts.settle:  # start-up work (S4 loading its Select libraries, SeaweedFS electing a master) ends first
        log(f"settling for {opts.settle:g} s")
        await asyncio.sleep(opts.settle)
    steps = build_steps(opts)
    disk: list[Result] = []
    for rnd in range(opts.rounds):
        if opts.disk_mib:
            disk.append(await asyncio.to_thread(sequential_write, work, opts.disk_mib))
            log(f"[round {rnd + 1}/{opts.rounds}] disk: {summary(disk[-1:])}")
        for step in steps:
            for t in ordered(targets, rnd):
                if t.server.small_only and not step.small:
                    continue
                results = await run_step(step, t, opts.keys)
                t.results.extend(results)
                log(f"[round {rnd + 1}/{opts.rounds}] {step.label} on {t.server.name}: {summary(results)}")
    peaks: dict[str, dict[str, int | None]] = {"suite": dict(sampler.peaks())}
    if opts.preload:
        await scale_phase(opts, [t for t in targets if not t.server.small_only])
        peaks["incl. preload"] = dict(sampler.peaks())
    return Outcome(targets, disk, peaks, load_start, os.getloadavg(), started)


async def scale_phase(opts: Options, targets: list[Target]) -> None:
    """Preload ``opts.preload`` objects on each server, then re-measure 4 KiB PUT/GET for every round."""
    for t in targets:
        step = Step("preload", partial(_preload, opts))
        results = await run_step(step, t, opts.keys)
        t.results.extend(results)
        log(f"preload on {t.server.name}: {summary(results)}")
    for rnd in range(opts.rounds):
        for conc in opts.concurrency:
            step = Step(f"scale c={conc}", partial(_scale, opts.preload, conc, opts.seconds))
            for t in ordered(targets, rnd):
                results = await run_step(step, t, opts.keys)
                t.results.extend(results)
                log(f"[round {rnd + 1}/{opts.rounds}] {step.label} on {t.server.name}: {summary(results)}")


async def _preload(opts: Options, c: Client, t: Target) -> list[Result]:
    return [await workloads.preload(c, t.bucket, opts.preload, opts.preload_size, opts.fill_concurrency)]


async def _scale(stored: int, conc: int, seconds: float, c: Client, t: Target) -> list[Result]:
    return await workloads.scale_check(c, t.bucket, stored, conc, seconds)


def start_servers(opts: Options, work: Path, servers: list[Server]) -> None:
    """Start S4 (unless ``opts.endpoint``) and each peer, appending to ``servers`` as they start."""
    if opts.endpoint:
        servers.append(Server("S4", opts.endpoint, version="already running", command=["--endpoint"]))
    else:
        servers.append(start_s4(work, opts.keys, opts.s4_workers))
    if opts.baseline:
        servers.append(start_s4(work, opts.keys, opts.s4_workers, python=opts.baseline))
    if opts.cluster:
        servers.append(start_s4_pool(work, opts.keys, opts.s4_workers))
    for name in opts.peers:
        servers.append(PEERS[name](work, opts.keys))


def run(opts: Options) -> str:
    """Run the whole benchmark and return the Markdown report."""
    work = Path(tempfile.mkdtemp(prefix="s4-bench-", dir=opts.work_dir))
    sampler = RssSampler()
    servers: list[Server] = []
    try:
        start_servers(opts, work, servers)
        for s in servers:
            if s.pids:
                sampler.watch(s.name, *s.pids)
        sampler.start()
        outcome = uvloop.run(bench(opts, servers, work, sampler))  # the client's loop costs CPU too
    finally:
        sampler.stop()
        for s in servers:
            s.stop()
        if opts.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return render(opts, outcome, str(work))


def render(opts: Options, out: Outcome, work: str) -> str:
    names = [t.server.name for t in out.targets]
    results = {t.server.name: t.results for t in out.targets}
    agg = report.aggregate(results)
    cores = os.cpu_count()
    lines = [f"## S4 vs peers ({out.started})", "",
             "Command: `" + shlex.join(["python", "-m", "s4.tools.bench", *opts.argv]) + "`", "",
             f"Machine: {cores} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}; "
             f"load average {_load(out.load_start)} at start, {_load(out.load_end)} at end. Client on the same box.",
             "", "Servers:"]
    for t in out.targets:
        s = t.server
        command = " ".join(s.command).replace(work, "<work>")
        lines.append(f"- **{s.name}** ({s.version or 'version unknown'}): `{command}`")
    lines += ["", f"Each timed phase ran {opts.seconds:g} s; {opts.rounds} round(s), medians shown. Per step the "
              "servers ran back to back, in reverse order every other round."]
    if out.disk:
        rates = ", ".join(report.fmt_value(r.value, r.unit) for r in out.disk)
        disk = report.median(r.value for r in out.disk)
        lines += ["", f"Disk sequential write + one fsync ({opts.disk_mib} MiB in {CHUNK // 2**20} MiB writes, same "
                  f"filesystem as the data): median **{report.fmt_value(disk, 'MiB/s')} MiB/s** (rounds: {rates})."]
        put_row = agg.get((f"PUT {opts.large_mib} MiB", 1), {})
        if put_row:
            lines.append(f"PUT {opts.large_mib} MiB as a share of it: "
                         + ", ".join(f"{n} {report.ratio(c.value, disk)}" for n, c in put_row.items()) + ".")
    lines += ["", "### Throughput (higher is better; ratios above 1 favour S4)", "",
              report.throughput_table(agg, names), "",
              "### Latency (ms; for listings, one page of 1,000)", "", report.latency_table(agg, names), "",
              "### Server CPU per operation (µs; lower is better; hardly moved by a loaded machine)", "",
              report.cpu_table(results, names)]
    pool = next((n for t, n in zip(out.targets, names, strict=True) if t.server.nodes), None)
    if pool is not None and "S4" in names:
        lines += ["", f"### {pool} against one node (pool/single; the issue's bar)", "",
                  "The client talks to node 1 only: it coordinates every write (W=2 of 3 durable copies before the "
                  "answer) and serves every read from its own copy. CPU is the three nodes' together.", "",
                  report.pool_table(agg, "S4", pool, report.pool_bars(opts.large_mib))]
    if BASELINE in names and "S4" in names:
        lines += ["", "### S4 against its baseline (the same run, the same peers)", "",
                  "Each peer's figures divide both builds', so a peer that ran faster or slower in this run moves "
                  "both ratios alike.", "", report.baseline_table(agg, "S4", BASELINE, names)]
    if opts.preload:
        lines += ["", f"### Scale: 4 KiB ops/s with {opts.preload:,} objects stored", "",
                  report.scale_table(agg, names, opts.preload, workloads.scale_name)]
    lines += ["", "### Peak memory", "", report.rss_table({n: {p: v.get(n) for p, v in out.peaks.items()}
                                                           for n in names})]
    errors = report.errors_summary(results)
    if errors:
        lines += ["", "### Failed requests", "", *errors]
    return "\n".join(lines) + "\n"


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)
