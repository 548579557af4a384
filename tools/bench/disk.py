"""The disk's own sequential write + fsync rate, measured on the filesystem that holds the servers' data."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .workloads import Result

CHUNK = 8 * 2**20


def sequential_write(directory: Path, mib: int, chunk: int = CHUNK) -> Result:
    """Write ``mib`` MiB in ``chunk``-byte writes to a new file in ``directory``, fsync once at the end (MiB/s)."""
    path = directory / f"disk-probe-{os.getpid()}-{time.monotonic_ns()}"
    data = memoryview(os.urandom(chunk))
    total = mib * 2**20
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        t0 = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(fd, data[: min(chunk, total - written)])
        os.fsync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return Result("disk write+fsync", 1, 1, elapsed, [elapsed * 1000], written, unit="MiB/s")
