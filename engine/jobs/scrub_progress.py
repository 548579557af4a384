"""The scrubber's running numbers: progress of the current pass and, in a pool, the blobs healed from replicas.

One ``ScrubProgress`` per node (``Jobs.scrub``), in the process that runs the scrubber (the single process or the
supervisor). Written by the scrubber's thread (``run_scrub``) and by the healer on the event loop (cluster/
scrub_heal.py: scrubber heals and read failovers), read by ``Jobs.scrub_status()`` (the dict
``GET /api/admin/cluster/repair-status`` shows), the metrics (api/scrub_metrics.py) and the tests. Thread-safe: a
lock around a few integers. ``listeners`` are called (outside the lock, at most every ``publish_every_s`` while a
pass runs, and at every pass start and end and every heal) so the supervisor can publish the numbers to the
multi-process metric files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Counters that only grow, since this process started (``totals`` in the status).
TOTALS = ("passes_started", "passes_completed", "blobs_scanned", "bytes_scanned", "bad_blobs_found",
          "blobs_healed", "bytes_healed", "heal_failures", "read_failovers")


class ScrubProgress:
    """Scan progress (this pass, the last full pass) and heal counts; ``snapshot()`` is the status dict."""

    def __init__(self, clock: Callable[[], float] = time.time, publish_every_s: float = 1.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.publish_every_s = publish_every_s
        self.listeners: list[Callable[[], None]] = []
        self._published = 0.0
        self.totals = dict.fromkeys(TOTALS, 0)
        self.running = False
        self.pass_started_ms: int | None = None
        self.pass_ended_ms: int | None = None
        self.pass_blobs = 0
        self.pass_bytes = 0
        self.pass_total_bytes = 0  # the blob index's bytes when the pass began (what it will scan)
        self.pass_throttled = False
        self.last_full_pass_ms: int | None = None  # end of the last pass that scanned everything (not interrupted)
        self.last_heal: dict[str, Any] | None = None
        self.last_heal_failure: dict[str, Any] | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def begin_pass(self, total_bytes: int, throttled: bool) -> None:
        with self._lock:
            self.running, self.pass_throttled = True, throttled
            self.pass_started_ms, self.pass_ended_ms = self._now_ms(), None
            self.pass_blobs = self.pass_bytes = 0
            self.pass_total_bytes = total_bytes
            self.totals["passes_started"] += 1
        self._publish(force=True)

    def scanned(self, size: int) -> None:
        with self._lock:
            self.pass_blobs += 1
            self.pass_bytes += size
            self.totals["blobs_scanned"] += 1
            self.totals["bytes_scanned"] += size
        self._publish()

    def found_bad(self) -> None:
        with self._lock:
            self.totals["bad_blobs_found"] += 1
        self._publish(force=True)

    def end_pass(self, complete: bool) -> None:
        with self._lock:
            self.running = False
            self.pass_ended_ms = self._now_ms()
            if complete:
                self.totals["passes_completed"] += 1
                self.last_full_pass_ms = self.pass_ended_ms
        self._publish(force=True)

    def healed(self, digest: bytes, size: int, peer: str, cause: str) -> None:
        """A bad or missing local copy was replaced by a verified one from ``peer`` (``cause``: scrub or read)."""
        with self._lock:
            self.totals["blobs_healed"] += 1
            self.totals["bytes_healed"] += size
            if cause == "read":
                self.totals["read_failovers"] += 1
            self.last_heal = {"hash": digest.hex(), "size": size, "peer": peer, "cause": cause, "at_ms": self._now_ms()}
        self._publish(force=True)

    def heal_failed(self, digest: bytes, why: str, cause: str) -> None:
        with self._lock:
            self.totals["heal_failures"] += 1
            self.last_heal_failure = {"hash": digest.hex(), "error": why[:500], "cause": cause,
                                      "at_ms": self._now_ms()}
        self._publish(force=True)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"running": self.running, "throttled": self.pass_throttled,
                    "pass": {"started_ms": self.pass_started_ms, "ended_ms": self.pass_ended_ms,
                             "blobs_scanned": self.pass_blobs, "bytes_scanned": self.pass_bytes,
                             "bytes_total": self.pass_total_bytes},
                    "last_full_pass_ms": self.last_full_pass_ms, "totals": dict(self.totals),
                    "last_heal": self.last_heal, "last_heal_failure": self.last_heal_failure}

    def _publish(self, force: bool = False) -> None:
        if not self.listeners:
            return
        now = time.monotonic()
        if not force and now - self._published < self.publish_every_s:
            return
        self._published = now
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - metrics must never stop a scan or a heal
                log.exception("publishing the scrub numbers failed")
