"""Starting the disk write of a large record's bytes as soon as they are written, so the fdatasync that makes
them durable later has little left to wait for.

A 64 MiB PUT leaves 64 MiB of dirty pages that the commit's ``fdatasync`` then writes in one go (34 ms median
alone on the reference box, 6 ms when the write-out was started as each chunk landed: docs/performance.md, "a
timeline of the 64 MiB PUT across the pool"). ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the write-out of a range
without waiting for it and without any durability meaning: nothing is acknowledged on it, and the fdatasync that
follows still waits for every byte and the device's cache flush (its rules and error reporting unchanged). Linux
only; elsewhere, or when libc lacks it, a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

#: Records at least this large start their write-out at once (a large write's chunks and pieces, not 4 KiB PUTs).
WRITEBACK_BYTES = 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk, without waiting; a hint:
    an error here is ignored (the later fdatasync reports any real one)."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
