"""``s4-journal repair``: truncate the journal at its first corrupt spot (``recover(repair=True)``) and rebuild
views left ahead of it. Writes, so it holds the data directory's lock; without ``--yes`` it only reports."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from s4.engine.datadir import DataDirLock
from s4.journal import Event, recover
from s4.journal.recovery import iter_segment, witness_gap
from s4.journal.segment import fsync_dir, list_segments

from ..replay import diff_views, open_views_readonly, rebuild_views, scan_journal


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
    live = open_views_readonly(views_dir)
    flavour = live.replicated  # the views keep the flavour they had (docs/architecture/views.md, "Flavour")
    live.close()
    rebuilt = rebuild_views(data_dir, side, replicated=flavour)
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
