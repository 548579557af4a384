"""SWIM's dissemination buffer: recent membership updates, piggybacked on every message a node sends.

Each update is sent about ``retransmit_mult * ceil(log10(n + 1))`` times (n: the members this node counts as not
dead, itself included), which carries it to every member in O(log n) protocol periods with high probability (the
infection-style argument of the SWIM paper, section 4.1). A message takes the least-sent updates first and, among
those, the newest, within a byte budget and a count, so one message stays small however much is going on. The buffer
holds at most one update per member (a newer one replaces it) and at most ``max_entries`` (the most-sent go first):
its memory is bounded whatever the traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from s4.cluster.swim_messages import Update


@dataclass
class _Entry:
    update: Update
    sent: int
    order: int  # insertion counter: higher is newer


class GossipBuffer:
    """Updates waiting to be piggybacked; pure data, no clock."""

    def __init__(self, *, retransmit_mult: int, max_bytes: int, max_count: int, max_entries: int) -> None:
        self.retransmit_mult, self.max_bytes, self.max_count = retransmit_mult, max_bytes, max_count
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, update: Update) -> None:
        """Queue ``update`` for dissemination, replacing any older update about the same member."""
        self._order += 1
        self._entries[update.node_id] = _Entry(update, 0, self._order)
        if len(self._entries) > self.max_entries:
            worst = max(self._entries.values(), key=lambda e: (e.sent, -e.order))
            del self._entries[worst.update.node_id]

    def limit(self, members: int) -> int:
        """How many times each update is sent when ``members`` members are not dead."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(members + 1)))

    def take(self, members: int, budget: int | None = None, count: int | None = None, skip: str = "") -> list[Update]:
        """Updates for one outgoing message: least sent first, then newest, within the byte and count budgets.

        Each taken update counts one transmission and leaves the buffer when it reached the limit. ``budget`` and
        ``count`` are what the caller left of the message's budgets; ``skip`` names a member whose update the
        caller already put in (the buddy record of the recipient).
        """
        budget = self.max_bytes if budget is None else budget
        count = self.max_count if count is None else count
        limit = self.limit(members)
        taken: list[Update] = []
        for entry in sorted(self._entries.values(), key=lambda e: (e.sent, -e.order)):
            if len(taken) >= count:
                break
            if entry.update.node_id == skip:
                continue
            size = entry.update.size()
            if size > budget:
                continue
            budget -= size
            taken.append(entry.update)
            entry.sent += 1
            if entry.sent >= limit:
                del self._entries[entry.update.node_id]
        return taken

    def pending(self) -> list[Update]:
        """What is queued now (for tests and the health document)."""
        return [e.update for e in self._entries.values()]
