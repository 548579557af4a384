"""The node's background jobs: settings, schedules (asyncio tasks) and the last run of each, for status.

One ``Jobs`` per Engine (``for_engine``), created by the server and found by the admin API. Runs of one
job never overlap (a lock per job); each run executes on a worker thread so the event loop never blocks.
Every wait goes through injectable time sources (``clock``, ``sleep``, ``monotonic``, ``pause``), so the
schedules are tested on virtual time (tests/unit/engine/test_jobs_schedule.py).

Lifecycle and multipart-upload expiry act once per pool: a run (scheduled or an operator's) acts only while this
node holds the job's lease (``leases``, engine/ports.py ``JobLeasePort``, chosen by tools/server.py; single mode
always grants it), and is skipped, counted in the status, when another node holds it (engine/jobs/lease.py).
Dry runs act on nothing and need no lease. Compaction of volumes and the scrubber are node-local: every node runs
them on its own bytes. In a pool the scrubber heals what it finds bad from a replica (``Engine.blob_repair``,
cluster/scrub_heal.py); ``scrub_status()`` gives its progress and heal counts (docs/architecture/recovery.md,
"Scrub healing").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from ..ports import JobLeasePort, LeaseGrant, SoleNodeLeases
from .compaction import run_compaction
from .lease import RELEASE_TIMEOUT_S, JobLeases
from .lifecycle import run_lifecycle
from .report import RunReport
from .scrub_progress import ScrubProgress
from .scrubber import Heal, run_scrub, scan_rate

log = logging.getLogger(__name__)


@dataclass
class JobSettings:
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
    def from_values(cls, values: dict[str, Any]) -> JobSettings:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items()
                      if k in names and (v is not None or k == "multipart_ttl_secs_override")})


Sleep = Callable[[float], Awaitable[Any]]
SCRUB_FIRST_DELAY_S = 60.0  # the first scheduled scrub waits this long after start-up, then once per cycle
HEAL_TIMEOUT_S = 600.0  # one blob's heal as the scrubber's thread waits for it (each replica's transfer is bounded)


@dataclass
class Jobs:
    """Runs and schedules. Time comes from injectable sources so tests drive every loop without waiting:
    ``clock`` (wall time: lifecycle ages, upload TTLs, the HH:MM full compaction), ``sleep`` (the schedules'
    waits on the event loop), ``monotonic`` and ``pause`` (the throttled scrubber's pacing on its thread;
    ``pause`` defaults to waiting on the stop event, so ``stop`` ends a scan that would take days)."""

    engine: Any
    settings: JobSettings = field(default_factory=JobSettings)
    clock: Callable[[], float] = time.time
    sleep: Sleep = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    pause: Callable[[float], Any] | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    leases: JobLeasePort = field(default_factory=SoleNodeLeases)
    skipped: dict[str, int] = field(default_factory=dict)  # runs of a pool-wide job skipped: another node holds it
    scrub: ScrubProgress = field(default_factory=ScrubProgress)  # the scrubber's progress and heals (this node)
    notifier: Any = None  # bucket notifications' delivery (engine/notify/delivery.py), set by tools/server.py
    _held: JobLeases | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _run(self, name: str, fn: Callable[[], RunReport], lock: str | None = None) -> dict[str, Any]:
        """Run ``fn`` on a worker thread and keep its report. A thread cannot be interrupted, so a cancelled
        caller (``stop``) still waits for it: the engine must not be closed under a run in progress."""
        async with self._lock(lock or name):
            thread = asyncio.ensure_future(anyio.to_thread.run_sync(fn))
            try:
                report = await asyncio.shield(thread)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):  # a failed run must not swallow the cancellation
                    self._record(name, await thread)
                raise
        return self._record(name, report)

    def _record(self, name: str, report: RunReport) -> dict[str, Any]:
        self.last[name] = report.to_dict()
        self.runs[name] = self.runs.get(name, 0) + 1
        return self.last[name]

    def _leases(self) -> JobLeases:
        if self._held is None or self._held.port is not self.leases:
            self._held = JobLeases(self.leases, self.monotonic, self.sleep)
        return self._held

    async def _hold(self, job: str) -> LeaseGrant:
        """This node's lease on a pool-wide job; a refusal is counted and logged (debug: it is the normal case
        on every node but one)."""
        grant = await self._leases().hold(job)
        if not grant.granted:
            self.skipped[job] = self.skipped.get(job, 0) + 1
            log.debug("%s: skipped, %s", job, f"node {grant.holder} holds the lease (term {grant.term})"
                      if grant.reason == "held" else f"no lease: {grant.reason}")
        return grant

    def now(self) -> dt.datetime:
        """Local wall time from ``clock`` (S4_COMPACTION_FULL_TIME is local HH:MM)."""
        return dt.datetime.fromtimestamp(self.clock())

    async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
        """One run, if this node holds the lifecycle lease (dry runs need none); otherwise the answer is
        ``{"worker": "lifecycle", "skipped": true, "lease": ...}`` naming the holder, and nothing ran."""
        dry = self.settings.lifecycle_dry_run if dry_run is None else dry_run
        if dry:
            return await self._run("lifecycle", lambda: run_lifecycle(self.engine, dry_run=True, clock=self.clock,
                                                                      stop=self._halt))
        grant = await self._hold("lifecycle")
        if not grant.granted:
            return {"worker": "lifecycle", "skipped": True, "lease": grant.to_record()}
        flag = self._leases().flag("lifecycle", self._halt)
        report = await self._run("lifecycle", lambda: run_lifecycle(self.engine, dry_run=False, clock=self.clock,
                                                                    stop=flag))
        report["lease"] = grant.to_record()
        return report

    async def compaction(self, dry_run: bool | None = None, threshold: float | None = None,
                         max_volumes: int | None = None) -> dict[str, Any]:
        """Expire abandoned multipart uploads (pool-wide: only while holding the ``multipart_ttl`` lease), then
        compact this node's volumes (node-local: always)."""
        dry = self.settings.compaction_dry_run if dry_run is None else dry_run
        limit = self.settings.compaction_threshold if threshold is None else threshold
        ttl: float | None = self.settings.multipart_ttl_seconds
        grant = None if dry else await self._hold("multipart_ttl")
        if grant is not None and not grant.granted:
            ttl = None
        ttl_stop = self._halt if grant is None else self._leases().flag("multipart_ttl", self._halt)
        report = await self._run("compaction", lambda: run_compaction(
            self.engine, threshold=limit, max_volumes=max_volumes, dry_run=dry, multipart_ttl_seconds=ttl,
            clock=self.clock, stop=self._halt, multipart_stop=ttl_stop))
        if grant is not None:
            report["lease"] = grant.to_record()
            if not grant.granted:
                report["done"]["multipart_ttl_skipped"] = 1
        return report

    async def scrubber(self, throttled: bool = False) -> dict[str, Any]:
        """A full scan. Operator runs are unthrottled; the scheduled (throttled) scan, which may take days, has
        its own lock so an operator run never queues behind it, and it stops early when the jobs stop."""
        heal = self._heal()
        if not throttled:
            return await self._run("scrubber", lambda: run_scrub(self.engine, heal=heal, progress=self.scrub))
        stats = await anyio.to_thread.run_sync(self.engine.storage_stats)
        rate = scan_rate(stats["live_bytes"], self.settings.scrubber_full_scan_days)
        pause = self.pause or self._halt.wait
        return await self._run("scrubber", lambda: run_scrub(
            self.engine, rate_bytes_per_s=rate, sleep=pause, monotonic=self.monotonic, stop=self._halt, heal=heal,
            progress=self.scrub), lock="scrubber:scheduled")

    def _heal(self) -> Heal | None:
        """The scrubber's blocking view of the engine's ``BlobRepairPort`` (a pool; None in single mode): the
        repair runs on this event loop (where the node's peer channels live), the scan's thread waits for it."""
        repair = getattr(self.engine, "blob_repair", None)
        if repair is None:
            return None
        loop = asyncio.get_running_loop()

        def heal(loc: Any, problem: str) -> bool:
            fut = asyncio.run_coroutine_threadsafe(repair.repair(loc, problem, cause="scrub"), loop)
            try:
                return bool(fut.result(HEAL_TIMEOUT_S))
            except BaseException:
                fut.cancel()
                raise

        return heal

    async def scrub_status(self) -> dict[str, Any]:
        """The scrubber's numbers on this node, for ``GET /api/admin/cluster/repair-status`` and the metrics:
        ``running``, ``throttled``, ``pass`` {started_ms, ended_ms, blobs_scanned, bytes_scanned, bytes_total},
        ``last_full_pass_ms`` (None: no pass finished since start), ``totals`` (since start: passes, blobs and
        bytes scanned, bad blobs found, blobs and bytes healed from replicas, heal failures, read failovers),
        ``last_heal``, ``last_heal_failure``, ``healing`` (True in a pool: bad blobs are fetched from replicas) and
        ``full_scan_days``. Async so a worker's stand-in (engine/remote ``RemoteJobs``) has the same shape."""
        return {**self.scrub.snapshot(), "healing": getattr(self.engine, "blob_repair", None) is not None,
                "full_scan_days": self.settings.scrubber_full_scan_days}

    def status(self, name: str) -> dict[str, Any]:
        running = self._lock(name).locked() or (name == "scrubber" and self._lock("scrubber:scheduled").locked())
        status = {"worker": name, "runs": self.runs.get(name, 0), "running": running,
                  "last_run": self.last.get(name), "settings": _settings_for(self.settings, name)}
        pool_job = {"lifecycle": "lifecycle", "compaction": "multipart_ttl"}.get(name)
        if pool_job is not None:  # acts once per pool: who holds the lease, and the runs skipped here for it
            grant = self._leases().last(pool_job)
            status["lease"] = None if grant is None else {**grant.to_record(),
                                                          "held_here": self._leases().may_act(pool_job)}
            status["skipped_runs"] = self.skipped.get(pool_job, 0)
        return status

    # -- schedules ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the periodic loops on the running event loop (call once per node)."""
        s = self.settings
        self._halt.clear()
        if s.lifecycle_enabled:
            self._spawn(self._every(s.lifecycle_interval_hours * 3600, self.lifecycle))
        if s.compaction_enabled:
            self._spawn(self._every(s.compaction_interval_hours * 3600, self.compaction))
            if s.compaction_full_time:
                self._spawn(self._daily(s.compaction_full_time))
        if s.scrubber_enabled:
            self._spawn(self._scrub_cycle(s.scrubber_full_scan_days * 86400))
        if self.notifier is not None:
            self.notifier.start()

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def stop(self) -> None:
        """Stop the schedules, wait for runs in progress, then give the held leases back (another node takes
        over at once instead of after their expiry)."""
        self._halt.set()  # a throttled scan in its thread returns at its next pause
        if self.notifier is not None:
            await self.notifier.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for lock in list(self._locks.values()):  # an operator's run still in its thread
            async with lock:
                pass
        if self._held is not None:
            await self._held.close()

    async def hand_back_leases(self, draining: bool) -> int:
        """Draining (cluster/drain.py): stop acting on the pool-wide jobs and give their leases back, so another
        node runs them at its next run; a lease whose run is still in progress after RELEASE_TIMEOUT_S is left to
        expire instead (its run stops at its next check). ``False``: take leases again. Returns the leases given
        back."""
        leases = self._leases()
        if not draining:
            leases.resume()
            return 0
        held = await leases.pause()
        runs = {"lifecycle": "lifecycle", "multipart_ttl": "compaction"}
        released = []
        for job in held:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S):
                    async with self._lock(runs.get(job, job)):
                        released.append(job)
            except TimeoutError:
                log.warning("%s lease: a run is still in progress; the lease is left to expire", job)
        await leases.release(released)
        return len(released)

    async def _every(self, seconds: float, run: Callable[[], Any]) -> None:
        """``run`` once per interval; the first run comes one interval after start-up."""
        while True:
            await self.sleep(max(seconds, 1.0))
            await _logged(run, "background job run failed")

    async def _daily(self, hhmm: str) -> None:
        """Full compaction (every volume with any dead bytes) at HH:MM local time, once a day."""
        hour, minute = (int(x) for x in hhmm.split(":"))
        while True:
            due = next_local_time(self.now(), hour, minute).timestamp()  # timestamp(): DST-correct
            while (wait := due - self.clock()) > 0:  # a sleep that wakes early must not run it twice
                await self.sleep(wait)
            await _logged(lambda: self.compaction(threshold=0.0), "full compaction failed")

    async def _scrub_cycle(self, cycle_s: float) -> None:
        """One throttled full scan per S4_SCRUBBER_FULL_SCAN_DAYS: a scan that finishes early (the rate never
        drops below scan_rate's floor) waits for the rest of its cycle instead of starting over."""
        await self.sleep(SCRUB_FIRST_DELAY_S)
        while True:
            started = self.clock()
            await _logged(lambda: self.scrubber(throttled=True), "scheduled scrub failed")
            await self.sleep(max(started + cycle_s - self.clock(), SCRUB_FIRST_DELAY_S))


async def _logged(run: Callable[[], Any], message: str) -> None:
    try:
        await run()
    except Exception:  # noqa: BLE001 - a failed run is logged; the schedule goes on
        log.exception(message)


def next_local_time(now: dt.datetime, hour: int, minute: int) -> dt.datetime:
    """The first HH:MM strictly after ``now`` (naive local time)."""
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due if due > now else due + dt.timedelta(days=1)


def _settings_for(s: JobSettings, name: str) -> dict[str, Any]:
    prefix = {"lifecycle": "lifecycle_", "compaction": "compaction_", "scrubber": "scrubber_"}[name]
    out = {k: v for k, v in vars(s).items() if k.startswith(prefix)}
    if name == "compaction":
        out["multipart_ttl_seconds"] = s.multipart_ttl_seconds
    return out


def for_engine(engine: Any, settings: JobSettings | None = None) -> Jobs:
    """The engine's one Jobs object (created on first use; settings replace the defaults when given)."""
    jobs: Jobs | None = getattr(engine, "_background_jobs", None)
    if jobs is None:
        jobs = Jobs(engine)
        engine._background_jobs = jobs
    if settings is not None:
        jobs.settings = settings
    return jobs
