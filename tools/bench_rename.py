"""Prefix-rename benchmark: rename time must stay flat as the prefix grows (1k, 100k, 1M objects).

    python -m s4.tools.bench_rename [--sizes 1000,100000,1000000] [--dir PATH]

Prefixes are filled through the engine directly (not HTTP) with group-committed PUTs of one shared body, so the
build is fast and dedup keeps it to one stored blob. For each size it reports the rename time (median of 5
renames back and forth, each one journal event + one LMDB transaction, durable), and the time to list the first
1,000 keys under the prefix before and after renaming (a rename must leave no per-key indirection behind).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from s4.engine import Engine, EngineOptions

BATCH = 2000


async def fill(engine: Engine, bucket: str, prefix: str, count: int) -> float:
    stored = await engine.ingestor.ingest_bytes(b"x" * 100)
    t0 = time.perf_counter()
    for start in range(0, count, BATCH):
        await asyncio.gather(*(engine.put_object(bucket, f"{prefix}{i // 1000:04d}/{i:08d}", stored)
                               for i in range(start, min(count, start + BATCH))))
    return time.perf_counter() - t0


async def list_page_ms(engine: Engine, bucket: str, prefix: str) -> float:
    t0 = time.perf_counter()
    page = await engine.list_objects(bucket, prefix=prefix, max_keys=1000)
    assert len(page.entries) == 1000 or not page.is_truncated
    return (time.perf_counter() - t0) * 1000


async def measure(engine: Engine, bucket: str, size: int) -> dict[str, float]:
    src, dst = f"src{size}/", f"dst{size}/"
    fill_s = await fill(engine, bucket, src, size)
    before = statistics.median([await list_page_ms(engine, bucket, src) for _ in range(5)])
    times = []
    for i in range(6):
        a, b = (src, dst) if i % 2 == 0 else (dst, src)
        t0 = time.perf_counter()
        await engine.rename(bucket, a, b)
        times.append((time.perf_counter() - t0) * 1000)
    after = statistics.median([await list_page_ms(engine, bucket, src) for _ in range(5)])
    return {"size": size, "fill_s": fill_s, "rename_ms": statistics.median(times), "rename_max_ms": max(times),
            "list_before_ms": before, "list_after_ms": after}


async def run(sizes: list[int], directory: Path) -> list[dict[str, float]]:
    engine = Engine(EngineOptions(directory))
    try:
        await engine.create_bucket("bench-rename")
        return [await measure(engine, "bench-rename", size) for size in sizes]
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s4.tools.bench_rename", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--dir", help="data directory (default: a fresh temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="s4-bench-rename-"))
    try:
        rows = asyncio.run(run([int(s) for s in args.sizes.split(",")], directory))
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    sys.stdout.write("| objects under prefix | build (s) | rename median (ms) | rename max (ms) | "
                     "list 1000 before (ms) | list 1000 after (ms) |\n|---|---|---|---|---|---|\n")
    for r in rows:
        sys.stdout.write(f"| {int(r['size']):,} | {r['fill_s']:.1f} | {r['rename_ms']:.2f} | {r['rename_max_ms']:.2f} "
                         f"| {r['list_before_ms']:.2f} | {r['list_after_ms']:.2f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
