"""``s4-journal dump``: the selected events as JSON lines (bytes as hex, secrets redacted)."""

from __future__ import annotations

import argparse
import json
import sys

from s4.journal.public import event_json

from .events import filter_from


def cmd_dump(args: argparse.Namespace) -> int:
    out = sys.stdout
    for event in filter_from(args).select(args.data_dir / "journal"):
        out.write(json.dumps(event_json(event), separators=(",", ":")) + "\n")
    return 0
