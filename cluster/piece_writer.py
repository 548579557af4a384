"""A received blob hashed and written on one worker thread while the event loop receives its next pieces
(``PieceWriter``).

``BlobService`` (cluster/blob_server.py) receives a blob piece by piece (1 MiB each from a peer) and must hash every
byte (SHA-256, checked against the header before the record counts) and write it with its block CRCs. Each piece used
to make its own trip to a worker thread and back (``anyio.to_thread.run_sync``: a cancel scope, a queue, a lock
hand-off and a wake-up of the loop, ~a third of a replica's event-loop CPU while it received a 64 MiB PUT's chunks),
and the loop waited for it before reading the next piece. Here one thread call serves the whole blob: the loop puts
each piece on a queue and goes on receiving; the thread takes them in order. The loop waits only when more than
``AHEAD_BYTES`` are queued (memory stays bounded whatever the blob's size) and, at the end, for the thread to have
taken everything. The checks are the same, on the same bytes, in the same order: the caller reads the digest only
after ``close`` returned, and a record is finished (given its header) only by the caller, after that.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import anyio.to_thread

from ..engine.volumes.pending import PendingRecord

#: Bytes received but not yet hashed and written, per blob, before the loop waits for the thread.
AHEAD_BYTES = 4 * 1024 * 1024



class PieceWriter:
    """Feeds one ``PendingRecord`` and its running hash from a worker thread. ``start``, ``put`` each piece, then
    ``close`` (always: it also stops the thread after a failure or a cancellation, before the record may be
    aborted)."""

    def __init__(self, record: PendingRecord, hasher: Any, ahead_bytes: int = AHEAD_BYTES) -> None:
        self.record, self.hasher, self._ahead = record, hasher, ahead_bytes
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: no more pieces
        self._lock = threading.Lock()
        self._queued = 0  # bytes put and not yet written (under _lock)
        self._waiter: asyncio.Future[None] | None = None  # the loop waiting for room (under _lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.queued_total = 0  # bytes put so far (on the loop: the record's own count moves on the thread)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(anyio.to_thread.run_sync(self._run))

    async def put(self, piece: bytes) -> None:
        """Queue ``piece`` (non-empty); waits while more than ``AHEAD_BYTES`` are queued. Raises what the thread
        raised (a failed write) as soon as it is known."""
        assert self._task is not None and self._loop is not None
        self._raise_if_failed()
        if not piece:
            return
        self.queued_total += len(piece)
        waiter = None
        with self._lock:
            self._queued += len(piece)
            if self._queued > self._ahead:
                waiter = self._waiter = self._loop.create_future()
        self._queue.put(piece)
        if waiter is not None:
            await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
            self._raise_if_failed()

    async def close(self) -> None:
        """No more pieces: wait until the thread wrote every piece put (or stopped on an error, raised here). Waits
        for the thread even when cancelled meanwhile (then re-raises the cancellation): the caller aborts the record
        next, which must not happen under a write still running."""
        assert self._task is not None
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        cancelled = False
        while not self._task.done():
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        self._task.result()

    def _raise_if_failed(self) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # an error of the thread; a thread that ended early without one is a bug
            raise RuntimeError("the piece writer ended before its pieces were closed")

    def _run(self) -> None:
        """The thread: hash and write each piece in order until the end marker; on an error, drop the rest."""
        while (piece := self._queue.get()) is not None:
            self.hasher.update(piece)
            self.record.write(piece)
            with self._lock:
                self._queued -= len(piece)
                waiter, self._waiter = self._waiter, None
            if waiter is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
