"""``s4-journal replay``: rebuild every view from the journal in a scratch directory and compare it with the live
views, database by database and key by key (at the live views' seq when they lag)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ..replay import count_entries, diff_views, open_views_readonly, rebuild_views, scan_journal


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
                rebuilt = rebuild_views(args.data_dir, out_dir, to_seq=to_seq, replicated=live.replicated)
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
