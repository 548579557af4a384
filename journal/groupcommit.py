"""Group commit: many concurrent submitters share one batch, one write and one fsync.

A single committer thread drains whatever is queued, hands the whole batch to ``process`` (which writes and
fsyncs once), then completes every submitter's future. While one batch is being made durable the next one
accumulates, so batch size grows with load and latency stays about one fsync.

Each batch's size is recorded in ``batch_sizes`` (a ``FixedHistogram``: fixed buckets, no dependencies) so an
exporter such as ``s4.api.metrics`` can publish it without this package importing a metrics library.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import itertools
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
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class FixedHistogram:
    """Counts of observations per fixed upper bound, plus their sum: what a Prometheus histogram needs.

    Recorded on a commit thread and read at scrape time, so it must be cheap and consistent (one short lock).
    ``listeners`` are called with every observation after it is counted; a process that publishes live metrics
    (e.g. into prometheus_client's multi-process files) subscribes there. A failing listener is logged, never
    raised into the commit path.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        self.listeners: list[Callable[[float], None]] = []

    def observe(self, value: float) -> None:
        slot = bisect.bisect_left(self.bounds, value)  # bucket i holds values <= bounds[i]
        with self._lock:
            self._counts[slot] += 1
            self._sum += value
        for listener in list(self.listeners):
            try:
                listener(value)
            except Exception:  # noqa: BLE001 - metrics must never fail a commit
                log.exception("histogram listener failed")

    def snapshot(self) -> tuple[list[int], float]:
        """(cumulative counts per bound then +Inf, sum); the last count is the total."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        return list(itertools.accumulate(counts)), total


class GroupCommitQueue(Generic[T, R]):
    """Serialises items through ``process(batch) -> results`` on one thread, in submission order.

    A caller that gathers batches itself (the multi-process sequencer reads its workers' commands on its event
    loop) runs them with ``commit_now`` on its own thread: serialised with the committer thread's batches by one
    lock and counted in the same statistics.
    """

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
        self._commit_lock = threading.Lock()  # one batch at a time, whichever thread runs it
        self.batches = 0
        self.items = 0
        self.batch_sizes = FixedHistogram(BATCH_SIZE_BUCKETS)
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

    def commit_now(self, items: list[T]) -> Sequence[R | BaseException]:
        """Process ``items`` as one batch on the calling thread; one result (or the error) per item."""
        if self._closed:
            return [JournalClosedError("journal is closed")] * len(items)
        return self._run_batch(items)

    def _run_batch(self, items: list[T], *, observe: bool = True) -> Sequence[R | BaseException]:
        with self._commit_lock:
            try:
                results: Sequence[R | BaseException] = self._process(items)
            except BaseException as exc:  # the whole batch failed: nobody is acknowledged
                log.exception("group commit batch of %d failed", len(items))
                results = [exc] * len(items)
            self.batches += 1
            self.items += len(items)
        if observe:
            self.batch_sizes.observe(len(items))
        return results

    def _commit(self, batch: list[tuple[T, concurrent.futures.Future[R]]]) -> None:
        results = self._run_batch([item for item, _ in batch], observe=False)
        for (_, fut), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        # After the answers: a waiter's thread wakes while the histogram (and its listeners: prometheus'
        # multi-process files, several µs) is recorded, instead of after it.
        self.batch_sizes.observe(len(batch))
