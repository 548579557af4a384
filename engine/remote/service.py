"""The sequencer-process side: answers the requests of HTTP worker processes.

Commands go straight from the channel's reader thread into the local sequencer's group-commit queue (no event
loop hop), so commands from every worker share batches; the reply is queued when the batch is durable.
Background-worker requests (admin runs, status) run on the sequencer process's event loop; login-throttle
requests are answered on the reader thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from ..login_throttle import LoginThrottle
from ..sequencer import Command, Sequencer
from .channel import Channel

log = logging.getLogger(__name__)
WORKER_METHODS = frozenset({"lifecycle", "compaction", "scrubber", "status"})


class SequencerService:
    def __init__(self, sequencer: Sequencer, workers: Any, loop: asyncio.AbstractEventLoop,
                 login_throttle: LoginThrottle) -> None:
        self.sequencer = sequencer
        self.workers = workers
        self.loop = loop
        self.login_throttle = login_throttle

    def handle(self, channel: Channel, message: dict[str, Any]) -> None:
        """Channel ``on_request`` hook; runs on the channel's reader thread, so it must not block."""
        request_id = message["id"]
        op = message.get("op")
        if op == "cmd":
            command = Command(message["name"], message["args"], message.get("actor", ""),
                              tuple(message.get("volumes") or ()))
            fut = self.sequencer.submit(command)
        elif op == "worker" and message.get("method") in WORKER_METHODS:
            fut = self._worker_call(message["method"], message.get("kwargs") or {})
        elif op == "throttle" and message.get("action") in LoginThrottle.ACTIONS:
            try:  # a few dict operations under a lock: answered right here
                getattr(self.login_throttle, message["action"])(message["username"], message["client"])
            except Exception as exc:  # noqa: BLE001 - ThrottledError is the answer, not a failure
                channel.reply(request_id, error=exc)
            else:
                channel.reply(request_id, None)
            return
        else:
            channel.reply(request_id, error=ValueError(f"unknown request {op!r}"))
            return
        fut.add_done_callback(lambda f: _answer(channel, request_id, f))

    def _worker_call(self, method: str, kwargs: dict[str, Any]) -> concurrent.futures.Future[Any]:
        if method == "status":
            fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

            def status() -> None:
                try:
                    fut.set_result(self.workers.status(**kwargs))
                except Exception as exc:  # noqa: BLE001 - answered to the caller
                    fut.set_exception(exc)

            self.loop.call_soon_threadsafe(status)
            return fut
        return asyncio.run_coroutine_threadsafe(getattr(self.workers, method)(**kwargs), self.loop)


def _answer(channel: Channel, request_id: int, fut: concurrent.futures.Future[Any]) -> None:
    error = fut.exception()
    if error is not None:
        channel.reply(request_id, error=error)
    else:
        channel.reply(request_id, fut.result())
