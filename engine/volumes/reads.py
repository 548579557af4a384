"""Verified reads of stored blobs: every byte handed out has passed its record's checksums.

A read of ``[lo, lo+n)`` of a blob reads the whole checksum blocks that cover the range (engine/volumes/record.py)
plus the record header and the blocks' table entries, and checks them; any mismatch raises ``DamagedBlob`` and no
byte of the read is returned. Costs:

* ``read_blob`` for a small blob or a read of (nearly) all of one: ONE ``pread`` of the whole record (header,
  data and block table are contiguous);
* otherwise header, blocks and table: two or three ``pread``\\ s (blocks and table in one when they are close);
* ``BlobReader`` (a streamed GET, one reader per chunk): the header comes with the first piece when that read is
  small (``RIDE_ALONG_BYTES``), else with a ``pread`` of its own; the table (256 bytes for a 4 MiB chunk) once,
  then one ``pread`` per piece, handed out as read (no copy) when the piece is whole blocks.

``FileNotFoundError`` (compaction retired the volume) passes through: the caller re-locates the blob.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from ..model import BlobLocation
from .record import (
    BLOCK_BYTES,
    CRC_BYTES,
    HEADER_BYTES,
    DamagedBlob,
    RecordHeader,
    check_header,
    table_bytes,
    verify_single_block,
)

WHOLE_RECORD_SLACK = 128 * 1024  # read the whole record in one pread if that reads at most this much extra
TABLE_GAP = 64 * 1024  # read blocks and table entries in one pread if at most this much lies between them
PIECE_BYTES = 1024 * 1024
RIDE_ALONG_BYTES = 64 * 1024  # a first read up to here brings the header along (one pread, one small copy)


class Preader(Protocol):
    def pread(self, name: str, offset: int, length: int) -> bytes: ...


class WouldBlock(Exception):
    """A read that must not wait on the disk (``VolumeStore.pread_cached``) found bytes not in the page cache."""


class _NoWait:
    """A ``Preader`` whose reads never wait on the disk: ``pread_cached``, raising ``WouldBlock``. Its buffers are
    ``bytearray`` objects the kernel filled (no second copy into a ``bytes``), handed out by ``read_cached`` as such;
    the read functions only slice and checksum them, so they pass as ``bytes`` here."""

    def __init__(self, pread_cached: Callable[[str, int, int], bytearray]) -> None:
        self._pread = pread_cached

    def pread(self, name: str, offset: int, length: int) -> bytes:
        return cast(bytes, self._pread(name, offset, length))


def read_exact(store: Preader, name: str, offset: int, length: int) -> bytes:
    data = store.pread(name, offset, length)
    if len(data) != length:
        raise DamagedBlob(f"record cut off: {len(data)} of {length} bytes at offset {offset}")
    return data


def _span(header: RecordHeader, loc: BlobLocation, data: memoryview, start: int, table: memoryview, lo: int,
          n: int) -> bytes:
    problem = header.check(start, data, table)
    if problem is not None:
        raise DamagedBlob(problem)
    whole = data.obj
    if lo == start and len(data) == n and isinstance(whole, (bytes, bytearray)) and len(whole) == n:
        return cast(bytes, whole)  # the pread's own buffer is exactly the span (a streamed GET's pieces): no copy
    return bytes(data[lo - start:lo - start + n])


def read_blob(store: Preader, loc: BlobLocation, lo: int, n: int) -> bytes:
    """``n`` verified bytes at ``lo`` of the blob at ``loc`` (DamagedBlob if they fail their checks)."""
    if n <= 0:
        return b""
    if loc.size - n <= WHOLE_RECORD_SLACK:
        # Header, data and (v2) table in one pread. A v1 record has no table: reading past its data may reach
        # the next record or the end of the file, so a read short by up to the table size is fine for v1.
        size = loc.size
        want = HEADER_BYTES + size + (CRC_BYTES if size <= BLOCK_BYTES else table_bytes(size))
        whole = store.pread(loc.volume, loc.offset - HEADER_BYTES, want)
        data = verify_single_block(whole, loc.hash, size)  # most objects: one block, checked in C
        if data is not None:
            return data if lo == 0 and n >= size else data[lo:lo + n]  # the whole blob: its checked slice as is
        raw = memoryview(whole)
        header = check_header(raw[:HEADER_BYTES], loc.hash, loc.size)
        end = HEADER_BYTES + loc.size + header.trailer_bytes
        if len(raw) < end:
            raise DamagedBlob(f"record cut off: {len(raw)} of {end} bytes")
        start, stop = header.covering(lo, lo + n)
        t0, t1 = header.table_span(start, stop) if header.version == 2 else (0, 0)
        base = HEADER_BYTES + loc.size
        return _span(header, loc, raw[HEADER_BYTES + start:HEADER_BYTES + stop], start, raw[base + t0:base + t1],
                     lo, n)
    header = check_header(read_exact(store, loc.volume, loc.offset - HEADER_BYTES, HEADER_BYTES), loc.hash, loc.size)
    return _read_blocks(store, loc, header, lo, n, None)


def _read_blocks(store: Preader, loc: BlobLocation, header: RecordHeader, lo: int, n: int,
                 table: bytes | None) -> bytes:
    """Read and check the blocks covering ``[lo, lo+n)``; ``table`` is the whole block table if already read."""
    start, stop = header.covering(lo, lo + n)
    if header.version == 1:
        return _span(header, loc, memoryview(read_exact(store, loc.volume, loc.offset, loc.size)), 0, memoryview(b""),
                     lo, n)
    t0, t1 = header.table_span(start, stop)
    if table is not None:
        data = memoryview(read_exact(store, loc.volume, loc.offset + start, stop - start))
        return _span(header, loc, data, start, memoryview(table)[t0:t1], lo, n)
    if loc.size + t0 - stop <= TABLE_GAP:  # blocks near the end of the blob: blocks and table entries together
        raw = memoryview(read_exact(store, loc.volume, loc.offset + start, loc.size - start + t1))
        return _span(header, loc, raw[:stop - start], start, raw[loc.size - start + t0:], lo, n)
    data = memoryview(read_exact(store, loc.volume, loc.offset + start, stop - start))
    entries = memoryview(read_exact(store, loc.volume, loc.offset + loc.size + t0, t1 - t0))
    return _span(header, loc, data, start, entries, lo, n)


class BlobReader:
    """Sequential verified reads of one blob (a streamed GET): header and block table read once."""

    def __init__(self, store: Preader, loc: BlobLocation) -> None:
        self.store = store
        self.loc = loc
        self._header: RecordHeader | None = None
        self._table: bytes | None = None
        self._whole: bytes | None = None  # a v1 blob, verified once (one block: it is read whole anyway)

    def read_cached(self, lo: int, n: int) -> bytes | bytearray | None:
        """``read`` without waiting on the disk: the verified bytes when everything it reads (the header and table
        too, the first time) is in the page cache, else None, and the caller runs ``read`` on a worker thread. A
        hot object's pieces are then served from the event loop without a thread round trip per piece."""
        cached = getattr(self.store, "pread_cached", None)
        if cached is None or (self._header is not None and self._header.version == 1):
            return None
        try:
            return self.read(lo, n, _NoWait(cached))
        except WouldBlock:
            return None

    def read(self, lo: int, n: int, store: Preader | None = None) -> bytes:
        loc = self.loc
        store = store or self.store
        if self._header is None:
            if lo + n <= RIDE_ALONG_BYTES and loc.size >= lo + n:
                # The header rides along with a small first read: [header, data up to the read's last block).
                # A larger one reads the header apart, so its data is the pread's own bytes, not a copy of them.
                head_end = min(loc.size, -(-(lo + n) // BLOCK_BYTES) * BLOCK_BYTES)
                raw = memoryview(read_exact(store, loc.volume, loc.offset - HEADER_BYTES, HEADER_BYTES + head_end))
                self._header = check_header(raw[:HEADER_BYTES], loc.hash, loc.size)
                if self._header.version == 2 and self._header.covering(lo, lo + n)[1] <= head_end:
                    self._load_table(store)
                    start, stop = self._header.covering(lo, lo + n)
                    t0, t1 = self._header.table_span(start, stop)
                    assert self._table is not None
                    return _span(self._header, loc, raw[HEADER_BYTES + start:HEADER_BYTES + stop], start,
                                 memoryview(self._table)[t0:t1], lo, n)
            else:
                self._header = check_header(read_exact(store, loc.volume, loc.offset - HEADER_BYTES, HEADER_BYTES),
                                            loc.hash, loc.size)
        header = self._header
        if header.version == 1:
            if self._whole is None:
                self._whole = _read_blocks(store, loc, header, 0, loc.size, None)
            return self._whole[lo:lo + n]
        if self._table is None:
            self._load_table(store)
        return _read_blocks(store, loc, header, lo, n, self._table)

    def _load_table(self, store: Preader) -> None:
        assert self._header is not None
        self._table = read_exact(store, self.loc.volume, self.loc.offset + self.loc.size, self._header.trailer_bytes)


def verify_record(store: Preader, loc: BlobLocation, piece_bytes: int = PIECE_BYTES) -> str | None:
    """None if every block of the blob's record checks out, else the problem (bounded memory: piece by piece)."""
    reader = BlobReader(store, loc)
    try:
        if loc.size == 0:
            reader.read(0, 0)
        for lo in range(0, loc.size, piece_bytes):
            reader.read(lo, min(piece_bytes, loc.size - lo))
    except DamagedBlob as exc:
        return exc.problem
    return None
