"""A volume record written piece by piece as its data arrives (a blob streamed from a peer), in the same v2 format
as ``VolumeStore.append``.

``VolumeStore.begin_record(length)`` reserves the whole record's range up front (the length is known from the
sender's header), ``write`` places each piece at its offset and computes the 64 KiB block CRCs on the way (pieces
need not be block-aligned), and ``finish(digest)`` writes the block table and then, last, the header. Until
``finish`` the range holds no intact header, so an abandoned record (hash or size mismatch, a cancelled transfer,
a full disk, a crash) is garbage that ``s4-journal verify`` reports as "zero bytes" / "no record header" and that
counts as dead when its volume seals (volumes.md), never a record that claims a digest its data does not have.
Nothing here is durable until ``VolumeStore.sync``. One writer at a time per record (calls may hop threads).
"""

from __future__ import annotations

import errno
import os
import sys
from array import array
from typing import TYPE_CHECKING

import crc32c

from ..model import BlobLocation
from .record import BLOCK_BYTES, HEADER_BYTES, encode_header_v2
from .writeback import WRITEBACK_BYTES, start_writeback

if TYPE_CHECKING:
    from .store import VolumeStore


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``; a short write is retried, so the real cause (ENOSPC) surfaces."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, f"volume write made no progress at offset {offset}")
        view, offset = view[written:], offset + written


class PendingRecord:
    """One reserved record being filled; ``finish`` or ``abort`` exactly once (a context manager aborts)."""

    def __init__(self, store: VolumeStore, volume: str, offset: int, fd: int, length: int) -> None:
        self._store = store
        self.volume = volume
        self.offset = offset  # where the record (its header) starts
        self.length = length
        self._fd = fd
        self._pos = 0
        self._crcs = array("I")  # 4 bytes per 64 KiB block, whatever the blob's size
        self._block_crc = 0
        self._block_fill = 0
        self._open = True

    @property
    def data_offset(self) -> int:
        return self.offset + HEADER_BYTES

    @property
    def received(self) -> int:
        return self._pos

    def write(self, piece: bytes | memoryview) -> None:
        """Append the next ``piece`` of the data (ValueError past the declared length; nothing written then)."""
        if not self._open:
            raise ValueError("record already finished or aborted")
        view = memoryview(piece).cast("B")
        n = len(view)
        if self._pos + n > self.length:
            raise ValueError(f"{self._pos + n} bytes is more than the record's {self.length}")
        pwrite_all(self._fd, view, self.data_offset + self._pos)
        if self.length >= WRITEBACK_BYTES:  # a large blob: its final fdatasync finds most of it on its way
            start_writeback(self._fd, self.data_offset + self._pos, n)
        i = 0
        while i < n:
            take = min(BLOCK_BYTES - self._block_fill, n - i)
            self._block_crc = crc32c.crc32c(view[i:i + take], self._block_crc)
            self._block_fill += take
            i += take
            if self._block_fill == BLOCK_BYTES:
                self._crcs.append(self._block_crc)
                self._block_crc, self._block_fill = 0, 0
        self._pos += n

    def finish(self, digest: bytes) -> BlobLocation:
        """Write the block table, then the header naming ``digest``; the caller has checked the digest."""
        if not self._open:
            raise ValueError("record already finished or aborted")
        if self._pos != self.length:
            raise ValueError(f"record got {self._pos} of {self.length} bytes")
        try:
            if self._block_fill:
                self._crcs.append(self._block_crc)
            if sys.byteorder != "little":
                self._crcs.byteswap()  # the table is little-endian u32s (record.py)
            pwrite_all(self._fd, self._crcs.tobytes(), self.data_offset + self.length)
            pwrite_all(self._fd, encode_header_v2(self.length, digest), self.offset)
        finally:
            self._close()
        return BlobLocation(digest, self.volume, self.data_offset, self.length)

    def abort(self) -> None:
        """Give the range up: it stays as headerless garbage (see the module docstring). Idempotent."""
        self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._store._release(self._fd)

    def __enter__(self) -> PendingRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()
