"""ApplyEvents on one long-lived bidirectional stream per peer (``ApplyEventsStream``), instead of a unary call each.

A unary gRPC call costs HEADERS (hpack, the auth headers and their HMAC check, the deadline), a DATA frame and
trailers on both ends: about 1 ms of CPU counting both nodes in Python's HTTP/2, per write batch. On a stream opened
once per peer each batch is one DATA frame each way (about half that). The stream is authenticated once, when it
opens (cluster/grpc_server.py ``Authenticated`` checks its headers, as for any call).

Client (``StreamedEventsTransport``, an ``EventsTransport``): per peer one stream (``_Lane``), opened on first use.
Each ``apply_events`` gets an id, is queued for the lane's writer task (the only task that sends: a caller that
gives up never cuts a message in half) and waits for the reply with that id; at most ``StreamLimits.in_flight``
requests per lane are outstanding (a caller beyond waits for a slot, within its deadline). Failure semantics are the
unary call's: a request not answered within its deadline raises ``TimeoutError`` (the reply, should it come, is
ignored; the receiver applies idempotently either way); a reply carrying a status raises the ``GRPCError`` the unary
call would have raised; the stream breaking (connection lost, the peer restarting or stopping) fails every request
on it with that error, and the next request opens a new stream. A peer that does not serve the stream
(``UNIMPLEMENTED``: an older node) is called with unary ``ApplyEvents`` from then on (for ``UNARY_RETRY_S``), the
refused requests included (nothing of them was applied). ``catch_up`` is the unary transport's.

Server (``serve_messages``; ``serve_stream`` is the same as an async iterator of replies): each request is handled
by the events area exactly as the unary call (``EventsService.apply_events``), at most ``in_flight`` at once per
stream (beyond that the stream is not read: HTTP/2 flow control holds the sender), each within the ``timeout_ms`` its
sender gave (the unary call's ``grpc-timeout``); replies go back in completion order, tagged with the request's id,
each written to the stream by the task that handled its request.
docs/architecture/replication.md, "ApplyEvents on a stream".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from s4.journal.codec import packb

from .catch_up import EventsTransport
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    ApplyEventsStreamReply,
    ApplyEventsStreamRequest,
    BlobTransfer,
    CatchUpBatch,
    CatchUpRequest,
    InlineBlob,
    JournalRange,
    PeerRange,
)

log = logging.getLogger("s4.cluster")

APPLY_EVENTS_STREAM = "/s4cluster.v1.S4Cluster/ApplyEventsStream"
#: After a peer refused the stream (UNIMPLEMENTED), how long it is called with unary ApplyEvents before trying again.
UNARY_RETRY_S = 60.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Requests outstanding on one stream at once (either end); a sender beyond waits, a receiver stops reading."""

    in_flight: int = 16


def pack_request(request: ApplyEventsRequest) -> tuple[bytes, bytes]:
    """``ApplyEventsStreamRequest.packed`` and ``.claims``: the request's fields as msgpack arrays (s4_cluster.proto).
    betterproto2 is pure Python: encoding a one-write request cost ~180 us and parsing it as much again, at both ends
    of every write; msgpack does it in ~1 us. ``parts`` and ``peer_ranges`` go in ``claims`` (empty without them): a
    receiver older than them unpacks ``packed`` as before and ignores the field it does not know."""
    packed = bytes(msgpack.packb([
        [bytes(e) for e in request.events], int(request.blobs), request.hinted_for,
        [[bytes(b.content_hash), b.size, bytes(b.data)] for b in request.inline_blobs], request.settled_hlc,
        [[r.after, r.through] for r in request.journal_ranges]]))
    if not request.parts and not request.peer_ranges:
        return packed, b""
    return packed, bytes(msgpack.packb([list(request.parts),
                                        [[r.node, r.after, r.through] for r in request.peer_ranges]]))


def unpack_request(packed: bytes, claims: bytes = b"") -> ApplyEventsRequest:
    """The request ``pack_request`` packed; ValueError when it is not one."""
    try:
        events, blobs, hinted_for, inline, settled, ranges = msgpack.unpackb(packed)
        parts, peer_ranges = msgpack.unpackb(claims)[:2] if claims else ([], [])
        return ApplyEventsRequest(
            events=list(events), blobs=BlobTransfer(blobs), hinted_for=hinted_for,
            inline_blobs=[InlineBlob(content_hash=h, size=n, data=d) for h, n, d in inline], settled_hlc=settled,
            journal_ranges=[JournalRange(after=a, through=t) for a, t in ranges], parts=list(parts),
            peer_ranges=[PeerRange(node=n, after=a, through=t) for n, a, t in peer_ranges])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"a packed ApplyEvents request does not decode: {exc}") from None


def pack_reply(reply: ApplyEventsReply) -> tuple[bytes, bytes]:
    """``ApplyEventsStreamReply.packed`` and ``.claims`` (its journal ranges; empty without any: an older caller
    ignores the field)."""
    packed = packb([reply.applied, reply.already_had, [bytes(d) for d in reply.missing_blobs], reply.hlc,
                    reply.journal_seq])
    ranges = reply.journal_ranges
    if not ranges:
        return packed, b""
    return packed, packb([[[r.after, r.through] for r in ranges]])


def unpack_reply(packed: bytes, claims: bytes = b"") -> ApplyEventsReply:
    try:
        applied, already_had, missing, hlc, seq = msgpack.unpackb(packed)
        ranges = msgpack.unpackb(claims)[0] if claims else []
        return ApplyEventsReply(applied=applied, already_had=already_had, missing_blobs=list(missing), hlc=hlc,
                                journal_seq=seq, journal_ranges=[JournalRange(after=a, through=t) for a, t in ranges])
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise ValueError(f"a packed ApplyEvents reply does not decode: {exc}") from None


#: Bytes an ``ApplyEventsStreamRequest`` adds to its ``packed`` and ``claims`` (field tags, their lengths, ``id`` and
#: ``timeout_ms`` as varints), plus grpclib's 5-byte message prefix: an upper bound.
_ENVELOPE_BYTES = 48


def _fits(stream: Any, message: ApplyEventsStreamRequest) -> bool:
    """grpclib's ``send_message`` of ``message`` on ``stream`` writes it in one DATA frame without waiting: the
    connection is writable (not paused by the transport), and the message is within one frame and within the
    stream's HTTP/2 flow-control window (then ``Stream.send_data`` writes it at its first pass, after which nothing
    waits). False for anything that is not grpclib's client stream (the caller queues the message instead)."""
    try:
        inner = stream._stream  # grpclib.protocol.Stream, set once the request's HEADERS went
        h2 = inner._h2_connection
        if not inner.connection.write_ready.is_set():
            return False
        room = min(h2.local_flow_control_window(inner.id), h2.max_outbound_frame_size)
    except Exception:  # noqa: BLE001 - another stream type, or a closed stream: the writer task sends it
        return False
    return len(message.packed) + len(message.claims) + _ENVELOPE_BYTES <= int(room)


def _write_at_once(send: Coroutine[Any, Any, None]) -> bool:
    """Run ``send`` to its end now if it does not wait; if it would wait (``_fits`` says it cannot: a paused
    transport before anything is written), close it unsent and return False."""
    try:
        send.send(None)
    except StopIteration:
        return True
    send.close()
    return False


class StreamChannels(Protocol):
    """cluster/peers.py ``PeerPool``: a peer's stub, whose ``channel`` opens raw streams."""

    def stub(self, node_id: str) -> Any: ...


class StreamRefused(Exception):
    """The peer does not serve ApplyEventsStream (an older node): nothing sent on it was applied."""


class _Slots:
    """A semaphore (``take`` waits, first come first served) whose slot can also be taken without waiting
    (``try_take``): the lane's direct path takes one in its caller's synchronous step."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # ``give`` handed it a slot
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot, but its caller gave up meanwhile: the next one gets it
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Lane:
    """One open stream to one peer: a writer task sends the queued requests, a reader task resolves replies.
    ``send_now`` writes a request from its caller's task instead when that cannot cut a message (below)."""

    def __init__(self, peer: str, channel: Any, limits: StreamLimits, ended: Callable[[_Lane], None]) -> None:
        self.peer = peer
        self._channel = channel
        self._slots = _Slots(limits.in_flight)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ApplyEventsReply]] = {}
        self._queue: asyncio.Queue[ApplyEventsStreamRequest | BaseException] = asyncio.Queue()
        self._ended = ended
        self._stream: Any = None  # the open stream, once its HEADERS went (``send_now`` writes on it)
        self._writing = False  # the writer task is inside a send (it may be waiting for flow control)
        self.error: BaseException | None = None  # set once the stream is over: every later call fails with it
        self.answered = 0  # replies received (a stream refused before any reply: an older peer)
        self.direct = 0  # requests written by their caller's task (tests, metrics)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"s4-apply-stream-{peer}")

    def _message(self, ident: int, request: ApplyEventsRequest, deadline: float | None,
                 loop: asyncio.AbstractEventLoop) -> ApplyEventsStreamRequest:
        left = None if deadline is None else max(1, int((deadline - loop.time()) * 1000))
        packed, claims = pack_request(request)
        return ApplyEventsStreamRequest(id=ident, packed=packed, claims=claims, timeout_ms=left or 0)

    async def call(self, request: ApplyEventsRequest, timeout: float | None) -> ApplyEventsReply:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline) as limit:
                await self._slots.take()
                try:
                    if self.error is not None:
                        raise self.error
                    ident = next(self._ids)
                    future: asyncio.Future[ApplyEventsReply] = loop.create_future()
                    self._pending[ident] = future
                    try:
                        self._queue.put_nowait(self._message(ident, request, deadline, loop))
                        return await future
                    finally:
                        self._pending.pop(ident, None)
                finally:
                    self._slots.give()
        except TimeoutError:
            if limit.expired():
                raise TimeoutError(f"{self.peer}: ApplyEvents not answered within {timeout:.1f}s") from None
            raise

    def send_now(self, request: ApplyEventsRequest, timeout: float | None) -> asyncio.Future[ApplyEventsReply] | None:
        """The direct path: ``request`` written to the stream now, from the caller's task (no hop to the writer
        task), when the lane is idle -- its stream open, nothing queued, the writer not inside a send, a slot free
        -- and the message goes out in one synchronous write: the connection writable and the message within one
        HTTP/2 frame and the stream's flow-control window (``_fits``). A synchronous write cannot be cut in half
        by a cancellation, which is what the writer task guarantees otherwise. Returns the future of its reply
        (failed with ``TimeoutError`` at the deadline; cancelling it gives the request up, as ``call``), or None
        when the lane is not idle: the caller uses ``call``."""
        stream = self._stream
        if stream is None or self.error is not None or self._writing or not self._queue.empty():
            return None
        if asyncio.current_task() is None:  # grpclib sends only from a task
            return None
        if not self._slots.try_take():
            return None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ident = next(self._ids)
        future: asyncio.Future[ApplyEventsReply] = loop.create_future()
        self._pending[ident] = future
        timer = None if deadline is None else loop.call_at(deadline, self._expire, future, timeout)

        def done(_: asyncio.Future[ApplyEventsReply]) -> None:
            if timer is not None:
                timer.cancel()
            self._pending.pop(ident, None)
            self._slots.give()

        future.add_done_callback(done)
        message = self._message(ident, request, deadline, loop)
        try:
            written = _fits(stream, message) and _write_at_once(stream.send_message(message))
        except Exception as exc:  # noqa: BLE001 - the stream is broken: the writer ends the lane with it
            self._queue.put_nowait(exc)
            return future
        if written:
            self.direct += 1
        else:  # it would have waited (nothing was written): the writer sends it
            self._queue.put_nowait(message)
        return future

    def _expire(self, future: asyncio.Future[ApplyEventsReply], timeout: float | None) -> None:
        if not future.done():
            future.set_exception(TimeoutError(f"{self.peer}: ApplyEvents not answered within {timeout:.1f}s"))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        try:
            async with self._channel.request(APPLY_EVENTS_STREAM, Cardinality.STREAM_STREAM,
                                             ApplyEventsStreamRequest, ApplyEventsStreamReply) as stream:
                await stream.send_request()  # connects (HEADERS with the auth metadata); before anyone reads
                loop = asyncio.get_running_loop()
                writer, reader = loop.create_task(self._write(stream)), loop.create_task(self._read(stream))
                try:
                    done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (writer, reader):
                        task.cancel()
                    await asyncio.gather(writer, reader, return_exceptions=True)
                finished = next(iter(done))
                error = None if finished.cancelled() else finished.exception()
                # Raised inside the call: grpclib turns a reset that came with a status (a refusal: UNAUTHENTICATED,
                # UNIMPLEMENTED) into that GRPCError, and resets the stream on the way out.
                raise error or ConnectionResetError(f"{self.peer}: the ApplyEvents stream ended")
        except asyncio.CancelledError:
            self._fail(ConnectionAbortedError(f"{self.peer}: ApplyEvents stream closed (the node is stopping)"))
            raise
        except Exception as exc:  # noqa: BLE001 - connecting, sending, receiving: the stream is over either way
            self._fail(exc)
        finally:
            self._ended(self)

    def _fail(self, error: BaseException) -> None:
        self._stream = None
        if isinstance(error, GRPCError) and error.status == Status.UNIMPLEMENTED and not self.answered:
            error = StreamRefused(f"{self.peer} does not serve ApplyEventsStream: {error.message}")
        if self.error is None:
            self.error = error
        pending, self._pending = dict(self._pending), {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self.error)

    async def _write(self, stream: Any) -> None:
        self._stream = stream
        while True:
            message = await self._queue.get()
            if isinstance(message, BaseException):
                raise message  # a direct write failed: the stream is over
            if message.id in self._pending:  # not given up on meanwhile
                self._writing = True
                try:
                    await stream.send_message(message)
                finally:
                    self._writing = False

    async def _read(self, stream: Any) -> None:
        while True:
            message: ApplyEventsStreamReply | None = await stream.recv_message()
            if message is None:
                return  # the peer ended the stream (it is stopping): ConnectionResetError
            self.answered += 1
            future = self._pending.get(message.id)
            if future is None or future.done():
                continue  # its caller gave up (deadline): the outcome stands, nobody waits for it
            if message.status:
                future.set_exception(GRPCError(Status(message.status), message.message or None))
            elif message.packed:
                try:
                    future.set_result(unpack_reply(message.packed, message.claims))
                except ValueError as exc:
                    future.set_exception(exc)
            else:
                future.set_result(message.reply or ApplyEventsReply())


class StreamedEventsTransport:
    """``EventsTransport``: ApplyEvents on one stream per peer (module docstring); CatchUp and peers that do not
    serve the stream go to ``unary``."""

    def __init__(self, pool: StreamChannels, unary: EventsTransport, limits: StreamLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool, self.unary = pool, unary
        self.limits = limits or StreamLimits()
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._unary_until: dict[str, float] = {}
        self._stopped = False
        self.opened = 0  # streams opened (tests, metrics)

    def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        return self.unary.catch_up(peer, request)

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        if self._stopped:
            raise ConnectionAbortedError("ApplyEvents not sent: the node is stopping")
        if self._unary_until.get(peer, 0.0) > self._clock():
            return await self.unary.apply_events(peer, request, timeout=timeout)
        lane = self._lanes.get(peer)
        if lane is None or lane.error is not None:
            lane = self._lanes[peer] = _Lane(peer, self.pool.stub(peer).channel, self.limits, self._lane_ended)
            self.opened += 1
        try:
            return await lane.call(request, timeout)
        except StreamRefused as exc:
            log.info("%s; using unary ApplyEvents with it for %.0fs", exc, UNARY_RETRY_S)
            self._unary_until[peer] = self._clock() + UNARY_RETRY_S
            return await self.unary.apply_events(peer, request, timeout=timeout)

    def send_now(self, peer: str, request: ApplyEventsRequest,
                 timeout: float | None) -> asyncio.Future[ApplyEventsReply] | None:
        """``apply_events`` written from the caller's task by the direct path (``_Lane.send_now``) when ``peer``'s
        stream is open, has answered before (it is served: no refusal to fall back from) and is idle; the future of
        its reply, or None: the caller awaits ``apply_events`` instead."""
        if self._stopped or self._unary_until.get(peer, 0.0) > self._clock():
            return None
        lane = self._lanes.get(peer)
        if lane is None or lane.error is not None or not lane.answered:
            return None
        return lane.send_now(request, timeout)

    def _lane_ended(self, lane: _Lane) -> None:
        if self._lanes.get(lane.peer) is lane:
            del self._lanes[lane.peer]

    async def stop(self) -> None:
        """Node shutdown: close every stream; requests still on them fail (ConnectionAbortedError)."""
        self._stopped = True
        lanes, self._lanes = list(self._lanes.values()), {}
        await asyncio.gather(*(lane.close() for lane in lanes), return_exceptions=True)


# --- server side ----------------------------------------------------------------------------------------------------


class ApplyHandler(Protocol):
    """cluster/catch_up.py ``EventsService.apply_events``."""

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply: ...


async def _answer(caller: str, handler: ApplyHandler, message: ApplyEventsStreamRequest) -> ApplyEventsStreamReply:
    """The reply to one request, handled as the unary ApplyEvents (its status in the reply when it fails)."""
    try:
        try:
            request = unpack_request(message.packed, message.claims) if message.packed else message.request
        except ValueError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        async with asyncio.timeout(message.timeout_ms / 1000 if message.timeout_ms else None):
            reply = await handler.apply_events(caller, request or ApplyEventsRequest())
        if message.packed:
            packed, claims = pack_reply(reply)
            return ApplyEventsStreamReply(id=message.id, packed=packed, claims=claims)
        return ApplyEventsStreamReply(id=message.id, reply=reply)
    except GRPCError as exc:
        return ApplyEventsStreamReply(id=message.id, status=exc.status.value, message=exc.message or "")
    except TimeoutError:
        return ApplyEventsStreamReply(id=message.id, status=Status.DEADLINE_EXCEEDED.value,
                                      message="ApplyEvents not handled within its deadline")
    except Exception as exc:  # noqa: BLE001 - answered as the unary call's UNKNOWN, logged here
        log.exception("ApplyEvents (stream) from %s failed", caller)
        return ApplyEventsStreamReply(id=message.id, status=Status.UNKNOWN.value, message=type(exc).__name__)


async def serve_messages(caller: str, handler: ApplyHandler, messages: AsyncIterator[ApplyEventsStreamRequest],
                         send: Callable[[ApplyEventsStreamReply], Awaitable[None]],
                         limits: StreamLimits | None = None) -> None:
    """Answer ``caller``'s stream of requests (module docstring), each reply sent with ``send`` by the task that
    handled its request, as soon as it is ready: no queue and no task between the handler and the stream's write
    (the gRPC server's ``send_message``). Sends are serialised (one message at a time on the stream). Returns once
    the caller ended its side and every request was answered; raises when reading or sending fails (the stream
    broke), after cancelling what is still running."""
    limits = limits or StreamLimits()
    slots = asyncio.Semaphore(limits.in_flight)
    sending = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def end(error: BaseException | None) -> None:
        if not ended.done():
            if error is None:
                ended.set_result(None)
            else:
                ended.set_exception(error)

    async def one(message: ApplyEventsStreamRequest) -> None:
        try:
            out = await _answer(caller, handler, message)
        finally:
            slots.release()
        try:
            async with sending:
                await send(out)
        except Exception as exc:  # noqa: BLE001 - the stream broke: end the handler with it
            end(exc)

    async def read() -> None:
        try:
            async for message in messages:
                await slots.acquire()
                task = loop.create_task(one(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:  # the caller ended its side: answer what it sent, then end
                await asyncio.gather(*list(tasks), return_exceptions=True)
            end(None)
        except Exception as exc:  # noqa: BLE001 - the stream broke: end the handler with it
            end(exc)

    reader = loop.create_task(read())
    try:
        await ended
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(reader, *tasks, return_exceptions=True)


async def serve_stream(caller: str, handler: ApplyHandler, messages: AsyncIterator[ApplyEventsStreamRequest],
                       limits: StreamLimits | None = None) -> AsyncIterator[ApplyEventsStreamReply]:
    """``serve_messages`` as an async iterator of the replies, in the order they are sent."""
    replies: asyncio.Queue[ApplyEventsStreamReply | BaseException | None] = asyncio.Queue()

    async def send(reply: ApplyEventsStreamReply) -> None:
        replies.put_nowait(reply)

    async def run() -> None:
        try:
            await serve_messages(caller, handler, messages, send, limits)
            replies.put_nowait(None)
        except Exception as exc:  # noqa: BLE001 - the stream broke: end the iterator with it
            replies.put_nowait(exc)

    runner = asyncio.get_running_loop().create_task(run())
    try:
        while True:
            item = await replies.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
