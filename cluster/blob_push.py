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

**One read and one encoding per piece for every peer** (``SharedPieces``). A chunk goes to two peers; each piece
of it was read (block CRCs checked) and encoded as a ``PutBlobChunk`` once per peer, and betterproto2's encoding
of a 1 MiB bytes field costs ~1 ms (cluster/pre_encoded.py). Now the first peer's push to reach a piece reads and
encodes it, and the message is kept (``Encoded``) until every other peer the chunk was queued for has sent it or
ended its push; a peer that finds it kept sends those bytes. The checks are the same: every piece left through the
verified reader, and every receiver hashes what it got (SHA-256 against the header) before it keeps it. Bounded:
at most ``SHARED_BYTES`` kept per node (beyond, a peer reads and encodes its own piece, as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from s4.engine import timeline
from s4.engine.model import BlobLocation
from s4.engine.volumes.store import VolumeStore

from .blob_client import EncodedPieces, send_blob
from .liveness import DEAD
from .pre_encoded import Encoded

log = logging.getLogger("s4.cluster.blob_push")

#: Chunks waiting to be pushed to one peer (4 MiB each: 1 GiB); a chunk beyond is left to GetBlob.
MAX_QUEUED = 256
#: PutBlobs to one peer at once (the ingest stores one chunk at a time; one transfer per peer, as GetBlob fetched).
LANES = 1
#: Encoded pieces kept for the peers still to send them, per node (the peers of a chunk move together: ~1 piece).
SHARED_BYTES = 32 * 1024 * 1024

Sender = Callable[[str, BlobLocation, "SharedPieces"], Any]  # awaitable: push one chunk to one peer


class SharedBudget:
    """Bytes of encoded pieces kept across all chunks (``SHARED_BYTES``)."""

    def __init__(self, limit: int = SHARED_BYTES) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class SharedPieces:
    """One chunk's pieces, produced (read and encoded) by the first peer's push to need each one and kept for the
    other peers it was queued for; on the event loop only."""

    def __init__(self, peers: Iterable[str], budget: SharedBudget) -> None:
        self._peers = set(peers)  # peers whose push of this chunk has not ended
        self._budget = budget
        #: piece offset -> (the piece's message once produced, peers still to take it, its size)
        self._kept: dict[int, tuple[asyncio.Future[Encoded | None], set[str], int]] = {}

    @property
    def kept(self) -> int:
        return len(self._kept)

    async def message(self, peer: str, lo: int, n: int, make: Callable[[], Awaitable[Encoded]]) -> Encoded:
        """The piece at ``lo`` for ``peer``: the kept one, or ``make()``'s (kept for the other peers if room)."""
        entry = self._kept.get(lo)
        if entry is not None:
            future, waiting, size = entry
            waiting.discard(peer)
            if not waiting:
                self._drop(lo)
            message = await asyncio.shield(future)
            if message is not None:
                return message
            return await make()  # its producer failed or was cancelled: read it here (its own error, if any)
        others = self._peers - {peer}
        future = asyncio.get_running_loop().create_future()
        keep = bool(others) and self._budget.take(n)
        if keep:
            self._kept[lo] = (future, others, n)
        try:
            message = await make()
        except BaseException:
            if keep:
                self._drop(lo)
            future.set_result(None)
            raise
        future.set_result(message)
        return message

    def leave(self, peer: str) -> None:
        """``peer``'s push of this chunk ended (sent, failed, skipped): it takes no more pieces."""
        self._peers.discard(peer)
        for lo, (_, waiting, _) in list(self._kept.items()):
            waiting.discard(peer)
            if not waiting:
                self._drop(lo)

    def _drop(self, lo: int) -> None:
        entry = self._kept.pop(lo, None)
        if entry is not None:
            self._budget.give(entry[2])


class BlobPusher:
    """The engine's ``BlobPushPort`` in a pool node: ``stored`` queues a chunk for every live peer."""

    def __init__(self, peers: Sequence[str], send: Sender, *, state: Callable[[str], str] = lambda _p: "alive",
                 max_queued: int = MAX_QUEUED, lanes: int = LANES, shared_bytes: int = SHARED_BYTES) -> None:
        self.peers = tuple(peers)
        self._send, self._state = send, state
        self._max_queued, self._lanes = max_queued, lanes
        self._queues: dict[str, deque[tuple[BlobLocation, SharedPieces, asyncio.Future[None]]]] = {
            p: deque() for p in self.peers}
        self._budget = SharedBudget(shared_bytes)
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
            targets = []
            for peer in self.peers:
                if self._state(peer) == DEAD or (peer, location.hash) in self._pending:
                    continue
                if len(self._queues[peer]) >= self._max_queued:
                    self.dropped += 1
                    continue
                targets.append(peer)
            shared = SharedPieces(targets, self._budget)
            for peer in targets:
                queue = self._queues[peer]
                done: asyncio.Future[None] = loop.create_future()
                self._pending[(peer, location.hash)] = done
                queue.append((location, shared, done))
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
        for peer, queue in self._queues.items():
            while queue:
                _, shared, done = queue.popleft()
                shared.leave(peer)
                if not done.done():
                    done.set_result(None)

    async def _drain(self, peer: str) -> None:
        queue = self._queues[peer]
        try:
            while queue:
                location, shared, done = queue.popleft()
                try:
                    if self._state(peer) != DEAD:
                        if timeline.enabled:
                            timeline.mark("push.begin", f"{peer} {location.hash[:4].hex()}")
                        await self._send(peer, location, shared)
                        self.pushed += 1
                        if timeline.enabled:
                            timeline.mark("push.acked", f"{peer} {location.hash[:4].hex()}")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the peer fetches it with GetBlob instead
                    self.failed += 1
                    log.info("pushing chunk %s to %s failed (%s); it fetches it when the write arrives",
                             location.hash.hex(), peer, exc)
                finally:
                    shared.leave(peer)
                    self._pending.pop((peer, location.hash), None)
                    if not done.done():
                        done.set_result(None)
        finally:
            self._running[peer] -= 1


class _PeerPieces:
    """``PieceMessages`` for one peer's push: the chunk's shared pieces, produced from this push's own reader."""

    def __init__(self, peer: str, shared: SharedPieces, own: EncodedPieces) -> None:
        self.peer, self.shared, self.own = peer, shared, own

    async def message(self, lo: int, n: int) -> Encoded:
        return await self.shared.message(self.peer, lo, n, lambda: self.own.message(lo, n))


def pool_sender(pool: Any, volumes: VolumeStore) -> Sender:
    """A ``Sender`` over the node's peer channels: ``PutBlob`` of the chunk read (block CRCs checked) where the
    ingest stored it, each piece read and encoded once for all the chunk's peers (``SharedPieces``)."""

    async def send(peer: str, location: BlobLocation, shared: SharedPieces) -> None:
        own = EncodedPieces(volumes.blob_reader(location))
        await send_blob(pool, peer, location.hash, location.size, _PeerPieces(peer, shared, own))

    return send
