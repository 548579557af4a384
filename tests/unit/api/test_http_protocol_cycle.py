"""The connection layer's request cycle is built as a WatchedCycle (api/http_protocol.py), not re-classed after
uvicorn built it: assigning ``__class__`` moves the instance's attributes out of CPython's inline layout and made
every attribute access of the cycle several times dearer (docs/performance.md, branch ``hard-proc``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from s4.api.http_protocol import ConnectionLimits, WatchedCycle, protocol_class


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 9000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_cycle_is_born_a_watched_cycle_and_uvicorn_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    born: list[type] = []
    plain_init = RequestResponseCycle.__init__

    def init(self: RequestResponseCycle, *args: Any, **kwargs: Any) -> None:
        born.append(type(self))
        plain_init(self, *args, **kwargs)

    monkeypatch.setattr(RequestResponseCycle, "__init__", init)

    async def run() -> tuple[Any, bytes]:
        config = uvicorn.Config(_app, lifespan="off", http="httptools", log_level="warning")
        config.load()
        protocol = protocol_class(ConnectionLimits())(config, ServerState(), {}, asyncio.get_running_loop())
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        cycle = protocol.cycle
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return cycle, transport.written

    cycle, written = asyncio.run(run())
    assert born == [WatchedCycle]  # constructed as a WatchedCycle, never re-classed from RequestResponseCycle
    assert type(cycle) is WatchedCycle
    assert httptools_impl.RequestResponseCycle is RequestResponseCycle
    assert written.startswith(b"HTTP/1.1 200 ") and written.endswith(b"ok")
