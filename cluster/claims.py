"""Sets of journal ranges ``(after, through]`` a node holds: the claims that move catch-up cursors without streaming.

A catch-up cursor (cluster/catch_up.py) may move over a range of a peer's journal only when this node holds every
replicated event in it. Ranges arrive out of order (replies, claims riding on later calls) and mostly touch each
other (consecutive writes take consecutive seqs), so they are kept merged: a steady write load is one or two
intervals per peer, not one per write. docs/architecture/replication.md, "Catch-up".
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


def coalesce(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` sorted, empty ones dropped, overlapping and touching ones merged."""
    out: list[tuple[int, int]] = []
    for after, through in sorted(r for r in ranges if r[1] > r[0]):
        if out and after <= out[-1][1]:
            if through > out[-1][1]:
                out[-1] = (out[-1][0], through)
        else:
            out.append((after, through))
    return out


class RangeSet:
    """Disjoint, non-touching ranges ``(after, through]`` in order (two sorted lists: bisect finds neighbours)."""

    __slots__ = ("_after", "_through")

    def __init__(self) -> None:
        self._after: list[int] = []
        self._through: list[int] = []

    def __len__(self) -> int:
        return len(self._after)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(zip(self._after, self._through, strict=True)))

    def add(self, after: int, through: int) -> None:
        """Hold ``(after, through]`` too (merged with the ranges it overlaps or touches)."""
        if through <= after:
            return
        i = bisect_left(self._through, after)  # the first range ending at or after ``after``: touches or follows
        j = bisect_right(self._after, through)  # ranges from ``j`` start after ``through``: untouched
        if i < j:
            after, through = min(after, self._after[i]), max(through, self._through[j - 1])
        self._after[i:j] = [after]
        self._through[i:j] = [through]

    def join(self, cursor: int) -> int:
        """The cursor moved across every range that starts at or below it (those are dropped)."""
        k = 0
        while k < len(self._after) and self._after[k] <= cursor:
            cursor = max(cursor, self._through[k])
            k += 1
        if k:
            del self._after[:k], self._through[:k]
        return cursor

    def above(self, cursor: int, limit: int) -> list[tuple[int, int]]:
        """At most ``limit`` ranges (the lowest) of what lies above ``cursor``."""
        out: list[tuple[int, int]] = []
        for k in range(bisect_right(self._through, cursor), len(self._after)):
            if len(out) >= limit:
                break
            out.append((max(self._after[k], cursor), self._through[k]))
        return out

    def trim(self, limit: int) -> None:
        """Keep the ``limit`` lowest ranges (the ones the cursor reaches first); the rest is streamed instead."""
        del self._after[limit:], self._through[limit:]

    def clear(self) -> None:
        self._after.clear()
        self._through.clear()
