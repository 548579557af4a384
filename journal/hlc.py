"""Hybrid logical clock.

An HLC timestamp is packed into one unsigned 64-bit integer: ``physical_ms << 16 | logical``. Packed values
compare in causal order, which is what last-writer-wins needs; ties between nodes break on ``origin``.
See docs/architecture/journal-format.md and docs/architecture/replication.md.

Stamps from other nodes are merged through ``observe_peer``, which refuses one more than ``max_offset_ms`` ahead of
the local wall clock (``S4_MAX_CLOCK_OFFSET``, default 60 s): one node with a clock set a year ahead would otherwise
drag every clock in the pool with it, and its writes would win every last-writer-wins race for that year.
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


DEFAULT_MAX_OFFSET_MS = 60_000
"""The default of ``S4_MAX_CLOCK_OFFSET`` (60 s), in milliseconds."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ClockOffsetError(Exception):
    """A peer's timestamp is further ahead of our wall clock than the allowed offset; the clock was not moved."""

    def __init__(self, remote: int, wall: int, max_offset_ms: int) -> None:
        self.remote = remote
        self.wall_ms = wall
        self.ahead_ms = physical_ms(remote) - wall
        self.max_offset_ms = max_offset_ms
        super().__init__(f"refused a peer timestamp {self.ahead_ms} ms ahead of the local wall clock "
                         f"(S4_MAX_CLOCK_OFFSET allows {max_offset_ms} ms): check the clocks (NTP) of this node and "
                         f"the peer; hlc={remote}")


class HybridClock:
    """Monotonic HLC: never goes backwards even if the wall clock does; thread-safe."""

    def __init__(self, now_ms: Callable[[], int] = wall_ms, last: int = 0,
                 max_offset_ms: int = DEFAULT_MAX_OFFSET_MS) -> None:
        if max_offset_ms < 0:
            raise ValueError(f"max_offset_ms must be >= 0, got {max_offset_ms}")
        self._now_ms = now_ms
        self._last = last
        self.max_offset_ms = max_offset_ms
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def tick(self) -> int:
        """A new timestamp for a local event, greater than every timestamp seen so far."""
        with self._lock:
            return self._tick_locked()

    def _tick_locked(self) -> int:
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
        """Merge a trusted timestamp (this node's own journal on replay) so later ticks sort after it.

        No offset check: our own journal is what it is, and refusing it would stop start-up after the wall clock
        was set back. Stamps from other nodes go through ``observe_peer``."""
        with self._lock:
            if remote > self._last:
                self._last = remote
            return self._last

    def observe_peer(self, remote: int) -> int:
        """Merge a peer's timestamp, or raise ClockOffsetError (clock unchanged) when it is too far ahead."""
        with self._lock:
            self._check_offset(remote)
            if remote > self._last:
                self._last = remote
            return self._last

    def tick_after(self, seen: int) -> int:
        """Read before write: a stamp for a local write greater than ``seen`` (the newest stamp a quorum read
        returned) and than every local stamp, i.e. ``max(now, seen + 1)``, so the write never loses to the version
        it replaces because of clock skew. ``seen`` is a peer stamp: ClockOffsetError when too far ahead."""
        with self._lock:
            self._check_offset(seen)
            if seen > self._last:
                self._last = seen
            return self._tick_locked()

    def _check_offset(self, remote: int) -> None:
        wall = self._now_ms()
        if physical_ms(remote) - wall > self.max_offset_ms:
            raise ClockOffsetError(remote, wall, self.max_offset_ms)
