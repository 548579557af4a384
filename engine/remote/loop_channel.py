"""The worker's end of its channel, driven by the worker's event loop: no threads, no hand-offs.

A channel run by reader and writer threads made every command cross three threads in the worker (the event loop
queued the frame for the writer thread; the reader thread decoded the reply and woke the loop), two context
switches and GIL hand-offs per request; on a small VM those switches cost more CPU than the request's own work
(the sequencer's end, engine/remote/service.py, dropped its threads for the same reason). Here the loop
writes the frames to the socket itself (those its tasks sent during one iteration in one write, at the end of
it) and decodes replies in ``data_received``, completing the awaiting task's future directly. Other threads (a
volume sealed on an ingest thread, the admin status call) still get a ``concurrent.futures.Future`` from
``request``; their frames are handed to the loop with ``call_soon_threadsafe``.

Requests made before ``attach`` (the loop not running yet) are kept and sent on attach. When the peer goes away
every pending request fails with ChannelClosedError and ``on_close`` runs once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from .pending import AnyFuture, ChannelClosedError, PendingReplies
from .wire import FrameBuffer

log = logging.getLogger(__name__)


class LoopChannel:
    def __init__(self, sock: socket.socket, *, name: str, on_close: Callable[[], None] | None = None) -> None:
        self.name = name
        self._sock = sock
        self._on_close = on_close
        self._pending = PendingReplies(name)
        self._lock = threading.Lock()  # _early and the attach state: touched by the loop and by other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._transport: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._outgoing: list[bytes] = []  # frames sent on the loop in this iteration, written together
        self._frames = FrameBuffer()

    @property
    def closed(self) -> bool:
        return self._pending.closed

    async def attach(self) -> None:
        """Start reading and writing on the running loop; sends whatever was requested before."""
        loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(lambda: _Protocol(self), sock=self._sock)
        with self._lock:
            self._loop, self._loop_thread = loop, threading.get_ident()
            self._transport = transport
            early, self._early = self._early, []
        for frame in early:
            transport.write(frame)

    def request(self, message: dict[str, Any]) -> concurrent.futures.Future[Any]:
        """From any thread: send ``message``; the future gets the reply's value or its error."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._send(message, fut)
        return fut

    async def call(self, message: dict[str, Any]) -> Any:
        """On the loop: send ``message`` and wait for the reply (no thread involved)."""
        if self._loop is None or threading.get_ident() != self._loop_thread:
            return await asyncio.wrap_future(self.request(message))
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._send(message, fut)
        return await fut

    def close(self) -> None:
        self._shutdown()
        transport, loop = self._transport, self._loop
        if transport is None or loop is None or loop.is_closed():  # not attached, or the loop has ended
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        elif threading.get_ident() == self._loop_thread:
            transport.close()
        else:
            loop.call_soon_threadsafe(transport.close)

    # -- internals ------------------------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any], fut: AnyFuture) -> None:
        frame = self._pending.frame(message, fut)
        if frame is None:
            return
        with self._lock:
            transport, loop = self._transport, self._loop
            if transport is None:
                self._early.append(frame)
                return
        if threading.get_ident() == self._loop_thread:
            self._outgoing.append(frame)
            if len(self._outgoing) == 1:
                assert loop is not None
                loop.call_soon(self._flush)
        else:
            assert loop is not None
            loop.call_soon_threadsafe(self._write_if_open, frame)

    def _flush(self) -> None:
        """One write for every frame the loop's tasks sent in the iteration just run (under load, many commands
        share a system call, as the supervisor's replies do)."""
        frames, self._outgoing = self._outgoing, []
        if frames and not self._pending.closed and self._transport is not None:
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _write_if_open(self, frame: bytes) -> None:
        if not self._pending.closed and self._transport is not None:
            self._transport.write(frame)

    def _received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "op" in message:  # the sequencer process sends no requests to workers
            log.warning("%s: unexpected request %r ignored", self.name, message.get("op"))
            return
        self._pending.resolve(message)  # a request cancelled meanwhile (the client went away) drops its reply

    def _shutdown(self) -> None:
        waiting = self._pending.close()
        if waiting is None:
            return
        on_loop = threading.get_ident() == self._loop_thread
        for fut in waiting:
            error = ChannelClosedError(f"{self.name}: the peer process is gone")
            if isinstance(fut, concurrent.futures.Future) or on_loop:
                _fail(fut, error)
            elif self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(_fail, fut, error)
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:  # noqa: BLE001
                log.exception("%s: on_close failed", self.name)


def _fail(fut: AnyFuture, error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)


class _Protocol(asyncio.Protocol):
    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        try:
            self.channel._received(data)
        except (ValueError, TypeError) as exc:
            log.warning("%s: undecodable frame: %s; closing", self.channel.name, exc)
            self.channel.close()

    def eof_received(self) -> bool:
        self.channel._shutdown()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._shutdown()
