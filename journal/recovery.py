"""Start-up scan of the journal: find the durable end, truncate a torn tail, refuse on mid-log corruption.

Rules (docs/architecture/recovery.md):
  1. Segments are read in name order; each must start with a valid header whose first_seq continues the log.
  2. Records must decode and their seqs must be gap-free.
  3. A torn record (see framing.py) is allowed only at the end of the last segment: it is truncated and reported.
  4. Anything else bad raises CorruptJournalError naming segment and offset -- unless ``repair=True``, which
     truncates the log at the first bad spot and deletes later segments (the operator asked for it).
  5. A durable ``witness`` (the highest seq something outside the journal proves was committed: the views'
     ``last_seq`` when they can be trusted) overrules rule 3: a tear that would end the log below the witness
     drops acknowledged events, so it is corruption, and so is a clean log that ends below it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .codec import DecodeError, decode_events
from .errors import CorruptJournalError
from .events import Event
from .framing import ScanEnd, StopReason, scan_records
from .segment import SEGMENT_HEADER_BYTES, decode_header, first_seq_of, fsync_dir, list_segments

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    """What recovery found: the durable end and anything it dropped."""

    last_seq: int = 0
    last_hlc: int = 0
    tail_segment: Path | None = None
    tail_offset: int = 0
    dropped_bytes: int = 0
    dropped_segments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def iter_segment(path: Path, expect_seq: int | None) -> Iterator[Event | ScanEnd]:
    """Events of one segment, then a ScanEnd; seq gaps and undecodable records end it as BAD."""
    data = path.read_bytes()
    header = decode_header(data)
    if header is None:
        reason = StopReason.TORN if not any(data) or len(data) < SEGMENT_HEADER_BYTES else StopReason.BAD
        yield ScanEnd(0, reason, "invalid segment header")
        return
    if header.first_seq != first_seq_of(path) or (expect_seq is not None and header.first_seq != expect_seq):
        yield ScanEnd(0, StopReason.BAD, f"segment starts at seq {header.first_seq}, expected {expect_seq}")
        return
    seq = header.first_seq
    for item in scan_records(data, SEGMENT_HEADER_BYTES):
        if isinstance(item, ScanEnd):
            yield item
            return
        offset, payload = item
        try:
            events = decode_events(bytes(payload))
        except DecodeError as exc:
            yield ScanEnd(offset, StopReason.BAD, f"undecodable event: {exc}")
            return
        for event in events:
            if event.seq != seq:
                yield ScanEnd(offset, StopReason.BAD, f"seq {event.seq} where {seq} was expected")
                return
            seq += 1
        yield from events


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """How the scan of ``segments[index]`` ended (``end.reason`` CLEAN: the next segment follows)."""

    index: int
    path: Path
    end: ScanEnd


def walk_segments(segments: list[Path], start: int = 0) -> Iterator[Event | SegmentEnd]:
    """The log under rules 1 and 2, read-only: the events of ``segments[start:]`` in order, a SegmentEnd after
    each segment, and nothing after the first SegmentEnd that is not CLEAN (what to do there is the caller's:
    ``recover`` truncates or refuses, the offline tools report). Each segment must continue the seqs of the one
    before it; the first one scanned may start anywhere."""
    last_seq = 0
    for index in range(start, len(segments)):
        path = segments[index]
        end: ScanEnd | None = None
        for item in iter_segment(path, last_seq + 1 if last_seq else None):
            if isinstance(item, ScanEnd):
                end = item
                break
            last_seq = item.seq
            yield item
        assert end is not None
        yield SegmentEnd(index, path, end)
        if end.reason is not StopReason.CLEAN:
            return


def witness_gap(last_seq: int, witness: int) -> str | None:
    """Why a log ending at ``last_seq`` contradicts a witness of ``witness``, or None if it does not."""
    if witness <= last_seq:
        return None
    lost = f"seq {witness} was" if witness == last_seq + 1 else f"seq {last_seq + 1}..{witness} were"
    return (f"{lost} committed (the views applied it) but the journal ends at seq {last_seq}: acknowledged "
            "events are damaged or missing")


def recover(directory: Path, *, repair: bool = False, witness: int = 0) -> RecoveryReport:
    """Scan every segment; make the directory end exactly at the last durable event.

    ``witness``: every seq up to it is known to have been committed (rule 5); 0 means nothing is known.
    """
    report = RecoveryReport()
    segments = list_segments(directory)
    for item in walk_segments(segments):
        if isinstance(item, Event):
            report.last_seq = item.seq
            report.last_hlc = max(report.last_hlc, item.hlc)
            continue
        index, path, end = item.index, item.path, item.end
        if end.reason is StopReason.CLEAN:
            report.tail_segment, report.tail_offset = path, end.offset
            continue
        is_last = index == len(segments) - 1
        gap = witness_gap(report.last_seq, witness)
        if end.reason is StopReason.BAD or not is_last or gap is not None:
            detail = end.detail if gap is None else f"{end.detail}; {gap}"
            if not repair:
                raise CorruptJournalError(path.name, end.offset, detail)
            report.notes.append(f"repair: cut {path.name} at offset {end.offset} ({detail})")
        _truncate_tail(path, end, report)
        for later in segments[index + 1 :]:
            report.dropped_bytes += later.stat().st_size
            report.dropped_segments.append(later.name)
            later.unlink()
        if segments[index + 1 :]:
            fsync_dir(directory)
        break
    gap = witness_gap(report.last_seq, witness)
    if gap is not None:
        if not repair:
            where = report.tail_segment.name if report.tail_segment is not None else "(no segment)"
            raise CorruptJournalError(where, report.tail_offset, gap)
        report.notes.append(f"repair: {gap}")
    return report


def _truncate_tail(path: Path, end: ScanEnd, report: RecoveryReport) -> None:
    size = path.stat().st_size
    if end.offset == 0:  # not even a valid header: the segment holds nothing durable
        path.unlink()
        fsync_dir(path.parent)
        report.dropped_segments.append(path.name)
        report.dropped_bytes += size
        log.warning("journal: removed segment %s with no valid header (%d bytes)", path.name, size)
        return
    with open(path, "r+b") as fh:
        fh.truncate(end.offset)
        os.fsync(fh.fileno())
    report.tail_segment, report.tail_offset = path, end.offset
    report.dropped_bytes += size - end.offset
    msg = f"truncated {path.name} at offset {end.offset}: dropped {size - end.offset} bytes ({end.detail})"
    report.notes.append(msg)
    log.warning("journal: %s", msg)
