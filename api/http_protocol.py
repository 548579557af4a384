"""uvicorn's httptools protocol with one change: a client that half-closes after a complete request is answered.

A client may send a whole request (headers and the full body) and then shut down its sending side
(``shutdown(SHUT_WR)``), waiting for the answer on the still-open receiving side. uvicorn treats that EOF as a
disconnect: the transport is closed, the request runs on (a PUT is stored) and its response is thrown away, so
the client never learns that its upload was acknowledged. Here an EOF after the request is complete keeps the
write side open: the request finishes, its response is sent, and the connection closes after it (no keep-alive
on a half-closed connection). An EOF before the request is complete (a body cut short) is still a disconnect:
the request fails and nothing is stored or acknowledged.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class S4HttpToolsProtocol(HttpToolsProtocol):
    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol allows a bool
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body and not cycle.disconnected:
            cycle.keep_alive = False  # answer, then close
            return True  # keep the transport open for the response
        return None  # nothing in flight, or the request is incomplete: close as uvicorn does
