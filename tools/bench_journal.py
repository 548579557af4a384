"""Group-commit benchmark: how many durable events per second one node's journal takes, alone and through the engine.

    python -m s4.tools.bench_journal [--seconds N] [--dir PATH] [--writers 1,64]

For each number of concurrent asyncio writers it measures, on a real file system with fsync on:

  * ``Journal.append`` of a typical small event (an ``object.version_put`` of one chunk), and
  * ``Engine.put_object`` of 0-byte objects: the sequencer path (decide, journal write + fdatasync, LMDB commit).

Each writer awaits its own append before issuing the next, so batch size is a measure of how many requests share
one fsync. Prints a Markdown table (figures are recorded in docs/performance.md). Uses a temporary directory under
``--dir`` (default: the system temp dir), removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4.engine import Engine, EngineOptions
from s4.engine.model import version_record
from s4.journal import EventType, Journal

WARMUP_OPS = 20
SAMPLE_PAYLOAD: dict[str, Any] = {
    "bucket": "bench", "key": "photos/2024/05/img_0001.jpg",
    "version": version_record("null", 1234, "5d41402abc4b2a76b9719d911017c592", content_type="image/jpeg",
                              blobs=[[bytes(32), 1234]]),
    "blobs_at": [[bytes(32), "w00-00000001.vol", 52, 1234]],
}


@dataclass(frozen=True, slots=True)
class Result:
    case: str
    writers: int
    ops: int
    seconds: float
    batches: int
    latencies_s: list[float]

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mean_batch(self) -> float:
        return self.ops / self.batches if self.batches else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


Op = Callable[[int, int], Awaitable[Any]]


async def _drive(op: Op, writers: int, seconds: float) -> tuple[int, float, list[float]]:
    """Run ``writers`` closed-loop writers until the deadline; returns (ops, elapsed, latencies)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await op(w, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return len(latencies), time.perf_counter() - start, latencies


async def bench_journal(directory: Path, writers: int, seconds: float) -> Result:
    journal = Journal(directory, origin="bench")
    try:
        async def op(w: int, i: int) -> Any:
            return await journal.append(EventType.OBJECT_VERSION_PUT, SAMPLE_PAYLOAD)

        for i in range(WARMUP_OPS):
            await op(0, i)
        assert journal.committer is not None
        batches0, items0 = journal.committer.batches, journal.committer.items
        ops, elapsed, latencies = await _drive(op, writers, seconds)
        batches = journal.committer.batches - batches0
        assert journal.committer.items - items0 == ops
    finally:
        journal.close()
    return Result("Journal.append", writers, ops, elapsed, batches, latencies)


async def bench_engine(directory: Path, writers: int, seconds: float) -> Result:
    engine = Engine(EngineOptions(directory))
    try:
        await engine.create_bucket("bench")

        async def op(w: int, i: int) -> Any:
            stored = await engine.ingestor.ingest_bytes(b"")
            return await engine.put_object("bench", f"w{w:03d}/k{i:09d}", stored)

        for i in range(WARMUP_OPS):
            await op(999, i)
        batches0, _ = engine.sequencer.stats
        ops, elapsed, latencies = await _drive(op, writers, seconds)
        batches = engine.sequencer.stats[0] - batches0
    finally:
        engine.close()
    return Result("Engine.put_object (0 B)", writers, ops, elapsed, batches, latencies)


def _filesystem(path: Path) -> str:
    """The mount point and file-system type holding ``path`` (Linux), so figures say what disk they measure."""
    resolved = str(path.resolve())
    best_mount, best_type = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                _dev, mount, fstype, *_ = line.split()
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best_mount):
                    best_mount, best_type = mount, fstype
    except OSError:
        pass
    return f"{best_type} at {best_mount or '?'}"


def table(results: Sequence[Result]) -> str:
    lines = ["| path | writers | appends/s | mean batch | p50 latency (ms) | p99 latency (ms) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.case} | {r.writers} | {r.per_second:,.0f} | {r.mean_batch:.1f} | "
                     f"{r.percentile_ms(0.50):.2f} | {r.percentile_ms(0.99):.2f} |")
    return "\n".join(lines)


async def run(base: Path, writer_counts: Sequence[int], seconds: float, engine: bool) -> list[Result]:
    results = []
    for n, writers in enumerate(writer_counts):
        results.append(await bench_journal(base / f"journal-{n}", writers, seconds))
    if engine:
        for n, writers in enumerate(writer_counts):
            results.append(await bench_engine(base / f"engine-{n}", writers, seconds))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s4.tools.bench_journal", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case (default 5)")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the scratch directory")
    parser.add_argument("--writers", default="1,64", help="comma-separated writer counts (default 1,64)")
    parser.add_argument("--no-engine", action="store_true", help="skip the Engine.put_object cases")
    args = parser.parse_args(argv)
    writer_counts = [int(w) for w in args.writers.split(",") if w]
    base = Path(tempfile.mkdtemp(prefix="s4-bench-", dir=args.dir))
    try:
        results = asyncio.run(run(base, writer_counts, args.seconds, not args.no_engine))
        env = (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, {_filesystem(base)}, {args.seconds:g} s per case, fsync on")
        sys.stdout.write(f"{env}\n\n{table(results)}\n")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
