"""SSE-S3 cost benchmark: PUT and GET of 4 KiB and 64 MiB objects, plaintext against SSE-S3, in the same run.

    python -m s4.tools.bench_sse [--rounds 3] [--small-ops 300] [--large-ops 3] [--dir PATH]

In-process, through the Engine (ingest + put_object, read_object with the object's keys), on a real file system
with fsync on: what encryption adds to the storage path, without HTTP in the way. Plaintext and SSE-S3 rounds
alternate; every body is distinct (no chunk deduplicates). Reports CPU seconds of this process per operation (all
threads) and wall MB/s, as a Markdown table (docs/performance.md). Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from s4.engine import Engine, EngineOptions
from s4.engine.crypto import new_object_keys

SMALL, LARGE = 4096, 64 * 1024 * 1024


async def _body(data: memoryview, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for lo in range(0, len(data), piece):
        yield bytes(data[lo:lo + piece])


async def _round(engine: Engine, size: int, ops: int, encrypted: bool, base: bytes, first: int,
                 tag: str) -> tuple[float, float, float, float]:
    """(PUT cpu s/op, PUT wall s/op, GET cpu s/op, GET wall s/op) for ``ops`` distinct objects of ``size``."""
    view = memoryview(base)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(ops):
        at = (first + i) * 4096  # every body of the run shifted by 4 KiB from the others: no chunk deduplicates
        body = view[at:at + size]
        if encrypted:
            keys = new_object_keys(engine.sse_keys)
            sealer = keys.cipher.sealer()
            stored = await engine.ingest(_body(body), sealer=sealer)
            await engine.put_object("bench", f"{tag}/{i}", stored, encryption=dict(keys.record, pn=[sealer.prefix]))
        else:
            stored = await engine.ingest(_body(body))
            await engine.put_object("bench", f"{tag}/{i}", stored)
    put_cpu, put_wall = (time.process_time() - cpu) / ops, (time.perf_counter() - wall) / ops
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(ops):
        version = engine.head_object("bench", f"{tag}/{i}")
        opened = engine.object_keys(version)
        got = 0
        async for piece in engine.read_object(version, keys=opened):
            got += len(piece)
        assert got == size
    get_cpu, get_wall = (time.process_time() - cpu) / ops, (time.perf_counter() - wall) / ops
    return put_cpu, put_wall, get_cpu, get_wall


async def _run(directory: Path, rounds: int, small_ops: int, large_ops: int) -> str:
    engine = Engine(EngineOptions(directory / "data"))
    try:
        await engine.create_bucket("bench")
        rows = []
        for size, ops in ((SMALL, small_ops), (LARGE, large_ops)):
            if ops <= 0:
                continue
            base = os.urandom(size + rounds * 2 * ops * 4096)
            results: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
            for r in range(rounds):
                for encrypted in (False, True):
                    tag = f"{size}-{r}-{'sse' if encrypted else 'plain'}"
                    first = (r * 2 + encrypted) * ops
                    results[encrypted].append(await _round(engine, size, ops, encrypted, base, first, tag))
            for encrypted in (False, True):
                med = [statistics.median(x[i] for x in results[encrypted]) for i in range(4)]
                mb = size / 1e6
                rows.append(f"| {'4 KiB' if size == SMALL else '64 MiB'} | {'SSE-S3' if encrypted else 'plaintext'} "
                            f"| {med[0] * 1e3:.2f} | {mb / med[1]:.1f} | {med[2] * 1e3:.2f} | {mb / med[3]:.1f} |")
        head = ("| size | mode | PUT CPU ms/op | PUT MB/s | GET CPU ms/op | GET MB/s |\n"
                "|---|---|---|---|---|---|\n")
        return head + "\n".join(rows) + "\n"
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench_sse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--small-ops", type=int, default=300)
    p.add_argument("--large-ops", type=int, default=3)
    p.add_argument("--dir", help="parent of the temporary data directory (default: the system temp dir)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    directory = Path(tempfile.mkdtemp(prefix="s4-bench-sse-", dir=a.dir))
    try:
        sys.stdout.write(asyncio.run(_run(directory, max(1, a.rounds), a.small_ops, a.large_ops)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
