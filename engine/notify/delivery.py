"""The delivery job: reads the journal from each target's durable cursor and POSTs matching changes.

One task per target, on the event loop of the process that owns the journal (started with the other background
jobs, engine/jobs/service.py). For each event after the cursor (only up to the views' ``last_seq``: committed and
whole), in journal order: the change it records (messages.py), the rules of the bucket's configuration *as it is
now* that send it to this target (rules.py), one POST per rule, retried with exponential backoff up to
``max_attempts`` tries, then parked (store.py). The cursor moves only past events whose messages were answered 2xx
or parked, so nothing is lost across a crash (at-least-once; a message may come twice). One event at a time per
target keeps journal order per key. S3 requests never wait for any of this: it runs after their commit, with its
own HTTP client and timeouts (aiohttp). In a pool every node journals every replicated event; a node delivers only
the events it stamped itself (``origin``), so each change is sent once per cluster, by the node that accepted it.
docs/architecture/notifications.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread

from s4.journal import Event
from s4.journal.tail import JournalTail

from ..errors import S3Error
from .messages import change_of, message
from .rules import CONFIG_KIND, from_record, matching
from .store import RETRY, NotifyStore
from .targets import WebhookTarget

log = logging.getLogger("s4.notify")
#: While messages go out, the cursor is also saved this often (not only per batch of events read), so a crash
#: resends at most about this much.
CURSOR_SAVE_S = 1.0


@dataclass(frozen=True, slots=True)
class NotifySettings:
    max_attempts: int = 10  # S4_NOTIFY_MAX_ATTEMPTS
    backoff_s: float = 0.5  # the first retry's wait; doubled per try
    backoff_max_s: float = 60.0  # S4_NOTIFY_BACKOFF_MAX_SECS
    timeout_s: float = 10.0  # S4_NOTIFY_TIMEOUT_SECS: one POST, connect to answer
    poll_s: float = 0.2  # how often an idle target looks for new events


def backoff(attempt: int, first: float, cap: float) -> float:
    """Wait before try ``attempt + 1`` (``attempt`` >= 1): first, 2*first, 4*first, ... at most ``cap``."""
    return float(min(cap, first * (2 ** min(attempt - 1, 32))))


class DeliveryError(Exception):
    """A POST not answered 2xx: the status or the connection problem."""


Post = Callable[[WebhookTarget, bytes], Awaitable[None]]


@dataclass
class Notifier:
    """Delivers to every configured target; ``start``/``stop`` with the node's other background jobs."""

    engine: Any
    targets: list[WebhookTarget]
    settings: NotifySettings = field(default_factory=NotifySettings)
    region: str = "us-east-1"
    only_origin: str | None = None  # a pool: deliver only the events this node stamped
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    post: Post | None = None  # injectable for tests; default: aiohttp
    monotonic: Callable[[], float] = time.monotonic
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    @property
    def store(self) -> NotifyStore:
        return NotifyStore(self.engine.options.data_dir)

    @property
    def journal_dir(self) -> Path:
        return Path(self.engine.options.data_dir) / "journal"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for target in self.targets:
            self._tasks.append(loop.create_task(self._run(target), name=f"notify:{target.id}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, target: WebhookTarget) -> None:
        while True:
            try:
                await self._follow(target)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the target's loop starts again from its durable cursor
                log.exception("notify %s: delivery loop failed; restarting from the cursor", target.id)
                await self.sleep(max(self.settings.poll_s, 1.0))

    async def _follow(self, target: WebhookTarget) -> None:
        store = self.store
        cursor = store.cursor(target.id)
        last = self.engine.views.last_seq()
        if cursor is None or cursor > last:  # a new target starts with what happens from now on, not the history
            if cursor is not None:  # the log was cut below it (s4-journal repair): its seqs will be used again
                log.warning("notify %s: cursor %d is past the journal's end %d; continuing from the end",
                            target.id, cursor, last)
            cursor = last
            await anyio.to_thread.run_sync(store.set_cursor, target.id, cursor)
        tail = JournalTail(self.journal_dir, cursor)
        while True:
            await self._retry_requested(target)
            events = await anyio.to_thread.run_sync(tail.read, self.engine.views.last_seq(), 500)
            if not events:
                await self.sleep(self.settings.poll_s)
                continue
            saved = self.monotonic()
            for event in events:
                bodies = self._messages(target, event)
                for index, body in enumerate(bodies):
                    await self._deliver(target, event.seq, index, body)
                if bodies and self.monotonic() - saved >= CURSOR_SAVE_S:  # bounds the resends after a crash
                    await anyio.to_thread.run_sync(store.set_cursor, target.id, event.seq)
                    saved = self.monotonic()
            await anyio.to_thread.run_sync(store.set_cursor, target.id, events[-1].seq)

    def _messages(self, target: WebhookTarget, event: Event) -> list[dict[str, Any]]:
        if self.only_origin is not None and event.origin != self.only_origin:
            return []
        change = change_of(event)
        if change is None:
            return []
        rules = matching(from_record(self.engine.bucket_config_if_any(change.bucket, CONFIG_KIND)), target.id,
                         change.name, change.key)
        if not rules:
            return []
        try:
            owner = str(self.engine.get_bucket(change.bucket).owner)
        except S3Error:  # deleted since: its configuration went with it, but a race may still see both
            owner = ""
        return [message(event, change, rule, self.region, owner) for rule in rules]

    async def _deliver(self, target: WebhookTarget, seq: int, index: int, body: dict[str, Any]) -> None:
        """POST until 2xx or ``max_attempts`` tries; then park durably. Either way the event is done."""
        data = json.dumps(body).encode()
        error = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                await self._post(target, data)
            except DeliveryError as exc:
                error = str(exc)
                log.warning("notify %s: event %d try %d of %d failed: %s", target.id, seq, attempt,
                            self.settings.max_attempts, error)
                if attempt < self.settings.max_attempts:
                    await self.sleep(backoff(attempt, self.settings.backoff_s, self.settings.backoff_max_s))
                continue
            return
        await anyio.to_thread.run_sync(lambda: self.store.park(target.id, seq, index, self.settings.max_attempts,
                                                               error, body))
        log.error("notify %s: event %d parked after %d tries: %s", target.id, seq, self.settings.max_attempts, error)

    async def _retry_requested(self, target: WebhookTarget) -> None:
        """Parked messages the operator sent back (``retry/``): one try each; a failure parks it again."""
        store = self.store
        for parked in await anyio.to_thread.run_sync(store.listed, target.id, RETRY):
            try:
                await self._post(target, json.dumps(parked.message).encode())
            except DeliveryError as exc:
                await anyio.to_thread.run_sync(store.repark, parked, parked.attempts + 1, str(exc))
                continue
            await anyio.to_thread.run_sync(store.done, target.id, parked.name)

    async def _post(self, target: WebhookTarget, data: bytes) -> None:
        if self.post is not None:
            await self.post(target, data)
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        headers = {"Content-Type": "application/json", "User-Agent": "S4-notify"}
        if target.auth_token:
            headers["Authorization"] = f"Bearer {target.auth_token}"
        started = time.monotonic()
        try:
            async with self._session.post(target.endpoint, data=data, headers=headers) as resp:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"HTTP {resp.status} from {target.endpoint}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__} after {time.monotonic() - started:.1f}s: {exc}") from exc
