"""CPU per small request in one process: the real falcon app over a real Engine, driven through ASGI directly (no
sockets, no uvicorn), so the figure is the server's own Python and LMDB work and nothing of the client or the kernel's
network stack. Every request is signed before the phase starts (the signing is the client's cost).

    python -m tests.helpers.inprocess_bench [--requests 2000] [--concurrency 16] [--runs 3] [--size 4096]

Prints, per phase (PUT, GET, HEAD, DELETE of distinct 4 KiB objects in a fresh data directory), the process's CPU
per request (user + system) and the parts spent on the event loop's thread (the request path) and on the
sequencer's (deciders, projection, journal writes); the rest is ingest and sync threads. Used to compare two
builds run alternately on a shared machine (docs/performance.md): the figures of one build vary with the load, so
compare interleaved runs, not one run each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from s4.api.app import build_app
from s4.api.settings import ApiSettings
from s4.engine import Engine, EngineOptions
from s4.tools.bench.signer import Signer

ACCESS, SECRET, HOST, BUCKET = "bench-access", "bench-secret-key", "localhost", "bench"


def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", HOST.encode()), *((k.encode(), v.encode()) for k, v in headers.items())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 9000)}
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _sequencer_tid() -> int:
    return next((t.native_id or 0 for t in threading.enumerate() if t.name == "sequencer"), 0)


async def _phase(app: Any, signer: Signer, method: str, names: list[str], body: bytes, concurrency: int
                 ) -> tuple[float, float, float]:
    """Every request of one phase, ``concurrency`` at a time: CPU s of the process, of the loop's thread (the
    request path) and of the sequencer's (deciders, projection, journal writes)."""
    extra = {"content-length": str(len(body))} if method == "PUT" else None
    signed = [(f"/{BUCKET}/{n}", signer.headers(method, HOST, f"/{BUCKET}/{n}", extra=extra)) for n in names]
    loop_tid = threading.get_native_id()
    queue = iter(signed)

    async def client() -> None:
        for path, headers in queue:
            status = await _call(app, method, path, headers, body if method == "PUT" else b"")
            if status >= 300:
                raise RuntimeError(f"{method} {path}: {status}")

    before, t0 = _thread_cpu(), os.times()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    after, t1 = _thread_cpu(), os.times()
    total = (t1.user - t0.user) + (t1.system - t0.system)
    seq_tid = _sequencer_tid()
    return (total, after.get(loop_tid, 0.0) - before.get(loop_tid, 0.0),
            after.get(seq_tid, 0.0) - before.get(seq_tid, 0.0))


async def _run(data_dir: Path, requests: int, concurrency: int, size: int) -> dict[str, tuple[float, ...]]:
    engine = Engine(EngineOptions(data_dir=data_dir))
    try:
        await engine.create_bucket(BUCKET)
        app = build_app(engine, ApiSettings(access_key=ACCESS, secret_key=SECRET))
        signer = Signer(ACCESS, SECRET)
        names = [f"obj-{i:06d}" for i in range(requests)]
        body = os.urandom(size)
        out: dict[str, tuple[float, ...]] = {}
        for method in ("PUT", "GET", "HEAD", "DELETE"):
            cpu, loop, seq = await _phase(app, signer, method, names, body, concurrency)
            out[method] = tuple(x / requests * 1e6 for x in (cpu, loop, seq))
        return out
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="s4-inprocess-") as tmp:
            res = asyncio.run(_run(Path(tmp) / "data", args.requests, args.concurrency, args.size))
        print(f"run {run + 1}: " + "  ".join(f"{m} {cpu:.0f} µs (loop {loop:.0f}, sequencer {seq:.0f})"
                                             for m, (cpu, loop, seq) in res.items()), flush=True)


if __name__ == "__main__":
    main()
