"""A timeline of large PUTs through a 3-node pool: when each step of one PUT happens, on which node.

    python -m s4.tools.bench.put_timeline [--mib 64] [--puts 4] [--s4-workers 2] [--work-dir DIR]

Starts a fresh pool (as ``--cluster 3`` does), sets ``S4_TIMELINE`` for every process of it (engine/timeline.py:
one line per step, CLOCK_MONOTONIC, which every process on one machine shares), PUTs ``--puts`` bodies of fresh
bytes to node 1 one after the other (the first is a warm-up and not shown), and prints for each PUT every step
in milliseconds from the client's first byte: the client's last byte sent and its answer, the coordinator's
ingest (each chunk stored, the end), its commit (journal and volumes fsynced) and replication round, and per peer
the pushes (first and last chunk begun, sent, acknowledged), the receive (last byte, written, fsynced) and the
``ApplyEvents``. Also the pool's CPU per PUT (every process of the three nodes, /proc).

A measuring aid: the steps a build does not mark are simply absent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from .rss import _proc_table, trees_cpu_seconds
from .servers import Keys, Server, start_s4_pool, wait_pool_alive, wait_ready
from .signer import Signer

MiB = 1024 * 1024
BUCKET = "timeline"


def _mark(path: Path, what: str, detail: str = "") -> None:
    with open(path, "a") as fh:
        fh.write(f"{time.monotonic():.6f} {os.getpid()} {what} {detail}\n")


def _body(total: int, nonce: int, md5: hashlib._Hash, log: Path) -> AsyncIterator[bytes]:
    base = bytearray(os.urandom(MiB))

    async def gen() -> AsyncIterator[bytes]:
        sent, n = 0, 0
        while sent < total:
            base[:16] = nonce.to_bytes(8, "big") + n.to_bytes(8, "big")  # every chunk of every PUT differs
            piece = bytes(base[: total - sent])
            md5.update(piece)
            if not sent:
                _mark(log, "client.first_byte")
            sent += len(piece)
            n += 1
            yield piece
        _mark(log, "client.last_byte", str(sent))  # asked for more: the last piece is in the transport

    return gen()


async def put(endpoint: str, keys: Keys, size: int, i: int, log: Path) -> None:
    signer = Signer(keys.access, keys.secret, keys.region)
    host = endpoint.split("//", 1)[1]
    path = f"/{BUCKET}/obj-{i}"
    md5 = hashlib.md5()
    headers = signer.headers("PUT", host, path, None, {"content-length": str(size)})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async with session.put(endpoint + path, data=_body(size, int.from_bytes(os.urandom(8), "big"), md5, log),
                               headers=headers) as resp:
            reply = await resp.read()
            _mark(log, "client.answer", str(resp.status))
            if resp.status != 200:
                raise RuntimeError(f"PUT -> {resp.status} {reply[:300]!r}")


def node_of(server: Server) -> dict[int, str]:
    """pid -> node name, for every process of the pool (node processes and their descendants)."""
    table = _proc_table()
    roots = {p.pid: f"node-{n + 1}" for n, p in enumerate([server.proc, *server.members]) if p is not None}
    out: dict[int, str] = {}
    for pid in table:
        p = pid
        while p > 1 and p not in roots:
            p = table.get(p, (1, 0))[0]
        if p in roots:
            out[pid] = roots[p]
    return out


CHUNK_STEPS = ("ingest.stored@node-1", "push.begin@node-2", "recv.fsynced@node-2", "push.acked@node-2",
               "push.begin@node-3", "recv.fsynced@node-3", "push.acked@node-3")


def summary(rows: list[list[str]], nodes: dict[int, str], t0: float, cpu_s: float) -> str:
    """The intervals that make a PUT's tail, one line (ms): when the ingest ended after the last byte reached it,
    the commit's duration, the wait for the pushes after it, the ApplyEvents round, and the receivers' final
    fdatasync per chunk (mean)."""
    last: dict[str, float] = {}
    fsyncs: list[float] = []
    written: dict[tuple[str, str], float] = {}
    for t, pid, what, detail in rows:
        ms = (float(t) - t0) * 1000
        last[what] = ms
        if what == "recv.written":
            written[(pid, detail)] = ms
        elif what == "recv.fsynced" and (pid, detail) in written:
            fsyncs.append(ms - written[(pid, detail)])
    get = last.get
    parts = {"total": get("client.answer"), "client_last": get("client.last_byte"),
             "ingest_last": get("ingest.last_byte"), "ingest_end": get("ingest.end"),
             "commit": _minus(get("commit.durable"), get("commit.begin")),
             "pushes_after_commit": _minus(get("push.acked"), get("commit.durable")),
             "apply": _minus(get("commit.replicated"), max(get("push.acked") or 0.0, get("commit.durable") or 0.0)),
             "tail_after_ingest_last": _minus(get("client.answer"), get("ingest.last_byte")),
             "recv_fsync_mean": sum(fsyncs) / len(fsyncs) if fsyncs else None, "cpu": cpu_s * 1000}
    return "summary " + " ".join(f"{k}={v:.0f}" for k, v in parts.items() if v is not None)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def report(lines: list[str], nodes: dict[int, str], cpu_s: float) -> str:
    """One PUT's steps: (node, step, peer) -> first and last time, ms after the client's first byte."""
    rows = [line.split(" ", 3) for line in lines if line.strip()]
    t0 = next(float(r[0]) for r in rows if r[2] == "client.first_byte")
    seen: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for t, pid, what, detail in rows:
        where = nodes.get(int(pid), "client")
        peer = detail.split()[0] if what.startswith(("push.", "apply.")) else ""
        seen[(where, what, peer)].append((float(t) - t0) * 1000)
    chunks: dict[str, dict[str, float]] = defaultdict(dict)  # chunk -> step@node -> ms (the last of each)
    for t, pid, what, detail in rows:
        parts = detail.split()
        if what in ("ingest.stored", "recv.fsynced", "push.begin", "push.acked") and parts:
            where = parts[0] if what.startswith("push.") else nodes.get(int(pid), "?")
            chunks[parts[-1]][f"{what}@{where}"] = (float(t) - t0) * 1000
    out = ["| chunk | " + " | ".join(CHUNK_STEPS) + " |", "|---" * (len(CHUNK_STEPS) + 1) + "|"]
    for name, steps in sorted(chunks.items(), key=lambda kv: kv[1].get("ingest.stored@node-1", 0.0)):
        out.append(f"| {name} | " + " | ".join(f"{steps[s]:.0f}" if s in steps else "" for s in CHUNK_STEPS) + " |")
    out += ["", summary(rows, nodes, t0, cpu_s)]
    out += ["", f"pool CPU {cpu_s * 1000:.0f} ms", "| ms | node | step | peer | count | first..last |",
            "|---:|---|---|---|---:|---|"]
    for (where, what, peer), ts in sorted(seen.items(), key=lambda kv: max(kv[1])):
        out.append(f"| {max(ts):.0f} | {where} | {what} | {peer} | {len(ts)} | {min(ts):.0f}..{max(ts):.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench.put_timeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--puts", type=int, default=4)
    p.add_argument("--s4-workers", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0, help="seconds of quiet after each PUT (replicas catch up)")
    p.add_argument("--work-dir", help="where the data directories go (default: the system temp directory)")
    args = p.parse_args(argv)
    keys = Keys("timeline-access", "timeline-secret-key")
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="s4-timeline-") as tmp:
        log = Path(tmp) / "timeline.log"
        os.environ["S4_TIMELINE"] = str(log)
        server = start_s4_pool(Path(tmp), keys, args.s4_workers)
        try:
            asyncio.run(wait_ready(server, keys, BUCKET, 120))
            asyncio.run(wait_pool_alive(server, 120))
            nodes = node_of(server)
            roots = [q.pid for q in [server.proc, *server.members] if q is not None]
            for i in range(args.puts):
                time.sleep(args.settle)
                start = log.stat().st_size if log.exists() else 0
                cpu0 = [trees_cpu_seconds([r]) or 0.0 for r in roots]
                asyncio.run(put(server.endpoint, keys, args.mib * MiB, i, log))
                time.sleep(args.settle)
                per_node = [(trees_cpu_seconds([r]) or 0.0) - c for r, c in zip(roots, cpu0, strict=True)]
                cpu = sum(per_node)
                with open(log) as fh:
                    fh.seek(start)
                    lines = fh.read().splitlines()
                if i:
                    sys.stdout.write(f"\n### PUT {i} ({args.mib} MiB)\n" + report(lines, nodes, cpu) + "\n"
                                     + "CPU per node, ms: " + " / ".join(f"{c * 1000:.0f}" for c in per_node) + "\n")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
