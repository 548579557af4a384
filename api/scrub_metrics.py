"""The scrubber's numbers on ``/metrics``: scan progress (``s4_scrub_*``) and healing from replicas
(``s4_cluster_scrub_*``), from the node's ``ScrubProgress`` (engine/jobs/scrub_progress.py).

One process: read at scrape time (``ScrubCollector``). Several processes: the supervisor runs the scrubber and the
healer, so it writes them to the multi-process files (``ScrubMetrics``, a listener of the progress: at every pass
start and end, every heal, and at most once a second while a pass runs), and a scrape in any worker reads them
there, like the peer gauges (api/metrics.py ``ClusterMetrics``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from s4.engine.jobs.scrub_progress import ScrubProgress
from s4.engine.jobs.service import for_engine

#: gauge name -> (help, how to read it from a snapshot)
GAUGES: dict[str, tuple[str, Any]] = {
    "s4_scrub_running": ("1 while a scrubber pass runs on this node", lambda s: 1.0 if s["running"] else 0.0),
    "s4_scrub_pass_blobs_scanned": ("Blobs the current (or last) scrubber pass has checked",
                                    lambda s: s["pass"]["blobs_scanned"]),
    "s4_scrub_pass_bytes_scanned": ("Bytes the current (or last) scrubber pass has checked",
                                    lambda s: s["pass"]["bytes_scanned"]),
    "s4_scrub_pass_bytes_total": ("Bytes the current (or last) scrubber pass checks in all (the blob index when "
                                  "it began)", lambda s: s["pass"]["bytes_total"]),
    "s4_scrub_pass_started_timestamp_seconds": ("When the current (or last) scrubber pass began (0: none yet)",
                                                lambda s: (s["pass"]["started_ms"] or 0) / 1000),
    "s4_scrub_last_full_pass_timestamp_seconds": ("When the last scrubber pass that checked every blob ended "
                                                  "(0: none since start)",
                                                  lambda s: (s["last_full_pass_ms"] or 0) / 1000),
}
#: counter name -> (help, key in ``totals``)
COUNTERS: dict[str, tuple[str, str]] = {
    "s4_scrub_blobs_scanned": ("Blobs the scrubber checked since start", "blobs_scanned"),
    "s4_scrub_bytes_scanned": ("Bytes the scrubber checked since start", "bytes_scanned"),
    "s4_scrub_bad_blobs_found": ("Blobs the scrubber found failing their checks (bad or missing) since start",
                                 "bad_blobs_found"),
    "s4_cluster_scrub_blobs_healed": ("Bad or missing blobs replaced by a verified copy from a replica (by the "
                                      "scrubber or a read)", "blobs_healed"),
    "s4_cluster_scrub_bytes_healed": ("Bytes of those healed blobs", "bytes_healed"),
    "s4_cluster_scrub_heal_failures": ("Heals that found no replica with a verified copy (the blob stays marked "
                                       "damaged)", "heal_failures"),
    "s4_cluster_scrub_read_failovers": ("Reads that met a bad or missing blob and were served from the copy "
                                        "fetched from a replica", "read_failovers"),
}


def scrub_families(snapshot: dict[str, Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    for name, (doc, read) in GAUGES.items():
        yield GaugeMetricFamily(name, doc, value=float(read(snapshot)))
    for name, (doc, key) in COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=float(snapshot["totals"][key]))


class ScrubCollector(Collector):
    """One process: the numbers at scrape time, where the scrubber runs (a worker has none of its own)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        progress = getattr(for_engine(self.engine), "scrub", None)  # a worker's RemoteJobs has none
        if isinstance(progress, ScrubProgress):
            yield from scrub_families(progress.snapshot())


class ScrubMetrics:
    """Several processes: the supervisor's progress written to the multi-process files (``update``)."""

    def __init__(self, progress: ScrubProgress, registry: CollectorRegistry | None = None) -> None:
        self.progress = progress
        self.gauges = {name: Gauge(name, doc, registry=registry, multiprocess_mode="mostrecent")
                       for name, (doc, _) in GAUGES.items()}
        self.counters = {name: Counter(name, doc, registry=registry) for name, (doc, _) in COUNTERS.items()}
        self._counted: dict[str, float] = {}
        self._lock = threading.Lock()  # called from the scrubber's thread and the event loop (heals)
        self.update()

    def update(self) -> None:
        with self._lock:
            self._update()

    def _update(self) -> None:
        snapshot = self.progress.snapshot()
        for name, (_, read) in GAUGES.items():
            self.gauges[name].set(float(read(snapshot)))
        for name, (_, key) in COUNTERS.items():
            total = float(snapshot["totals"][key])
            grown = total - self._counted.get(name, 0.0)
            if grown > 0:
                self.counters[name].inc(grown)
                self._counted[name] = total
