"""Query processes, and the warm spare that takes their start out of a query's latency.

Starting ``python -m s4.engine.select.sandbox`` costs ~0.5 s (interpreter, DuckDB and pyarrow imports). So, once
a first query has run, each event loop (one per HTTP process) keeps one spare query process that has done its
imports, said hello and now waits for a job. A query takes the spare, waiting for its hello if it is still
starting; a query that finds no live spare starts a process of its own, as before. Once the query's process has
its job, a new spare is started in the background if none is waiting or starting. The memory bound is unchanged:
a spare has no limit while it waits, and caps its address space when its job arrives (sandbox.limit_memory: what
it has mapped then + the query's memory + the headroom), exactly as a process started for the query does, since
nothing runs in a spare before its job.

An idle spare holds no query memory, so it reserves nothing in the node budget (budget.py): it costs its runtime
(~105 MiB resident, sandbox.RUNTIME_RSS_BYTES) per HTTP process that has served a query (docs/operations.md). A
spare that dies while idle is reaped and replaced at once, but not twice in a row without a query in between (a
spare that keeps dying waits for the next query). When the event loop shuts down it cancels its tasks, and the
task watching the spare then kills and reaps it; PR_SET_PDEATHSIG kills it if the HTTP process dies.

Why a spare and not a fork server (a template that imported DuckDB and pyarrow, forking one child per query):
see docs/architecture/select.md ("Query processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import weakref

from ..errors import ErrorCode, S3Error
from . import sandbox
from .channel import read_frame_async

log = logging.getLogger("s4.select")

#: How long a query process may take to start (interpreter, DuckDB, pyarrow) before the query fails.
SPAWN_TIMEOUT_S = 60.0


class QueryProcess:
    """One query process: started, past its imports ("hello"), then given one job by a QueryRun."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.taken = False  # handed to a query: its QueryRun owns it now
        self.warm = False  # it was the spare (started before its query)
        self.started = asyncio.get_running_loop().create_task(self._start(), name="s4-query-process-start")

    async def _start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "s4.engine.select.sandbox", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, **sandbox.ENV})
        assert self.proc.stdout is not None
        hello = await asyncio.wait_for(read_frame_async(self.proc.stdout), SPAWN_TIMEOUT_S)
        if hello != ["hello"]:
            raise S3Error(ErrorCode.INTERNAL_ERROR, "The query process did not start.")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def ready(self) -> asyncio.subprocess.Process:
        """The process once it waits for its job; raises if it did not start. Shielded: a query cancelled while
        waiting kills the process (``reap``) rather than leave a start half done."""
        await asyncio.shield(self.started)
        assert self.proc is not None
        return self.proc

    def alive(self) -> bool:
        """Not known to be dead: still starting, or started and not exited."""
        if self.started.done() and (self.started.cancelled() or self.started.exception() is not None):
            return False
        return self.proc is None or self.proc.returncode is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def reap(self) -> None:
        """Kill the process (or its start) and wait until it is gone."""
        if not self.started.done():
            self.started.cancel()
        await asyncio.wait([self.started])
        if not self.started.cancelled():
            self.started.exception()  # reported to whoever waited for it (or to nobody: a spare never taken)
        self.kill()
        if self.proc is not None:
            await self.proc.wait()


class SparePool:
    """The warm spare of one event loop, and what it served (read by tests and the debug log)."""

    def __init__(self) -> None:
        self.spare: QueryProcess | None = None
        self.served_warm = 0  # queries that ran in a spare
        self.started_cold = 0  # queries that had to start their own process
        self._keeper: asyncio.Task[None] | None = None
        self._replaced_idle = False

    def take(self) -> QueryProcess:
        """The process for the next query: the spare if it is alive, else a new one. The caller owns what it gets
        (``QueryProcess.reap`` when done) and calls ``refill`` once that process has its job."""
        spare, self.spare = self.spare, None
        if spare is not None and spare.alive():
            spare.taken = spare.warm = True
            if self._keeper is not None:
                self._keeper.cancel()
            self.served_warm += 1
            chosen = spare
        else:  # none yet, or it died: its keeper reaps it
            self.started_cold += 1
            chosen = QueryProcess()
            chosen.taken = True
        return chosen

    def refill(self) -> None:
        """A query's process has its job: start the next spare unless one is waiting or starting. Not earlier, so
        a query that starts its own process does not share the CPU with a second start while it waits."""
        self._replaced_idle = False
        if self.spare is None:
            self._start_spare()

    def _start_spare(self) -> None:
        self.spare = QueryProcess()
        self._keeper = asyncio.get_running_loop().create_task(self._keep(self.spare), name="s4-query-spare")

    async def _keep(self, spare: QueryProcess) -> None:
        """While ``spare`` waits for a query: replace it if it dies; kill it when the event loop shuts down."""
        healthy = False
        try:
            await asyncio.shield(spare.started)
            healthy = True
            assert spare.proc is not None
            await spare.proc.wait()
        except asyncio.CancelledError:
            if not spare.taken:  # the loop is shutting down
                if self.spare is spare:
                    self.spare = self._keeper = None
                await spare.reap()
            raise
        except Exception as exc:  # noqa: BLE001 - a spare that could not start: the next query tries again
            log.warning("select: a spare query process did not start: %s", exc)
        if spare.taken:
            return
        await spare.reap()
        if self.spare is not spare:
            return
        self.spare = self._keeper = None
        if healthy:
            log.warning("select: the spare query process %s died (exit status %s)", spare.pid,
                        spare.proc.returncode if spare.proc is not None else None)
            if not self._replaced_idle:
                self._replaced_idle = True
                self._start_spare()


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SparePool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()  # in-process test servers run several event loops in one process


def pool() -> SparePool:
    """The spare pool of the running event loop (asyncio subprocesses belong to the loop that started them)."""
    loop = asyncio.get_running_loop()
    with _POOLS_LOCK:
        found = _POOLS.get(loop)
        if found is None:
            found = _POOLS[loop] = SparePool()
        return found
