"""The node's background workers: settings, schedules (asyncio tasks) and the last run of each, for status.

One ``Workers`` per Engine (``for_engine``), created by the server and found by the admin API. Runs of one
worker never overlap (a lock per worker); each run executes on a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from .compaction import run_compaction
from .lifecycle import run_lifecycle
from .report import RunReport
from .scrubber import run_scrub, scan_rate

log = logging.getLogger(__name__)


@dataclass
class WorkerSettings:
    lifecycle_enabled: bool = True
    lifecycle_interval_hours: float = 24.0
    lifecycle_dry_run: bool = False
    compaction_enabled: bool = True
    compaction_interval_hours: float = 1.0
    compaction_threshold: float = 0.3
    compaction_dry_run: bool = False
    compaction_full_time: str = "02:00"
    multipart_ttl_hours: float = 24.0
    multipart_ttl_secs_override: int | None = None
    scrubber_enabled: bool = True
    scrubber_full_scan_days: float = 30.0

    @property
    def multipart_ttl_seconds(self) -> float:
        if self.multipart_ttl_secs_override is not None:
            return float(self.multipart_ttl_secs_override)
        return self.multipart_ttl_hours * 3600.0

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> WorkerSettings:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items()
                      if k in names and (v is not None or k == "multipart_ttl_secs_override")})


@dataclass
class Workers:
    engine: Any
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    clock: Callable[[], float] = time.time
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _run(self, name: str, fn: Callable[[], RunReport]) -> dict[str, Any]:
        async with self._lock(name):
            report = await anyio.to_thread.run_sync(fn)
        result = report.to_dict()
        self.last[name] = result
        self.runs[name] = self.runs.get(name, 0) + 1
        return result

    async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
        dry = self.settings.lifecycle_dry_run if dry_run is None else dry_run
        return await self._run("lifecycle", lambda: run_lifecycle(self.engine, dry_run=dry, clock=self.clock))

    async def compaction(self, dry_run: bool | None = None, threshold: float | None = None,
                         max_volumes: int | None = None) -> dict[str, Any]:
        dry = self.settings.compaction_dry_run if dry_run is None else dry_run
        limit = self.settings.compaction_threshold if threshold is None else threshold
        return await self._run("compaction", lambda: run_compaction(
            self.engine, threshold=limit, max_volumes=max_volumes, dry_run=dry,
            multipart_ttl_seconds=self.settings.multipart_ttl_seconds, clock=self.clock))

    async def scrubber(self, throttled: bool = False) -> dict[str, Any]:
        rate = None
        if throttled:
            stats = await anyio.to_thread.run_sync(self.engine.storage_stats)
            rate = scan_rate(stats["live_bytes"], self.settings.scrubber_full_scan_days)
        return await self._run("scrubber", lambda: run_scrub(self.engine, rate_bytes_per_s=rate))

    def status(self, name: str) -> dict[str, Any]:
        return {"worker": name, "runs": self.runs.get(name, 0), "running": self._lock(name).locked(),
                "last_run": self.last.get(name), "settings": _settings_for(self.settings, name)}

    # -- schedules ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the periodic loops on the running event loop (call once per node)."""
        s = self.settings
        if s.lifecycle_enabled:
            self._spawn(self._every(s.lifecycle_interval_hours * 3600, self.lifecycle))
        if s.compaction_enabled:
            self._spawn(self._every(s.compaction_interval_hours * 3600, self.compaction))
            if s.compaction_full_time:
                self._spawn(self._daily(s.compaction_full_time))
        if s.scrubber_enabled:
            self._spawn(self._every(60.0, lambda: self.scrubber(throttled=True)))

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _every(self, seconds: float, run: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(max(seconds, 1.0))
            try:
                await run()
            except Exception:  # noqa: BLE001 - a failed run is logged; the schedule goes on
                log.exception("background worker run failed")

    async def _daily(self, hhmm: str) -> None:
        """Full compaction (every volume with any dead bytes) at HH:MM local time."""
        hour, minute = (int(x) for x in hhmm.split(":"))
        while True:
            now = dt.datetime.now()
            due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if due <= now:
                due += dt.timedelta(days=1)
            await asyncio.sleep((due - now).total_seconds())
            try:
                await self.compaction(threshold=0.0)
            except Exception:  # noqa: BLE001
                log.exception("full compaction failed")


def _settings_for(s: WorkerSettings, name: str) -> dict[str, Any]:
    prefix = {"lifecycle": "lifecycle_", "compaction": "compaction_", "scrubber": "scrubber_"}[name]
    out = {k: v for k, v in vars(s).items() if k.startswith(prefix)}
    if name == "compaction":
        out["multipart_ttl_seconds"] = s.multipart_ttl_seconds
    return out


def for_engine(engine: Any, settings: WorkerSettings | None = None) -> Workers:
    """The engine's one Workers object (created on first use; settings replace the defaults when given)."""
    workers: Workers | None = getattr(engine, "_background_workers", None)
    if workers is None:
        workers = Workers(engine)
        engine._background_workers = workers
    if settings is not None:
        workers.settings = settings
    return workers
