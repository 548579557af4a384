"""The background schedules of engine/jobs/service.py on virtual time: interval loops, the daily full
compaction at S4_COMPACTION_FULL_TIME, the scrubber's cycle and throttle. Nothing sleeps for real."""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.jobs.compaction import run_compaction
from s4.engine.jobs.lifecycle import run_lifecycle
from s4.engine.jobs.scrubber import run_scrub, scan_rate
from s4.engine.jobs.service import SCRUB_FIRST_DELAY_S, Jobs, JobSettings, next_local_time

pytestmark = pytest.mark.anyio
HOUR, DAY = 3600.0, 86400.0


class VirtualTime:
    """A clock and an asyncio ``sleep`` for it. ``advance`` jumps to each sleeper's deadline in order, once every
    loop is parked in ``sleep`` (runs in between take real time on threads, but no virtual time)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.requested: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    async def advance(self, seconds: float, loops: int) -> None:
        """Move to now + ``seconds``, waking every sleeper due by then; ``loops``: how many tasks sleep here."""
        until = self.now + seconds
        while True:
            await self._parked(loops)
            if not self._sleepers or self._sleepers[0][0] > until:
                self.now = until
                return
            self._wake_first()

    async def wake_next(self, loops: int) -> None:
        """Jump to the earliest deadline and wake its sleeper, without waiting for it to sleep again."""
        await self._parked(loops)
        self._wake_first()

    def _wake_first(self) -> None:
        due, _, future = heapq.heappop(self._sleepers)
        self.now = max(self.now, due)
        future.set_result(None)

    async def _parked(self, loops: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(not f.done() for _, _, f in self._sleepers) < loops:
            assert time.monotonic() < deadline, "a schedule loop never went back to sleep"
            await asyncio.sleep(0.002)


@dataclass
class RecordingJobs(Jobs):
    """Records when each run would happen instead of running it: the schedule alone is under test."""

    calls: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)

    async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
        self.calls.append(("lifecycle", self.clock(), {}))
        return {}

    async def compaction(self, dry_run: bool | None = None, threshold: float | None = None,
                         max_volumes: int | None = None) -> dict[str, Any]:
        self.calls.append(("compaction", self.clock(), {"threshold": threshold}))
        return {}

    async def scrubber(self, throttled: bool = False) -> dict[str, Any]:
        self.calls.append(("scrubber", self.clock(), {"throttled": throttled}))
        return {}


def local(*args: int) -> float:
    return dt.datetime(*args).timestamp()  # type: ignore[arg-type]


def settings(**overrides: Any) -> JobSettings:
    base = {"lifecycle_enabled": False, "compaction_enabled": False, "scrubber_enabled": False,
            "compaction_full_time": ""}
    return JobSettings(**{**base, **overrides})


async def drive(start: float, seconds: float, loops: int, **overrides: Any) -> tuple[RecordingJobs, float]:
    vt = VirtualTime(start)
    jobs = RecordingJobs(None, settings(**overrides), clock=vt.time, sleep=vt.sleep)
    jobs.start()
    try:
        await vt.advance(seconds, loops)
    finally:
        await jobs.stop()
    return jobs, start


def times(jobs: RecordingJobs, name: str, start: float) -> list[float]:
    return [t - start for n, t, _ in jobs.calls if n == name]


async def test_interval_loops_run_once_per_interval_from_start() -> None:
    start = local(2030, 3, 4, 10, 17)
    jobs, _ = await drive(start, 3 * DAY + 1, 2, lifecycle_enabled=True, lifecycle_interval_hours=24,
                             compaction_enabled=True, compaction_interval_hours=6)
    assert times(jobs, "lifecycle", start) == [DAY, 2 * DAY, 3 * DAY]
    assert times(jobs, "compaction", start) == [6 * HOUR * i for i in range(1, 13)]
    assert all(kw == {"threshold": None} for n, _, kw in jobs.calls if n == "compaction")


async def test_fractional_and_tiny_intervals() -> None:
    start = local(2030, 3, 4, 10, 0)
    jobs, _ = await drive(start, 10.5, 1, lifecycle_enabled=True, lifecycle_interval_hours=0.0001)
    assert times(jobs, "lifecycle", start) == [1.0 * i for i in range(1, 11)]  # never faster than 1 s


async def test_daily_full_compaction_at_local_hhmm() -> None:
    start = local(2030, 3, 4, 10, 17)
    jobs, _ = await drive(start, 3 * DAY, 2, compaction_enabled=True, compaction_interval_hours=10_000,
                             compaction_full_time="02:30")
    runs = [(dt.datetime.fromtimestamp(t), kw) for n, t, kw in jobs.calls]
    assert [when for when, _ in runs] == [dt.datetime(2030, 3, d, 2, 30) for d in (5, 6, 7)]
    assert all(kw == {"threshold": 0.0} for _, kw in runs)


async def test_daily_full_compaction_later_today_and_disabled() -> None:
    start = local(2030, 3, 4, 1, 0)
    jobs, _ = await drive(start, DAY, 2, compaction_enabled=True, compaction_interval_hours=10_000,
                             compaction_full_time="23:59")
    assert [dt.datetime.fromtimestamp(t) for _, t, _ in jobs.calls] == [dt.datetime(2030, 3, 4, 23, 59)]
    jobs, _ = await drive(start, 3 * DAY, 1, compaction_enabled=True, compaction_interval_hours=10_000,
                             compaction_full_time="")
    assert jobs.calls == []


async def test_daily_run_is_not_repeated_when_a_sleep_wakes_early() -> None:
    """asyncio may wake a sleeper a little before its deadline; the loop sleeps the rest, then runs once."""
    start = local(2030, 3, 4, 1, 59)
    vt = VirtualTime(start)

    async def early_sleep(seconds: float) -> None:
        await vt.sleep(seconds - 0.004 if seconds > 1 else seconds)

    jobs = RecordingJobs(None, settings(compaction_enabled=True, compaction_interval_hours=10_000,
                                              compaction_full_time="02:00"), clock=vt.time, sleep=early_sleep)
    jobs.start()
    try:
        await vt.advance(DAY + 120, 2)
    finally:
        await jobs.stop()
    runs = [t for _, t, _ in jobs.calls]
    assert len(runs) == 2 and runs[0] >= local(2030, 3, 4, 2, 0) and runs[1] >= local(2030, 3, 5, 2, 0)


def test_next_local_time() -> None:
    now = dt.datetime(2030, 1, 1, 2, 0)
    assert next_local_time(now, 2, 0) == dt.datetime(2030, 1, 2, 2, 0)  # strictly after: it just ran
    assert next_local_time(now, 2, 1) == dt.datetime(2030, 1, 1, 2, 1)
    assert next_local_time(dt.datetime(2030, 12, 31, 23, 0), 1, 0) == dt.datetime(2031, 1, 1, 1, 0)


async def test_scrubber_cycle_waits_out_the_rest_of_the_period() -> None:
    start = local(2030, 3, 4, 10, 0)
    jobs, _ = await drive(start, 10 * DAY, 1, scrubber_enabled=True, scrubber_full_scan_days=3)
    assert times(jobs, "scrubber", start) == [SCRUB_FIRST_DELAY_S + 3 * DAY * i for i in range(4)]
    assert all(kw == {"throttled": True} for _, _, kw in jobs.calls)


async def test_all_loops_together_and_stop() -> None:
    start = local(2030, 3, 4, 10, 0)
    jobs, _ = await drive(start, DAY, 4, lifecycle_enabled=True, compaction_enabled=True,
                             compaction_full_time="02:00", scrubber_enabled=True)
    names = [n for n, _, _ in jobs.calls]
    assert names.count("lifecycle") == 1 and names.count("scrubber") == 1
    assert names.count("compaction") == 24 + 1  # hourly, plus the 02:00 full pass
    assert jobs._tasks == []


# -- the scrubber's throttle, on a real engine ------------------------------------------------------------------
class FakeMonotonic:
    """A monotonic clock that only pauses move: the throttle's arithmetic is then exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def time(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


async def fill(engine: Engine, count: int, size: int) -> dict[str, bytes]:
    await engine.create_bucket("bkt")
    bodies = {f"o{i}": bytes([i]) * size for i in range(count)}
    await asyncio.gather(*(put(engine, "bkt", key, body) for key, body in bodies.items()))  # group commits
    return bodies


def test_scan_rate_spreads_a_full_scan_over_the_cycle() -> None:
    assert scan_rate(30 * 86400 * (8 << 20), 30) == 8 << 20
    assert scan_rate(1000, 30) == 1 << 20  # floor: small stores are not scanned absurdly slowly
    assert scan_rate(10 << 20, 0) == 10 << 20  # a zero cycle means "as soon as possible": one second


async def test_throttled_scan_keeps_to_its_rate(engine: Engine) -> None:
    await fill(engine, 40, 100_000)
    mono = FakeMonotonic()
    report = await asyncio.to_thread(lambda: run_scrub(engine, rate_bytes_per_s=1_000_000, sleep=mono.pause,
                                                       monotonic=mono.time))
    scanned = report.examined["bytes"]
    assert scanned == 40 * 100_000 and "bad_blobs" not in report.done
    assert mono.now == pytest.approx(scanned / 1_000_000)  # exactly the bytes at the rate, in virtual seconds
    assert len(mono.pauses) == 40 and max(mono.pauses) == pytest.approx(0.1)


async def test_scheduled_scan_uses_live_bytes_over_the_cycle(engine: Engine) -> None:
    await fill(engine, 30, 100_000)
    mono = FakeMonotonic()
    live = engine.storage_stats()["live_bytes"]
    days = 2 / 86400  # a 2 s cycle: the rate is live / 2 s, above the 1 MiB/s floor
    jobs = Jobs(engine, settings(scrubber_full_scan_days=days), monotonic=mono.time, pause=mono.pause)
    report = await jobs.scrubber(throttled=True)
    assert report["examined"]["bytes"] == live
    assert scan_rate(live, days) == pytest.approx(live / 2) and live / 2 > 1 << 20
    assert mono.now == pytest.approx(2.0)
    operator = await jobs.scrubber()
    assert operator["examined"]["bytes"] == live and len(mono.pauses) == 30  # operator runs never pause
    assert jobs.status("scrubber")["runs"] == 2


async def test_stop_ends_a_scan_that_would_take_days(engine: Engine) -> None:
    await fill(engine, 20, 200_000)
    jobs = Jobs(engine, settings(scrubber_enabled=True, scrubber_full_scan_days=1e9))
    vt = VirtualTime(time.time())
    jobs.sleep = vt.sleep
    jobs.start()
    await vt.wake_next(1)  # the first scan starts; at 1 MiB/s it needs ~4 s of real time
    deadline = time.monotonic() + 10
    while not jobs.status("scrubber")["running"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    operator = await asyncio.wait_for(jobs.scrubber(), 10)  # not queued behind the scheduled scan
    assert operator["examined"]["blobs"] == 20
    began = time.monotonic()
    await jobs.stop()
    assert time.monotonic() - began < 2.0
    assert jobs.last["scrubber"]["done"].get("interrupted") == 1


async def test_lifecycle_loop_acts_on_virtual_days(engine: Engine) -> None:
    """End to end: a 1-day rule, the 24 h loop and the engine, with the clock moved instead of waited for."""
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "lifecycle", {"rules": [{
        "id": "tmp", "status": "Enabled", "legacy_prefix": False,
        "filter": {"prefix": "tmp/", "tags": {}, "gt": None, "lt": None, "and": False},
        "expiration": {"days": 1}, "noncurrent": None, "abort_days": None}]})
    await put(engine, "bkt", "tmp/a", b"a")
    await put(engine, "bkt", "keep", b"k")
    vt = VirtualTime(time.time())
    jobs = Jobs(engine, settings(lifecycle_enabled=True), clock=vt.time, sleep=vt.sleep)
    jobs.start()
    try:
        await vt.advance(DAY + 1, 1)  # first run: created today, due after the next midnight + 1 day
        assert await get(engine, "bkt", "tmp/a") == b"a"
        await vt.advance(2 * DAY, 1)
    finally:
        await jobs.stop()
    assert jobs.runs["lifecycle"] == 3
    assert jobs.last["lifecycle"]["done"] == {} and await get(engine, "bkt", "keep") == b"k"
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "tmp/a")
    assert exc.value.code is ErrorCode.NO_SUCH_KEY



async def test_a_failing_run_does_not_end_its_schedule() -> None:
    class Failing(RecordingJobs):
        async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
            await super().lifecycle(dry_run)
            raise RuntimeError("boom")

    vt = VirtualTime(local(2030, 3, 4, 10, 0))
    jobs = Failing(None, settings(lifecycle_enabled=True, lifecycle_interval_hours=1), clock=vt.time,
                      sleep=vt.sleep)
    jobs.start()
    try:
        await vt.advance(3 * HOUR, 1)
    finally:
        await jobs.stop()
    assert len(jobs.calls) == 3


async def test_stop_event_ends_a_lifecycle_pass_early(engine: Engine) -> None:
    await fill(engine, 5, 10)
    await engine.set_bucket_config("bkt", "lifecycle", {"rules": [{
        "id": "all", "status": "Enabled", "legacy_prefix": False,
        "filter": {"prefix": "", "tags": {}, "gt": None, "lt": None, "and": False},
        "expiration": {"days": 1}, "noncurrent": None, "abort_days": None}]})
    stop = threading.Event()
    stop.set()
    report = await asyncio.to_thread(lambda: run_lifecycle(engine, clock=lambda: time.time() + 9 * DAY, stop=stop))
    assert report.done == {"interrupted": 1} and report.examined["keys"] == 5
    assert await get(engine, "bkt", "o1") == b"\x01" * 10


async def test_stop_event_ends_a_compaction_pass_early(make_engine: Any) -> None:
    engine = make_engine(volume_size_bytes=64 * 1024)
    bodies = await fill(engine, 12, 20_000)
    for key in bodies:
        await engine.delete_object("bkt", key)
    stop = threading.Event()
    stop.set()
    report = await asyncio.to_thread(lambda: run_compaction(engine, threshold=0.0, stop=stop))
    assert report.done == {"interrupted": 1}
    stop.clear()
    report = await asyncio.to_thread(lambda: run_compaction(engine, threshold=0.0, stop=stop))
    assert report.done["volumes_compacted"] >= 2
