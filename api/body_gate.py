"""The app's one ASGI wrapper: no request body is asked for (so no ``100 Continue`` is sent) until a handler reads
it, and, when the access log is on, the request's log line (api/access_log.py).

uvicorn answers ``Expect: 100-continue`` the first time the application calls ``receive()``, and falcon calls
it before routing, to take the first body event. This wrapper hands falcon that first event itself (an empty
chunk, "more to come") and passes every later ``receive()`` through, so the first real one comes from the
handler that reads the body -- after authentication, routing, the role check and what the headers allow
(api/s3/call.py ``check_before_body``). Two consequences:

* a refused request (bad signature, missing bucket, a Content-Length past the limit) is answered at once,
  without ``100 Continue`` and without reading or discarding the body;
* a request that declares a body it never sends still gets its error response instead of waiting for bytes.

When a final response starts while the client still waits for ``100 Continue`` (it was never asked for the
body), ``Connection: close`` is added: the client may or may not send the body now, so the connection cannot be
reused safely for a next request.

The access log is part of this wrapper rather than one of its own: one ASGI call and at most one ``send`` wrapper
per request instead of two of each (each layer cost a small GET a few microseconds). It puts the request's
``AccessEntry`` into the scope (the app fills it: api/app.py ``S3Service``), times the request to its last
response byte, counts the body bytes sent and hands the line's fields to the writer also when the app failed or
the client left (the server's writer formats them in its flush: ``access_log.LineBuffer``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .access_log import SCOPE_KEY, AccessEntry, Row, format_rows

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[..., Awaitable[None]]  # an ASGI app (falcon types scope and messages as dict and Mapping)


def _expects_continue(scope: Scope) -> bool:
    headers = scope.get("headers") or []
    if not isinstance(headers, list) or (headers and not isinstance(headers[0], tuple)):
        # ASGI allows any iterables (read once): keep what this check reads for the app, as tuples
        headers = scope["headers"] = [tuple(pair) for pair in headers]
    for name, value in headers:
        if name == b"expect" and value.strip().lower() == b"100-continue":
            return True
    return False


def _closing(message: Message) -> Message:
    headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}


class BodyGate:
    """Wraps the falcon ASGI app; any other attribute is the wrapped app's. ``access_log``: where each request's
    line is written (None: no access log)."""

    def __init__(self, app: App, access_log: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.access_log = access_log
        # a writer that takes a request's raw fields (access_log.LineBuffer: formatted in its flush, not here)
        self._add_row: Callable[[Row], None] | None = getattr(access_log, "add", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        expects_continue = _expects_continue(scope)
        first = True
        asked = False

        async def gated_receive() -> Message:
            nonlocal first, asked
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": True}
            asked = True
            return await receive()

        write = self.access_log
        if write is None:
            if not expects_continue:  # the response goes out as the app sends it (no wrapper per message)
                await self.app(scope, gated_receive, send)
                return

            async def gated_send(message: Message) -> None:
                if message["type"] == "http.response.start" and not asked:
                    message = _closing(message)
                await send(message)

            await self.app(scope, gated_receive, gated_send)
            return

        entry = scope[SCOPE_KEY] = AccessEntry()
        started = time.perf_counter_ns()
        sent = 0
        status = 0
        request_id = ""

        async def logged_send(message: Message) -> None:
            nonlocal sent, status, request_id
            if message["type"] == "http.response.body":
                body = message.get("body")
                if body:
                    sent += len(body)
            elif message["type"] == "http.response.start":
                status = message["status"]
                if not entry.request_id:
                    request_id = _request_id(message)
                if expects_continue and not asked:
                    message = _closing(message)
            await send(message)

        try:
            await self.app(scope, gated_receive, logged_send)
        finally:
            ended = time.perf_counter_ns()
            client = scope.get("client")
            row = (time.time_ns() // 1_000_000, str(client[0]) if client else "", entry.actor, entry.operation,
                   scope.get("method", ""), entry.bucket, entry.key, status, sent, (ended - started + 500) // 1000,
                   entry.request_id or request_id)
            add = self._add_row
            if add is not None:
                add(row)
            else:
                write(format_rows([row])[0])


def _request_id(start: Message) -> str:
    """The ``x-amz-request-id`` of a response the app did not note on the entry."""
    for name, value in start.get("headers") or ():
        if name == b"x-amz-request-id":
            return str(value.decode("latin-1"))
    return ""
