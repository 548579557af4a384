"""Monotonic timestamps of a request's steps, written by every process of a node or pool to one file, so one
request can be laid out across processes (``S4_TIMELINE=<file>``; off, and a no-op costing one attribute read,
when unset).

Why: the pool's 64 MiB PUT crosses the client, the coordinator's HTTP worker and supervisor, and two peers; CPU
profiles per process cannot say which step the client waits on. ``time.monotonic`` is CLOCK_MONOTONIC, shared
by every process on one machine, so lines from all of them sort into one timeline (tools/bench/put_timeline.py
prints it). A measuring aid only: nothing reads the file back.
"""

from __future__ import annotations

import os
import threading
import time

_PATH = os.environ.get("S4_TIMELINE") or None
_fd: int | None = None
_lock = threading.Lock()

enabled = _PATH is not None


def mark(what: str, detail: str = "") -> None:
    """Append ``<monotonic> <pid> <what> <detail>`` (one ``O_APPEND`` write: lines of processes never interleave)."""
    global _fd
    if _PATH is None:
        return
    line = f"{time.monotonic():.6f} {os.getpid()} {what} {detail}\n".encode()
    with _lock:
        if _fd is None:
            _fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, line)
