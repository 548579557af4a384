"""``/metrics`` in the Prometheus text format (prometheus_client), one registry per process.

Request counters and histograms are updated by the sink per request; storage, dedup and journal numbers are read
from the views and the sequencer at scrape time by a custom collector (nothing to keep in sync). Labels are
operation names and status codes only: never keys, bucket names or credentials.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from s4.engine import Engine

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class EngineCollector(Collector):
    """Gauges and counters read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        stats = self.engine.storage_stats()
        buckets = stats["buckets"]
        yield GaugeMetricFamily("s4_buckets", "Buckets", value=len(buckets))
        yield GaugeMetricFamily("s4_objects", "Objects (keys whose latest version is not a delete marker)",
                                value=sum(b.object_count for b in buckets))
        yield GaugeMetricFamily("s4_stored_bytes", "Bytes of all stored versions",
                                value=sum(b.bytes_stored for b in buckets))
        yield GaugeMetricFamily("s4_volumes", "Volume files", value=stats["volumes"])
        yield GaugeMetricFamily("s4_volume_live_bytes", "Referenced bytes in volumes", value=stats["live_bytes"])
        yield GaugeMetricFamily("s4_volume_dead_bytes", "Unreferenced bytes awaiting compaction",
                                value=stats["dead_bytes"])
        yield GaugeMetricFamily("s4_dedup_unique_blobs", "Distinct stored blobs", value=stats["unique_blobs"])
        yield GaugeMetricFamily("s4_dedup_references", "Blob references from versions and parts",
                                value=stats["blob_refs"])
        batches, commands = self.engine.sequencer.stats
        yield CounterMetricFamily("s4_group_commit_batches", "Group-committed sequencer batches", value=batches)
        yield CounterMetricFamily("s4_group_commit_commands", "Commands committed in those batches (the ratio is "
                                  "the mean batch size)", value=commands)
        yield GaugeMetricFamily("s4_journal_last_seq", "Sequence number of the last journaled event",
                                value=self.engine.journal.last_seq)


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("s4_requests", "Requests by operation and status", ["operation", "status"],
                                registry=self.registry)
        self.latency = Histogram("s4_request_duration_seconds", "Request latency by operation", ["operation"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes_in = Counter("s4_bytes_received", "Request body bytes", registry=self.registry)
        self.bytes_out = Counter("s4_bytes_sent", "Response body bytes", registry=self.registry)
        self.registry.register(EngineCollector(engine))

    def observe(self, operation: str, status: int, started: float, bytes_in: int, bytes_out: int) -> None:
        self.requests.labels(operation, str(status)).inc()
        self.latency.labels(operation).observe(time.perf_counter() - started)
        if bytes_in:
            self.bytes_in.inc(bytes_in)
        if bytes_out:
            self.bytes_out.inc(bytes_out)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
