"""Following the journal from another reader: events after a seq, read incrementally, never written.

The notification delivery job and the admin event stream (docs/architecture/notifications.md) read events a
node already committed, possibly from another process than the sequencer's. ``JournalTail`` keeps its place
(segment, byte offset of the next record, next seq) so each ``read`` only decodes what was appended since the last
one, instead of rescanning a 64 MiB segment per poll. Callers pass ``upto``: the views' ``last_seq``, which only
counts events whose record is durable and whole, so a record still being written (torn at the end of the file) is
never needed and is simply waited for. Mid-log corruption ends the read like a torn tail would (start-up refuses
such a log; a follower just sees no more events); segments are found again by name if the one being read goes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .codec import DecodeError, decode_events
from .events import Event
from .framing import HEADER_BYTES, ScanEnd, StopReason, scan_records
from .segment import SEGMENT_HEADER_BYTES, decode_header, first_seq_of, list_segments, segment_name

#: At most this many bytes of a segment are read per call (a bounded read, whatever is behind).
READ_CHUNK_BYTES = 8 * 1024 * 1024


class JournalTail:
    """Events with ``seq > after`` in order, across calls of ``read``."""

    def __init__(self, directory: Path, after: int = 0) -> None:
        self.directory = Path(directory)
        self.next_seq = after + 1  # the first seq not yet returned
        self._segment: Path | None = None
        self._offset = 0  # of the next record to decode in ``_segment``

    def _locate(self) -> bool:
        """Position at the first record of the segment holding ``next_seq`` (False: no such segment yet)."""
        segments = list_segments(self.directory) if self.directory.is_dir() else []
        chosen = [p for p in segments if first_seq_of(p) <= self.next_seq]
        if not chosen:
            return False
        self._segment, self._offset = chosen[-1], SEGMENT_HEADER_BYTES
        return True

    def read(self, upto: int, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` events with ``next_seq <= seq <= upto`` (fewer if the log holds no more yet)."""
        out: list[Event] = []
        if self._segment is None and not self._locate():
            return out
        chunk = READ_CHUNK_BYTES
        while self.next_seq <= upto and len(out) < limit:
            assert self._segment is not None
            try:
                if self._offset == SEGMENT_HEADER_BYTES and not _header_ok(self._segment):
                    return out
                data = _read_from(self._segment, self._offset, chunk)
            except FileNotFoundError:  # the segment went (the log was cut or rewritten): find the place again
                if not self._locate():
                    return out
                continue
            consumed, grow = 0, False
            for item in scan_records(data, 0):
                if isinstance(item, ScanEnd):
                    if consumed == 0 and item.reason is StopReason.TORN and len(data) == chunk:
                        chunk, grow = chunk * 2, True  # one record longer than the chunk: read more of it
                        break
                    if item.reason is StopReason.CLEAN and len(data) < chunk:
                        following = self.directory / segment_name(self.next_seq)
                        if following.exists():  # the log rolled: it continues in the next segment
                            self._segment, self._offset = following, SEGMENT_HEADER_BYTES
                            consumed = -1
                    break
                offset, payload = item
                try:
                    events = decode_events(bytes(payload))
                except DecodeError:
                    return out
                if events and events[-1].seq > upto:  # a record past ``upto``: its part, the place kept
                    out.extend(e for e in events if self.next_seq <= e.seq <= upto)
                    self.next_seq = max(self.next_seq, upto + 1)
                    return out
                out.extend(e for e in events if e.seq >= self.next_seq)
                if events:
                    self.next_seq = max(self.next_seq, events[-1].seq + 1)
                consumed = offset + HEADER_BYTES + len(payload)
                if len(out) >= limit or self.next_seq > upto:
                    break
            if consumed > 0:
                self._offset += consumed
            elif consumed == 0 and not grow:  # nothing whole after the place yet: wait for the writer
                return out
        return out


def _header_ok(path: Path) -> bool:
    with open(path, "rb") as f:
        header = decode_header(f.read(SEGMENT_HEADER_BYTES))
    return header is not None and header.first_seq == first_seq_of(path)


def _read_from(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)
