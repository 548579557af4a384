"""An asyncio event loop on simulated time: when nothing is ready, time jumps to the next timer instead of waiting.

``asyncio.sleep``, ``asyncio.wait(timeout=...)`` and ``loop.call_later`` all read ``loop.time()``, so code under test
runs unchanged, a 10 s deadline passes instantly, and the run is deterministic (the ready queue is FIFO and the
tests draw every random choice from a seeded ``random.Random``). A loop with nothing ready and no timer would block
forever in real life; here it raises ``SimDeadlock`` so a test with a lost wake-up fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SimDeadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulated program would hang."""


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: SimLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or self.loop is None:
            return events
        if timeout is None:
            raise SimDeadlock("no task is ready and no timer is pending")
        self.loop.advance(timeout)
        return events


class SimLoop(asyncio.SelectorEventLoop):
    """Simulated time starts at 0.0 and only moves when the loop would otherwise wait."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        self._now = 0.0
        selector.loop = self

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


def run_sim(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a fresh SimLoop; cancel whatever it left running, then close the loop."""
    loop = SimLoop()
    try:
        result = loop.run_until_complete(main)
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        return result
    finally:
        loop.close()
