"""Walking a volume file record by record, without the blob index: what `s4-journal verify` reports.

Each record's header is checked (its CRC makes ``length``, and so the record's end, trustworthy), then its data
against its checksums (v1: one CRC32C; v2: the block table after the data). Anything that is not an intact record
(a crashed write's garbage, zero-filled space, a damaged record) becomes a ``Region``; the walk resynchronises on
the next intact header. Read-only and safe beside a live server. Format: docs/architecture/volumes.md.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from .reads import read_exact
from .record import HEADER_BYTES, MAGICS, RecordHeader, decode_header
from .store import VolumeStore

PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Region:
    """A span of a volume that is not an intact record."""

    offset: int
    length: int
    reason: str


@dataclass(slots=True)
class VolumeWalk:
    name: str
    size: int = 0
    records: int = 0
    record_bytes: int = 0
    bad: list[Region] = field(default_factory=list)


class _FdReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pread(self, name: str, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)


def _header_at(fd: int, offset: int) -> RecordHeader | None:
    return decode_header(os.pread(fd, HEADER_BYTES, offset))


def _next_record(fd: int, start: int, size: int) -> int:
    """Offset of the next intact record header at or after ``start`` (``size`` if none): resynchronisation."""
    pos = start
    while pos < size:
        window = os.pread(fd, PIECE_BYTES + 3, pos)
        hits = sorted(h for magic in MAGICS for h in _find_all(window, magic))
        for hit in hits:
            if pos + hit < size and _header_at(fd, pos + hit) is not None:
                return pos + hit
        pos += PIECE_BYTES
    return size


def _find_all(window: bytes, magic: bytes) -> list[int]:
    out, hit = [], window.find(magic)
    while hit != -1:
        out.append(hit)
        hit = window.find(magic, hit + 1)
    return out


def _data_problem(fd: int, pos: int, header: RecordHeader) -> str | None:
    """Check a record's data against its checksums, a piece at a time (bounded memory)."""
    reader = _FdReader(fd)
    data_at = pos + HEADER_BYTES
    if header.version == 1:
        crc = 0
        for lo in range(0, header.length, PIECE_BYTES):
            crc = crc32c.crc32c(read_exact(reader, "", data_at + lo, min(PIECE_BYTES, header.length - lo)), crc)
        return None if crc == header.data_crc else "data checksum mismatch"
    table = read_exact(reader, "", data_at + header.length, header.trailer_bytes)
    piece = max(PIECE_BYTES // header.field, 1) * header.field
    for lo in range(0, header.length, piece):
        hi = min(header.length, lo + piece)
        t0, t1 = header.table_span(lo, hi)
        problem = header.check(lo, read_exact(reader, "", data_at + lo, hi - lo), table[t0:t1])
        if problem is not None:
            return problem
    return None


def walk_volume(path: Path) -> VolumeWalk:
    """Read a volume record by record (header CRC, data checksums), skipping over and reporting anything else."""
    fd = os.open(path, os.O_RDONLY)
    try:
        walk = VolumeWalk(path.name, os.fstat(fd).st_size)
        pos = 0
        while pos < walk.size:
            raw = os.pread(fd, HEADER_BYTES, pos)
            header = decode_header(raw)
            if header is None:
                nxt = _next_record(fd, pos + 1, walk.size)
                reason = "zero bytes" if not any(raw) else "no record header"
                walk.bad.append(Region(pos, nxt - pos, reason))
                pos = nxt
                continue
            end = pos + HEADER_BYTES + header.length + header.trailer_bytes
            if end > walk.size:
                nxt = _next_record(fd, pos + 1, walk.size)
                walk.bad.append(Region(pos, nxt - pos, f"record of {header.length} bytes cut off"))
                pos = nxt
                continue
            problem = _data_problem(fd, pos, header)
            if problem is not None:
                trusted_end = end == walk.size or _header_at(fd, end) is not None
                nxt = end if trusted_end else _next_record(fd, pos + 1, walk.size)
                walk.bad.append(Region(pos, nxt - pos, problem))
                pos = nxt
                continue
            walk.records += 1
            walk.record_bytes += header.length
            pos = end
        return walk
    finally:
        os.close(fd)


class VolumeReader(VolumeStore):
    """VolumeStore's read side only (tools): a real VolumeStore would create an active volume for its worker."""

    def __init__(self, directory: Path) -> None:  # deliberately does not call VolumeStore.__init__
        self.directory = directory
        self._lock = threading.Lock()
        self._read_fds: dict[str, int] = {}
        self._write_fds: dict[str, int] = {}
        self._users: dict[int, int] = {}
        self._doomed: set[int] = set()
