"""Selecting and showing journal events for ``dump`` and ``export``: times, JSON-ready payloads, filters."""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from s4.journal import Event, EventType
from s4.journal.hlc import physical_ms
from s4.journal.public import rfc3339_ms as rfc3339_ms  # moved there (the event stream shares it)

from ..replay import iter_events


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


def filter_from(args: argparse.Namespace) -> EventFilter:
    known = {str(t) for t in EventType}
    for pattern in args.type or ():
        if not any(fnmatch.fnmatchcase(k, pattern) for k in known):
            sys.stderr.write(f"warning: --type {pattern!r} matches no known event type\n")
    return EventFilter(args.from_seq, args.to_seq, args.since, args.until, tuple(args.type or ()), args.bucket)
