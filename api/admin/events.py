"""``GET /api/admin/events?after=SEQ&bucket=B&type=PATTERN[,PATTERN]``: this node's journal as NDJSON (SuperUser).

One line per event after ``after`` (default 0: from the start of the log), in seq order, in the shape of
``s4-journal dump`` (journal/public.py: ``seq``, ``hlc``, ``time``, ``origin``, ``actor``, ``type``, ``payload``
with secrets redacted). ``bucket`` keeps one bucket's events; ``type`` keeps events whose type matches one of the
comma-separated glob patterns (``object.*``). The response is long-lived: it follows the log as it grows (up to
the views' ``last_seq``, so only committed events), and sends a bare newline after ``KEEPALIVE_S`` without events
so a gone client is noticed; NDJSON readers skip empty lines. ``follow=false`` ends it at the current end instead.
A client resumes after a disconnect with ``after=`` the last ``seq`` it read: nothing is skipped or repeated.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from s4.engine.iam import IamError
from s4.journal import Event
from s4.journal.public import event_json
from s4.journal.tail import JournalTail

from .. import disconnect
from .call import AdminCall, Result, Streamed

log = logging.getLogger(__name__)
POLL_S = 0.2
KEEPALIVE_S = 5.0
BATCH = 500


def _after(call: AdminCall) -> int:
    raw = call.query.get("after", "0") or "0"
    if not raw.isdigit():
        raise IamError(400, "after must be a non-negative integer (a journal seq)")
    return int(raw)


def _follow(call: AdminCall) -> bool:
    raw = (call.query.get("follow") or "true").lower()
    if raw not in ("true", "false", "1", "0"):
        raise IamError(400, "follow must be true or false")
    return raw in ("true", "1")


async def stream_events(call: AdminCall) -> Result:
    after, follow = _after(call), _follow(call)
    bucket = call.query.get("bucket") or None
    types = tuple(t.strip() for t in (call.query.get("type") or "").split(",") if t.strip())
    engine = call.engine

    def wanted(event: Event) -> bool:
        if bucket is not None and event.bucket != bucket:
            return False
        return not types or any(fnmatch.fnmatchcase(str(event.type), t) for t in types)

    gone = disconnect.watch_request(call.req)

    async def lines() -> AsyncIterator[bytes]:
        tail = JournalTail(Path(engine.options.data_dir) / "journal", after)
        quiet_since = time.monotonic()
        log.info("admin event stream for %s opened after seq %d", call.actor, after)
        try:
            while not gone.done():
                events = await anyio.to_thread.run_sync(tail.read, engine.views.last_seq(), BATCH)
                chosen = [json.dumps(event_json(e), separators=(",", ":")) for e in events if wanted(e)]
                if chosen:
                    quiet_since = time.monotonic()
                    yield ("\n".join(chosen) + "\n").encode()
                if events:
                    continue
                if not follow:
                    return
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield b"\n"
                await asyncio.sleep(POLL_S)
        finally:
            log.info("admin event stream for %s ended (%s) at seq %d", call.actor,
                     "client gone" if gone.done() else "end of the log" if not follow else "server stopping",
                     tail.next_seq - 1)
            gone.cancel()

    return 200, Streamed("application/x-ndjson", lines())
