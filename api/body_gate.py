"""ASGI wrapper: no request body is asked for (so no ``100 Continue`` is sent) until a handler reads it.

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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[..., Awaitable[None]]  # an ASGI app (falcon types scope and messages as dict and Mapping)


class BodyGate:
    """Wraps the falcon ASGI app; any other attribute is the wrapped app's."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        if not isinstance(headers, list) or (headers and not isinstance(headers[0], tuple)):
            # ASGI allows any iterables (read once): keep what this check reads for the app, as tuples
            headers = scope["headers"] = [tuple(pair) for pair in headers]
        expects_continue = any(name == b"expect" and value.strip().lower() == b"100-continue"
                               for name, value in headers)
        state = {"first": True, "asked": False}

        async def gated_receive() -> Message:
            if state["first"]:
                state["first"] = False
                return {"type": "http.request", "body": b"", "more_body": True}
            state["asked"] = True
            return await receive()

        async def gated_send(message: Message) -> None:
            if message["type"] == "http.response.start" and expects_continue and not state["asked"]:
                headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        # without a 100-continue to withhold, the response goes out as the app sends it (no wrapper per message)
        await self.app(scope, gated_receive, gated_send if expects_continue else send)
