"""Free space on the data directory's filesystem, the reserve kept for freeing it, and disk-full errors.

A full disk must never answer a generic 500 nor stop a user from freeing space. Three rules, one owner:

1. **Reserve.** Below ``reserve_bytes`` of free space, requests that add data are refused with 507
   ``InsufficientStorage`` before they write a byte: object and part bodies (``check_bytes``, called by ingest
   before each volume append) and the commands that grow the store (``admits``, called by the sequencer per
   command). Deletes, aborts, bucket deletes, admin (IAM) commands and compaction's commands may use the reserve:
   their journal records and LMDB pages are small, and they are how space comes back.
2. **Any ENOSPC is a 507.** ``is_disk_full`` recognises an exhausted filesystem anywhere on the write path (a
   volume ``pwritev`` or ``fdatasync``, a journal write, an LMDB commit, which reports ENOSPC as EIO) and
   ``disk_full_error`` is the error the request gets. Callers leave the node as it was (see sequencer.py).
3. **Cheap.** ``free_bytes`` caches ``statvfs`` for ``CACHE_S`` and counts the bytes this process wrote since, so
   the check costs no syscall on the hot path; near the reserve it asks the kernel every time.
4. **A ballast.** The check is per process, so writers in several processes can pass it together and eat the
   reserve; the journal owner keeps part of it allocated in ``space.ballast`` (``arm_ballast``), given back when a
   batch fails on a full disk (the sequencer then runs the batch again) and allocated again once there is room.

The default reserve is 1% of the filesystem, at most 256 MiB (``S4_DISK_RESERVE`` sets it in bytes; 0 disables
the check, leaving only rule 2). See docs/operations.md, "Disk full".
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ErrorCode, S3Error
from .views.env import ViewsError

CACHE_S = 0.25
MAX_DEFAULT_RESERVE_BYTES = 256 * 1024 * 1024
DEFAULT_RESERVE_FRACTION = 0.01
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# LMDB turns a short write (ENOSPC) into EIO: an lmdb.Error while the filesystem is this close to full is a full
# disk, not a broken one.
LMDB_FULL_SLACK_BYTES = 16 * 1024 * 1024
#: The most the journal owner keeps allocated in its ballast file (``SpaceGuard.arm_ballast``).
MAX_BALLAST_BYTES = 8 * 1024 * 1024  # room for thousands of deletes' journal records and LMDB pages
BALLAST_NAME = "space.ballast"

# Commands that grow the store: refused below the reserve. Everything else (deletes, aborts, bucket deletes,
# renames, completing an upload whose parts are stored, IAM, seal/move/retire, lifecycle) may use it.
GROWTH_COMMANDS = frozenset({"put_object", "store_part", "create_bucket", "create_multipart", "set_object_tags",
                             "set_bucket_config"})


def default_reserve_bytes(total_bytes: int) -> int:
    """1% of the filesystem, at most 256 MiB."""
    return min(int(total_bytes * DEFAULT_RESERVE_FRACTION), MAX_DEFAULT_RESERVE_BYTES)


def disk_full_error() -> S3Error:
    """The 507 a request gets when the node's disk is full (the numbers go to the log, not to clients)."""
    return S3Error(ErrorCode.INSUFFICIENT_STORAGE)


def is_disk_full(exc: BaseException, space: SpaceGuard | None = None) -> bool:
    """Whether ``exc`` means the filesystem is out of space (or quota)."""
    if isinstance(exc, S3Error):
        return exc.code is ErrorCode.INSUFFICIENT_STORAGE
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    if isinstance(exc, ViewsError) and space is not None:
        text = str(exc)
        if "No space left" in text or "Disk quota" in text:
            return True
        return "Input/output error" in text and space.free_bytes(fresh=True) < max(space.reserve_bytes,
                                                                                   LMDB_FULL_SLACK_BYTES)
    return False


class SpaceGuard:
    """Free space of one filesystem (the data directory's) against a reserve; thread-safe."""

    def __init__(self, path: str | os.PathLike[str], reserve_bytes: int | None = None, *,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = str(Path(path))
        self.statvfs = statvfs
        self._monotonic = monotonic
        self._lock = threading.Lock()
        st = statvfs(self.path)
        self.total_bytes = st.f_blocks * st.f_frsize
        self.reserve_bytes = default_reserve_bytes(self.total_bytes) if reserve_bytes is None else reserve_bytes
        self._free = st.f_bavail * st.f_frsize
        self._at = monotonic()
        self._ballast: tuple[Path, int] | None = None  # the journal owner's (arm_ballast): its path and size
        self._ballast_released = False

    def free_bytes(self, *, fresh: bool = False) -> int:
        """Bytes an unprivileged writer may still use; from the cache unless stale, near the reserve, or asked."""
        with self._lock:
            now = self._monotonic()
            if fresh or now - self._at >= CACHE_S or self._free < 2 * self.reserve_bytes + 2 * LMDB_FULL_SLACK_BYTES:
                st = self.statvfs(self.path)
                self._free, self._at = st.f_bavail * st.f_frsize, now
            return self._free

    def consumed(self, nbytes: int) -> None:
        """This process just wrote ``nbytes``: the cached free space shrinks until the next ``statvfs``."""
        with self._lock:
            self._free -= nbytes

    def below_reserve(self, nbytes: int = 0) -> bool:
        return self.reserve_bytes > 0 and self.free_bytes() - nbytes < self.reserve_bytes

    def check_bytes(self, nbytes: int) -> None:
        """Refuse to write ``nbytes`` of new data if that would eat into the reserve."""
        if self.below_reserve(nbytes):
            raise disk_full_error()

    def admits(self, command_name: str, args: dict[str, Any]) -> bool:
        """Whether a command may run now: commands that grow the store are refused below the reserve (removing a
        bucket configuration, ``value`` None, is a delete)."""
        if command_name not in GROWTH_COMMANDS:
            return True
        if command_name == "set_bucket_config" and args.get("value") is None:
            return True
        return not self.below_reserve()

    # -- the ballast: the reserve concurrent writers cannot eat ---------------------------------------------------
    def arm_ballast(self, path: Path) -> None:
        """The journal owner keeps ``min(reserve, MAX_BALLAST_BYTES)`` allocated in a file of its own. The reserve
        check is per process and cached, so writers in several processes (the HTTP workers) can all pass it at once
        and eat the reserve between them; bytes already allocated to the ballast they cannot eat. A batch that
        fails on a full disk gives it back (``release_ballast``) so that deletes and aborts still commit."""
        size = min(self.reserve_bytes, MAX_BALLAST_BYTES)
        self._ballast = (path, size) if size > 0 else None
        self._ballast_released = False
        if self._ballast is None:
            path.unlink(missing_ok=True)
            return
        try:
            if path.stat().st_size == size:
                return
        except FileNotFoundError:
            pass
        self._write_ballast()

    def _write_ballast(self) -> bool:
        assert self._ballast is not None
        path, size = self._ballast
        chunk = bytes(min(size, 1024 * 1024))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like the data directory
            with open(fd, "wb") as f:  # written, not truncated to size: a sparse file reserves nothing
                left = size
                while left > 0:
                    left -= f.write(chunk[:left])
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            path.unlink(missing_ok=True)
            self._ballast_released = True
            return False
        self._ballast_released = False
        return True

    def release_ballast(self) -> bool:
        """Give the ballast's bytes back to the filesystem (a batch failed on a full disk); False if there was none
        left to give."""
        if self._ballast is None or self._ballast_released:
            return False
        self._ballast[0].unlink(missing_ok=True)
        self._ballast_released = True
        self.free_bytes(fresh=True)
        return True

    def rearm_ballast(self) -> None:
        """After a release: allocate the ballast again once there is room for it and the reserve twice over."""
        ballast = self._ballast
        if ballast is None or not self._ballast_released:
            return
        if self.free_bytes() > 2 * self.reserve_bytes + ballast[1] + LMDB_FULL_SLACK_BYTES:
            self._write_ballast()
            self.free_bytes(fresh=True)

    def describe(self) -> str:
        return f"{self.free_bytes()} bytes free, {self.reserve_bytes} bytes reserved for deletes"
