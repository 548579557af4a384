"""The memory promised to running queries in this HTTP process, out of its share of S4_SELECT_NODE_MEMORY.

Each query reserves its memory (S4_SELECT_MAX_MEMORY, at most the whole share) before its query process starts and
gives it back once that process has exited; its process cannot use more (sandbox.py's RLIMIT_AS). A query that
does not fit beside the running ones is refused at once with S3 Select's ``Busy`` (503, Retry-After), which SDKs
retry; it never waits holding a connection. With S4_WORKERS > 1 every HTTP process has ``node / workers``
(tools/server.py), so the processes together never promise more than the node budget.
"""

from __future__ import annotations

import threading

from ..errors import ErrorCode, S3Error


class MemoryBudget:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # in-process test servers run several event loops in one process
        self.reserved = 0

    def reserve(self, nbytes: int, capacity: int) -> int:
        """Reserve ``nbytes`` out of ``capacity`` or raise Busy; returns what to release."""
        with self._lock:
            if self.reserved + nbytes > capacity:
                raise S3Error(ErrorCode.BUSY, f"The server's query memory ({capacity} bytes, this process's share "
                              f"of S4_SELECT_NODE_MEMORY) is in use by other queries; retry shortly.",
                              headers={"Retry-After": "1"})
            self.reserved += nbytes
            return nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.reserved = max(0, self.reserved - nbytes)


BUDGET = MemoryBudget()
