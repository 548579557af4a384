"""One huge object through S4 and back: does the server's memory stay flat? (issue #5's 5 GiB scale check)

    python -m s4.tools.bench.bigobject [--gib 5] [--s4-workers N] [--work-dir DIR] [--markdown FILE]

Starts ``s4-server`` on a fresh data directory, measures the idle RSS of its whole process tree, then streams
one PUT of ``--gib`` GiB (distinct 1 MiB pieces: no dedup shortcut) and one GET of it, sampling the tree's RSS
every 0.25 s. Reports MiB/s both ways, idle and peak RSS and the growth; checks the ETag (MD5 of the body) and
the MD5 of the bytes read back. The client never holds more than one 1 MiB piece.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from .rss import RssSampler, _proc_table, tree_rss
from .servers import Keys, start_s4, wait_ready
from .signer import Signer

MiB = 1024 * 1024
BUCKET = "bigobject"


def _pieces(total: int, md5: hashlib._Hash) -> AsyncIterator[bytes]:
    base = os.urandom(MiB)

    async def gen() -> AsyncIterator[bytes]:
        sent, n = 0, 0
        while sent < total:
            piece = (n.to_bytes(8, "big") + base[8:])[: total - sent]  # every 4 MiB chunk differs
            md5.update(piece)
            sent += len(piece)
            n += 1
            yield piece

    return gen()


async def run(endpoint: str, keys: Keys, size: int, pid: int) -> dict[str, float]:
    signer = Signer(keys.access, keys.secret, keys.region)
    host = endpoint.split("//", 1)[1]
    path = f"/{BUCKET}/huge.bin"
    idle = tree_rss([pid], _proc_table())[pid]
    sampler = RssSampler()
    sampler.watch("s4", pid)
    sampler.start()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        sent_md5 = hashlib.md5()
        headers = signer.headers("PUT", host, path, None, {"content-length": str(size)})
        t0 = time.perf_counter()
        async with session.put(endpoint + path, data=_pieces(size, sent_md5), headers=headers) as resp:
            reply = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"PUT -> {resp.status} {reply[:300]!r}")
            etag = resp.headers["ETag"].strip('"')
        put_s = time.perf_counter() - t0
        if etag != sent_md5.hexdigest():
            raise RuntimeError(f"ETag {etag} is not the MD5 of the body sent")
        got_md5, got = hashlib.md5(), 0
        t0 = time.perf_counter()
        async with session.get(endpoint + path, headers=signer.headers("GET", host, path)) as resp:
            async for piece in resp.content.iter_chunked(MiB):
                got_md5.update(piece)
                got += len(piece)
        get_s = time.perf_counter() - t0
    peak = sampler.peaks()["s4"]
    sampler.stop()
    if got != size or got_md5.hexdigest() != etag:
        raise RuntimeError(f"GET returned {got} bytes with MD5 {got_md5.hexdigest()}, expected {size} / {etag}")
    return {"put_mib_s": size / MiB / put_s, "get_mib_s": size / MiB / get_s, "idle_mib": idle / MiB,
            "peak_mib": peak / MiB, "growth_mib": (peak - idle) / MiB}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench.bigobject", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=5.0)
    p.add_argument("--s4-workers", type=int)
    p.add_argument("--work-dir", help="where the data directory goes (default: the system temp directory)")
    p.add_argument("--markdown", help="append the result table to this file")
    args = p.parse_args(argv)
    size = int(args.gib * 1024 * MiB)
    keys = Keys("bigobject-access", "bigobject-secret-key")
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="s4-bigobject-") as tmp:
        server = start_s4(Path(tmp), keys, args.s4_workers)
        try:
            asyncio.run(wait_ready(server, keys, BUCKET, 120))
            time.sleep(2)  # let start-up settle before the idle measurement
            assert server.proc is not None
            result = asyncio.run(run(server.endpoint, keys, size, server.proc.pid))
        finally:
            server.stop()
    table = ("| object | workers | PUT MiB/s | GET MiB/s | idle RSS MiB | peak RSS MiB | growth MiB |\n"
             "|---|---|---:|---:|---:|---:|---:|\n"
             f"| {args.gib:g} GiB | {args.s4_workers or 'default'} | {result['put_mib_s']:,.1f} | "
             f"{result['get_mib_s']:,.1f} | {result['idle_mib']:,.0f} | {result['peak_mib']:,.0f} | "
             f"{result['growth_mib']:,.0f} |")
    sys.stdout.write(table + "\n")
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
