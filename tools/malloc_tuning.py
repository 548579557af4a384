"""glibc's allocator kept from handing large buffers back to the kernel between requests (``tune_malloc``).

A large object moves through a server process as 1 to 4 MiB ``bytes`` objects: the ingest's chunks, every
piece a blob transfer reads, encodes, frames and writes (cluster/blob_client.py, grpclib, h2). glibc serves them
from the heap once its dynamic mmap threshold has risen past their size, but trims the heap's free top back to the
kernel whenever it exceeds the trim threshold (twice the mmap threshold: 2 to 8 MiB), so the next buffers fault
their pages in again, one minor fault per 4 KiB, each zero-filled by the kernel. A 3-node pool's coordinator took
about 180,000 minor faults per 64 MiB PUT this way (some 0.5 s of system time on the 2-core VM); with the
thresholds below about 1,400 (docs/performance.md, "Federation part 1: large writes").

``tune_malloc`` sets ``M_MMAP_THRESHOLD`` (buffers below it come from the heap) and ``M_TRIM_THRESHOLD`` (free heap
top kept before trimming); setting them also turns off glibc's dynamic adjustment. The cost is memory: a process
may keep up to ``TRIM_BYTES`` of freed heap it would otherwise have returned. An operator's own ``MALLOC_*_``
environment tunables win (then nothing is changed), and so does ``S4_MALLOC_TUNING=off`` (config.toml
``[server] malloc_tuning = false``). Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

MMAP_BYTES = 16 * 1024 * 1024  # a 4 MiB chunk and its copies stay on the heap
TRIM_BYTES = 64 * 1024 * 1024  # free heap top kept: a few chunks' worth of buffers in flight
M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
ENV_TUNABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def tune_malloc(enabled: bool = True, environ: Mapping[str, str] | None = None) -> bool:
    """Set the two thresholds in this process (``enabled``: the ``malloc_tuning`` setting); True when set."""
    env = os.environ if environ is None else environ
    if not enabled:
        return False
    if any(name in env for name in ENV_TUNABLES):
        return False  # the operator tuned glibc itself
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
