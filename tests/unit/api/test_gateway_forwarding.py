"""Issue 20, gateway mode: the forwarding decisions of api/gateway.py. Which headers go through (hop-by-hop ones
never), when a request may go to another node (only when it was certainly not sent: no connection made and no body
byte read), and the app in action against stand-in nodes on 127.0.0.x: a refused node fails over, a node lost after
the request went out is never retried (the client gets 503 with Retry-After), no node at all is 503, and the node's
status, headers and body come back unchanged."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from s4.api.gateway import (
    GatewayApp,
    GatewaySettings,
    forwarded_headers,
    has_body,
    may_retry,
    returned_headers,
)


def test_issue20_hop_by_hop_headers_are_not_forwarded_everything_else_is_in_order() -> None:
    headers = [(b"host", b"s3.example:9000"), (b"connection", b"keep-alive, x-private"), (b"x-private", b"1"),
               (b"transfer-encoding", b"chunked"), (b"expect", b"100-continue"), (b"x-amz-meta-a", b"1"),
               (b"x-amz-meta-a", b"2"), (b"keep-alive", b"timeout=5"), (b"te", b"trailers"),
               (b"authorization", b"AWS4-HMAC-SHA256 ...")]
    assert forwarded_headers(headers) == [("host", "s3.example:9000"), ("expect", "100-continue"),
                                          ("x-amz-meta-a", "1"), ("x-amz-meta-a", "2"),
                                          ("authorization", "AWS4-HMAC-SHA256 ...")]
    back = ((b"Content-Length", b"5"), (b"Connection", b"close"), (b"ETag", b'"x"'), (b"Transfer-Encoding", b"x"))
    assert returned_headers(back) == [(b"content-length", b"5"), (b"etag", b'"x"')]


@pytest.mark.parametrize(("headers", "expected"), [
    ([], False), ([(b"content-length", b"0")], False), ([(b"content-length", b"12")], True),
    ([(b"transfer-encoding", b"chunked")], True)])
def test_issue20_a_body_is_forwarded_only_when_the_request_has_one(headers: list[tuple[bytes, bytes]],
                                                                   expected: bool) -> None:
    assert has_body(headers) is expected


def test_issue20_retry_only_when_the_request_was_certainly_not_sent() -> None:
    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))
    assert may_retry(refused, 0)
    assert may_retry(aiohttp.ConnectionTimeoutError("connect timeout"), 0)
    assert not may_retry(refused, 1)  # a byte of the client's body was read: it cannot be sent again
    assert not may_retry(aiohttp.ServerDisconnectedError(), 0)  # the request went out: the node may have acted
    assert not may_retry(aiohttp.SocketTimeoutError("read timeout"), 0)
    assert not may_retry(aiohttp.ClientOSError(104, "Connection reset by peer"), 0)


class Backends:
    def __init__(self, nodes: list[tuple[str, str]]) -> None:
        self.nodes = nodes

    def candidates(self) -> list[tuple[str, str]]:
        return list(self.nodes)

    def health_document(self) -> dict[str, Any]:
        return {"mode": "gateway"}

    def node_states(self) -> list[tuple[str, str]]:
        return [(n, "alive") for n, _ in self.nodes]


def unused_address(host: str) -> str:
    with socket.socket() as s:
        s.bind((host, 0))
        return f"{host}:{s.getsockname()[1]}"


class StandIn:
    """A stand-in node: records each request head and body; answers, or drops the connection after the head."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await reader.readexactly(length) if self.answer else b""
        self.requests.append((head, body))
        if self.answer:
            writer.write(b"HTTP/1.1 207 Odd\r\nContent-Length: 4\r\nX-Amz-Request-Id: NODE\r\nX-Dup: 1\r\n"
                         b"X-Dup: 2\r\nConnection: keep-alive\r\n\r\nbody")
            await writer.drain()
        writer.close()


def call(app: GatewayApp, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
         body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request through the ASGI app; returns status, headers and body as the client would get them."""
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers}

    async def main() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await app.close()

    asyncio.run(main())
    start = sent[0]
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def run_nodes(stand_ins: dict[str, StandIn], body: Any) -> Any:
    async def main() -> Any:
        servers = {}
        for host, node in stand_ins.items():
            servers[host] = await asyncio.start_server(node.handle, host, 0)
        try:
            addresses = {h: f"{h}:{s.sockets[0].getsockname()[1]}" for h, s in servers.items()}
            return await asyncio.to_thread(body, addresses)
        finally:
            for s in servers.values():
                s.close()

    return asyncio.run(main())


def test_issue20_refused_node_fails_over_and_the_answer_comes_back_unchanged() -> None:
    node = StandIn(answer=True)
    headers = [(b"host", b"gw.example:9000"), (b"content-length", b"5"), (b"x-amz-date", b"20260101T000000Z")]

    def body(addresses: dict[str, str]) -> Any:
        app = GatewayApp(Backends([("dead", unused_address("127.0.0.3")), ("live", addresses["127.0.0.2"])]),
                         GatewaySettings(access_log=False))
        return call(app, "PUT", "/b/a/../k%2Fx//y", b"X-Amz-Signature=ab%2B&&z", headers, b"hello")

    status, back, data = run_nodes({"127.0.0.2": node}, body)
    assert (status, data) == (207, b"body")
    assert (b"x-amz-request-id", b"NODE") in back and [v for n, v in back if n == b"x-dup"] == [b"1", b"2"]
    assert not any(n == b"connection" for n, _ in back)
    (head, sent), = node.requests
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /b/a/../k%2Fx//y?X-Amz-Signature=ab%2B&&z HTTP/1.1"  # byte for byte
    assert b"host: gw.example:9000" in lines and b"x-amz-date: 20260101T000000Z" in lines
    assert not any(line.lower().startswith((b"user-agent", b"accept", b"content-type")) for line in lines)
    assert sent == b"hello"


def test_issue20_node_lost_after_the_request_was_sent_is_not_retried_503() -> None:
    lost, spare = StandIn(answer=False), StandIn(answer=True)

    def body(addresses: dict[str, str]) -> Any:
        app = GatewayApp(Backends([("lost", addresses["127.0.0.2"]), ("spare", addresses["127.0.0.3"])]),
                         GatewaySettings(access_log=False))
        return call(app, "DELETE", "/b/k", b"", [(b"host", b"gw")], b"")

    status, back, data = run_nodes({"127.0.0.2": lost, "127.0.0.3": spare}, body)
    assert status == 503 and (b"retry-after", b"1") in back and b"<Code>ServiceUnavailable</Code>" in data
    assert len(lost.requests) == 1 and spare.requests == []  # the DELETE may have happened: never sent twice


def test_issue20_no_node_reachable_is_503_with_retry_after_xml_or_json() -> None:
    app = GatewayApp(Backends([("a", unused_address("127.0.0.2")), ("b", unused_address("127.0.0.3"))]),
                     GatewaySettings(access_log=False))
    status, back, data = call(app, "GET", "/b/k", b"", [(b"host", b"gw")], b"")
    assert status == 503 and (b"retry-after", b"1") in back and b"<Code>ServiceUnavailable</Code>" in data
    app = GatewayApp(Backends([]), GatewaySettings(access_log=False))
    status, back, data = call(app, "GET", "/api/admin/users", b"", [(b"host", b"gw")], b"")
    assert status == 503 and (b"retry-after", b"1") in back and data.startswith(b'{"error": ')


class LongAnswer:
    """A stand-in node answering with ``size`` bytes, 64 KiB at a time; ``written`` counts what went into its socket
    before the gateway closed the connection."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.written = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
        piece = b"n" * 65536
        try:
            while self.written < self.size:
                writer.write(piece)
                await writer.drain()
                self.written += len(piece)
        except ConnectionError:
            pass
        finally:
            writer.close()


def stream_through(app: GatewayApp, client_stays: bool) -> int:
    """A GET through the app; the client either stays until its response is complete or is gone at once (ASGI
    ``receive`` says ``http.disconnect`` right after the request). Returns the body bytes the app sent."""
    sent = 0
    first = [{"type": "http.request", "body": b"", "more_body": False}]

    async def main() -> None:
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if first:
                return first.pop()
            if client_stays:
                await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal sent
            sent += len(message.get("body", b""))
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete.set()

        scope = {"type": "http", "method": "GET", "path": "/b/big", "raw_path": b"/b/big", "query_string": b"",
                 "headers": [(b"host", b"gw")]}
        try:
            await app(scope, receive, send)
        finally:
            await app.close()

    asyncio.run(main())
    return sent


@pytest.mark.parametrize("client_stays", [True, False])
def test_a_client_gone_mid_answer_stops_the_gateway_pulling_the_nodes_answer(client_stays: bool) -> None:
    """The client that stays gets the whole answer; once the client has gone, the gateway stops reading the node's
    answer and closes that connection (it pulled all of it for nobody, and the node read the whole object)."""
    size = 32 * 1024 * 1024
    node = LongAnswer(size)

    def body(addresses: dict[str, str]) -> int:
        app = GatewayApp(Backends([("node", addresses["127.0.0.2"])]), GatewaySettings(access_log=False))
        return stream_through(app, client_stays)

    delivered = run_nodes({"127.0.0.2": node}, body)
    if client_stays:
        assert delivered == size and node.written == size
    else:
        assert delivered < size // 4 and node.written < size // 2
