"""Group commit: many concurrent submitters share one batch, one write and one fsync.

A single committer thread drains whatever is queued, hands the whole batch to ``process`` (which writes and
fsyncs once), then completes every submitter's future. While one batch is being made durable the next one
accumulates, so batch size grows with load and latency stays about one fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .errors import JournalClosedError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)
_STOP = object()


class GroupCommitQueue(Generic[T, R]):
    """Serialises items through ``process(batch) -> results`` on one thread, in submission order."""

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        name: str = "group-commit",
        max_batch: int = 4096,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._submit_lock = threading.Lock()  # close() and submit_sync() must not interleave
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit_sync(self, item: T) -> concurrent.futures.Future[R]:
        """Queue ``item``; the future completes once its batch is durable (or failed)."""
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._submit_lock:
            if self._closed:
                fut.set_exception(JournalClosedError("journal is closed"))
                return fut
            self._queue.put((item, fut))
        return fut

    async def submit(self, item: T) -> R:
        return await asyncio.wrap_future(self.submit_sync(item))

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def close(self) -> None:
        """Finish what is queued, then stop the committer thread."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            self._commit(batch)  # type: ignore[arg-type]
        # Anything that raced in after close() is refused, never silently dropped.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                return
            if left is not _STOP:
                left[1].set_exception(JournalClosedError("journal is closed"))  # type: ignore[index]

    def _commit(self, batch: list[tuple[T, concurrent.futures.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results: Sequence[R | BaseException] = self._process(items)
        except BaseException as exc:  # the whole batch failed: nobody is acknowledged
            log.exception("group commit batch of %d failed", len(items))
            results = [exc] * len(items)
        self.batches += 1
        self.items += len(items)
        for (_, fut), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
