"""Hinted handoff: events this node coordinated that a replica did not acknowledge, kept and delivered later.

The write path calls ``await hints.hint(peer, events)`` for a replica that failed or did not answer in time, and
acknowledges the client only after it returns: the hints are then fsynced in ``<data>/cluster/feed.lmdb``
(cluster/feed_store.py). A loop per peer delivers them while the peer is alive: the oldest first, in batches
bounded in events and bytes, with ``ApplyEvents(hinted_for=peer, blobs=BLOB_TRANSFER_FETCH)`` (the peer fetches the
blobs it lacks from this node), removing a batch only once the peer answered it without missing blobs. A failed
delivery backs off (doubling, jittered, capped); a peer coming back alive wakes its loop at once.

A hint older than S4_HINT_TTL_HOURS is dropped, and counted: after that, only catch-up (cluster/catch_up.py) brings
the event to the peer. ``S4_HINT_TTL_HOURS=0`` disables hints: ``hint`` stores nothing and counts the events as
dropped. Delivery is at least once (a crash after the peer applied a batch and before its removal delivers it
again); applying an event twice changes nothing (last-writer-wins by ``(hlc, origin)``).

Metrics per peer: ``s4_cluster_hints_pending``, ``s4_cluster_hints_dropped_total``,
``s4_cluster_hints_delivered_total`` (api/metrics.py, through ``ClusterNode.peer_health``).
docs/architecture/replication.md, "Hints".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from s4.engine.replica import referenced_hashes
from s4.journal.codec import decode_event, encode_event
from s4.journal.events import Event

from .catch_up import AppliedReporter, BatchLimits, EventsTransport, replicated
from .feed_store import FeedStore
from .wake import cancel_and_wait, wait_event
from .wire.s4cluster.v1 import ApplyEventsRequest, BlobTransfer

log = logging.getLogger("s4.cluster")


class HintDeliveryError(Exception):
    """A batch was not acknowledged (the call failed, or the peer lacks blobs); it stays queued."""


@dataclass(frozen=True, slots=True)
class HintSettings:
    batch: BatchLimits = BatchLimits(events=256)
    check_s: float = 1.0  # how often a loop looks at its queue and the peer's state without being woken
    backoff_s: float = 0.5  # first retry after a failed delivery; doubles up to backoff_max_s
    backoff_max_s: float = 30.0


class Hints:
    """Per-peer durable hint queues, their delivery loops and their counters."""

    def __init__(self, peers: Sequence[str], store: FeedStore, transport: EventsTransport,
                 liveness: AppliedReporter, ttl_hours: float, settings: HintSettings | None = None, *,
                 wall: Callable[[], float] = time.time, holds: Callable[[bytes], object | None] | None = None
                 ) -> None:
        self.peers = tuple(peers)
        self.store, self.transport, self.liveness = store, transport, liveness
        self.ttl_ms = int(ttl_hours * 3600 * 1000)
        self.settings = settings or HintSettings()
        self._wall = wall
        self.holds = holds  # this node's blob lookup (cluster/blob_server.py ``BlobService.holds``)
        self.dropped = {peer: 0 for peer in self.peers}
        self.delivered = {peer: 0 for peer in self.peers}
        self._wake = {peer: asyncio.Event() for peer in self.peers}
        self._locks = {peer: asyncio.Lock() for peer in self.peers}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    def pending(self, peer: str) -> int:
        return self.store.pending(peer)

    # --- the write path's API -----------------------------------------------------------------------------------

    async def hint(self, peer: str, events: Sequence[Event]) -> None:
        """Keep ``events`` for ``peer`` until delivered or expired; durable when this returns (FeedStoreFailed
        otherwise: the write must then not count this hint). Hints off: counted as dropped, nothing kept."""
        if peer not in self.dropped:
            raise KeyError(f"{peer!r} is not a peer of this node")
        logical = [e for e in events if replicated(e)]
        if not self.enabled:
            self.dropped[peer] += len(logical)
            return
        envelopes = [encode_event(e) for e in logical]
        now_ms = int(self._wall() * 1000)
        await self.store.run(lambda: self.store.add_hints(peer, now_ms, envelopes))
        self._wake[peer].set()

    # --- delivery -----------------------------------------------------------------------------------------------

    async def expire(self, peer: str) -> int:
        """Drop ``peer``'s hints older than the TTL (counted); how many."""
        before_ms = int(self._wall() * 1000) - self.ttl_ms
        if self.store.pending(peer) == 0:
            return 0
        n = await self.store.run(lambda: self.store.drop_older(peer, before_ms))
        if n:
            self.dropped[peer] += n
            log.warning("dropped %d hints for %s older than S4_HINT_TTL_HOURS (%.3g h): catch-up must bring them",
                        n, peer, self.ttl_ms / 3_600_000)
        return n

    async def deliver(self, peer: str) -> int:
        """Send ``peer`` its queued hints, oldest first, until the queue is empty; how many were acknowledged.
        Raises HintDeliveryError (or the transport's error) at the first batch not acknowledged."""
        limits, store = self.settings.batch, self.store
        total = 0
        async with self._locks[peer]:
            while True:
                await self.expire(peer)
                batch = await store.run(lambda: store.hints(peer, max_events=limits.events,
                                                            max_bytes=limits.bytes))
                if not batch:
                    return total
                gone = self._superseded(batch)
                if gone:  # superseded here since: what superseded them travels on its own (hint or catch-up)
                    await store.run(functools.partial(store.remove_hints, peer, [h.hint_id for h in gone]))
                    log.info("dropped %d hints for %s whose blobs this node released (superseded)", len(gone), peer)
                    continue
                request = ApplyEventsRequest(events=[h.envelope for h in batch], blobs=BlobTransfer.FETCH,
                                             hinted_for=peer)
                reply = await self.transport.apply_events(peer, request)
                if reply.missing_blobs:
                    raise HintDeliveryError(f"{peer} lacks {len(reply.missing_blobs)} blobs the hinted events "
                                            "reference and could not fetch them from this node")
                removed = await store.run(functools.partial(store.remove_hints, peer, [h.hint_id for h in batch]))
                self.delivered[peer] += removed
                total += removed

    def _superseded(self, batch: Sequence[Any]) -> list[Any]:
        """The hints whose event references a blob this node no longer holds: it released it because the version
        (or part) was superseded here, and the peer, which fetches blobs from this node, could never apply it."""
        if self.holds is None:
            return []
        return [h for h in batch
                if any(self.holds(d) is None for d in referenced_hashes(decode_event(bytes(h.envelope))))]

    def peer_alive(self, peer: str) -> None:
        """Liveness saw ``peer`` come back: deliver now."""
        wake = self._wake.get(peer)
        if wake is not None:
            wake.set()

    async def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._loop(peer), name=f"s4-hints-{peer}")
                       for peer in self.peers]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def _loop(self, peer: str) -> None:
        settings = self.settings
        delay = settings.backoff_s
        while True:
            wait = settings.check_s
            try:
                await self.expire(peer)
                if self.store.pending(peer) and self.liveness.state(peer) == "alive":
                    n = await self.deliver(peer)
                    if n:
                        log.info("delivered %d hints to %s", n, peer)
                    delay = settings.backoff_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - kept queued, retried with backoff
                log.warning("hint delivery to %s failed (%s: %s); retrying in %.1fs", peer, type(exc).__name__, exc,
                            delay)
                wait, delay = delay * random.uniform(0.8, 1.2), min(delay * 2, settings.backoff_max_s)
            await wait_event(self._wake[peer], wait)  # not asyncio.wait_for: cluster/wake.py
            self._wake[peer].clear()
