"""A full-duplex message channel over one connected socket (a socketpair end), usable from any thread.

Two threads per channel: a reader that decodes frames and dispatches them (replies complete the futures of
``request``; requests go to ``on_request``), and a writer that drains the send queue and coalesces whatever is
waiting into one ``sendall`` -- under load many replies leave in one system call, as in group commit. When the
peer goes away every pending future fails with ChannelClosedError and ``on_close`` runs once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from .pending import ChannelClosedError, PendingReplies
from .wire import LENGTH, MAX_FRAME_BYTES, decode_body, encode_error, encode_frame

log = logging.getLogger(__name__)
RequestHandler = Callable[["Channel", dict[str, Any]], None]
_STOP = b""  # encode_frame never yields an empty frame


__all__ = ["Channel", "ChannelClosedError"]


class Channel:
    def __init__(self, sock: socket.socket, *, name: str, on_request: RequestHandler | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.name = name
        self._sock = sock
        self._on_request = on_request
        self._on_close = on_close
        self._pending = PendingReplies(name)
        self._outbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    @property
    def closed(self) -> bool:
        return self._pending.closed

    def request(self, message: dict[str, Any]) -> concurrent.futures.Future[Any]:
        """Send ``message`` (a dict with an ``op``); the future gets the reply's value or its error."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        frame = self._pending.frame(message, fut)
        if frame is not None:
            self._outbox.put(frame)
        return fut

    async def call(self, message: dict[str, Any]) -> Any:
        """``request`` awaited from an event loop (the loop-driven ``LoopChannel`` has the same method)."""
        return await asyncio.wrap_future(self.request(message))

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None) -> None:
        if self._pending.closed:
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
            if not self._pending.closed:
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
        self._pending.resolve(message)

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
            if not self._pending.closed:
                log.warning("%s: channel write failed: %s", self.name, exc)
            self._shutdown()
            return False

    def _shutdown(self) -> None:
        waiting = self._pending.close()
        if waiting is None:
            return
        self._outbox.put(_STOP)
        for fut in waiting:
            if not fut.done():
                fut.set_exception(ChannelClosedError(f"{self.name}: the peer process is gone"))
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:  # noqa: BLE001
                log.exception("%s: on_close failed", self.name)
