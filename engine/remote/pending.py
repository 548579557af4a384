"""Request ids and the futures awaiting their replies: the requesting end's bookkeeping (``LoopChannel``).

A request is registered, answered and failed the same way whichever thread made it: a fresh id per request, the
reply completes the future registered under its id (unless nobody waits any more), and closing fails every
future still waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from typing import Any

from ..errors import ServiceUnavailableError
from .wire import decode_error, encode_frame

AnyFuture = concurrent.futures.Future[Any] | asyncio.Future[Any]


class ChannelClosedError(ServiceUnavailableError):
    """The process at the other end is gone (or the channel was closed): this node cannot commit now, which a
    client is told as 503 ServiceUnavailable with Retry-After (engine/errors.py), like every such failure."""


class PendingReplies:
    """Thread-safe: requests are made from any thread, replies arrive on the loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, AnyFuture] = {}
        self._lock = threading.Lock()
        self.closed = False

    def frame(self, message: dict[str, Any], fut: AnyFuture) -> bytes | None:
        """Register ``fut`` under a fresh id and encode ``message`` with that id; once closed, fail ``fut`` and
        return None. An unencodable message raises here, to the caller, and leaves nothing registered."""
        with self._lock:
            if self.closed:
                fut.set_exception(ChannelClosedError(f"{self.name}: channel closed"))
                return None
            request_id = next(self._ids)
            self._waiting[request_id] = fut
        try:
            return encode_frame({**message, "id": request_id})
        except Exception:
            with self._lock:
                self._waiting.pop(request_id, None)
            raise

    def resolve(self, reply: dict[str, Any]) -> None:
        """Complete the future ``reply`` answers; a reply nobody waits for (cancelled meanwhile) is dropped."""
        with self._lock:
            fut = self._waiting.pop(reply.get("id", -1), None)
        if fut is None or fut.done():
            return
        if "err" in reply:
            error = reply["err"]
            fut.set_exception(error if isinstance(error, BaseException) else decode_error(error))
        else:
            fut.set_result(reply.get("ok"))

    def close(self) -> list[AnyFuture] | None:
        """Refuse new requests; returns the futures still waiting (for the caller to fail where it may), or None
        when already closed."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            waiting, self._waiting = self._waiting, {}
        return list(waiting.values())
