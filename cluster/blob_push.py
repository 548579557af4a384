"""A large body's chunks copied to the peers while the client is still uploading it (``BlobPusher``).

Without it, a write over the inline bound (``ReplicationSettings.inline_bytes``) reaches a peer as an
``ApplyEvents`` with ``BLOB_TRANSFER_FETCH`` once the upload ended and the batch committed here: the peer then
fetches every chunk with ``GetBlob``, after the upload, in series with it (a 64 MiB PUT: the whole transfer to two
peers added to the client's wait). Here the ingest reports each new chunk as soon as it is stored
(engine/ports.py ``BlobPushPort``: the HTTP worker's ingest, through its channel in a multi-worker node) and this
node starts a ``PutBlob`` of it to every live peer at once. The peer verifies (size, SHA-256), writes, fsyncs and
stages the chunk (cluster/blob_server.py, the path of any ``PutBlob``). When the write's ``ApplyEvents`` is sent,
the replicator first waits for the pushes of its chunks to that peer still running (``settled``), so the peer's
apply finds them staged and fetches nothing.

Nothing is promised earlier: a pushed chunk is bytes no event names yet. The write is acknowledged only as before,
once W replicas journalled and fsynced its event with every chunk it references. A push that fails or is dropped
changes nothing but speed (the peer fetches that chunk with ``GetBlob``, as without pushes); a body whose upload
then fails leaves its pushed chunks staged on the peers as orphans (docs/architecture/replication.md, "The staged
table": garbage reclaimed by compaction, like a failed upload's chunks here). Bounded: at most ``MAX_QUEUED``
chunks waiting per peer (beyond, a chunk is not pushed) and ``LANES`` transfers per peer at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from s4.engine.model import BlobLocation
from s4.engine.volumes.store import VolumeStore

from .blob_client import send_blob
from .liveness import DEAD

log = logging.getLogger("s4.cluster.blob_push")

#: Chunks waiting to be pushed to one peer (4 MiB each: 1 GiB); a chunk beyond is left to GetBlob.
MAX_QUEUED = 256
#: PutBlobs to one peer at once (the ingest stores one chunk at a time; one transfer per peer, as GetBlob fetched).
LANES = 1

Sender = Callable[[str, BlobLocation], Any]  # awaitable: push one chunk to one peer


class BlobPusher:
    """The engine's ``BlobPushPort`` in a pool node: ``stored`` queues a chunk for every live peer."""

    def __init__(self, peers: Sequence[str], send: Sender, *, state: Callable[[str], str] = lambda _p: "alive",
                 max_queued: int = MAX_QUEUED, lanes: int = LANES) -> None:
        self.peers = tuple(peers)
        self._send, self._state = send, state
        self._max_queued, self._lanes = max_queued, lanes
        self._queues: dict[str, deque[tuple[BlobLocation, asyncio.Future[None]]]] = {p: deque() for p in self.peers}
        self._running: dict[str, int] = dict.fromkeys(self.peers, 0)
        #: (peer, sha256) -> the push of that chunk to that peer, queued or running (done: removed)
        self._pending: dict[tuple[str, bytes], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.pushed = 0  # chunks a peer stored or already held (counted for tests; not exported as metrics)
        self.failed = 0  # pushes that failed (the peer fetches those chunks with GetBlob)
        self.dropped = 0  # chunks not pushed: a peer's queue was full

    def stored(self, location: BlobLocation) -> None:
        """A new chunk of a body larger than the inline bound is durable-to-be in this node's volumes (on the event
        loop); never raises."""
        if self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
            for peer in self.peers:
                if self._state(peer) == DEAD or (peer, location.hash) in self._pending:
                    continue
                queue = self._queues[peer]
                if len(queue) >= self._max_queued:
                    self.dropped += 1
                    continue
                done: asyncio.Future[None] = loop.create_future()
                self._pending[(peer, location.hash)] = done
                queue.append((location, done))
                if self._running[peer] < self._lanes:
                    self._running[peer] += 1
                    task = loop.create_task(self._drain(peer), name=f"s4-blob-push-{peer}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except Exception:  # noqa: BLE001 - a push is only a head start: the peer fetches the chunk otherwise
            log.exception("starting the push of a chunk to the peers failed")

    async def settled(self, peer: str, digests: Iterable[bytes], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until no push of these chunks to ``peer`` is queued or running, whatever
        its outcome, so an ``ApplyEvents`` sent next finds them staged there rather than fetching them again."""
        waits = [f for d in digests if (f := self._pending.get((peer, d))) is not None]
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    async def stop(self) -> None:
        self._stopped = True
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue in self._queues.values():
            while queue:
                _, done = queue.popleft()
                if not done.done():
                    done.set_result(None)

    async def _drain(self, peer: str) -> None:
        queue = self._queues[peer]
        try:
            while queue:
                location, done = queue.popleft()
                try:
                    if self._state(peer) != DEAD:
                        await self._send(peer, location)
                        self.pushed += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the peer fetches it with GetBlob instead
                    self.failed += 1
                    log.info("pushing chunk %s to %s failed (%s); it fetches it when the write arrives",
                             location.hash.hex(), peer, exc)
                finally:
                    self._pending.pop((peer, location.hash), None)
                    if not done.done():
                        done.set_result(None)
        finally:
            self._running[peer] -= 1


def pool_sender(pool: Any, volumes: VolumeStore) -> Sender:
    """A ``Sender`` over the node's peer channels: ``PutBlob`` of the chunk read (block CRCs checked) where the
    ingest stored it."""

    async def send(peer: str, location: BlobLocation) -> None:
        await send_blob(pool, peer, location.hash, location.size, volumes.blob_reader(location))

    return send
