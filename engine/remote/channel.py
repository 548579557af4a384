"""A full-duplex message channel over one connected socket (a socketpair end), usable from any thread.

Two threads per channel: a reader that decodes frames and dispatches them (replies complete the futures of
``request``; requests go to ``on_request``), and a writer that drains the send queue and coalesces whatever is
waiting into one ``sendall`` -- under load many replies leave in one system call, as in group commit. When the
peer goes away every pending future fails with ChannelClosedError and ``on_close`` runs once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from .wire import LENGTH, MAX_FRAME_BYTES, decode_body, decode_error, encode_error, encode_frame

log = logging.getLogger(__name__)
RequestHandler = Callable[["Channel", dict[str, Any]], None]
_STOP = b""  # encode_frame never yields an empty frame


class ChannelClosedError(ConnectionError):
    """The process at the other end is gone (or the channel was closed)."""


class Channel:
    def __init__(self, sock: socket.socket, *, name: str, on_request: RequestHandler | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.name = name
        self._sock = sock
        self._on_request = on_request
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._outbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def request(self, message: dict[str, Any]) -> concurrent.futures.Future[Any]:
        """Send ``message`` (a dict with an ``op``); the future gets the reply's value or its error."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                fut.set_exception(ChannelClosedError(f"{self.name}: channel closed"))
                return fut
            request_id = next(self._ids)
            self._pending[request_id] = fut
        try:
            frame = encode_frame({**message, "id": request_id})
        except Exception:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        self._outbox.put(frame)
        return fut

    async def call(self, message: dict[str, Any]) -> Any:
        """``request`` awaited from an event loop (the loop-driven ``LoopChannel`` has the same method)."""
        return await asyncio.wrap_future(self.request(message))

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None) -> None:
        if self._closed:
            return
        message = {"id": request_id, "err": encode_error(error)} if error is not None else {"id": request_id,
                                                                                           "ok": value}
        try:
            frame = encode_frame(message)
        except Exception as exc:  # noqa: BLE001 - an unsendable result is this request's failure only
            frame = encode_frame({"id": request_id, "err": encode_error(exc)})
        self._outbox.put(frame)

    def close(self) -> None:
        self._shutdown()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- threads --------------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        stream = self._sock.makefile("rb", buffering=256 * 1024)
        try:
            while True:
                head = stream.read(LENGTH.size)
                if len(head) < LENGTH.size:
                    return
                (length,) = LENGTH.unpack(head)
                if length > MAX_FRAME_BYTES:
                    log.error("%s: frame of %d bytes refused; closing", self.name, length)
                    return
                body = stream.read(length)
                if len(body) < length:
                    return
                self._dispatch(decode_body(body))
        except (OSError, ValueError) as exc:
            if not self._closed:
                log.warning("%s: channel read failed: %s", self.name, exc)
        finally:
            stream.close()
            self._shutdown()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "op" in message:
            if self._on_request is None:
                self.reply(message["id"], error=ChannelClosedError("this end serves no requests"))
            else:
                self._on_request(self, message)
            return
        with self._lock:
            fut = self._pending.pop(message.get("id", -1), None)
        if fut is None:
            return
        if "err" in message:
            error = message["err"]
            fut.set_exception(error if isinstance(error, BaseException) else decode_error(error))
        else:
            fut.set_result(message.get("ok"))

    def _write_loop(self) -> None:
        while True:
            frame = self._outbox.get()
            if frame is _STOP:
                return
            frames = [frame]
            while len(frames) < 1024:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._send(frames)
                    return
                frames.append(more)
            if not self._send(frames):
                return

    def _send(self, frames: list[bytes]) -> bool:
        try:
            self._sock.sendall(b"".join(frames))
            return True
        except OSError as exc:
            if not self._closed:
                log.warning("%s: channel write failed: %s", self.name, exc)
            self._shutdown()
            return False

    def _shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
        self._outbox.put(_STOP)
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosedError(f"{self.name}: the peer process is gone"))
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:  # noqa: BLE001
                log.exception("%s: on_close failed", self.name)
