"""One replicated 4 KiB PUT's timeline across a 3-node pool at c=1: where the latency goes between hand-offs.

Starts a pool as the benchmark does (tools/bench ``start_s4_pool``) with ``put_timeline_site/`` on PYTHONPATH: its
``sitecustomize`` wraps the functions at each hand-off of the write path (worker, supervisor loop, committer and
sequencer threads, the peers' handlers; grpclib's sends and receives) so each call leaves a mark with its
CLOCK_MONOTONIC time and its thread's CPU time. The client marks its send and its answer. Marks between a PUT's
send and answer belong to that PUT (one PUT at a time); the report gives, per mark (node, process, name), the
median time since the client's send over every PUT, the median step from the previous mark, and for steps on one
thread the CPU that thread spent in it (the rest of such a step is waiting: a lock, the GIL, a preemption). Also the
pool's CPU per PUT per node, from /proc, over the traced PUTs (marks included: a few µs each).

    python -m tests.helpers.put_timeline [--puts 300] [--workers 2] [--no-marks]

Runs the interpreter it is started with (another build: that build's virtualenv's python). Nothing in s4 refers to
it; without this tool the wrappers are not loaded at all.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from s4.tools.bench.client import Client
from s4.tools.bench.rss import tree_cpu_seconds
from s4.tools.bench.servers import Keys, Server, start_s4_pool, wait_pool_alive, wait_ready

SITE = Path(__file__).resolve().parent / "put_timeline_site"
BUCKET = "timeline"
Mark = tuple[int, int, int, int, str]  # monotonic ns, thread cpu ns, pid, tid, name


def _load(marks_dir: Path, roots: set[int]) -> tuple[list[Mark], dict[int, str]]:
    marks: list[Mark] = []
    roles: dict[int, str] = {}
    for path in marks_dir.glob("*.marks"):
        node = path.name.split("-")[0] + "-" + path.name.split("-")[1] if path.name.startswith("node-") else "client"
        for line in path.read_text().splitlines():
            t, cpu, pid, tid, name = line.split(" ", 4)
            marks.append((int(t), int(cpu), int(pid), int(tid), name))
            roles[int(pid)] = node.replace("node-", "n") + ("/sup" if int(pid) in roots else "/wrk")
    marks.sort()
    return marks, roles


#: The write path at c=1 as intervals between marks (``C.send``/``C.recv``: the client; ``nP``: each peer, n2 and n3).
#: The coordinator's replies are taken in send order (n2's is its first ``S.reply_in``, n3's its second): when n3
#: answers first the two "reply -> coordinator" rows swap (a negative median says so).
CHAIN = [
    ("C.send", "n1/wrk W.http>", "client -> coordinator's HTTP worker (socket, wake-up)"),
    ("n1/wrk W.http>", "n1/wrk W.cmd>", "worker: HTTP, SigV4, the volume write (work)"),
    ("n1/wrk W.cmd>", "n1/sup S.handle>", "worker -> supervisor's loop (socketpair, wake-up)"),
    ("n1/sup S.handle>", "n1/sup S.commit_now>", "loop -> committer thread (call_soon, executor, wake-up)"),
    ("n1/sup S.commit_now>", "n1/sup S.send_early>", "committer: decide (work)"),
    ("n1/sup S.send_early<", "n1/sup S.start_early>", "committer -> loop (call_soon_threadsafe, GIL)"),
    ("n1/sup S.start_early>", "n1/sup grpc.csend>", "loop: request, task hops to the first stream write"),
    ("n1/sup S.start_early>", "n1/sup S.launch>", "  of which: task hop to _launch"),
    ("n1/sup S.launch>", "n1/sup S.launch<", "  of which: _launch (request, inline blob read, tasks)"),
    ("n1/sup S.launch<", "n1/sup S.send>", "  of which: task hop to the first peer's _send"),
    ("n1/sup S.send>", "n1/sup S.drain>", "  of which: _send, coalescer, task hop to _drain"),
    ("n1/sup S.drain>", "n1/sup S.lane>", "  of which: _drain to the stream lane"),
    ("n1/sup S.lane>", "n1/sup grpc.csend>", "  of which: lane (pack) and task hop to its writer"),
    ("n1/sup grpc.csend>", "n1/sup grpc.csend<", "loop: first send_message (encode, h2, socket write)"),
    ("n1/sup grpc.csend<", "n1/sup grpc.csend< #2", "loop: second peer's send"),
    ("n1/sup S.send_early>", "n1/sup grpc.csend<", "committer decided -> first peer's message written"),
    ("n1/sup S.send_early>", "n1/sup grpc.csend< #2", "committer decided -> both peers' messages written"),
    ("n1/sup grpc.csend>", "nP/sup h2.rx>", "coordinator's send -> peer's loop reads it (wake-up)"),
    ("nP/sup h2.rx>", "nP/sup P.req_in>", "peer: h2, grpclib, stream handler task hops (work)"),
    ("nP/sup P.req_in>", "nP/sup P.applier>", "peer: decode, inline blob checked and stored (work)"),
    ("nP/sup P.applier>", "nP/sup seq.commit>", "peer loop -> sequencer thread (wake-up)"),
    ("nP/sup seq.commit>", "nP/sup journal.write>", "peer sequencer: LWW projection, journal encode (work)"),
    ("nP/sup journal.write>", "nP/sup journal.write<", "peer: journal write + fdatasync"),
    ("nP/sup journal.write<", "nP/sup seq.commit<", "peer: volume sync join, LMDB commit"),
    ("nP/sup seq.commit<", "nP/sup P.applier<", "peer sequencer -> loop (wake-up)"),
    ("nP/sup P.applier<", "nP/sup grpc.ssend<", "peer: reply (work, socket write)"),
    ("nP/sup grpc.ssend<", "n1/sup S.reply_in> @nP", "peer's reply -> coordinator's loop parses it"),
    ("nP/sup h2.rx>", "nP/sup grpc.ssend<", "peer: message read -> its reply written (the replica's whole part)"),
    ("nP/sup P.applier>", "nP/sup P.applier<", "peer: apply handed to the sequencer -> back on the loop"),
    ("n1/sup journal.write>", "n1/sup journal.write<", "coordinator: journal write + fdatasync"),
    ("n1/sup journal.write<", "n1/sup S.commit_now<", "coordinator: volume sync join, LMDB commit"),
    ("n1/sup S.commit_now<", "n1/sup S.committed>", "committer -> loop (future callback, wake-up)"),
    ("n1/sup S.committed>", "n1/sup S.replicate>", "loop: replicate task"),
    ("n1/sup S.replicate>", "n1/sup S.replicate<", "loop: waiting for both peers (leases) and own quorum work"),
    ("n1/sup S.replicate<", "n1/sup S.answer>", "loop: answer callback"),
    ("n1/sup S.answer>", "n1/wrk W.chan_rx>", "supervisor -> worker (socketpair, wake-up)"),
    ("n1/wrk W.chan_rx>", "n1/wrk W.http<", "worker: response (work)"),
    ("n1/wrk W.http<", "C.recv", "worker -> client (socket, wake-up)"),
]


def _chain(per_put: list[dict[str, tuple[int, int, int]]]) -> list[str]:
    out = ["| interval | peer | mean µs | median µs | CPU µs (same thread, median) | PUTs |",
           "|---|---|---:|---:|---:|---:|"]
    for a, b, what in CHAIN:
        for peer in (("n2", "n3") if "nP" in a + b else ("",)):
            ka, kb = a.replace("nP", peer), b.replace("nP", peer)
            if kb.endswith(" @" + peer):  # the coordinator's reply from this peer: the first one after its send
                kb = kb.split(" @")[0]
            both = []
            for f in per_put:
                if ka in f and kb in f:
                    tb = f[kb]
                    if kb.startswith("n1/sup S.reply_in") and peer == "n3" and kb + " #2" in f:
                        tb = f[kb + " #2"]
                    both.append((f[ka], tb))
            if not both:
                continue
            walls = [(tb[0] - ta[0]) / 1000 for ta, tb in both]
            same = [(tb[1] - ta[1]) / 1000 for ta, tb in both if ta[2] == tb[2]]
            cpu = f"{statistics.median(same):.0f}" if len(same) >= len(both) / 2 else ""
            out.append(f"| {what} | {peer} | {statistics.mean(walls):.0f} | {statistics.median(walls):.0f} | {cpu} | "
                       f"{len(both)} |")
    return out


def _report(marks: list[Mark], windows: list[tuple[int, int]], roles: dict[int, str]) -> str:
    """Per mark key (process, name, n-th occurrence within the PUT): the median time since the client's send; rows
    in that order, each with the median step from the row above (same PUTs) and, where both marks are on one
    thread, the median CPU that thread spent between them."""
    per_put: list[dict[str, tuple[int, int, int]]] = []
    threads: dict[str, str] = {}
    i = 0
    for start, end in windows:
        while i < len(marks) and marks[i][0] < start:
            i += 1
        found: dict[str, tuple[int, int, int]] = {}
        counts: collections.Counter[str] = collections.Counter()
        j = i
        while j < len(marks) and marks[j][0] <= end:
            t, cpu, pid, tid, name = marks[j]
            base = f"{roles.get(pid, '?')} {name}"
            counts[base] += 1
            key = base if counts[base] == 1 else f"{base} #{counts[base]}"
            found[key] = (t - start, cpu, tid)
            threads.setdefault(key, "loop" if tid == pid else f"thread {tid}")
            j += 1
        found["C.send"], found["C.recv"] = (0, 0, -1), (end - start, 0, -2)
        per_put.append(found)
    total = [(e - s) / 1000 for s, e in windows]
    chain = _chain(per_put)
    keys = {k for found in per_put for k in found} - {"C.send", "C.recv"}
    common = [k for k in keys if sum(1 for f in per_put if k in f) >= 0.9 * len(per_put)]
    common.sort(key=lambda k: statistics.median(f[k][0] for f in per_put if k in f))
    out = [f"{len(windows)} PUTs, client send -> answer: median {statistics.median(total):.0f} µs, "
           f"p10 {statistics.quantiles(total, n=10)[0]:.0f}, p90 {statistics.quantiles(total, n=10)[-1]:.0f}",
           "", "| at µs (median) | step µs (median) | CPU in step µs (same thread) | mark | thread |",
           "|---:|---:|---:|---|---|"]
    prev = None
    for key in common:
        at = statistics.median(f[key][0] for f in per_put if key in f) / 1000
        step = cpu = ""
        if prev is not None:
            both = [f for f in per_put if key in f and prev in f]
            step = f"{statistics.median((f[key][0] - f[prev][0]) / 1000 for f in both):.0f}"
            same = [f for f in both if f[key][2] == f[prev][2]]
            if len(same) >= len(both) / 2:
                cpu = f"{statistics.median((f[key][1] - f[prev][1]) / 1000 for f in same):.0f}"
        out.append(f"| {at:.0f} | {step} | {cpu} | {key} | {threads[key]} |")
        prev = key
    return "\n".join([*out[:1], "", *chain, *out[1:]])


async def _drive(server: Server, keys: Keys, puts: int, warmup: int, marks_dir: Path | None,
                 keep: Path | None = None) -> str:
    await wait_ready(server, keys, BUCKET, 120)
    await wait_pool_alive(server, 120)
    await asyncio.sleep(2)
    body = bytearray(os.urandom(4096))
    windows: list[tuple[int, int]] = []
    async with Client(server.endpoint, keys.access, keys.secret, keys.region) as client:
        for n in range(warmup):
            body[:8] = n.to_bytes(8, "big")
            await client.request("PUT", f"/{BUCKET}/warm-{n}", body=bytes(body))
        roots = server.pids
        cpu0 = {pid: tree_cpu_seconds(pid) or 0.0 for pid in roots}
        for n in range(puts):
            body[:8] = (warmup + n).to_bytes(8, "big")
            data = bytes(body)
            start = time.monotonic_ns()
            await client.request("PUT", f"/{BUCKET}/obj-{n}", body=data)
            windows.append((start, time.monotonic_ns()))
        cpu1 = {pid: tree_cpu_seconds(pid) or 0.0 for pid in roots}
        for n in range(200):  # so every process's buffered marks of the measured PUTs reach its file
            await client.request("PUT", f"/{BUCKET}/flush-{n}", body=bytes(body))
    lines = ["CPU per PUT (whole process tree, /proc): " + ", ".join(
        f"node-{i + 1} {(cpu1[pid] - cpu0[pid]) / puts * 1e6:.0f} µs" for i, pid in enumerate(roots))
        + f"; pool {sum(cpu1[p] - cpu0[p] for p in roots) / puts * 1e6:.0f} µs"]
    total = [(e - s) / 1000 for s, e in windows]
    lines.append(f"latency: median {statistics.median(total):.0f} µs over {puts} PUTs")
    if marks_dir is not None:
        marks, roles = _load(marks_dir, set(roots))
        if keep is not None:  # the raw marks, for an analysis of one's own (per PUT, not per mark's median)
            keep.write_text(json.dumps({"windows": windows, "roles": roles, "marks": marks}))
        lines += ["", _report(marks, windows, roles)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-marks", action="store_true", help="only latency and CPU per PUT, no wrappers")
    parser.add_argument("--keep", type=Path, help="also write the raw marks and PUT windows to this JSON file")
    args = parser.parse_args(argv)
    keys = Keys("timelinekey", "timelinesecret" + "x" * 26)
    with tempfile.TemporaryDirectory(prefix="s4-timeline-") as tmp:
        work = Path(tmp)
        marks_dir = None if args.no_marks else work / "marks"
        if marks_dir is not None:
            marks_dir.mkdir()
            os.environ["PUT_TIMELINE_DIR"] = str(marks_dir)
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
        server = start_s4_pool(work, keys, args.workers)
        try:
            print(asyncio.run(_drive(server, keys, args.puts, args.warmup, marks_dir, args.keep)))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
