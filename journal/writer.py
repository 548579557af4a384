"""The Journal: one ordered, durable log per node.

``write_batch`` is the single durable step: it gives each draft its ``seq`` (gap-free) and ``hlc``, writes all
frames with one ``write`` and makes them durable with one ``fdatasync``. ``append`` is the async, group-committed
front door for callers that only need to log (tools, tests, benchmarks); the engine's sequencer batches commands
itself and calls ``write_batch`` from its own group-commit thread.

``Journal.stats`` measures the commit point (fdatasync latency) for metrics exporters; in a multi-process server
only the process that owns the journal has it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codec import decode_events, encode_event
from .errors import JournalClosedError
from .events import Event, EventDraft, EventType
from .framing import ScanEnd, encode_record, scan_records
from .groupcommit import FixedHistogram, GroupCommitQueue
from .hlc import HybridClock, physical_ms
from .recovery import RecoveryReport, iter_segment, recover
from .segment import SEGMENT_HEADER_BYTES, create_segment, first_seq_of, list_segments

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
RECORD_TARGET_BYTES = 16 * 1024 * 1024
# fdatasync latency buckets (seconds): NVMe answers in tens of microseconds, a busy disk or network volume in tens
# of milliseconds; past a second something is wrong.
FSYNC_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5, 1.0, 2.5, 5.0)


@dataclass
class JournalStats:
    """What the commit point measured, kept without a metrics library: s4.api.metrics reads it at scrape time, or
    subscribes to the histogram's listeners to publish across processes."""

    fsync_seconds: FixedHistogram = field(default_factory=lambda: FixedHistogram(FSYNC_BUCKETS))


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch framed for the journal: ``records`` records holding seqs ``first_seq..last_seq``."""

    data: bytes
    records: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class TailRecord:
    """The journal's last record: where it starts in the tail segment and the events it holds."""

    offset: int
    events: list[Event]


def _record_payloads(events: Sequence[Event]) -> list[bytes]:
    """A batch as record payloads: one record per batch unless it passes RECORD_TARGET_BYTES.

    A batch in one record is all-or-nothing under one checksum, so a power loss that persists a batch's pages
    out of order reads as a torn tail, never as corruption before the end of the log.
    """
    payloads: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for blob in (encode_event(e) for e in events):
        if current and size + len(blob) > RECORD_TARGET_BYTES:
            payloads.append(b"".join(current))
            current, size = [], 0
        current.append(blob)
        size += len(blob)
    payloads.append(b"".join(current))
    return payloads


class Journal:
    """Append-only event log over a directory of segments; recovers itself on open."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        origin: str,
        segment_size_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: HybridClock | None = None,
        repair: bool = False,
        witness: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.origin = origin
        self.segment_size_bytes = segment_size_bytes
        # witness: the highest seq known committed (the views' last_seq); recovery refuses to end below it
        self.report: RecoveryReport = recover(self.directory, repair=repair, witness=witness)
        self.clock = clock or HybridClock()
        self.clock.observe(self.report.last_hlc)
        self._last_seq = self.report.last_seq
        self._lock = threading.RLock()
        self._fd = -1
        self._size = 0
        if self.report.tail_segment is not None:
            self._open_tail(self.report.tail_segment, self.report.tail_offset)
        self._committer: GroupCommitQueue[EventDraft, Event] | None = None
        self._closed = False
        self.stats = JournalStats()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def _open_tail(self, path: Path, size: int) -> None:
        self._fd = os.open(path, os.O_WRONLY)
        self._size = size

    def _roll(self, first_seq: int) -> None:
        # The new segment first: if it cannot be created (disk full) the log stays on its current tail, whose
        # descriptor must stay open and valid for the next attempt.
        path = create_segment(self.directory, first_seq, physical_ms(self.clock.tick()))
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._open_tail(path, os.path.getsize(path))

    def stamp(self, draft: EventDraft, seq: int) -> Event:
        """Give a draft its place in the order: ``seq`` (chosen by the single writer) and a fresh HLC."""
        return Event(seq, self.clock.tick(), self.origin, draft.type, draft.payload, draft.actor)

    def adopt(self, event: Event, seq: int) -> Event:
        """A peer's already-stamped event given its place in this node's log: the local ``seq``, and the original
        ``hlc``, ``origin``, ``type``, ``payload`` and ``actor`` (its identity is ``(hlc, origin)``). The caller has
        merged its hlc into the clock (``clock.observe_peer``), so later local stamps sort after it."""
        return Event(seq, event.hlc, event.origin, event.type, event.payload, event.actor)

    def write_batch(self, drafts: Sequence[EventDraft]) -> list[Event]:
        """Assign seq/hlc, write and fdatasync; returns the durable events. All or nothing."""
        with self._lock:
            events = [self.stamp(d, self._last_seq + i) for i, d in enumerate(drafts, 1)]
            self.write_events(events)
            return events

    def encode(self, events: Sequence[Event]) -> EncodedBatch:
        """Frame already-stamped events as they will be written: one record unless the batch is very large."""
        if not events:
            raise ValueError("an empty batch has nothing to encode")
        for i, event in enumerate(events):
            if event.seq != events[0].seq + i:
                raise ValueError(f"event seq {event.seq} does not follow {events[0].seq + i - 1} in its batch")
        payloads = _record_payloads(events)
        return EncodedBatch(b"".join(encode_record(p) for p in payloads), len(payloads), events[0].seq,
                            events[-1].seq)

    def write_events(self, events: Sequence[Event]) -> None:
        """Write already-stamped events (seqs must continue the log) with one write and one fdatasync."""
        if events:
            self.write_encoded(self.encode(events))

    def write_encoded(self, batch: EncodedBatch) -> int:
        """Write an encoded batch with one write and one fdatasync; returns the tail offset it starts at (for
        ``cut_tail``). All or nothing: a failed write or sync leaves the log as it was."""
        if self._closed:
            raise JournalClosedError("journal is closed")
        with self._lock:
            if batch.first_seq != self._last_seq + 1:
                raise ValueError(f"event seq {batch.first_seq} does not continue the log at {self._last_seq}")
            if self._fd < 0 or self._size >= self.segment_size_bytes:
                self._roll(self._last_seq + 1)
            start = self._size
            try:
                written = os.pwrite(self._fd, batch.data, start)
                if 0 < written < len(batch.data):  # short (disk full): writing the rest raises the real ENOSPC
                    written += os.pwrite(self._fd, batch.data[written:], start + written)
                if written != len(batch.data):
                    raise OSError(errno.ENOSPC, f"short journal write: {written} of {len(batch.data)} bytes")
                synced_at = time.perf_counter()
                os.fdatasync(self._fd)
                fsync_s = time.perf_counter() - synced_at
            except BaseException:
                # Never leave a half batch where the next batch would follow it.
                os.ftruncate(self._fd, start)
                raise
            self._size = start + len(batch.data)
            self._last_seq = batch.last_seq
            self.stats.fsync_seconds.observe(fsync_s)
            return start

    def cut_tail(self, offset: int, last_seq: int) -> None:
        """Remove the tail segment's bytes from ``offset`` on (records that were never acknowledged), so that the
        log ends at ``last_seq`` again. A journal that cannot be cut is closed: writing after records it could not
        remove would let them reappear at the next start."""
        with self._lock:
            try:
                os.ftruncate(self._fd, offset)
                os.fdatasync(self._fd)
            except BaseException:
                self._closed = True
                raise
            self._size = offset
            self._last_seq = last_seq

    def tail_record(self) -> TailRecord | None:
        """The last record of the tail segment (offset and events); None if that segment holds no record yet."""
        with self._lock:
            if self._fd < 0:
                return None
            path = list_segments(self.directory)[-1]
            data = path.read_bytes()[: self._size]
        last: tuple[int, memoryview] | None = None
        for item in scan_records(data, SEGMENT_HEADER_BYTES):
            if isinstance(item, ScanEnd):
                break
            last = item
        if last is None:
            return None
        return TailRecord(last[0], decode_events(bytes(last[1])))

    async def append(self, type: EventType, payload: dict[str, Any], actor: str = "") -> Event:
        """Log one event; returns once it is durable (shares its fsync with concurrent appends)."""
        if self._committer is None:
            with self._lock:
                if self._committer is None:
                    self._committer = GroupCommitQueue(self.write_batch, name="journal-append")
        return await self._committer.submit(EventDraft(type, payload, actor))

    @property
    def committer(self) -> GroupCommitQueue[EventDraft, Event] | None:
        return self._committer

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]:
        """Durable events with ``from_seq <= seq <= to_seq``, in order."""
        segments = list_segments(self.directory)
        start = 0
        for i, path in enumerate(segments):
            if first_seq_of(path) <= from_seq:
                start = i
        for path in segments[start:]:
            if to_seq is not None and first_seq_of(path) > to_seq:
                return
            for item in iter_segment(path, None):
                if isinstance(item, ScanEnd):
                    break
                if item.seq > self._last_seq or (to_seq is not None and item.seq > to_seq):
                    return
                if item.seq >= from_seq:
                    yield item

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
