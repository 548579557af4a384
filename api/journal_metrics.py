"""The journal owner's group-commit numbers, published as plain numbers straight into the multi-process files.

Every commit batch, on every node, observes the journal's fdatasync latency and the batch's size, and counts the
batch and its commands: two histograms and two counters, in the process that owns the journal (the supervisor).
Through prometheus_client's instruments that was ~7 us per batch (a lock, a fork check and layers of checks per
value, a linear bucket scan per observation); a pool pays it on all three nodes for every write. Here each
observation is a bisect and two or three 16-byte writes into this process's memory-mapped files under the keys
prometheus_client uses (``mmap_key``), as api/request_metrics.py does for the request series: the files hold the
same values at the same moment as the instruments' did, so a worker's scrape (``MultiProcessCollector``) is as
current as before, nothing is delayed or sampled.

Counters start from the totals so far, histograms from now (as the instruments did); ``close`` stops observing.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from s4.journal.groupcommit import BATCH_SIZE_BUCKETS, FixedHistogram
from s4.journal.writer import FSYNC_BUCKETS

from .request_metrics import ProcessId

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FSYNC = ("s4_journal_fsync_seconds", "Journal fdatasync latency (one per group-commit batch that journaled events)")
BATCH = ("s4_group_commit_batch_size",
         "Commands per group-commit batch (how many requests shared one journal write and fsync)")
BATCHES = ("s4_group_commit_batches", "Group-committed sequencer batches")
COMMANDS = ("s4_group_commit_commands", "Commands committed in those batches (the ratio is the mean batch size)")


class _Histogram:
    """One histogram's counts per bucket (not cumulative, as the files hold them) and sum, with their file keys."""

    __slots__ = ("name", "doc", "bounds", "counts", "total", "bucket_keys", "sum_key")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc, self.bounds = name, doc, tuple(float(b) for b in bounds)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self.counts = [0.0] * len(les)
        self.total = 0.0
        self.bucket_keys = tuple(mmap_key(name, name + "_bucket", ["le"], [le], doc) for le in les)
        self.sum_key = mmap_key(name, name + "_sum", [], [], doc)

    def family(self) -> HistogramMetricFamily:
        cumulative, running = [], 0.0
        for le, count in zip([*map(floatToGoString, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((le, running))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.total)


class JournalMetrics(Collector):
    """The journal-owning process's numbers, live: written at each observation into the files of the multi-process
    directory (``PROMETHEUS_MULTIPROC_DIR``: every worker's scrape sums them), or, given a ``registry``, collected
    from memory by that registry."""

    def __init__(self, engine: Any, registry: CollectorRegistry | None = None) -> None:
        journal = getattr(engine, "journal", None)
        if journal is None:
            raise ValueError("JournalMetrics belongs in the process that owns the journal")
        self._dir = os.environ.get(MULTIPROC_ENV) if registry is None else None
        if self._dir is None and registry is None:
            raise RuntimeError(f"JournalMetrics without a registry needs multi-process mode ({MULTIPROC_ENV})")
        sequencer = getattr(engine, "sequencer", None)
        batches, commands = getattr(sequencer, "stats", (0, 0))
        self._lock = threading.Lock()  # the committer thread and a ``commit_now`` caller may observe at once
        self.fsync = _Histogram(*FSYNC, FSYNC_BUCKETS)
        self.batch_size = _Histogram(*BATCH, BATCH_SIZE_BUCKETS)
        self.batches, self.commands = float(batches), float(commands)
        self._batches_key = mmap_key(BATCHES[0], BATCHES[0] + "_total", [], [], BATCHES[1])
        self._commands_key = mmap_key(COMMANDS[0], COMMANDS[0] + "_total", [], [], COMMANDS[1])
        self._pid = -1
        self._counters: MmapedDict | None = None
        self._histograms: MmapedDict | None = None
        self._open_files()
        self._subscriptions: list[tuple[FixedHistogram, Callable[[float], None]]] = [
            (journal.stats.fsync_seconds, self._on_fsync)]
        sizes = getattr(sequencer, "batch_sizes", None)
        if isinstance(sizes, FixedHistogram):
            self._subscriptions.append((sizes, self._on_batch))
        for hist, listener in self._subscriptions:
            hist.listeners.append(listener)
        if registry is not None:
            registry.register(self)

    def _on_fsync(self, seconds: float) -> None:
        with self._lock:
            if self._dir is not None and ProcessId.value != self._pid:
                self._forked()
            self._observe(self.fsync, seconds)

    def _on_batch(self, size: float) -> None:
        with self._lock:
            if self._dir is not None and ProcessId.value != self._pid:
                self._forked()
            self.batches += 1.0
            self.commands += size
            self._observe(self.batch_size, size)
            if self._counters is not None:
                self._counters.write_value(self._batches_key, self.batches, 0.0)
                self._counters.write_value(self._commands_key, self.commands, 0.0)

    def _observe(self, hist: _Histogram, value: float) -> None:
        """Count ``value`` (the lock held) and write the two values it changed."""
        slot = bisect.bisect_left(hist.bounds, value)  # bucket i counts values <= its bound; the last is +Inf
        hist.counts[slot] += 1.0
        hist.total += value
        if self._histograms is not None:
            self._histograms.write_value(hist.bucket_keys[slot], hist.counts[slot], 0.0)
            self._histograms.write_value(hist.sum_key, hist.total, 0.0)

    def collect(self) -> Iterator[Any]:
        """The numbers from memory (a registry without the multi-process files)."""
        with self._lock:
            yield CounterMetricFamily(BATCHES[0], BATCHES[1], value=self.batches)
            yield CounterMetricFamily(COMMANDS[0], COMMANDS[1], value=self.commands)
            yield self.batch_size.family()
            yield self.fsync.family()

    def close(self) -> None:
        """Stop observing (the values already written stay in the files)."""
        for hist, listener in self._subscriptions:
            if listener in hist.listeners:
                hist.listeners.remove(listener)
        self._subscriptions = []
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        for file in (self._counters, self._histograms):
            if file is not None:
                file.close()
        self._counters = self._histograms = None

    def _forked(self) -> None:
        """A forked child counts afresh, in files of its own (as api/request_metrics.py does)."""
        self.batches = self.commands = 0.0
        for hist in (self.fsync, self.batch_size):
            hist.counts, hist.total = [0.0] * len(hist.counts), 0.0
        self._open_files()

    def _open_files(self) -> None:
        """This process's files, every series written: the counters at their totals, the histograms' buckets."""
        if self._dir is None:
            return
        self._close_files()
        self._pid = ProcessId.value
        self._counters = MmapedDict(os.path.join(self._dir, f"counter_s4journal_{self._pid}.db"))
        self._histograms = MmapedDict(os.path.join(self._dir, f"histogram_s4journal_{self._pid}.db"))
        self._counters.write_value(self._batches_key, self.batches, 0.0)
        self._counters.write_value(self._commands_key, self.commands, 0.0)
        for hist in (self.fsync, self.batch_size):
            for key, count in zip(hist.bucket_keys, hist.counts, strict=True):
                self._histograms.write_value(key, count, 0.0)
            self._histograms.write_value(hist.sum_key, hist.total, 0.0)
