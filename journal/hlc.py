"""Hybrid logical clock.

An HLC timestamp is packed into one unsigned 64-bit integer: ``physical_ms << 16 | logical``. Packed values
compare in causal order, which is what last-writer-wins needs; ties between nodes break on ``origin``.
See docs/architecture/journal-format.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(physical_ms: int, logical: int) -> int:
    """Pack a (physical ms, logical counter) pair into one sortable integer."""
    return (physical_ms << LOGICAL_BITS) | logical


def unpack(hlc: int) -> tuple[int, int]:
    """Split a packed HLC into (physical ms, logical counter)."""
    return hlc >> LOGICAL_BITS, hlc & LOGICAL_MASK


def physical_ms(hlc: int) -> int:
    """Wall-clock milliseconds of a packed HLC."""
    return hlc >> LOGICAL_BITS


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Monotonic HLC: never goes backwards even if the wall clock does; thread-safe."""

    def __init__(self, now_ms: Callable[[], int] = wall_ms, last: int = 0) -> None:
        self._now_ms = now_ms
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def tick(self) -> int:
        """A new timestamp for a local event, greater than every timestamp seen so far."""
        with self._lock:
            phys, logical = unpack(self._last)
            now = self._now_ms()
            if now > phys:
                self._last = pack(now, 0)
            elif logical < LOGICAL_MASK:
                self._last = pack(phys, logical + 1)
            else:  # logical overflow inside one ms: borrow the next millisecond
                self._last = pack(phys + 1, 0)
            return self._last

    def observe(self, remote: int) -> int:
        """Merge a timestamp from another node (or from replay) so later ticks sort after it."""
        with self._lock:
            if remote > self._last:
                self._last = remote
            return self._last
