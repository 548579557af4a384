"""Offline journal reading, view rebuild and view comparison for the operator tools.

Everything here is read-only towards the data directory: ``Journal(...)`` runs recovery on open, which truncates
a torn tail, so the tools never open one. Instead ``scan_journal`` and ``iter_events`` walk the log with
``s4.journal.recovery.walk_segments``, the loop ``recover`` itself runs (segment order, header checks, gap-free
seqs, torn tail vs corruption), without touching a byte. ``rebuild_views`` applies the journal through the same
projector the server uses into a scratch LMDB directory, and ``diff_views`` compares two view environments
database by database, key by key.
See docs/architecture/recovery.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4.engine import datadir
from s4.engine.sequencer import apply_events
from s4.engine.views.env import DB_NAMES, Views, from_u64, unpack
from s4.engine.views.keys import describe as describe_key
from s4.engine.views.merkle import DERIVED_DBS
from s4.journal import CorruptJournalError, Event
from s4.journal.framing import StopReason
from s4.journal.recovery import walk_segments
from s4.journal.segment import first_seq_of, list_segments

#: Events applied per LMDB transaction while rebuilding.
REBUILD_BATCH = 2000


@dataclass(frozen=True, slots=True)
class JournalDamage:
    """The first bad spot of the log and what start-up (torn) or ``repair`` (corrupt) would cut there."""

    segment: str
    offset: int
    detail: str
    torn: bool  # True: a torn tail start-up truncates by itself; False: corruption that refuses start-up
    dropped_bytes: int
    dropped_segments: tuple[str, ...]

    def describe(self) -> str:
        kind = "torn tail" if self.torn else "corruption"
        return f"{kind} in segment {self.segment} at offset {self.offset}: {self.detail}"


@dataclass(slots=True)
class JournalScan:
    """Summary of a read-only pass over every segment."""

    segments: int = 0
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_hlc: int = 0
    damage: JournalDamage | None = None


def _walk(segments: list[Path], start: int = 0) -> Iterator[Event | JournalDamage]:
    """Events from ``segments[start:]`` under the recovery rules (journal.recovery's own walk), then a
    JournalDamage if the log is not clean."""
    for item in walk_segments(segments, start):
        if isinstance(item, Event):
            yield item
            continue
        end = item.end
        if end.reason is StopReason.CLEAN:
            continue
        later = segments[item.index + 1 :]
        whole = [item.path.name] if end.offset == 0 else []
        dropped = item.path.stat().st_size - end.offset + sum(p.stat().st_size for p in later)
        torn = end.reason is StopReason.TORN and not later
        yield JournalDamage(item.path.name, end.offset, end.detail, torn, dropped,
                            tuple(whole + [p.name for p in later]))


def _segments(directory: Path) -> list[Path]:
    return list_segments(directory) if directory.is_dir() else []


def scan_journal(directory: Path) -> JournalScan:
    """Check every frame of the journal in ``directory`` without modifying anything."""
    segments = _segments(Path(directory))
    scan = JournalScan(segments=len(segments))
    for item in _walk(segments):
        if isinstance(item, JournalDamage):
            scan.damage = item
            break
        scan.events += 1
        scan.first_seq = scan.first_seq or item.seq
        scan.last_seq = item.seq
        scan.last_hlc = max(scan.last_hlc, item.hlc)
    return scan


def iter_events(directory: Path, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]:
    """Durable events with ``from_seq <= seq <= to_seq``, read-only.

    Stops quietly at a torn tail (start-up would truncate it); raises CorruptJournalError after the last good
    event when it meets mid-log corruption, as start-up would. Segments wholly before ``from_seq`` are skipped
    without being checked.
    """
    segments = _segments(Path(directory))
    start = 0
    for i, path in enumerate(segments):
        if first_seq_of(path) <= from_seq:
            start = i
    for item in _walk(segments, start):
        if isinstance(item, JournalDamage):
            if not item.torn:
                raise CorruptJournalError(item.segment, item.offset, item.detail)
            return
        if to_seq is not None and item.seq > to_seq:
            return
        if item.seq >= from_seq:
            yield item


# -- views ---------------------------------------------------------------------------------------------------------
def open_views_readonly(path: Path) -> Views:
    """Open an existing views directory read-only (FileNotFoundError if there is none)."""
    return Views.open_read_only(path)


def rebuild_views(data_dir: Path, out_dir: Path, *, to_seq: int | None = None, replicated: bool | None = None
                  ) -> Views:
    """Project the journal of ``data_dir`` from seq 1 into fresh views at ``out_dir``; returns them open.

    The journal is only read (a torn tail is ignored, not truncated); mid-log corruption raises
    CorruptJournalError. ``to_seq`` stops early, e.g. to compare with live views that lag behind the journal.
    ``replicated``: the projection's flavour (docs/architecture/views.md, "Flavour"); None: the one the data
    directory needs (replicated once it served in a pool).
    """
    if replicated is None:
        replicated = datadir.pooled(Path(data_dir))
    views = Views(Path(out_dir), sync=False, replicated=replicated)
    try:
        if views.last_seq() != 0:
            raise ValueError(f"{out_dir} already holds views (last seq {views.last_seq()}); use an empty directory")
        pending: list[Event] = []
        for event in iter_events(Path(data_dir) / "journal", 1, to_seq):
            pending.append(event)
            if len(pending) >= REBUILD_BATCH:
                apply_events(views, pending)
                pending.clear()
        if pending:
            apply_events(views, pending)
        views.env.sync(True)
    except BaseException:
        views.close()
        raise
    return views


# -- comparison ----------------------------------------------------------------------------------------------------
def _show_value(db: str, value: bytes, width: int = 160) -> str:
    shown: Any
    if db in ("meta", "event_ids") and len(value) == 8:
        shown = from_u64(value)
    elif db == "vidx":
        shown = value.hex()  # the order suffix of a versions key
    elif db in ("ns", "upload_ns", "user_names") or not value:
        shown = value
    else:
        try:
            shown = unpack(value)
        except Exception:  # not msgpack: show the raw bytes
            shown = value.hex()
    text = repr(shown)
    return text if len(text) <= width else text[: width - 3] + "..."


def _entries(views: Views, txn: Any, db: str) -> Iterator[tuple[bytes, bytes]]:
    handle = views.dbs.get(db)
    if handle is None:
        return iter(())
    return iter(txn.cursor(handle).iternext(keys=True, values=True))


def diff_views(a: Views, b: Views, limit: int = 20) -> list[str]:
    """Differences between two view environments, database by database, key by key; empty means identical.

    At most ``limit`` lines are returned (the first differences in key order); the unnamed main database, which
    only lists the named ones, is not compared, nor the Merkle view (``DERIVED_DBS``: derived from the others and
    corrected outside the projector, engine/views/merkle.py).
    """
    out: list[str] = []
    with a.read() as txn_a, b.read() as txn_b:
        for db in DB_NAMES:
            if db in DERIVED_DBS:
                continue
            it_a, it_b = _entries(a, txn_a, db), _entries(b, txn_b, db)
            cur_a, cur_b = next(it_a, None), next(it_b, None)
            while cur_a is not None or cur_b is not None:
                if len(out) >= limit:
                    return out
                if cur_b is None or (cur_a is not None and cur_a[0] < cur_b[0]):
                    assert cur_a is not None
                    out.append(f"{db}: key {describe_key(db, cur_a[0])} only in A: {_show_value(db, cur_a[1])}")
                    cur_a = next(it_a, None)
                elif cur_a is None or cur_b[0] < cur_a[0]:
                    out.append(f"{db}: key {describe_key(db, cur_b[0])} only in B: {_show_value(db, cur_b[1])}")
                    cur_b = next(it_b, None)
                else:
                    if cur_a[1] != cur_b[1]:
                        out.append(f"{db}: key {describe_key(db, cur_a[0])} differs: "
                                   f"A={_show_value(db, cur_a[1])} B={_show_value(db, cur_b[1])}")
                    cur_a, cur_b = next(it_a, None), next(it_b, None)
    return out


def count_entries(views: Views) -> dict[str, int]:
    """Number of keys in each named database (0 for one that does not exist)."""
    with views.read() as txn:
        return {db: (txn.stat(views.dbs[db])["entries"] if db in views.dbs else 0) for db in DB_NAMES}
