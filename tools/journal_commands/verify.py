"""``s4-journal verify``: every journal frame (recovery's rules, never truncating), every volume record and every
blob the index references, read-only; the views' ``last_seq`` is the witness of what was committed."""

from __future__ import annotations

import argparse
import bisect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from s4.engine.model import BlobLocation
from s4.engine.views.env import Views, unpack
from s4.engine.views.unsynced import UnsyncedMarker, current_boot_id
from s4.engine.volumes.record import HEADER_BYTES, table_bytes
from s4.engine.volumes.scanner import VolumeReader, walk_volume
from s4.journal.recovery import witness_gap

from ..replay import JournalScan, open_views_readonly, scan_journal


def _load_blobs(views: Views | None) -> list[BlobLocation]:
    if views is None or "blobs" not in views.dbs:
        return []
    with views.read() as txn:
        return [BlobLocation(bytes(k), *unpack(bytes(v))[:3]) for k, v in txn.cursor(views.dbs["blobs"]).iternext()]


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
