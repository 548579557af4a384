"""Concurrent replicated writes to one peer share one ``ApplyEvents`` call: the write path's client transport.

Every gRPC call costs about 1 ms of CPU counting both ends (grpclib and h2 in Python), and a node taking 16
concurrent writes made 16 ``ApplyEvents`` calls to each peer, each journalled and fsynced on its own there.
``CoalescingTransport`` wraps an ``EventsTransport`` (cluster/catch_up.py): per peer at most ``in_flight`` calls
run at once; a request arriving while they do waits in the peer's queue, and when a call returns, everything queued
(bounded: ``CoalesceLimits``) goes in ONE call. There is no timer: a write arriving at an idle peer is sent at
once, so a lone writer (c=1) pays nothing, and batches form exactly when calls overlap.

Only the replicator's small writes are coalesced (``BLOB_TRANSFER_INLINE``, no ``hinted_for``); large writes
(``FETCH``: the peer fetches megabytes from this node) and hint deliveries go straight to the wrapped transport, so
a 64 MiB write never holds small ones back.

Each waiter gets the outcome of its own events:

- the batch call fails (error, timeout): every write in it sees that failure (the replicator hints each, as for
  a call of its own);
- the reply names ``missing_blobs`` (the receiver applied nothing, cluster/catch_up.py): the writes referencing
  those blobs are answered with their own missing hashes, and the others are sent again at the head of the queue
  (each round drops at least one write, so this ends);
- otherwise every write is answered with the batch's reply (its counts are the batch's), carrying only the
  journal range of its own events: the call names each write's events as one part (``parts``) and the receiver
  answers a range per part, so a write's range never spans another's (cluster/replicator.py claims a write's
  range only once that write is durable on this node; a write sent before its fsync may yet be cut).

Deadlines stay per write: a waiter stops waiting at its own deadline (``TimeoutError``, as a call of its own
would) and is dropped from the queue if not sent yet; a batch call's deadline is the latest of its writes'.
docs/architecture/replication.md, "Coalesced ApplyEvents".
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from s4.engine.replica import referenced_hashes
from s4.journal.codec import decode_event

from .catch_up import EventsTransport
from .wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest, BlobTransfer, CatchUpBatch, CatchUpRequest

log = logging.getLogger("s4.cluster")


@dataclass(frozen=True, slots=True)
class CoalesceLimits:
    """One coalesced call carries at most ``events`` events and ``bytes`` of envelopes plus inline blob data (a
    single write larger than that still goes, alone); at most ``in_flight`` calls per peer run at once."""

    events: int = 512
    bytes: int = 4 * 1024 * 1024
    in_flight: int = 1


@dataclass(eq=False, slots=True)
class _Waiter:
    request: ApplyEventsRequest
    deadline: float | None  # loop time
    future: asyncio.Future[ApplyEventsReply]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(e) for e in self.request.events) + sum(len(b.data) for b in self.request.inline_blobs)

    @property
    def parts(self) -> list[int]:
        """The events of each write this waiter's request holds (one, unless it is itself coalesced)."""
        return list(self.request.parts) or [len(self.request.events)]

    def referenced(self) -> set[bytes]:
        """The blobs its events reference (decoded only when a reply names missing blobs: rare)."""
        return {d for e in self.request.events for d in referenced_hashes(decode_event(bytes(e)))}


class CoalescingTransport:
    """``EventsTransport`` that coalesces concurrent small ``ApplyEvents`` per peer (module docstring)."""

    def __init__(self, inner: EventsTransport, limits: CoalesceLimits | None = None) -> None:
        self.inner = inner
        self.limits = limits or CoalesceLimits()
        if self.limits.in_flight < 1 or self.limits.events < 1:
            raise ValueError("CoalesceLimits: in_flight and events must be at least 1")
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        self._running: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # coalesced calls made (for tests and metrics)
        self.coalesced = 0  # writes that shared a call with an earlier one

    def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        return self.inner.catch_up(peer, request)

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        if request.hinted_for or request.blobs != BlobTransfer.INLINE:
            return await self.inner.apply_events(peer, request, timeout=timeout)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(request, None if timeout is None else loop.time() + timeout, loop.create_future())
        self._queues.setdefault(peer, collections.deque()).append(waiter)
        self._kick(peer)
        try:
            async with asyncio.timeout(timeout) as limit:
                return await waiter.future  # cancelled with it: the sender skips or ignores this write
        except TimeoutError:
            if limit.expired():
                raise TimeoutError(f"{peer}: ApplyEvents not answered within {timeout:.1f}s") from None
            raise  # the call's own failure

    def start(self, peer: str, request: ApplyEventsRequest, *,
              timeout: float | None = None) -> asyncio.Future[ApplyEventsReply] | None:
        """``apply_events`` sent before this returns, from the caller's task, when ``peer``'s lane is idle (nothing
        queued, fewer than ``in_flight`` calls running) and the wrapped transport can write it at once
        (``send_now``, cluster/event_stream.py): one call of its own, with no sender task and no hop to one (the
        replicator's early sends at c=1). Returns the wrapped call's future (its reply as the receiver gave it: a
        write alone in its call, so any ``missing_blobs`` are its own; its deadline is the call's; cancelling it
        gives the write up), or None: nothing was sent, the caller awaits ``apply_events``. A write arriving
        while it runs is queued behind it and coalesced as any other."""
        send_now = getattr(self.inner, "send_now", None)
        if send_now is None or request.hinted_for or request.blobs != BlobTransfer.INLINE \
                or self._queues.get(peer) or self._running.get(peer, 0) >= self.limits.in_flight:
            return None
        sent: asyncio.Future[ApplyEventsReply] | None = send_now(peer, request, timeout)
        if sent is None:
            return None
        self._running[peer] = self._running.get(peer, 0) + 1
        self.calls += 1
        sent.add_done_callback(lambda _: self._sent(peer))
        return sent

    def _sent(self, peer: str) -> None:
        """A call ``start`` made is over: the queue's next batch may go (``_drain``)."""
        self._running[peer] -= 1
        self._kick(peer)

    def _kick(self, peer: str) -> None:
        """A sender for ``peer``'s queue, unless it is empty or ``in_flight`` calls already run."""
        if self._queues.get(peer) and self._running.get(peer, 0) < self.limits.in_flight:
            self._running[peer] = self._running.get(peer, 0) + 1
            task = asyncio.get_running_loop().create_task(self._drain(peer), name=f"s4-apply-events-{peer}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Node shutdown: cancel the senders; every write still waiting fails (ConnectionAbortedError)."""
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue in self._queues.values():
            _fail(list(queue), ConnectionAbortedError("ApplyEvents not sent: the node is stopping"))
            queue.clear()
        stop = getattr(self.inner, "stop", None)  # a streamed transport's streams (cluster/event_stream.py)
        if stop is not None:
            await stop()

    # --- the sender ---------------------------------------------------------------------------------------------
    async def _drain(self, peer: str) -> None:
        """One lane of ``peer``: send what is queued, batch after batch, until the queue is empty."""
        queue = self._queues[peer]
        try:
            while queue:
                batch = self._take(queue)
                if batch:
                    await self._send(peer, queue, batch)
        finally:
            self._running[peer] -= 1

    def _take(self, queue: collections.deque[_Waiter]) -> list[_Waiter]:
        """The next batch from the head of ``queue``: writes still waiting, within the limits (at least one)."""
        limits = self.limits
        batch: list[_Waiter] = []
        events = size = 0
        while queue:
            waiter = queue[0]
            if waiter.future.done():  # gave up (its deadline, or its caller was cancelled) before it was sent
                queue.popleft()
                continue
            n = len(waiter.request.events)
            if batch and (events + n > limits.events or size + waiter.size > limits.bytes):
                break
            queue.popleft()
            batch.append(waiter)
            events, size = events + n, size + waiter.size
        return batch

    async def _send(self, peer: str, queue: collections.deque[_Waiter], batch: list[_Waiter]) -> None:
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            request = batch[0].request
        else:
            seen: set[bytes] = set()
            inline = []
            for waiter in batch:
                for blob in waiter.request.inline_blobs:
                    if bytes(blob.content_hash) not in seen:
                        seen.add(bytes(blob.content_hash))
                        inline.append(blob)
            request = ApplyEventsRequest(events=[e for w in batch for e in w.request.events],
                                         blobs=BlobTransfer.INLINE, inline_blobs=inline,
                                         settled_hlc=max(w.request.settled_hlc for w in batch),
                                         journal_ranges=[r for w in batch for r in w.request.journal_ranges],
                                         parts=[n for w in batch for n in w.parts],
                                         peer_ranges=[r for w in batch for r in w.request.peer_ranges])
            self.coalesced += len(batch) - 1
        deadlines = [w.deadline for w in batch]
        timeout = None if None in deadlines else max(0.0, max(d for d in deadlines if d is not None) - loop.time())
        self.calls += 1
        try:
            reply = await self.inner.apply_events(peer, request, timeout=timeout)
        except asyncio.CancelledError:
            _fail(batch, ConnectionAbortedError(f"{peer}: ApplyEvents cancelled (the node is stopping)"))
            raise
        except Exception as exc:  # noqa: BLE001 - every write of the batch sees the failure
            _fail(batch, exc)
            return
        if not reply.missing_blobs:
            if len(batch) == 1:
                _answer(batch[0], reply)
                return
            ranges = list(reply.journal_ranges)
            start, whole = 0, len(ranges) == len(request.parts)  # else an older receiver: no ranges at all
            for waiter in batch:
                count = len(waiter.parts)
                own = ranges[start:start + count] if whole else []
                start += count
                _answer(waiter, ApplyEventsReply(applied=reply.applied, already_had=reply.already_had,
                                                 hlc=reply.hlc, journal_seq=reply.journal_seq,
                                                 journal_ranges=own if any(r.through > r.after for r in own)
                                                 else []))
            return
        self._attribute(peer, queue, batch, reply)

    def _attribute(self, peer: str, queue: collections.deque[_Waiter], batch: list[_Waiter],
                   reply: ApplyEventsReply) -> None:
        """Nothing was applied: the writes referencing a missing blob get their own missing hashes; the others are
        sent again first (without them they may well apply)."""
        missing = [bytes(d) for d in reply.missing_blobs]
        lacking: list[tuple[_Waiter, list[bytes]]] = []
        others: list[_Waiter] = []
        for waiter in batch:
            try:
                refs = waiter.referenced()
            except ValueError:
                refs = set(missing)  # cannot tell (does not decode): it counts as lacking them all
            own = [d for d in missing if d in refs]
            if own:
                lacking.append((waiter, own))
            else:
                others.append(waiter)
        if not lacking:  # the receiver named blobs none of these writes references: every write sees them
            for waiter in batch:
                _answer(waiter, reply)
            return
        for waiter, own in lacking:
            _answer(waiter, ApplyEventsReply(missing_blobs=own, hlc=reply.hlc, journal_seq=reply.journal_seq))
        if others:
            log.info("ApplyEvents to %s: %d of %d coalesced writes lack blobs; sending the other %d again", peer,
                     len(lacking), len(batch), len(others))
            queue.extendleft(reversed(others))


def _answer(waiter: _Waiter, reply: ApplyEventsReply) -> None:
    if not waiter.future.done():
        waiter.future.set_result(reply)


def _fail(batch: list[_Waiter], exc: BaseException) -> None:
    for waiter in batch:
        if not waiter.future.done():
            waiter.future.set_exception(exc)
