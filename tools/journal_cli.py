"""``s4-journal``: inspect, verify, replay, export and (on purpose) repair a node's journal.

Subcommands, each taking ``--data-dir`` (default: ``$S4_DATA_DIR``)::

    dump     events as JSON lines (bytes as hex, secrets redacted), with seq/time/type/bucket filters
    verify   every journal frame and every volume record, plus every blob the index references
    replay   rebuild all views from the journal in a scratch directory and compare them with the live ones
    export   the audit log (one row per event) as JSON lines or Parquet, same filters as dump
    repair   truncate the journal at its first corrupt spot (needs --yes)

``dump``, ``export``, ``verify`` and ``replay`` only read (the journal is scanned with recovery's rules but never
truncated, the views are opened read-only), so against a live server they are safe but may see a moving target.
``repair`` rewrites the journal (and rebuilds views that are ahead of it): it takes the data directory's lock
(engine/datadir.py) and refuses while a server holds it. Exit status: 0 clean, 1 problems found, 2 usage error.
See docs/architecture/recovery.md.
"""

from __future__ import annotations

import argparse
import bisect
import fnmatch
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from s4.engine.datadir import DataDirLock, DataDirLockedError
from s4.engine.model import BlobLocation
from s4.engine.views.env import Views, unpack
from s4.engine.views.unsynced import UnsyncedMarker, current_boot_id
from s4.engine.volumes.record import HEADER_BYTES, table_bytes
from s4.engine.volumes.scanner import VolumeReader, walk_volume
from s4.journal import CorruptJournalError, Event, EventType, recover, redacted
from s4.journal.hlc import physical_ms
from s4.journal.recovery import iter_segment, witness_gap
from s4.journal.segment import fsync_dir, list_segments

from .replay import (
    JournalScan,
    count_entries,
    diff_views,
    iter_events,
    open_views_readonly,
    rebuild_views,
    scan_journal,
)

#: Payload fields left out of the audit log's ``details``: chunk lists say nothing to an auditor.
BULKY_FIELDS = frozenset({"blobs_at", "b"})
PARQUET_BATCH_ROWS = 10_000


# -- formatting ----------------------------------------------------------------------------------------------------
def parse_time(text: str) -> int:
    """Epoch milliseconds from an RFC 3339 timestamp (naive means UTC) or from a plain integer of ms."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time or epoch milliseconds: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def rfc3339_ms(ms: int) -> str:
    """``2024-05-01T12:00:00.123Z`` -- integer arithmetic, so no float rounding of the milliseconds."""
    moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public(value: Any) -> Any:
    """A JSON-ready copy with every secret field redacted: bytes become hex, every dict passes ``redacted``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else str(k)): public(v) for k, v in redacted(value).items()}
    if isinstance(value, list | tuple):
        return [public(v) for v in value]
    return value


def event_json(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "hlc": event.hlc, "time": rfc3339_ms(physical_ms(event.hlc)),
            "origin": event.origin, "actor": event.actor, "type": str(event.type), "payload": public(event.payload)}


def _slim(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _slim(v) for k, v in value.items() if not (k in BULKY_FIELDS and isinstance(v, list))}
    if isinstance(value, list):
        return [_slim(v) for v in value]
    return value


def audit_row(event: Event) -> dict[str, Any]:
    """One audit-log row: who did what to which object, when; ``time`` is epoch ms (formatted by the writer)."""
    p = event.payload
    version = p.get("version") if isinstance(p.get("version"), dict) else {}
    upload = p.get("upload") if isinstance(p.get("upload"), dict) else {}
    key = p.get("key", p.get("src", upload.get("k")))
    version_id = p.get("version_id", version.get("v"))
    return {"time": physical_ms(event.hlc), "seq": event.seq, "origin": event.origin, "actor": event.actor,
            "type": str(event.type), "bucket": event.bucket,
            "key": None if key is None else str(key), "version_id": None if version_id is None else str(version_id),
            "details": json.dumps(public(_slim(p)), sort_keys=True, separators=(",", ":"))}


# -- filters -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventFilter:
    """dump/export selection; times compare with the HLC's physical ms, ``since <= t < until``."""

    from_seq: int = 1
    to_seq: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    types: tuple[str, ...] = ()
    bucket: str | None = None

    def matches(self, event: Event) -> bool:
        ms = physical_ms(event.hlc)
        if self.since_ms is not None and ms < self.since_ms:
            return False
        if self.until_ms is not None and ms >= self.until_ms:
            return False
        if self.types and not any(fnmatch.fnmatchcase(str(event.type), t) for t in self.types):
            return False
        return self.bucket is None or event.bucket == self.bucket

    def select(self, journal_dir: Path) -> Iterator[Event]:
        return (e for e in iter_events(journal_dir, self.from_seq, self.to_seq) if self.matches(e))


def _filter_from(args: argparse.Namespace) -> EventFilter:
    known = {str(t) for t in EventType}
    for pattern in args.type or ():
        if not any(fnmatch.fnmatchcase(k, pattern) for k in known):
            sys.stderr.write(f"warning: --type {pattern!r} matches no known event type\n")
    return EventFilter(args.from_seq, args.to_seq, args.since, args.until, tuple(args.type or ()), args.bucket)


# -- dump / export -------------------------------------------------------------------------------------------------
def cmd_dump(args: argparse.Namespace) -> int:
    out = sys.stdout
    for event in _filter_from(args).select(args.data_dir / "journal"):
        out.write(json.dumps(event_json(event), separators=(",", ":")) + "\n")
    return 0


def _write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        row["time"] = rfc3339_ms(row["time"])
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
    return count


def _write_parquet(rows: Iterator[dict[str, Any]], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("time", pa.timestamp("ms", tz="UTC")), ("seq", pa.int64()), ("origin", pa.string()),
                        ("actor", pa.string()), ("type", pa.string()), ("bucket", pa.string()),
                        ("key", pa.string()), ("version_id", pa.string()), ("details", pa.string())])
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= PARQUET_BATCH_ROWS:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                count += len(batch)
                batch.clear()
        writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))  # an empty log still gets a schema
        count += len(batch)
    return count


def cmd_export(args: argparse.Namespace) -> int:
    rows = (audit_row(e) for e in _filter_from(args).select(args.data_dir / "journal"))
    if args.format == "parquet":
        if args.output is None:
            sys.stderr.write("error: --format parquet needs --output PATH\n")
            return 2
        count = _write_parquet(rows, args.output)
    elif args.output is None:
        _write_jsonl(rows, sys.stdout)
        return 0
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            count = _write_jsonl(rows, fh)
    sys.stderr.write(f"exported {count} events to {args.output}\n")
    return 0


# -- verify: volumes -----------------------------------------------------------------------------------------------
def _load_blobs(views: Views | None) -> list[BlobLocation]:
    if views is None or "blobs" not in views.dbs:
        return []
    with views.read() as txn:
        return [BlobLocation(k, *unpack(v)[:3]) for k, v in txn.cursor(views.dbs["blobs"]).iternext()]


@dataclass(slots=True)
class Findings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _verify_volumes(data_dir: Path, blobs: list[BlobLocation], found: Findings, out: TextIO) -> None:
    vol_dir = data_dir / "volumes"
    paths = sorted(vol_dir.glob("*.vol")) if vol_dir.is_dir() else []
    spans: dict[str, list[tuple[int, int]]] = {}
    for loc in blobs:
        spans.setdefault(loc.volume, []).append((loc.offset - HEADER_BYTES,
                                                 loc.offset + loc.size + table_bytes(loc.size)))
    for value in spans.values():
        value.sort()
    records = record_bytes = garbage = 0
    for path in paths:
        walk = walk_volume(path)
        records += walk.records
        record_bytes += walk.record_bytes
        mine = spans.get(path.name, [])
        starts = [s for s, _ in mine]
        for region in walk.bad:
            i = bisect.bisect_left(starts, region.offset + region.length)
            if i and mine[i - 1][1] > region.offset:
                found.problems.append(f"volume {path.name}: damaged record at offset {region.offset} "
                                      f"({region.length} bytes, referenced by the blob index): {region.reason}")
            else:
                garbage += region.length
                found.notes.append(f"volume {path.name}: unreferenced garbage, {region.length} bytes at offset "
                                   f"{region.offset} ({region.reason}); compaction reclaims it")
    out.write(f"volumes: {len(paths)} files, {records} intact records, {record_bytes} bytes of data"
              f"{f', {garbage} bytes of unreferenced garbage' if garbage else ''}\n")
    reader = VolumeReader(vol_dir)
    try:
        bad = 0
        for loc in blobs:
            try:
                error = reader.verify_blob(loc) if (vol_dir / loc.volume).is_file() else "volume file missing"
            except (OSError, ValueError) as exc:
                error = str(exc)
            if error is not None:
                bad += 1
                found.problems.append(f"blob {loc.hash.hex()} ({loc.volume} offset {loc.offset}, "
                                      f"{loc.size} bytes): {error}")
        out.write(f"blobs: {len(blobs)} in the index, {len(blobs) - bad} intact\n")
    finally:
        reader.close()


def _describe_journal(scan: JournalScan, found: Findings, out: TextIO, witness: int = 0) -> None:
    span = f"seq {scan.first_seq}..{scan.last_seq}" if scan.events else "no events"
    out.write(f"journal: {scan.segments} segments, {scan.events} events ({span})\n")
    damage = scan.damage
    gap = witness_gap(scan.last_seq, witness)
    if gap is not None:  # the views prove more was committed than the journal holds: acknowledged data lost
        where = f"{damage.describe()}, and " if damage is not None else ""
        found.problems.append(f"journal: {where}{gap}; the server refuses to start (docs/operations.md, "
                              "\"A corrupt journal\")")
        return
    if damage is None:
        return
    if damage.torn:
        found.notes.append(f"journal: {damage.describe()}; start-up truncates these {damage.dropped_bytes} "
                           "unacknowledged bytes")
    else:
        found.problems.append(f"journal: {damage.describe()}; the server refuses to start. `s4-journal repair` "
                              f"would drop {damage.dropped_bytes} bytes"
                              + (f" and segments {', '.join(damage.dropped_segments)}"
                                 if damage.dropped_segments else ""))


def _witness(views_dir: Path, views: Views | None, found: Findings) -> int:
    """The views' last_seq if they can be trusted as proof of what was committed (as start-up decides), else 0."""
    if views is None:
        return 0
    if UnsyncedMarker(views_dir, current_boot_id()).views_untrusted():
        found.notes.append("views: left unsynced by another boot (machine crash); the server rebuilds them, and "
                           "they prove nothing about the journal")
        return 0
    return views.last_seq()


def cmd_verify(args: argparse.Namespace) -> int:
    out = sys.stdout
    found = Findings()
    views: Views | None = None
    try:
        views = open_views_readonly(args.data_dir / "views")
    except FileNotFoundError:
        found.notes.append("views: none yet (the server builds them from the journal at start-up)")
    try:
        # The witness is read before the journal is scanned: a live server makes an event durable in the journal
        # before the views apply it, so a seq seen in the views first is in the journal by the time it is scanned.
        witness = _witness(args.data_dir / "views", views, found)
        scan = scan_journal(args.data_dir / "journal")
        _describe_journal(scan, found, out, witness)
        if views is not None:
            seq = views.last_seq()
            out.write(f"views: last applied seq {seq}\n")
            if seq < scan.last_seq:
                found.notes.append(f"views: {scan.last_seq - seq} events behind the journal; the server "
                                   "replays them at start-up")
        _verify_volumes(args.data_dir, _load_blobs(views), found, out)
    finally:
        if views is not None:
            views.close()
    for note in found.notes:
        out.write(f"note: {note}\n")
    if not found.problems:
        out.write("OK: no problems found\n")
        return 0
    out.write(f"PROBLEMS ({len(found.problems)}):\n")
    for problem in found.problems:
        out.write(f"  - {problem}\n")
    return 1


# -- replay --------------------------------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    out = sys.stdout
    scan = scan_journal(args.data_dir / "journal")
    if scan.damage is not None and not scan.damage.torn:
        out.write(f"journal: {scan.damage.describe()}; cannot replay past it (see `s4-journal repair`)\n")
        return 1
    try:
        live = open_views_readonly(args.data_dir / "views")
    except FileNotFoundError:
        out.write(f"no live views at {args.data_dir / 'views'}: nothing to compare with\n")
        return 1
    try:
        live_seq = live.last_seq()
        to_seq: int | None = None
        if live_seq > scan.last_seq:
            out.write(f"live views are ahead of the journal (seq {live_seq} > {scan.last_seq}): they cannot "
                      "match; acknowledged events are missing from the journal and the server refuses to start "
                      "(see `s4-journal repair`)\n")
        elif live_seq < scan.last_seq:
            to_seq = live_seq
            out.write(f"live views lag {scan.last_seq - live_seq} events behind the journal (the server replays "
                      f"them at start-up); comparing at seq {live_seq}\n")
        with tempfile.TemporaryDirectory(prefix="s4-replay-") as scratch:
            out_dir = args.out or Path(scratch) / "views"
            started = datetime.now(UTC)
            try:
                rebuilt = rebuild_views(args.data_dir, out_dir, to_seq=to_seq)
            except ValueError as exc:  # --out names a directory that already holds views
                sys.stderr.write(f"error: {exc}\n")
                return 2
            try:
                elapsed = (datetime.now(UTC) - started).total_seconds()
                rebuilt_seq = rebuilt.last_seq()
                differences = diff_views(live, rebuilt, limit=args.limit)
                _replay_summary(count_entries(live), count_entries(rebuilt), out)
            finally:
                rebuilt.close()
    finally:
        live.close()
    out.write(f"rebuilt views to seq {rebuilt_seq} in {elapsed:.2f}s (live views at seq {live_seq})\n")
    if not differences:
        out.write("IDENTICAL: the live views equal a replay of the journal\n")
        return 0
    shown = "first " if len(differences) >= args.limit else ""
    out.write(f"DIFFERENT ({shown}{len(differences)} differences; A = live, B = rebuilt):\n")
    for line in differences:
        out.write(f"  - {line}\n")
    return 1


def _replay_summary(live: dict[str, int], rebuilt: dict[str, int], out: TextIO) -> None:
    out.write(f"{'database':<12} {'live':>10} {'rebuilt':>10}\n")
    for db, count in live.items():
        mark = "" if count == rebuilt[db] else "  <- differs"
        out.write(f"{db:<12} {count:>10} {rebuilt[db]:>10}{mark}\n")


# -- repair --------------------------------------------------------------------------------------------------------
def _lost_events(journal_dir: Path, segment_names: Sequence[str]) -> tuple[int, int, int]:
    """(count, first seq, last seq) of still-readable events in segments repair will delete."""
    count = first = last = 0
    for path in list_segments(journal_dir):
        if path.name not in segment_names:
            continue
        for item in iter_events_of(path):
            count += 1
            first = first or item.seq
            last = item.seq
    return count, first, last


def iter_events_of(path: Path) -> Iterator[Event]:
    """The readable events at the start of one segment, ignoring continuity with the rest of the log."""
    for item in iter_segment(path, None):
        if not isinstance(item, Event):
            return
        yield item


def cmd_repair(args: argparse.Namespace) -> int:
    """Refused while anything else holds the data directory (a server): it rewrites the journal and views."""
    lock = DataDirLock.acquire(args.data_dir)
    try:
        return _repair(args, sys.stdout)
    finally:
        lock.release()


def _views_seq(views_dir: Path) -> int:
    try:
        views = open_views_readonly(views_dir)
    except FileNotFoundError:
        return 0
    try:
        return views.last_seq()
    finally:
        views.close()


def _repair(args: argparse.Namespace, out: TextIO) -> int:
    journal_dir = args.data_dir / "journal"
    scan = scan_journal(journal_dir)
    views_seq = _views_seq(args.data_dir / "views")
    gap = witness_gap(scan.last_seq, views_seq)
    if scan.damage is None and gap is None:
        out.write(f"journal is clean ({scan.events} events, last seq {scan.last_seq}); nothing to repair\n")
        return 0
    if scan.damage is not None:
        damage = scan.damage
        lost, first, last = _lost_events(journal_dir, damage.dropped_segments)
        out.write(f"found {damage.describe()}\n")
        out.write(f"repair keeps seq 1..{scan.last_seq} and drops {damage.dropped_bytes} bytes")
        if damage.dropped_segments:
            out.write(f", segments {', '.join(damage.dropped_segments)}")
        if lost:
            out.write(f" (including {lost} readable events, seq {first}..{last})")
        out.write("\n")
    if gap is not None:
        out.write(f"LOST: {gap}. Repair rebuilds the views from what the journal keeps, so what those "
                  f"{views_seq - scan.last_seq} acknowledged events did is undone (listed below after --yes)\n")
    if not args.yes:
        out.write("nothing changed: re-run with --yes to truncate the journal and rebuild the views\n")
        return 2
    report = recover(journal_dir, repair=True)
    for note in report.notes:
        out.write(f"{note}\n")
    for name in report.dropped_segments:
        out.write(f"removed segment {name}\n")
    out.write(f"repaired: journal ends at seq {report.last_seq}; dropped {report.dropped_bytes} bytes\n")
    if views_seq > report.last_seq:
        _rebuild_live_views(args.data_dir, out)
    return 0


def _rebuild_live_views(data_dir: Path, out: TextIO) -> None:
    """Replace views that are ahead of the repaired journal by a rebuild from it (side directory, then renames:
    a crash in between leaves either the old views, which start-up refuses again, or none, which it rebuilds)."""
    views_dir, side, old = data_dir / "views", data_dir / "views.rebuild", data_dir / "views.old"
    shutil.rmtree(side, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    rebuilt = rebuild_views(data_dir, side)
    try:
        live = open_views_readonly(views_dir)
        try:
            differences = diff_views(live, rebuilt, limit=50)
        finally:
            live.close()
    finally:
        rebuilt.close()
    out.write(f"undone in the views (first {len(differences)} differences; A = before, B = rebuilt):\n")
    for line in differences:
        out.write(f"  - {line}\n")
    os.rename(views_dir, old)
    os.rename(side, views_dir)
    fsync_dir(data_dir)
    shutil.rmtree(old)
    out.write("rebuilt the views from the repaired journal\n")


# -- command line --------------------------------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-seq", type=_positive, default=1, help="first seq to include (default 1)")
    parser.add_argument("--to-seq", type=_positive, default=None, help="last seq to include")
    parser.add_argument("--since", type=parse_time, help="events at or after this time (RFC 3339 or epoch ms)")
    parser.add_argument("--until", type=parse_time, help="events before this time (RFC 3339 or epoch ms)")
    parser.add_argument("--type", action="append", metavar="TYPE",
                        help="event type, glob allowed (e.g. 'object.*'); repeatable")
    parser.add_argument("--bucket", help="only events about this bucket")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    env_dir = os.environ.get("S4_DATA_DIR")
    common.add_argument("--data-dir", type=Path, default=Path(env_dir) if env_dir else None,
                        help="the node's data directory (default: $S4_DATA_DIR)")
    parser = argparse.ArgumentParser(
        prog="s4-journal", description="Inspect, verify, replay, export and repair an S4 node's journal.",
        epilog="dump, verify, replay and export only read; repair refuses while a server holds the data directory.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("dump", "print events as JSON lines (secrets redacted)", cmd_dump),
        ("verify", "check journal frames, volume records and blobs", cmd_verify),
        ("replay", "rebuild the views from the journal and compare with the live ones", cmd_replay),
        ("export", "write the audit log as JSON lines or Parquet", cmd_export),
        ("repair", "truncate the journal at its first corrupt spot, rebuild the views (needs --yes)", cmd_repair),
    ]
    for name, help_text, func in commands:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        if name in ("dump", "export"):
            _add_filters(p)
        if name == "export":
            p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
            p.add_argument("--output", type=Path, help="output file (JSON lines go to stdout if omitted)")
        if name == "replay":
            p.add_argument("--out", type=Path, help="keep the rebuilt views in this (empty) directory")
            p.add_argument("--limit", type=_positive, default=20, help="differences to print (default 20)")
        if name == "repair":
            p.add_argument("--yes", action="store_true", help="really truncate (otherwise only report)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("no data directory: pass --data-dir or set S4_DATA_DIR")
    if not (args.data_dir / "journal").is_dir():
        parser.error(f"{args.data_dir} is not an S4 data directory (no journal/ inside)")
    try:
        return int(args.func(args))
    except (CorruptJournalError, DataDirLockedError) as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except BrokenPipeError:  # e.g. `s4-journal dump | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
