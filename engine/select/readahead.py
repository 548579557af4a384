"""pyarrow's streaming readers held near the consumer: a gate on the file they read, and that file."""

from __future__ import annotations

import atexit
import io
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .inputs import BLOCK_BYTES


class ReadAhead:
    """Keeps pyarrow's background read-ahead near what the query has consumed.

    pyarrow's streaming CSV/JSON readers fetch up to 32 blocks ahead on an I/O thread, whatever the consumer does:
    32 MiB of raw bytes plus their parsed arrays per stream, none of it under DuckDB's memory limit. Here the
    reading thread waits while it is ``AHEAD`` blocks in front of the batches handed on. Should the parser ever
    need more blocks than that for its next batch (the consumer waits and nothing arrives for ``STALL_S``), one
    more block is let through per stall, so the gate can slow a scan but never deadlock it.
    """

    AHEAD = 4
    STALL_S = 0.05

    def __init__(self, check: Callable[[], None]) -> None:
        self._check = check
        self._cond = threading.Condition()
        self._read = self._consumed = 0
        self._waiting_since: float | None = None
        self._closed = False
        _OPEN_GATES.add(self)

    def _may_read(self) -> bool:
        if self._closed or self._read - self._consumed < self.AHEAD:
            return True
        if self._waiting_since is not None and time.monotonic() - self._waiting_since > self.STALL_S:
            self._waiting_since = time.monotonic()
            return True
        return False

    def before_read(self) -> None:
        with self._cond:
            while not self._may_read():
                self._cond.wait(self.STALL_S)
                self._check()
            if self._closed:  # the query is over: stop pyarrow's reading thread instead of feeding it
                raise OSError("the query no longer reads this object")
            self._read += 1

    @contextmanager
    def consumer_waits(self, counts: bool = True) -> Iterator[None]:
        with self._cond:
            self._waiting_since = time.monotonic()
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting_since = None
                self._consumed += counts
                self._cond.notify_all()

    def close(self) -> None:
        """No more reads: a waiting reader thread (and any later read) gets an error and ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


_OPEN_GATES: weakref.WeakSet[ReadAhead] = weakref.WeakSet()


@atexit.register
def _close_open_gates() -> None:
    """A pyarrow thread still waiting at a gate when the interpreter finalizes aborts the process."""
    for gate in list(_OPEN_GATES):
        gate.close()


class ThrottledFile(io.BufferedReader):
    """What pyarrow reads: each ``read`` is one block, admitted by the ReadAhead."""

    def __init__(self, raw: io.RawIOBase, gate: ReadAhead) -> None:
        super().__init__(raw, BLOCK_BYTES)
        self.gate = gate

    def read(self, size: int | None = -1) -> bytes:
        self.gate.before_read()
        return super().read(size)


class PullStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
