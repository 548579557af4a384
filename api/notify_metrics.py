"""Bucket notification gauges on ``/metrics``, read at scrape time from the delivery state on disk
(engine/notify/store.py), so every process (a worker or the supervisor) shows the same numbers:

- ``s4_notify_parked_messages{target}``: messages parked after S4_NOTIFY_MAX_ATTEMPTS failed tries;
- ``s4_notify_retrying_messages{target}``: parked messages handed back for one more try;
- ``s4_notify_pending_events{target}``: journal events after the target's cursor (not yet handled: a target that
  is down makes this grow).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from s4.engine.notify.store import PARKED, RETRY, NotifyStore


class NotifyCollector(Collector):
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        store = NotifyStore(self.engine.options.data_dir)
        targets = store.targets()
        if not targets:
            return
        parked = GaugeMetricFamily("s4_notify_parked_messages", "Notification messages parked after their last "
                                   "failed try (admin API: GET /api/admin/notify/parked)", labels=["target"])
        retrying = GaugeMetricFamily("s4_notify_retrying_messages", "Parked notification messages handed back for "
                                     "one more try", labels=["target"])
        pending = GaugeMetricFamily("s4_notify_pending_events", "Journal events after the target's delivery cursor",
                                    labels=["target"])
        last = self.engine.views.last_seq()
        for target in targets:
            parked.add_metric([target], float(store.count(target, PARKED)))
            retrying.add_metric([target], float(store.count(target, RETRY)))
            cursor = store.cursor(target)
            pending.add_metric([target], float(max(0, last - cursor)) if cursor is not None else 0.0)
        yield parked
        yield retrying
        yield pending
