"""The audit page (SuperUser): who did what, read from this node's journal (filter by bucket, user, event type,
time), newest first, a window of seqs at a time.

The journal is read-only here, through the recovery's own walk (``journal.recovery.walk_segments``): segments
before the window are skipped unread, and the walk stops quietly at the end of what is durable (the tail being
written looks torn and is simply not shown yet). Only an event's type, actor, bucket, key and version are shown:
payloads (password hashes, wrapped keys) never reach the page.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from s4.engine.iam import IamError
from s4.journal import Event
from s4.journal.framing import StopReason
from s4.journal.hlc import physical_ms
from s4.journal.recovery import walk_segments
from s4.journal.segment import first_seq_of, list_segments

from .app import Page, Route

WINDOW = 5000  # seqs read per page
MAX_ROWS = 500  # matching events shown per page


def routes() -> list[Route]:
    return [("GET", re.compile(r"/audit"), audit_page, "super")]


def events_between(journal_dir: Path, from_seq: int, to_seq: int) -> Iterator[Event]:
    """Durable events with ``from_seq <= seq <= to_seq``; stops at the first end that is not clean."""
    segments = list_segments(journal_dir) if journal_dir.is_dir() else []
    start = 0
    for i, path in enumerate(segments):
        if first_seq_of(path) <= from_seq:
            start = i
    for item in walk_segments(segments, start):
        if isinstance(item, Event):
            if item.seq > to_seq:
                return
            if item.seq >= from_seq:
                yield item
        elif item.end.reason is not StopReason.CLEAN:
            return


def _row(event: Event) -> dict[str, Any]:
    p = event.payload
    version = p["version"] if isinstance(p.get("version"), dict) else {}
    upload = p["upload"] if isinstance(p.get("upload"), dict) else {}
    key = p.get("key", p.get("src", upload.get("k")))
    version_id = p.get("version_id", version.get("v"))
    ms = physical_ms(event.hlc)
    return {"seq": event.seq, "time": datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "ms": ms, "actor": event.actor or "", "type": str(event.type), "bucket": event.bucket or "",
            "key": "" if key is None else str(key), "version": "" if version_id is None else str(version_id),
            "origin": event.origin}


def _time(text: str, name: str) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise IamError(400, f"{name} is a date and time (YYYY-MM-DDTHH:MM)") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


async def audit_page(page: Page) -> None:
    engine = page.console.engine
    last = engine.views.last_seq()
    try:
        before = int(page.arg("before") or last + 1)
    except ValueError:
        raise IamError(400, "before is a seq number") from None
    to_seq = min(before - 1, last)
    from_seq = max(1, to_seq - WINDOW + 1)
    bucket, user, kind = page.arg("bucket").strip(), page.arg("user").strip(), page.arg("type").strip()
    since, until = _time(page.arg("since"), "since"), _time(page.arg("until"), "until")

    def read() -> list[dict[str, Any]]:
        rows = []
        for event in events_between(Path(engine.options.data_dir) / "journal", from_seq, to_seq):
            row = _row(event)
            if (bucket and row["bucket"] != bucket) or (user and user.lower() not in row["actor"].lower()) or \
                    (kind and not fnmatch.fnmatchcase(row["type"], kind if any(c in kind for c in "*?[") else
                                                      f"*{kind}*")) or \
                    (since is not None and row["ms"] < since) or (until is not None and row["ms"] >= until):
                continue
            rows.append(row)
        return rows[::-1][:MAX_ROWS]

    rows = await anyio.to_thread.run_sync(read) if to_seq >= 1 else []
    page.render("audit.html", rows=rows, from_seq=from_seq, to_seq=to_seq, older=from_seq if from_seq > 1 else 0,
                bucket=bucket, user=user, type=kind, since=page.arg("since"), until=page.arg("until"),
                max_rows=MAX_ROWS)
