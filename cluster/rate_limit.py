"""A token bucket for background repair: anti-entropy takes keys and bytes from it before it works, so repair runs at
a bounded rate however far two replicas drifted apart, and client requests keep the node (docs/architecture/
anti-entropy.md, "Rate")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. ``take(n)`` returns at once while tokens last; beyond,
    it goes into debt and sleeps until the debt is paid, so one request larger than the burst still passes (a key
    with a large blob) and the long-run rate never exceeds ``rate``. A rate of 0 or less means no limit."""

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.clock, self.sleep = clock, sleep
        self.tokens = self.burst
        self.updated = clock()
        self.waited_s = 0.0  # how long ``take`` slept in all (a metric: repair held back for the clients)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, n: float) -> None:
        if self.rate <= 0 or n <= 0:
            return
        self._refill()
        self.tokens -= n
        if self.tokens < 0:
            wait = -self.tokens / self.rate
            self.waited_s += wait
            await self.sleep(wait)
