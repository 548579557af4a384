"""The benchmark's HTTP client against a scripted raw HTTP/1.1 server: framing, keep-alive, HEAD, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from s4.tools.bench.client import Client, S3Error

Reply = Callable[[bytes], bytes]


class ScriptedServer:
    """Reads one request at a time per connection (headers + Content-Length body) and writes ``reply(request)``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer = self.reply(request)
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def response(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_get_reuses_one_keep_alive_connection_and_signs_every_request() -> None:
    server = ScriptedServer(lambda req: response("200 OK", b"4 KiB body", "ETag: \"abc\"\r\n"))

    async def go() -> list[tuple[int, bytes, str]]:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            out = []
            for _ in range(3):
                status, body, headers = await c.request("GET", "/bucket/a key+é", query={"b": "2", "a": "x y"})
                out.append((status, body, headers["etag"]))
            return out

    assert run(go()) == [(200, b"4 KiB body", '"abc"')] * 3
    assert server.connections == 1
    first = server.requests[0].decode("latin-1")
    assert first.startswith("GET /bucket/a%20key%2B%C3%A9?a=x%20y&b=2 HTTP/1.1\r\n")
    assert "authorization: AWS4-HMAC-SHA256 Credential=AK/" in first and "x-amz-date: " in first


def test_head_ends_at_the_headers_and_the_connection_stays_usable() -> None:
    def reply(req: bytes) -> bytes:
        if req.startswith(b"HEAD"):  # announces 4096 bytes, sends none (as HTTP says a HEAD answer must)
            return b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n"
        return response("200 OK", b"after head")

    server = ScriptedServer(reply)

    async def go() -> tuple[object, object]:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            head = await c.request("HEAD", "/b/k")
            get = await c.request("GET", "/b/k")
            return head[:2], get[:2]

    assert run(go()) == ((200, b""), (200, b"after head"))
    assert server.connections == 1


def test_error_status_raises_and_keeps_the_connection() -> None:
    def reply(req: bytes) -> bytes:
        if b"/missing" in req:
            return response("404 Not Found", b"<Error><Code>NoSuchKey</Code></Error>")
        return response("200 OK", b"fine")

    server = ScriptedServer(reply)

    async def go() -> bytes:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            with pytest.raises(S3Error, match="GET /b/missing -> 404 .*NoSuchKey"):
                await c.request("GET", "/b/missing")
            return (await c.request("GET", "/b/k"))[1]

    assert run(go()) == b"fine"
    assert server.connections == 1


def test_connection_close_opens_a_new_connection_next_time() -> None:
    server = ScriptedServer(lambda req: response("200 OK", b"x", "Connection: close\r\n"))

    async def go() -> None:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            for _ in range(3):
                assert (await c.request("PUT", "/b/k", body=b"data"))[0] == 200

    run(go())
    assert server.connections == 3
    assert all(req.endswith(b"Content-Length: 4\r\n\r\ndata") for req in server.requests)


def test_chunked_body_large_put_and_unread_body() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    big = bytes(range(256)) * 1024  # 256 KiB: header and body go out in separate writes

    def reply(req: bytes) -> bytes:
        if req.startswith(b"PUT"):
            return response("200 OK", str(len(req.split(b"\r\n\r\n", 1)[1])).encode())
        return chunked

    server = ScriptedServer(reply)

    async def go() -> tuple[bytes, bytes, bytes]:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            put = (await c.request("PUT", "/b/big", body=big))[1]
            read = (await c.request("GET", "/b/k"))[1]
            unread = (await c.request("GET", "/b/k", read=False))[1]
            return put, read, unread

    assert run(go()) == (str(len(big)).encode(), b"hello world", b"")


def test_server_closing_mid_response_fails_the_request() -> None:
    server = ScriptedServer(lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort")

    async def go() -> None:
        async with server as endpoint, Client(endpoint, "AK", "SK") as c:
            with pytest.raises(ConnectionError):
                await c.request("GET", "/b/k")

    run(go())
