"""The per-request metrics, kept as plain numbers: observing a request is a few additions, plus (with several
processes) a handful of 16-byte writes into a memory-mapped file.

The series are ``s4_requests_total{operation,status}``, ``s4_request_duration_seconds{operation}`` and
``s4_bytes_received_total`` / ``s4_bytes_sent_total``. Through prometheus_client's instruments they cost ~3.4 us
per request in isolation (``Counter.inc`` ~0.8 us, ``Histogram.observe`` ~1.7 us: layers of checks, a lock and a
fork check per value); here ~1.3 us. In a busy worker the whole metrics path was ~13 us of a 4 KiB GET's ~135 us of
CPU (A/B with metrics off) and this takes ~5 us of it off.

- One process: ``collect`` renders the numbers (this is a registry Collector).
- Several (``multiprocess_dir`` set): every change is also written at once into this process's own files in that
  directory, in prometheus_client's format and under its keys (``MmapedDict``, ``mmap_key``), so
  ``MultiProcessCollector`` in any process sums them with everything else, exactly as it summed the instruments'
  files: a response is never sent before its request is counted. The collector reads only the metric type from a
  file name (``counter_...``, ``histogram_...``), so these files sit beside the instruments' own.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

REQUESTS = ("s4_requests", "Requests by operation and status", ("operation", "status"))
LATENCY = ("s4_request_duration_seconds", "Request latency by operation", ("operation",))
BYTES_IN = ("s4_bytes_received", "Request body bytes")
BYTES_OUT = ("s4_bytes_sent", "Response body bytes")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = tuple(floatToGoString(b) for b in LATENCY_BUCKETS) + ("+Inf",)


class ProcessId:
    """This process's id without a system call per use (``os.getpid`` is one); refreshed in a forked child."""

    value = os.getpid()

    @classmethod
    def refresh(cls) -> None:
        cls.value = os.getpid()

    @classmethod
    def get(cls) -> int:
        return cls.value


os.register_at_fork(after_in_child=ProcessId.refresh)


@dataclass(slots=True)
class _Series:
    """One value and, with several processes, its key in this process's file."""

    value: float = 0.0
    key: str = ""


@dataclass(slots=True)
class _Latency:
    """One operation's histogram: observations per bucket (not cumulative, as the files hold them), and the sum."""

    counts: list[float] = field(default_factory=lambda: [0.0] * len(_LE))
    total: float = 0.0
    bucket_keys: tuple[str, ...] = ()
    sum_key: str = ""


class RequestMetrics(Collector):
    """The request series of one process; ``observe`` is called once per request on the event loop."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._dir = multiprocess_dir
        self._requests: dict[tuple[str, int], _Series] = {}
        self._latency: dict[str, _Latency] = {}
        self._bytes_in = _Series(key=self._key(BYTES_IN[0], "_total", (), (), BYTES_IN[1]))
        self._bytes_out = _Series(key=self._key(BYTES_OUT[0], "_total", (), (), BYTES_OUT[1]))
        self._pid = -1
        self._counters: MmapedDict | None = None
        self._histograms: MmapedDict | None = None
        self._open_files()

    def observe(self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        if self._dir is not None and ProcessId.value != self._pid:  # a forked child counts in files of its own
            self._open_files()
        counters, histograms = self._counters, self._histograms
        series = self._requests.get((operation, status)) or self._new_request_series(operation, status)
        series.value += 1.0
        latency = self._latency.get(operation) or self._new_latency(operation)
        slot = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # bucket i counts values <= its bound; last is +Inf
        latency.counts[slot] += 1.0
        latency.total += seconds
        if counters is not None and histograms is not None:
            counters.write_value(series.key, series.value, 0.0)
            histograms.write_value(latency.bucket_keys[slot], latency.counts[slot], 0.0)
            histograms.write_value(latency.sum_key, latency.total, 0.0)
        if bytes_in:
            self._bytes_in.value += bytes_in
            if counters is not None:
                counters.write_value(self._bytes_in.key, self._bytes_in.value, 0.0)
        if bytes_out:
            self._bytes_out.value += bytes_out
            if counters is not None:
                counters.write_value(self._bytes_out.key, self._bytes_out.value, 0.0)

    def collect(self) -> Iterator[Any]:
        """The series as this process counted them (for one process; with several, the files are read instead)."""
        requests = CounterMetricFamily(REQUESTS[0], REQUESTS[1], labels=REQUESTS[2])
        for (operation, status), series in sorted(self._requests.items()):
            requests.add_metric([operation, str(status)], series.value)
        yield requests
        latency = HistogramMetricFamily(LATENCY[0], LATENCY[1], labels=LATENCY[2])
        for operation, hist in sorted(self._latency.items()):
            cumulative, running = [], 0.0
            for le, count in zip(_LE, hist.counts, strict=True):
                running += count
                cumulative.append((le, running))
            latency.add_metric([operation], cumulative, hist.total)
        yield latency
        yield CounterMetricFamily(BYTES_IN[0], BYTES_IN[1], value=self._bytes_in.value)
        yield CounterMetricFamily(BYTES_OUT[0], BYTES_OUT[1], value=self._bytes_out.value)

    # -- internals ------------------------------------------------------------------------------------------------
    def _key(self, metric: str, suffix: str, labelnames: tuple[str, ...], labelvalues: tuple[str, ...],
             help_text: str) -> str:
        if self._dir is None:
            return ""
        return mmap_key(metric, metric + suffix, list(labelnames), list(labelvalues), help_text)

    def _open_files(self) -> None:
        """This process's files (named by its pid, as prometheus_client names its own), every known series written
        from zero: after a fork the child's counts start afresh, like the instruments' do."""
        if self._dir is None:
            return
        self._pid = ProcessId.value
        self._counters = MmapedDict(os.path.join(self._dir, f"counter_s4requests_{self._pid}.db"))
        self._histograms = MmapedDict(os.path.join(self._dir, f"histogram_s4requests_{self._pid}.db"))
        for series in (self._bytes_in, self._bytes_out, *self._requests.values()):
            series.value = 0.0
            self._counters.write_value(series.key, 0.0, 0.0)
        for hist in self._latency.values():
            hist.counts, hist.total = [0.0] * len(_LE), 0.0
            self._write_latency(hist)

    def _new_request_series(self, operation: str, status: int) -> _Series:
        series = _Series(key=self._key(REQUESTS[0], "_total", REQUESTS[2], (operation, str(status)), REQUESTS[1]))
        self._requests[(operation, status)] = series
        return series

    def _new_latency(self, operation: str) -> _Latency:
        hist = _Latency(
            bucket_keys=tuple(self._key(LATENCY[0], "_bucket", (*LATENCY[2], "le"), (operation, le), LATENCY[1])
                              for le in _LE),
            sum_key=self._key(LATENCY[0], "_sum", LATENCY[2], (operation,), LATENCY[1]))
        self._latency[operation] = hist
        if self._histograms is not None:
            self._write_latency(hist)  # every bucket present from the start, as an instrument's child has them
        return hist

    def _write_latency(self, hist: _Latency) -> None:
        assert self._histograms is not None
        for key, count in zip(hist.bucket_keys, hist.counts, strict=True):
            self._histograms.write_value(key, count, 0.0)
        self._histograms.write_value(hist.sum_key, hist.total, 0.0)
