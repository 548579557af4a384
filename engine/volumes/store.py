"""Append-only volume files: where every object byte lives.

Each worker process appends to volumes of its own (``w<worker>-<n>.vol``), so the data path needs no
cross-process lock. Within a process, writers reserve a byte range under a short lock and ``pwrite`` outside it,
so concurrent uploads stream in parallel. A volume rolls when the next record would pass ``volume_size_bytes``.

Crash safety: bytes are made durable by ``sync()`` (fdatasync), which the sequencer runs alongside the journal
write of the batch whose events name them, acknowledging only when both are done; start-up checks the one journal
record that can be ahead of its bytes (engine/tail_check.py). A crash mid-write leaves unreferenced garbage,
never an acknowledged torn record; on restart appending continues at the end of the file, after the garbage,
which compaction reclaims.
Readers use ``pread`` on a cached descriptor and never take a lock.

A failed ``fdatasync`` is final for its volume (``VolumeSyncError``): Linux may have dropped the dirty pages that
failed to write and reports the error to one ``fsync`` only, so a later sync of the same file can succeed without
those pages ever reaching the disk. Every later sync of that volume in this process fails too (the records not yet
durable in it are never acknowledged), and the active volume rolls, so new records go to a fresh file. Records
made durable before the failure stay readable. ``abandon`` does the same for a process whose volume another
process (the supervisor) failed to sync.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ..model import BlobLocation
from . import reads
from .pending import PendingRecord
from .record import HEADER_BYTES, encode_record, record_bytes
from .writeback import WRITEBACK_BYTES, start_writeback

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^w(\d{2,})-(\d{8,})\.vol$")
DEFAULT_VOLUME_BYTES = 1 << 30
_NOWAIT = [getattr(os, "RWF_NOWAIT", 0)]  # the preadv flag; 0 once the kernel or filesystem refused it


class VolumeSyncError(OSError):
    """A volume's ``fdatasync`` failed, now or earlier in this process: what it holds beyond its last good sync
    is not durable and never will be (see the module docstring)."""

    def __init__(self, volume: str, code: int | None, reason: str) -> None:
        super().__init__(code if code is not None else errno.EIO,
                         f"volume {volume} could not be made durable ({reason}); it takes no more writes")
        self.volume = volume


def volume_name(worker: int, number: int) -> str:
    return f"w{worker:02d}-{number:08d}.vol"


class VolumeStore:
    """The volumes directory: one active volume per worker for appends, any volume for reads."""

    def __init__(self, directory: str | os.PathLike[str], *, worker: int = 0,
                 volume_size_bytes: int = DEFAULT_VOLUME_BYTES,
                 on_seal: Callable[[str, int], None] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self.volume_size_bytes = volume_size_bytes
        self.on_seal = on_seal
        self._lock = threading.Lock()
        self._read_fds: dict[str, int] = {}
        self._write_fds: dict[str, int] = {}
        self._users: dict[int, int] = {}  # fd -> reads/writes in progress on it
        self._doomed: set[int] = set()  # fds of retired volumes, closed when their last user is done
        self._sync_failed: dict[str, int] = {}  # volume -> errno of its failed fdatasync (module docstring)
        mine = sorted(int(m.group(2)) for p in self.directory.iterdir()
                      if (m := NAME_RE.match(p.name)) and int(m.group(1)) == worker)
        self._number = mine[-1] if mine else 0
        self._active = ""
        self._size = 0
        if mine:
            self._open_active(volume_name(worker, self._number))
        else:
            self._roll()

    @property
    def active(self) -> str:
        return self._active

    def _open_active(self, name: str) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT, 0o600)
        self._write_fds[name] = fd
        self._active = name
        self._size = os.fstat(fd).st_size

    def _roll(self) -> None:
        sealed, sealed_size = self._active, self._size
        self._number += 1
        self._open_active(volume_name(self.worker, self._number))
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if sealed:
            # The sealed volume's write descriptor stays open until close(): writers that reserved space in it
            # just before the roll may still be in their pwrite.
            if self.on_seal is not None:
                self.on_seal(sealed, sealed_size)

    def _reserve(self, total: int) -> tuple[str, int, int]:
        with self._lock:
            if (self._size > 0 and self._size + total > self.volume_size_bytes) or self._active in self._sync_failed:
                self._roll()
            offset = self._size
            self._size += total
            fd = self._write_fds[self._active]
            self._users[fd] = self._users.get(fd, 0) + 1
            return self._active, offset, fd

    def _release(self, fd: int) -> None:
        with self._lock:
            left = self._users[fd] = self._users.get(fd, 1) - 1
            if left <= 0:
                del self._users[fd]
                if fd in self._doomed:
                    self._doomed.discard(fd)
                    os.close(fd)

    def append(self, data: bytes | memoryview, digest: bytes) -> BlobLocation:
        """Write one record (not yet durable: see ``sync``); returns where its data lives."""
        header, table = encode_record(data, digest)
        total = HEADER_BYTES + len(data) + len(table)
        name, offset, fd = self._reserve(total)
        try:
            written = os.pwritev(fd, [header, data, table], offset)
            if 0 < written < total:  # a short write: the rest raises the real cause (ENOSPC)
                written += os.pwrite(fd, (header + bytes(data) + table)[written:], offset + written)
            if len(data) >= WRITEBACK_BYTES and written == total:
                start_writeback(fd, offset, total)  # a large write's chunk: the commit's fdatasync finds it on its way
        finally:
            self._release(fd)
        if written != total:
            raise OSError(f"short volume write to {name}: {written} bytes")
        return BlobLocation(digest, name, offset + HEADER_BYTES, len(data))

    def begin_record(self, length: int) -> PendingRecord:
        """Reserve a v2 record of ``length`` data bytes to be written piece by piece (a blob streamed from a
        peer, whose bytes arrive over time): see engine/volumes/pending.py. Same format as ``append``."""
        if length < 0:
            raise ValueError(f"negative record length {length}")
        name, offset, fd = self._reserve(record_bytes(length))
        return PendingRecord(self, name, offset, fd, length)

    def sync(self, names: Iterable[str]) -> None:
        """fdatasync the given volumes: after this, every record appended to them before the call is durable."""
        for name in set(names):
            failed = self._sync_failed.get(name)
            if failed is not None:
                raise VolumeSyncError(name, failed, os.strerror(failed) + ", earlier")
            fd = self._write_fds.get(name)
            if fd is None:  # another worker's or a sealed volume: any descriptor flushes the file
                try:
                    fd = self._reader(name)
                except FileNotFoundError:
                    continue  # retired by compaction: the deciders refuse any event naming it
            try:
                os.fdatasync(fd)
            except OSError as exc:
                self.abandon([name], exc.errno or errno.EIO)
                raise VolumeSyncError(name, exc.errno, exc.strerror or str(exc)) from exc

    def abandon(self, names: Iterable[str], code: int = errno.EIO) -> None:
        """Never trust a sync of these volumes again in this process, and stop appending to them: their records
        not yet durable may be lost (a failed fdatasync, here or in the process that syncs for this one)."""
        with self._lock:
            for name in names:
                if name not in self._sync_failed:
                    log.error("volume %s: a sync failed (%s); its unsynced records are abandoned and new records "
                              "go to a new volume", name, os.strerror(code))
                self._sync_failed.setdefault(name, code)
            if self._active in self._sync_failed:
                try:
                    self._roll()
                except OSError as exc:  # e.g. a full disk: the next append tries again (_reserve)
                    log.error("could not start a new volume after a failed sync: %s", exc)

    def _reader(self, name: str) -> int:
        fd = self._read_fds.get(name)
        if fd is None:
            if not NAME_RE.match(name):
                raise ValueError(f"not a volume name: {name!r}")
            with self._lock:
                fd = self._read_fds.get(name)
                if fd is None:
                    fd = os.open(self.directory / name, os.O_RDONLY)
                    self._read_fds[name] = fd
        return fd

    def _acquire_reader(self, name: str) -> int:
        fd = self._reader(name)
        with self._lock:
            if self._read_fds.get(name) != fd:  # retired between the lookup and now
                raise FileNotFoundError(f"volume {name} was retired")
            self._users[fd] = self._users.get(fd, 0) + 1
        return fd

    def pread(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` of a volume (short only at the end of the file).

        FileNotFoundError means compaction retired the volume: the blob index already names the new place.
        """
        fd = self._acquire_reader(name)
        try:
            return os.pread(fd, length, offset)
        finally:
            self._release(fd)

    def pread_cached(self, name: str, offset: int, length: int) -> bytearray:
        """Exactly ``length`` bytes at ``offset`` of a volume if all of them are in the page cache, else
        ``reads.WouldBlock`` (``preadv`` with ``RWF_NOWAIT``: it never waits on the disk, so the event loop may
        call it; the caller then reads on a worker thread). A filesystem or kernel without the flag answers
        ``WouldBlock`` from then on. Raw bytes, like ``pread``: ``BlobReader.read_cached`` checks them."""
        if not _NOWAIT[0]:
            raise reads.WouldBlock(name)
        buf = bytearray(length)
        fd = self._acquire_reader(name)
        try:
            got = os.preadv(fd, [buf], offset, _NOWAIT[0])
        except BlockingIOError:
            raise reads.WouldBlock(name) from None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _NOWAIT[0] = 0
            raise reads.WouldBlock(name) from None
        finally:
            self._release(fd)
        if got != length:  # partly cached, or the end of the file: ``pread`` on a thread tells which
            raise reads.WouldBlock(name)
        return buf

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` raw bytes at ``offset`` of a volume, unchecked (``read_blob`` checks)."""
        data = self.pread(name, offset, length)
        if len(data) != length:
            raise OSError(f"short read from volume {name} at {offset}: {len(data)} of {length} bytes")
        return data

    def read_blob(self, loc: BlobLocation, lo: int, length: int) -> bytes:
        """``length`` bytes at ``lo`` of a blob, verified against its record's checksums (raises DamagedBlob)."""
        return reads.read_blob(self, loc, lo, length)

    def blob_reader(self, loc: BlobLocation) -> reads.BlobReader:
        """Sequential verified reads of one blob (header and block table read once)."""
        return reads.BlobReader(self, loc)

    def verify_blob(self, loc: BlobLocation) -> str | None:
        """None if the record holding ``loc`` is intact (header, index match, every block), else the problem."""
        try:
            return reads.verify_record(self, loc)
        except FileNotFoundError:
            return "volume file missing"
        except OSError as exc:
            return f"record unreadable: {exc}"

    def retire(self, name: str) -> bool:
        """Delete a retired volume's file; False if it was already gone.

        Safe against in-flight I/O: a read or late write that already holds a descriptor keeps using it (on
        Linux an open descriptor reads and writes an unlinked file normally), and the descriptor is closed only
        when its last user is done, so its number can never be reused under a reader. Readers arriving later
        fail to open the name and re-locate the blob (Engine.read_object). The space is freed at that close.
        """
        if name == self._active:
            raise ValueError(f"refusing to retire the active volume {name}")
        with self._lock:
            for fds in (self._read_fds, self._write_fds):
                fd = fds.pop(name, None)
                if fd is None:
                    continue
                if self._users.get(fd):
                    self._doomed.add(fd)
                else:
                    os.close(fd)
        try:
            os.unlink(self.directory / name)
        except FileNotFoundError:
            return False
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True

    def close_unlinked(self) -> list[str]:
        """Close cached descriptors of volumes another process retired (unlinked); returns their names.

        A worker process keeps descriptors open for speed (and the write descriptors of its sealed volumes); until
        it drops them a retired volume's space stays allocated. Reads through them stay correct meanwhile
        (compaction copies bytes, never changes them).
        """
        gone: list[str] = []
        with self._lock:
            for fds in (self._read_fds, self._write_fds):
                dropped = [name for name, fd in fds.items() if name != self._active and os.fstat(fd).st_nlink == 0]
                for name in dropped:
                    fd = fds.pop(name)
                    if self._users.get(fd):
                        self._doomed.add(fd)
                    else:
                        os.close(fd)
                gone += dropped
        return sorted(set(gone))

    def volume_names(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if NAME_RE.match(p.name))

    def close(self) -> None:
        with self._lock:
            for fd in [*self._write_fds.values(), *self._read_fds.values(), *self._doomed]:
                os.close(fd)
            self._doomed.clear()
            self._write_fds.clear()
            self._read_fds.clear()
