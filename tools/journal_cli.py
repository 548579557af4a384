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
This module is the argparse entry; each command lives in ``tools/journal_commands/`` (the journal walk and view
rebuild they share in ``tools/replay.py``, the volume scanner beside the volumes in engine/volumes/scanner.py).
See docs/architecture/recovery.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from s4.engine.datadir import DataDirLockedError
from s4.journal import CorruptJournalError

from .journal_commands.dump import cmd_dump
from .journal_commands.events import parse_time
from .journal_commands.export import cmd_export
from .journal_commands.repair import cmd_repair
from .journal_commands.replay import cmd_replay
from .journal_commands.verify import cmd_verify


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
