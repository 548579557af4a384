"""``/metrics`` in the Prometheus text format (prometheus_client).

Three sources, labelled by operation names and status codes only (never keys, bucket names or credentials):

- requests: counters and a latency histogram, updated by the app's sink per request (``RequestMetrics``, plain
  numbers written straight to the multi-process files: api/request_metrics.py);
- storage, volumes and dedup: read from the LMDB views at scrape time by ``EngineCollector`` (right in any
  process, nothing to keep in sync);
- the journal (fdatasync latency) and the sequencer (group-commit batches and their sizes): measured in
  ``s4.journal`` without a metrics library, and present only in the process that owns the journal.

- the cluster (S4_MODE=cluster): per peer, whether it is alive, when it was last seen and how far behind this node
  is on its journal, from the engine's ``ClusterStatus`` port (engine/ports.py; the heartbeat of cluster/node.py),
  and SWIM membership's counters and local health (``MembershipCounters``, where the cluster node runs).

One process (the default): one registry per process, and the journal numbers are read from ``engine.journal.stats``
and the sequencer's queue at scrape time.

Several processes (``S4_WORKERS`` > 1): the supervisor gives every worker ``PROMETHEUS_MULTIPROC_DIR``, a
directory wiped at start. Each worker writes its request metrics to its own files there and a scrape in any worker
sums all of them with ``MultiProcessCollector``. The supervisor owns the journal and publishes its numbers into the
same directory: ``enable_multiprocess(directory)`` then ``JournalMetrics(engine)`` (live, through the histograms'
listeners). A worker's engine has no journal, so its scrape reads those from the files like the request metrics.
The supervisor also runs the cluster's heartbeat and publishes the peer gauges there (``ClusterMetrics``, updated
after every heartbeat round).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from s4.engine import Engine
from s4.engine.ports import ClusterStatus
from s4.journal.groupcommit import FixedHistogram

from .journal_metrics import BATCH, BATCHES, COMMANDS, FSYNC
from .journal_metrics import JournalMetrics as JournalMetrics  # re-exported: the supervisor (tools/server.py) makes it
from .notify_metrics import NotifyCollector
from .request_metrics import LATENCY, REQUESTS, ProcessId, RequestMetrics
from .scrub_metrics import ScrubCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUESTS_TOTAL = REQUESTS[0] + "_total"
LATENCY_NAME = LATENCY[0]
FSYNC_DOC, BATCH_DOC, BATCHES_DOC, COMMANDS_DOC = FSYNC[1], BATCH[1], BATCHES[1], COMMANDS[1]
PEER_UP_DOC = "1 while SWIM holds the peer of this node's pool alive, else 0 (suspect, dead or not heard of yet)"
PEER_LAST_SEEN_DOC = ("When the peer last proved alive, in seconds since the epoch (0: never since this node "
                      "started); time() minus this is its silence")
PEER_LAG_DOC = ("Replication lag from the peer, in events: the highest journal seq it reported minus what this node "
                "has applied from it (until the replicated apply path exists: the seq it reports in Ping)")


def _use_cached_pid() -> None:
    """Swap prometheus_client's multi-process value class for one keyed by ``ProcessId`` (its documented
    ``process_identifier`` hook). Only before the first instrument exists: values already made keep the old class."""
    if getattr(values.ValueClass, "_multiprocess", False) and not getattr(values.ValueClass, "_s4_cached_pid", False):
        values.ValueClass = values.MultiProcessValue(process_identifier=ProcessId.get)
        values.ValueClass._s4_cached_pid = True  # type: ignore[attr-defined]


def multiprocess_enabled() -> bool:
    """True when metrics must aggregate across processes; refuses a directory set too late to take effect."""
    if not os.environ.get(MULTIPROC_ENV):
        return False
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it in the "
                           "environment before the process starts, or call enable_multiprocess() first")
    _use_cached_pid()
    return True


def enable_multiprocess(directory: str | Path) -> None:
    """Switch this process to multi-process metrics in ``directory`` (the supervisor, which imported
    prometheus_client before it knew the directory). Call it before creating any instrument in this process.

    prometheus_client picks its value store when it is imported (``values.ValueClass``) and reads it again each
    time an instrument is created, so re-running its own choice after setting the variable is enough.
    """
    os.environ[MULTIPROC_ENV] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()
    _use_cached_pid()


def batch_sizes(sequencer: Any) -> FixedHistogram | None:
    """The sequencer's batch-size histogram, if this process runs the sequencer (a remote one has none)."""
    found = getattr(sequencer, "batch_sizes", None)
    return found if isinstance(found, FixedHistogram) else None


def histogram_family(name: str, documentation: str, hist: FixedHistogram) -> HistogramMetricFamily:
    cumulative, total = hist.snapshot()
    buckets = [(floatToGoString(b), float(c)) for b, c in zip(hist.bounds, cumulative, strict=False)]
    buckets.append(("+Inf", float(cumulative[-1])))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


class EngineCollector(Collector):
    """Gauges read from the views at scrape time, plus this process's journal numbers when it owns the journal and
    they are not already published to the multi-process files."""

    def __init__(self, engine: Engine, *, journal_numbers: bool = True) -> None:
        self.engine = engine
        self.journal_numbers = journal_numbers

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
        yield GaugeMetricFamily("s4_damaged_blobs", "Blobs whose stored copy failed its checksums (reads of them "
                                "fail until the same bytes are stored again)", value=stats["damaged_blobs"])
        yield GaugeMetricFamily("s4_damaged_bytes", "Bytes of those damaged blobs", value=stats["damaged_bytes"])
        yield GaugeMetricFamily("s4_dedup_unique_blobs", "Distinct stored blobs", value=stats["unique_blobs"])
        yield GaugeMetricFamily("s4_dedup_references", "Blob references from versions and parts",
                                value=stats["blob_refs"])
        journal = getattr(self.engine, "journal", None)
        # Without the journal, the views' last applied seq: equal to the journal's once each batch commits.
        last_seq = journal.last_seq if journal is not None else self.engine.views.last_seq()
        yield GaugeMetricFamily("s4_journal_last_seq", "Sequence number of the last journaled event", value=last_seq)
        if journal is not None and self.journal_numbers:
            yield from self._journal_families(journal)

    def _journal_families(self, journal: Any) -> Iterator[Any]:
        sequencer = getattr(self.engine, "sequencer", None)
        batches, commands = getattr(sequencer, "stats", (0, 0))
        yield CounterMetricFamily("s4_group_commit_batches", BATCHES_DOC, value=batches)
        yield CounterMetricFamily("s4_group_commit_commands", COMMANDS_DOC, value=commands)
        sizes = batch_sizes(sequencer)
        if sizes is not None:
            yield histogram_family("s4_group_commit_batch_size", BATCH_DOC, sizes)
        stats = getattr(journal, "stats", None)
        if stats is not None:
            yield histogram_family("s4_journal_fsync_seconds", FSYNC_DOC, stats.fsync_seconds)

HINTS_PENDING_DOC = "Events kept for the peer (hinted handoff: it missed them) and not yet delivered"
HINTS_DROPPED_DOC = "Hints for the peer dropped undelivered (older than S4_HINT_TTL_HOURS, or hints off)"
HINTS_DELIVERED_DOC = "Hints the peer acknowledged"
#: Merkle anti-entropy per peer (cluster/anti_entropy.py): counter name suffix -> help; ``s4_cluster_anti_entropy_*``.
ANTI_ENTROPY_DOCS = {
    "exchanges": "Merkle anti-entropy exchanges this node completed with the peer",
    "differences": "Keys and buckets anti-entropy found different between this node and the peer",
    "keys_repaired": "Keys and buckets anti-entropy repaired (events shipped either way) with the peer",
    "bytes": "Bytes of events anti-entropy shipped between this node and the peer (either way)",
}
QUORUM_FAILURES_DOC = ("Requests this node answered 503 because fewer than S4_WRITE_QUORUM replicas acknowledged a "
                       "write or fewer than S4_READ_QUORUM answered a read")


#: SWIM membership (cluster/swim_node.py): counter name suffix -> help; each ``s4_cluster_swim_<name>``.
SWIM_DOCS = {
    "probes": "SWIM probes this node sent (one a protocol period)",
    "suspicions": "Members this node began to suspect (its direct and indirect probes of an alive member failed)",
    "refutations": "Times this node raised its own incarnation to refute a suspicion or death of itself",
    "foreign_dropped": "SWIM messages of another cluster (another S4_CLUSTER_NAME) dropped unread",
    "messages_lost": "SWIM messages this node could not deliver (refused, unreachable, timed out, too many in flight)",
}
SWIM_AWARENESS_DOC = ("SWIM local health of this node: 0 healthy; each step stretches its probe period and timeout "
                      "once more (Lifeguard)")


@runtime_checkable
class MembershipCounters(Protocol):
    """A cluster status that also counts SWIM's events (cluster/node.py ``ClusterNode``)."""

    def membership_counters(self) -> dict[str, int]: ...


def swim_families(cluster: ClusterStatus | None) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """SWIM's counters and local health, where membership runs (nothing elsewhere)."""
    if not isinstance(cluster, MembershipCounters):
        return
    counters = cluster.membership_counters()
    for name, doc in SWIM_DOCS.items():
        yield CounterMetricFamily(f"s4_cluster_swim_{name}", doc, value=float(counters.get(name, 0)))
    yield GaugeMetricFamily("s4_cluster_swim_awareness", SWIM_AWARENESS_DOC, value=float(counters.get("awareness", 0)))


def cluster_families(cluster: ClusterStatus | None) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The per-peer gauges, read from the port now (the process that runs the heartbeat)."""
    peers = cluster.peer_health() if cluster is not None else []
    if not peers:
        return
    up = GaugeMetricFamily("s4_cluster_peer_up", PEER_UP_DOC, labels=["peer"])
    seen = GaugeMetricFamily("s4_cluster_peer_last_seen_seconds", PEER_LAST_SEEN_DOC, labels=["peer"])
    lag = GaugeMetricFamily("s4_cluster_peer_journal_lag", PEER_LAG_DOC, labels=["peer"])
    pending = GaugeMetricFamily("s4_cluster_hints_pending", HINTS_PENDING_DOC, labels=["peer"])
    dropped = CounterMetricFamily("s4_cluster_hints_dropped", HINTS_DROPPED_DOC, labels=["peer"])
    delivered = CounterMetricFamily("s4_cluster_hints_delivered", HINTS_DELIVERED_DOC, labels=["peer"])
    ae = {name: CounterMetricFamily(f"s4_cluster_anti_entropy_{name}", doc, labels=["peer"])
          for name, doc in ANTI_ENTROPY_DOCS.items()}
    for p in peers:
        for name, family in ae.items():
            family.add_metric([p.peer], float(p.anti_entropy.get(name, 0)))
        up.add_metric([p.peer], 1.0 if p.up else 0.0)
        seen.add_metric([p.peer], p.last_seen_s or 0.0)
        lag.add_metric([p.peer], float(p.journal_lag))
        pending.add_metric([p.peer], float(p.hints_pending))
        dropped.add_metric([p.peer], float(p.hints_dropped))
        delivered.add_metric([p.peer], float(p.hints_delivered))
    families: list[GaugeMetricFamily | CounterMetricFamily] = [up, seen, lag, pending, dropped, delivered, *ae.values()]
    yield from families
    yield CounterMetricFamily("s4_cluster_quorum_failures", QUORUM_FAILURES_DOC,
                              value=float(cluster.quorum_failures()))  # type: ignore[union-attr]
    yield from swim_families(cluster)


class ClusterCollector(Collector):
    """One process: the peer gauges at scrape time, from ``engine.cluster`` (set by tools/server.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        yield from cluster_families(self.engine.cluster)


class ClusterMetrics:
    """Several processes: the supervisor, which runs the heartbeat, writes the peer gauges to the multi-process
    files (``update`` after every heartbeat round), so a scrape in any worker shows them."""

    def __init__(self, cluster: ClusterStatus, registry: CollectorRegistry | None = None) -> None:
        if registry is None and not multiprocess_enabled():
            raise RuntimeError(f"ClusterMetrics without a registry needs multi-process mode ({MULTIPROC_ENV})")
        self.cluster = cluster
        # "mostrecent": one process writes them; a scrape shows its latest value without a pid label
        self.up = Gauge("s4_cluster_peer_up", PEER_UP_DOC, ["peer"], registry=registry,
                        multiprocess_mode="mostrecent")
        self.last_seen = Gauge("s4_cluster_peer_last_seen_seconds", PEER_LAST_SEEN_DOC, ["peer"], registry=registry,
                               multiprocess_mode="mostrecent")
        self.lag = Gauge("s4_cluster_peer_journal_lag", PEER_LAG_DOC, ["peer"], registry=registry,
                         multiprocess_mode="mostrecent")
        self.hints_pending = Gauge("s4_cluster_hints_pending", HINTS_PENDING_DOC, ["peer"], registry=registry,
                                   multiprocess_mode="mostrecent")
        # counters: this process alone writes them, so each update adds what grew since the last one
        self.hints_dropped = Counter("s4_cluster_hints_dropped", HINTS_DROPPED_DOC, ["peer"], registry=registry)
        self.hints_delivered = Counter("s4_cluster_hints_delivered", HINTS_DELIVERED_DOC, ["peer"],
                                       registry=registry)
        self.quorum_failures = Counter("s4_cluster_quorum_failures", QUORUM_FAILURES_DOC, registry=registry)
        self.anti_entropy = {name: Counter(f"s4_cluster_anti_entropy_{name}", doc, ["peer"], registry=registry)
                             for name, doc in ANTI_ENTROPY_DOCS.items()}
        self.swim = {name: Counter(f"s4_cluster_swim_{name}", doc, registry=registry)
                     for name, doc in SWIM_DOCS.items()}
        self.awareness = Gauge("s4_cluster_swim_awareness", SWIM_AWARENESS_DOC, registry=registry,
                               multiprocess_mode="mostrecent")
        self._counted: dict[tuple[str, str], float] = {}
        self.update()

    def update(self) -> None:
        for p in self.cluster.peer_health():
            self.up.labels(p.peer).set(1.0 if p.up else 0.0)
            self.last_seen.labels(p.peer).set(p.last_seen_s or 0.0)
            self.lag.labels(p.peer).set(p.journal_lag)
            self.hints_pending.labels(p.peer).set(p.hints_pending)
            for name, counter, total in (("dropped", self.hints_dropped, p.hints_dropped),
                                         ("delivered", self.hints_delivered, p.hints_delivered),
                                         *((f"ae_{n}", c, p.anti_entropy.get(n, 0))
                                           for n, c in self.anti_entropy.items())):
                grown = total - self._counted.get((name, p.peer), 0.0)
                if grown > 0:
                    counter.labels(p.peer).inc(grown)
                    self._counted[(name, p.peer)] = total
        failures = self.cluster.quorum_failures()
        grown = failures - self._counted.get(("quorum", ""), 0.0)
        if grown > 0:
            self.quorum_failures.inc(grown)
            self._counted[("quorum", "")] = failures
        if isinstance(self.cluster, MembershipCounters):
            counters = self.cluster.membership_counters()
            self.awareness.set(counters.get("awareness", 0))
            for name, counter in self.swim.items():
                grown = counters.get(name, 0) - self._counted.get(("swim", name), 0.0)
                if grown > 0:
                    counter.inc(grown)
                    self._counted[("swim", name)] = counters.get(name, 0)


class Metrics:
    """The app's metrics: request instruments plus a registry to render; multi-process aware (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry(auto_describe=False)
        # In multi-process mode the request series go to files and the registry reads every process's files back;
        # registering them as well would count this process twice.
        self.requests = RequestMetrics(os.environ[MULTIPROC_ENV] if self.multiprocess else None)
        self._files = MultiProcessCollector(None, os.environ[MULTIPROC_ENV]) if self.multiprocess else None
        engine._request_metrics = self  # type: ignore[attr-defined]  # the console's charts read it (request_totals)
        self.journal_metrics: JournalMetrics | None = None
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # reads every process's files, this one's request series included
            if getattr(engine, "journal", None) is not None:  # this process owns the journal: publish it
                self.journal_metrics = JournalMetrics(engine)
        else:
            self.registry.register(self.requests)
        self.registry.register(EngineCollector(engine, journal_numbers=not self.multiprocess))
        self.registry.register(NotifyCollector(engine))  # read from disk at scrape time, in any process
        if not self.multiprocess:  # several processes: the supervisor writes them to the files (ClusterMetrics)
            self.registry.register(ClusterCollector(engine))
            self.registry.register(ScrubCollector(engine))  # (ScrubMetrics, api/scrub_metrics.py)

    def observe(self, operation: str, status: int, started: float, bytes_in: int, bytes_out: int) -> None:
        self.requests.observe(operation, status, time.perf_counter() - started, bytes_in, bytes_out)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def request_totals(self) -> dict[str, Any]:
        """The request series summed over operations, read from the collectors ``/metrics`` renders (every
        process's files with several): requests, errors (5xx), latency count, sum and cumulative buckets."""
        source = self._files if self._files is not None else self.requests
        out: dict[str, Any] = {"requests": 0.0, "errors": 0.0, "count": 0.0, "sum": 0.0, "buckets": {}}
        for family in source.collect():
            for sample in family.samples:
                if sample.name == REQUESTS_TOTAL:
                    out["requests"] += sample.value
                    if sample.labels.get("status", "").startswith("5"):
                        out["errors"] += sample.value
                elif sample.name == LATENCY_NAME + "_count":
                    out["count"] += sample.value
                elif sample.name == LATENCY_NAME + "_sum":
                    out["sum"] += sample.value
                elif sample.name == LATENCY_NAME + "_bucket":
                    le = sample.labels["le"]
                    out["buckets"][le] = out["buckets"].get(le, 0.0) + sample.value
        return out


def request_totals(engine: Engine) -> dict[str, Any] | None:
    """The S3 app's request totals (``Metrics.request_totals``), or None when metrics are off (S4_METRICS)."""
    metrics: Metrics | None = getattr(engine, "_request_metrics", None)
    return None if metrics is None else metrics.request_totals()
