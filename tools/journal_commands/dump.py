"""``s4-journal dump``: the selected events as JSON lines (bytes as hex, secrets redacted)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from s4.journal import Event
from s4.journal.hlc import physical_ms

from .events import filter_from, public, rfc3339_ms


def event_json(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "hlc": event.hlc, "time": rfc3339_ms(physical_ms(event.hlc)),
            "origin": event.origin, "actor": event.actor, "type": str(event.type), "payload": public(event.payload)}


def cmd_dump(args: argparse.Namespace) -> int:
    out = sys.stdout
    for event in filter_from(args).select(args.data_dir / "journal"):
        out.write(json.dumps(event_json(event), separators=(",", ":")) + "\n")
    return 0
