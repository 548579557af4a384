"""The data directory as a whole: one owner at a time (an exclusive lock), private modes, the node's identity.

The process that owns the journal (the single-process server, the supervisor, ``s4-journal repair``, an offline
admin command) calls ``DataDirLock.acquire`` before it touches anything else in the directory: a second writer
would recover, truncate and append to the same journal and volumes as the first, and both would acknowledge
writes that the other overwrites. The lock is ``flock(LOCK_EX)`` on ``<data dir>/LOCK``, which holds the PID of
its owner for the refusal message. The kernel drops it when the owner exits however it exits (kill -9 included),
so there is no stale lock to clean up; the file itself stays. HTTP worker processes never take it (their
supervisor holds it for them), and read-only tools (``s4-journal dump/verify/export/replay``) do not need it.

Everything S4 creates under the data directory is private to the server's user: directories 0700, files 0600
(the journal holds password hashes and encrypted secrets). ``prepare`` also closes the directories of a data
directory made by an older version (files inside a 0700 directory are unreachable for other users).

See docs/operations.md ("The data directory") and docs/architecture/recovery.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
NODE_ID_NAME = "node_id"
POOLED_NAME = "pooled"  # present once the directory served in a pool (``mark_pooled``)
CLUSTER_DIR = "cluster"  # the cluster node's own stores (cluster/feed_store.py, cas_store.py)
DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("journal", "views", "volumes")
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class DataDirLockedError(RuntimeError):
    """Another process holds the data directory; the message names the directory and its PID."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(
            f"data directory {data_dir} is in use by another S4 process (pid {holder}, lock {data_dir / LOCK_NAME}); "
            "only one server or writing tool may use a data directory at a time: stop that process first")
        self.data_dir = data_dir
        self.holder = holder


class NodeIdMismatchError(RuntimeError):
    """S4_NODE_ID names another node than the one this data directory belongs to."""


class DataDirLock:
    """An exclusive, process-lifetime lock on a data directory (see the module docstring)."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd = fd

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike[str]) -> DataDirLock:
        """Lock ``data_dir`` (creating it, private) or raise DataDirLockedError naming the holder's PID."""
        path = Path(data_dir)
        prepare(path)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise DataDirLockedError(path, holder) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Give the directory up (closing the descriptor drops the flock). Idempotent."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        if text.isdigit():
            return text
    return "unknown"


def holder_pid(data_dir: Path) -> str | None:
    """The PID recorded by the lock's current holder, or None if no process holds the directory."""
    try:
        fd = os.open(Path(data_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)


def prepare(data_dir: Path) -> None:
    """Create the data directory and its subdirectories private (0700); tighten them where an older S4 left 0755."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for path in (data_dir, *(data_dir / name for name in SUBDIRS)):
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        if path.stat().st_mode & 0o077:
            try:
                os.chmod(path, DIR_MODE)
            except PermissionError:
                log.warning("cannot make %s private (mode 0700): not its owner", path)


def node_id(data_dir: Path, wanted: str | None = None) -> str:
    """This node's id: stored in ``node_id`` at first start (``wanted`` if given, else generated), then fixed.

    ``wanted`` (S4_NODE_ID) that differs from the stored id raises NodeIdMismatchError: the journal's events carry
    the id as their origin, so a node cannot be renamed by changing a setting.
    """
    path = data_dir / NODE_ID_NAME
    if path.exists():
        stored = path.read_text().strip()
        if wanted and wanted != stored:
            raise NodeIdMismatchError(
                f"S4_NODE_ID is {wanted!r} but the data directory {data_dir} belongs to node {stored!r}: a node "
                "keeps the id it was created with (unset S4_NODE_ID or set it to the stored id)")
        return stored
    node = wanted or f"node-{uuid.uuid4().hex[:12]}"
    write_private(path, node)
    return node


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` durably, readable by the owner only (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover keeps its old mode through O_CREAT
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def pooled(data_dir: Path) -> bool:
    """Whether this directory ever served in a pool (S4_MODE=cluster). Its journal may then hold peers' events in
    the order they arrived, not in their last-writer-wins order, so its views must always be projected with the
    replicated bookkeeping, also when it is started alone later (docs/architecture/views.md, "Flavour"). A
    directory from before the marker existed shows it by the cluster node's stores."""
    return (data_dir / POOLED_NAME).exists() or (data_dir / CLUSTER_DIR).is_dir()


def mark_pooled(data_dir: Path) -> None:
    """Record, durably and for good, that this directory serves in a pool: before its views open in cluster mode,
    so before any peer's event can enter its journal."""
    if (data_dir / POOLED_NAME).exists():
        return
    write_private(data_dir / POOLED_NAME, "this data directory has served in an S4 pool: its views always keep the "
                                          "replicated bookkeeping (docs/architecture/views.md)\n")
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
