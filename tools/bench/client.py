"""The benchmark's S3 client: pooled keep-alive HTTP/1.1 connections on asyncio, responses parsed by httptools.

The client shares the machine with the server it measures, so its own CPU per request decides how much is left
for the server. aiohttp spent about as much per 4 KiB GET as the no-op server did (docs/performance.md, "Reading
the figures"): the noop row measured the client as much as uvicorn. This client does what a closed-loop S3
benchmark needs and nothing else: one request per connection at a time, every request SigV4-signed by
:class:`Signer`, the response parsed by httptools (llhttp, the C parser uvicorn uses on the server side). Every
server gets the same client, so the client's cost per request is identical across the servers compared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import httptools

from .signer import Signer

CONNECT_TIMEOUT_S = 30.0
# No overall cap (a 64 MiB body on a slow server may take long), but a server silent this long fails the request.
READ_TIMEOUT_S = 300.0


class S3Error(RuntimeError):
    """A request answered with a status of 300 or more."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (the pool hands it out exclusively)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes, dict[str, str]]] | None = None
        self._head = False
        self._keep_body = True
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last_read = asyncio.get_running_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparseable response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("server closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._head:  # a HEAD response announces a length but has no body; llhttp cannot be told, so finish here
            status, keep_alive = self._parser.get_status_code(), self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)
            self._complete(status, b"", keep_alive)

    def on_body(self, body: bytes) -> None:
        if self._keep_body:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        if not self._head:
            self._complete(self._parser.get_status_code(), b"".join(self._chunks), self._parser.should_keep_alive())

    # -- requests ----------------------------------------------------------------------------------------------
    def send(self, data: bytes, body: bytes | bytearray, *, head: bool, keep_body: bool
             ) -> asyncio.Future[tuple[int, bytes, dict[str, str]]]:
        assert self.transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._head, self._keep_body = head, keep_body
        self._headers, self._chunks = {}, []
        self._last_read = loop.time()
        self._timer = loop.call_later(READ_TIMEOUT_S, self._check_timeout)
        if len(body) <= 65536:
            self.transport.write(data + body)
        else:
            self.transport.write(data)
            self.transport.write(body)
        return self._waiter

    def _check_timeout(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_read
        if idle >= READ_TIMEOUT_S:
            self._fail(TimeoutError(f"no response bytes for {READ_TIMEOUT_S:g} s"))
            if self.transport is not None:
                self.transport.abort()
        else:
            self._timer = loop.call_later(READ_TIMEOUT_S - idle, self._check_timeout)

    def _complete(self, status: int, body: bytes, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if not keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body, self._headers))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Client:
    """A pool of keep-alive connections to one endpoint; ``request`` takes an idle one or opens another."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.endpoint = endpoint.rstrip("/")
        parts = urlsplit(self.endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the benchmark client speaks plain http to host:port, not {endpoint!r}")
        self.host = parts.netloc
        self._address = (parts.hostname, parts.port or 80)
        self.signer = Signer(access_key, secret_key, region)
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(_Connection, *self._address), CONNECT_TIMEOUT_S)
        return conn

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None,
                      body: bytes | bytearray = b"",
                      headers: dict[str, str] | None = None, read: bool = True
                      ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one signed request; ``read=False`` counts the response body away instead of keeping it.

        Returns (status, body, headers with lower-case names); S3Error for a status of 300 or more.
        """
        signed = self.signer.headers(method, self.host, path, query, headers)
        target = quote(path, safe="/-_.~")
        if query:
            target += "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                                     for k, v in sorted(query.items()))
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in signed.items()]
        if body or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn = await self._connection()
        try:
            status, data, got = await conn.send(head, body, head=method == "HEAD", keep_body=read)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        if not conn.closed:
            self._idle.append(conn)
        if status >= 300:
            raise S3Error(f"{method} {path} -> {status} {data[:200]!r}")
        return status, data, got
