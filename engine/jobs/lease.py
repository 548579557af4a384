"""Pool-wide jobs act only while this node holds their lease (engine/ports.py ``JobLeasePort``).

Lifecycle and multipart-upload expiry decide from this node's views and commit through the replicated commit path,
so in a pool every node would otherwise act on the same expired object (three delete markers for one expiry). Each
run first asks ``JobLeases.hold``: a node that holds the job's lease (or gets it: free, expired, or its own) runs;
any other skips. A held lease is kept: a keeper task renews it well before this node's deadline, so the holder
stays the pool's runner from run to run and the other nodes keep skipping while it lives. The run's thread checks
``LeaseFlag.is_set()`` before every action and stops once the deadline has passed (a renewal that could not reach
the pool, or a lease taken over after it ran out). Compaction and the scrubber stay node-local and need no lease.
docs/architecture/replication.md, "Background jobs: one lease per job".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..ports import JobLeasePort, LeaseGrant

log = logging.getLogger(__name__)

POOL_JOBS = ("lifecycle", "multipart_ttl")
"""The jobs that act once per pool; their lease keys are ``job/<name>`` in the register."""
MIN_RENEW_S = 0.5
"""A keeper never waits less than this between two renewals (a register that keeps failing is not hammered)."""
RELEASE_TIMEOUT_S = 5.0
"""How long stopping the jobs waits to give the held leases back; past it they simply expire."""


class StopFlag(Protocol):
    """What a job run checks before each action: set means stop now (``threading.Event`` is one)."""

    def is_set(self) -> bool: ...


class JobLeases:
    """This node's leases on the pool-wide jobs: the last answer per job, and a keeper task per held lease."""

    def __init__(self, port: JobLeasePort, monotonic: Callable[[], float],
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.port = port
        self._monotonic = monotonic
        self._sleep = sleep
        self._grants: dict[str, LeaseGrant] = {}
        self._keepers: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._paused = False  # the node drains: it takes no pool-wide job lease (cluster/drain.py)

    def may_act(self, job: str) -> bool:
        """From any thread: this node holds ``job``'s lease and its deadline has not passed."""
        grant = self._grants.get(job)
        return grant is not None and grant.granted and self._monotonic() < grant.deadline

    def flag(self, job: str, halt: threading.Event) -> LeaseFlag:
        return LeaseFlag(self, job, halt)

    def last(self, job: str) -> LeaseGrant | None:
        return self._grants.get(job)

    async def hold(self, job: str) -> LeaseGrant:
        """The lease, still valid or freshly acquired (renewed if it was already ours); a granted lease is kept
        from now on by a keeper task."""
        if self.may_act(job):
            return self._grants[job]
        if self._paused:
            return LeaseGrant(job, False, reason="this node is draining")
        grant = await self.port.acquire(job)
        self._grants[job] = grant
        if grant.granted and math.isfinite(grant.deadline) and not self._closed:
            keeper = self._keepers.get(job)
            if keeper is None or keeper.done():
                self._keepers[job] = asyncio.get_running_loop().create_task(self._keep(job))
        return grant

    async def _keep(self, job: str) -> None:
        """Renew when half of the time left until the deadline has passed; a renewal the pool could not answer is
        tried again (sooner) until the deadline, when the lease is lost; a renewal refused (another node took the
        lease after it ran out) ends the keeping at once."""
        while True:
            grant = self._grants[job]
            left = grant.deadline - self._monotonic()
            if left <= 0:
                log.warning("%s lease (term %d) ran out before it could be renewed: this node stops acting on it",
                            job, grant.term)
                self._grants[job] = LeaseGrant(job, False, grant.holder, grant.term, grant.expires_ms,
                                               reason="expired before renewal")
                return
            await self._sleep(max(left / 2, MIN_RENEW_S))
            fresh = await self.port.acquire(job)
            if fresh.granted:
                self._grants[job] = fresh
            elif fresh.reason == "held":
                log.warning("%s lease lost to node %s (term %d)", job, fresh.holder, fresh.term)
                self._grants[job] = fresh
                return
            else:
                log.info("%s lease: renewal failed (%s); keeping the current grant until its deadline", job,
                         fresh.reason)

    async def pause(self) -> list[str]:
        """The node drains: stop renewing, stop acting at once (runs stop at their next check) and take no lease
        until ``resume``; returns the jobs it held, for ``release`` once their runs have ended."""
        self._paused = True
        return await self._let_go()

    def resume(self) -> None:
        self._paused = False

    async def release(self, jobs: list[str]) -> None:
        """Give ``jobs``' leases back in the register (best effort: an unreleased lease expires)."""
        if jobs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(self.port.release(job) for job in jobs)), RELEASE_TIMEOUT_S)

    async def close(self) -> None:
        """Stop renewing and give back what this node holds (call once no run acts any more)."""
        self._closed = True
        held = await self._let_go()
        await self.release(held)
        if held:
            log.info("stopping: gave back %d pool job lease(s): %s", len(held), ", ".join(held))

    async def _let_go(self) -> list[str]:
        """Stop renewing (the keepers end) and act on no lease from now on; the jobs whose lease this node held."""
        keepers = list(self._keepers.values())
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        self._keepers.clear()
        held = [job for job, grant in self._grants.items() if grant.granted]
        for job in held:
            self._grants[job] = LeaseGrant(job, False, reason="released")
        return held


class LeaseFlag:
    """A pool-wide run's stop flag: set once the jobs stop (``halt``) or this node may no longer act on ``job``."""

    def __init__(self, leases: JobLeases, job: str, halt: threading.Event) -> None:
        self.leases = leases
        self.job = job
        self.halt = halt

    def is_set(self) -> bool:
        return self.halt.is_set() or not self.leases.may_act(self.job)
