"""Whether the client of a streaming response is still there.

An ASGI server's ``send`` does nothing once the client is gone (uvicorn returns quietly), so a response that only
writes runs to its end regardless: an object GET aborted after its first megabyte still read (and dropped) the
whole object, the gateway pulled a node's whole answer, and the admin event stream would follow the journal for
ever. ``watch`` waits for the ``http.disconnect`` event on the request's ``receive`` instead (a GET has no body to
read from it; falcon does the same for its server-sent events), and a stream checks the returned future between
its pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[Any]]


def watch(receive: Receive | None) -> asyncio.Future[None]:
    """Done once the client has gone, or once its response is complete (the server then answers ``receive`` with
    ``http.disconnect`` too). Start it after the request body was read; cancel it when the stream ends. Without a
    ``receive`` channel it never completes."""
    if receive is None:
        return asyncio.get_running_loop().create_future()

    async def wait_for_disconnect() -> None:
        while (await receive()).get("type") != "http.disconnect":
            pass

    return asyncio.ensure_future(wait_for_disconnect())


def watch_request(req: Any) -> asyncio.Future[None]:
    """``watch`` over a falcon ASGI request's ``receive``."""
    return watch(getattr(req, "_receive", None))
