"""The gateway's ASGI app (S4_MODE=gateway): every S3 and admin request forwarded, unchanged, to a live pool node.

A reverse proxy at the HTTP level (docs/architecture/gateway.md): the node does everything a request needs
(SigV4 and presigned URLs verify there, since method, path, query and headers, Host included, arrive as the client
sent them); the gateway stores nothing and verifies nothing. Per request:

* with several pools (S4_CLUSTER_POOLS) the bucket's pool, as the nodes' ``x-s4-pool`` answers taught it
  (``BucketPools``; a bucket not learned yet goes to any pool's node, which forwards it: api/pool_router.py);
* the nodes to try come from the pool's liveness (``Backends.candidates``: alive before suspect, round robin;
  cluster/gateway.py pings them);
* the request goes to the first with aiohttp: method, raw path and query byte for byte, the client's headers but
  the hop-by-hop ones (RFC 9110 7.6.1), ``Expect: 100-continue`` kept (aiohttp sends the body only after the node's
  ``100 Continue``, and only then does this app read it from the client, so the client's ``100`` comes from the
  node's through api/body_gate.py); the body streams through in the chunks it arrives in, never whole;
* **fail-over only when the request was certainly not sent**: the connection to the node could not be made
  (refused, unreachable, connect timeout) and not a byte of the body was read (``may_retry``). Anything else (a
  connection lost after the request went out) is not retried here: the node may have acted on it; the client
  gets ``503 ServiceUnavailable`` with ``Retry-After`` and its SDK retries, as after any 503;
* the node's status, headers (but hop-by-hop) and body go back unchanged, streamed; a node lost mid-body cuts the
  connection (``ResponseAborted``: the client sees a broken transfer, never a complete-looking short body);
* no node to try, or none reachable: ``503 ServiceUnavailable`` with ``Retry-After`` (S3 XML, or JSON on
  ``/api/...``), never a 500.

The gateway answers three things itself: ``/health`` (its process is up), ``GET /metrics`` (its own numbers), and
``GET /api/admin/cluster/health``, which it first forwards to a node to have the bearer token checked there (the
gateway holds no IAM state), and then answers, when the node said 200, with the pool as the gateway sees it
(``mode: gateway``) and the node's own document under ``via``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from yarl import URL

from s4.engine.errors import RETRY_AFTER_S

from . import access_log, disconnect
from .app import HEALTH_PATHS
from .body_gate import BodyGate
from .errors import ResponseAborted, quiet_aborts
from .s3.xml_render import error_xml

log = logging.getLogger("s4.gateway")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Hop-by-hop headers (RFC 9110 7.6.1): about one connection, never forwarded (with any the Connection header names).
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
CLUSTER_HEALTH = "/api/admin/cluster/health"
#: Response header a node of a cluster of several pools adds to a bucket's requests: the pool that served it
#: (api/pool_router.py); a gateway learns bucket -> pool from it (docs/architecture/pools.md).
POOL_HEADER = "x-s4-pool"
#: Request header of a request forwarded between pools: the receiving node serves it, never forwards it again.
FORWARDED_HEADER = "x-s4-forwarded"
MAX_LEARNED = 65536  # bucket -> pool entries a gateway keeps (oldest forgotten first)
CHUNK = 256 * 1024  # response bytes read from the node per send at most
UNAVAILABLE = "No node of the pool can take the request right now; retry later."


class Backends(Protocol):
    """The pool as the gateway sees it (cluster/gateway.py ``PoolWatch``)."""

    def candidates(self) -> list[tuple[str, str]]:
        """(node id, S3 host:port) to try for one request, in order."""
        ...

    def health_document(self) -> dict[str, Any]: ...

    def node_states(self) -> list[tuple[str, str]]:
        """(node id, alive|suspect|dead), for the metrics."""
        ...


@dataclass(frozen=True)
class GatewaySettings:
    local_host: str | None = None  # outgoing connections leave from this address (the gateway's own), if set
    connect_timeout_s: float = 3.0  # a node that does not accept a connection within this is skipped
    read_timeout_s: float = 300.0  # a node silent this long once the request is sent (or mid-response) has failed
    metrics_enabled: bool = True
    access_log: bool = True


def forwarded_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers to send to the node: all, in order, but the hop-by-hop ones."""
    named = {token.strip().lower() for name, value in headers if name.lower() == b"connection"
             for token in value.split(b",")}
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
            if name.lower() not in HOP_BY_HOP and name.lower() not in named]


def returned_headers(headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The node's response headers to send to the client: all, in order, but the hop-by-hop ones."""
    named = {token.strip().lower() for name, value in headers if name.lower() == b"connection"
             for token in value.split(b",")}
    return [(name.lower(), value) for name, value in headers
            if name.lower() not in HOP_BY_HOP and name.lower() not in named]


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries a body (a non-zero Content-Length, or Transfer-Encoding)."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


def may_retry(exc: BaseException, body_bytes_read: int) -> bool:
    """Whether a failed forward may go to another node: only when the request was certainly not sent, i.e. no
    connection to the node was made (refused, unreachable, connect timeout) and no byte of the client's body was
    read. A failure once the request may have gone out (a connection reset, a timeout waiting for the answer) is
    never retried: the node may have acted on it."""
    if body_bytes_read:
        return False
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


class ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


class ClientBody:
    """The client's request body, pulled from ASGI ``receive`` only as the node takes it (bounded memory)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.bytes_read = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("the client disconnected mid-body")
            body = message.get("body") or b""
            if body:
                self.bytes_read += len(body)
                yield body
            if not message.get("more_body", False):
                return


class GatewayMetrics(Collector):
    """The gateway's /metrics: requests by outcome, fail-overs, 503s given here, and each node's state."""

    def __init__(self, backends: Backends) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.backends = backends
        self.requests = Counter("s4_gateway_requests", "Requests forwarded, by node and the node's status class",
                                ["node", "status"], registry=self.registry)
        self.failovers = Counter("s4_gateway_failovers", "Requests sent to another node because a node refused or "
                                 "did not accept the connection", ["node"], registry=self.registry)
        self.unavailable = Counter("s4_gateway_unavailable", "Requests answered 503 by the gateway: no node reachable,"
                                   " or the node was lost after the request was sent", registry=self.registry)
        self.latency = Histogram("s4_gateway_request_duration_seconds", "From the request's arrival to the node's "
                                 "response headers", registry=self.registry)
        self.registry.register(self)

    def collect(self) -> Any:
        up = GaugeMetricFamily("s4_gateway_node_up", "1 while the node answers the gateway's Pings (alive), else 0",
                               labels=["node"])
        for node, state in self.backends.node_states():
            up.add_metric([node], 1.0 if state == "alive" else 0.0)
        yield up

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class PoolRoutes(Protocol):
    """Several pools (cluster/gateway.py ``PoolSet``): one pool's nodes by name."""

    def of(self, pool: str) -> Backends | None: ...


class BucketPools:
    """A gateway in front of several pools: which pool a bucket lives in, as the nodes' answers said (the
    ``x-s4-pool`` header). A bucket not learned yet goes to any pool's node, which forwards it to the right pool
    (api/pool_router.py) and whose answer teaches the gateway; a stale entry (a bucket deleted and created again in
    another pool) costs the same one extra hop, never a wrong answer: the node it reaches looks the bucket up."""

    def __init__(self, pools: PoolRoutes, vhost_domains: tuple[str, ...], registry_pool: str = "") -> None:
        self.pools = pools
        self.vhost_domains = vhost_domains
        self.registry_pool = registry_pool
        self.learned: dict[str, str] = {}

    def bucket(self, scope: Scope) -> str:
        from .pool_router import bucket_of  # the same parsing as the nodes'

        return bucket_of(scope, self.vhost_domains)

    def backends(self, bucket: str) -> Backends | None:
        """The bucket's pool when learned; a request naming no bucket (ListBuckets, the admin API) goes to the
        registry pool (the first by name), so the admin API always reaches the same pool's IAM."""
        if not bucket:
            return self.pools.of(self.registry_pool)
        pool = self.learned.get(bucket)
        return self.pools.of(pool) if pool else None

    def learn(self, bucket: str, pool: str) -> None:
        if bucket and pool and self.learned.get(bucket) != pool and self.pools.of(pool) is not None:
            self.learned.pop(bucket, None)
            self.learned[bucket] = pool
            if len(self.learned) > MAX_LEARNED:
                self.learned.pop(next(iter(self.learned)))


class GatewayApp:
    """The ASGI app. ``close()`` (awaited) closes the connections to the nodes."""

    def __init__(self, backends: Backends, settings: GatewaySettings, routes: BucketPools | None = None) -> None:
        self.backends = backends
        self.routes = routes  # several pools: a bucket's requests go to its pool
        self.settings = settings
        self.metrics = GatewayMetrics(backends) if settings.metrics_enabled else None
        self._prefix = secrets.token_hex(4).upper()
        self._count = 0
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """One session for the process: keep-alive connections to the nodes, made on the running loop."""
        if self._session is None:
            local = (self.settings.local_host, 0) if self.settings.local_host else None
            connector = aiohttp.TCPConnector(limit=0, local_addr=local, enable_cleanup_closed=False)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s,
                                            sock_read=self.settings.read_timeout_s)
            # nothing added to what the client sent: no User-Agent, Accept or Content-Type of aiohttp's, no
            # decompression of the node's answer, no cookies kept between clients
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
            # aiohttp sends a GET, HEAD, PUT or DELETE once more when the connection is lost after it went out
            # (RFC 9112 9.3.1 allows it for idempotent methods); S3's are not (a versioned bucket gets a second
            # version or delete marker), so never: the attribute aiohttp's own test client clears for the same
            # reason (tests/unit/api/test_gateway_forwarding.py fails if it stops working)
            self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def request_id(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count & 0xFFFFFFFF:08X}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        entry = scope.get(access_log.SCOPE_KEY)
        if path in HEALTH_PATHS and method in ("GET", "HEAD"):
            _note(entry, "Health")
            await _answer(send, 200, b'{"status":"ok"}' if method == "GET" else b"", "application/json",
                          self.request_id())
            return
        headers = [tuple(pair) for pair in scope.get("headers") or ()]
        unsigned = not any(name.lower() == b"authorization" for name, _ in headers) and \
            b"X-Amz-Signature" not in scope.get("query_string", b"")
        if path == "/metrics" and method == "GET" and unsigned and self.metrics is not None:
            _note(entry, "Metrics")
            await _answer(send, 200, self.metrics.render(), CONTENT_TYPE_LATEST, self.request_id())
            return
        if path.rstrip("/") == CLUSTER_HEALTH and method == "GET":
            _note(entry, "Admin")
            await self.cluster_health(scope, headers, receive, send)
            return
        _note(entry, "Forward")
        await self.forward(scope, headers, receive, send)

    async def forward(self, scope: Scope, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send,
                      backends: Backends | None = None, extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Forward to ``backends`` (default: the bucket's pool when known, else every pool's nodes), with the
        ``extra`` request headers added."""
        started = time.perf_counter()
        body = ClientBody(receive) if has_body(headers) else None
        outgoing = forwarded_headers(headers) + list(extra)
        bucket = ""
        if backends is None and self.routes is not None:
            try:
                bucket = self.routes.bucket(scope)
            except Exception:  # noqa: BLE001 - a target the node will refuse: any node answers it
                bucket = ""
            backends = self.routes.backends(bucket)
        backends = backends or self.backends
        target = (scope.get("raw_path") or scope.get("path", "/").encode()).decode("latin-1")
        query = (scope.get("query_string") or b"").decode("latin-1")
        if query:
            target = f"{target}?{query}"
        for node, address in backends.candidates():
            url = URL(f"http://{address}{target}", encoded=True)
            try:
                resp = await self.session().request(scope["method"], url, headers=outgoing, allow_redirects=False,
                                                    data=body.chunks() if body is not None else None)
            except Exception as exc:  # noqa: BLE001 - every failure is a retry or a 503 (``may_retry``)
                if may_retry(exc, body.bytes_read if body is not None else 0):
                    log.info("gateway: node %s at %s did not accept the connection (%s); trying the next", node,
                             address, exc)
                    if self.metrics is not None:
                        self.metrics.failovers.labels(node).inc()
                    continue
                log.warning("gateway: %s %s to node %s failed after it was sent: %s: %s", scope["method"],
                            scope.get("path"), node, type(exc).__name__, exc)
                await self.unavailable(scope, send, "The node was lost while handling the request; retry it.")
                return
            if self.routes is not None and bucket:
                self.routes.learn(bucket, resp.headers.get(POOL_HEADER, ""))
            gone: asyncio.Future[None] | None = None
            try:
                if self.metrics is not None:
                    self.metrics.latency.observe(time.perf_counter() - started)
                    self.metrics.requests.labels(node, f"{resp.status // 100}xx").inc()
                await send({"type": "http.response.start", "status": resp.status,
                            "headers": returned_headers(resp.raw_headers)})
                # A long answer stops when the client goes (release closes the node's connection mid-body).
                if resp.content_length is None or resp.content_length > CHUNK:
                    gone = disconnect.watch(receive)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if gone is not None and gone.done():
                        log.info("gateway: %s %s: the client went away; the rest of node %s's answer is dropped",
                                 scope["method"], scope.get("path"), node)
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.warning("gateway: the answer of node %s to %s %s broke off: %s: %s", node, scope["method"],
                            scope.get("path"), type(exc).__name__, exc)
                raise ResponseAborted(str(exc)) from None
            finally:
                if gone is not None:
                    gone.cancel()
                resp.release()
            return
        log.warning("gateway: no node of pool reachable for %s %s", scope["method"], scope.get("path"))
        await self.unavailable(scope, send, UNAVAILABLE)

    async def unavailable(self, scope: Scope, send: Send, message: str) -> None:
        """503 ServiceUnavailable with Retry-After: S3 XML, or the admin API's JSON for ``/api/...``."""
        if self.metrics is not None:
            self.metrics.unavailable.inc()
        request_id = self.request_id()
        path = scope.get("path", "")
        if path.startswith("/api/"):
            body, kind = json.dumps({"error": message}).encode(), "application/json"
        else:
            body, kind = error_xml("ServiceUnavailable", message, path, request_id, {}), "application/xml"
        await _answer(send, 503, body if scope.get("method") != "HEAD" else b"", kind, request_id,
                      [(b"retry-after", str(RETRY_AFTER_S).encode())], length=len(body))

    async def cluster_health(self, scope: Scope, headers: list[tuple[bytes, bytes]], receive: Receive,
                             send: Send) -> None:
        """The node checks the token (its answer is passed on unless 200); then the gateway's own document."""
        captured: dict[str, Any] = {"status": 0, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"], captured["headers"] = message["status"], message.get("headers") or []
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body") or b""

        await self.forward(scope, headers, receive, capture)  # a small JSON document: buffered
        if captured["status"] != 200:
            await send({"type": "http.response.start", "status": captured["status"], "headers": captured["headers"]})
            await send({"type": "http.response.body", "body": captured["body"], "more_body": False})
            return
        document = self.backends.health_document()
        try:
            document["via"] = json.loads(captured["body"])
        except ValueError:
            document["via"] = None
        await _answer(send, 200, json.dumps(document).encode(), "application/json", self.request_id())


def _note(entry: Any, operation: str) -> None:
    if entry is not None:
        entry.operation = operation


async def _answer(send: Send, status: int, body: bytes, content_type: str, request_id: str,
                  extra: list[tuple[bytes, bytes]] | None = None, length: int | None = None) -> None:
    size = len(body) if length is None else length
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(size).encode()),
               (b"date", formatdate(usegmt=True).encode()), (b"x-amz-request-id", request_id.encode()),
               (b"server", b"S4"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def build_gateway_app(backends: Backends, settings: GatewaySettings,
                      routes: BucketPools | None = None) -> tuple[GatewayApp, access_log.Asgi]:
    """The app (to ``close()`` at shutdown) and what uvicorn serves: it behind the body gate (no ``100 Continue``
    to the client before the node asked for the body), which also writes the access log. ``routes``: several
    pools."""
    quiet_aborts()
    app = GatewayApp(backends, settings, routes)
    return app, BodyGate(app, access_log.STDERR if settings.access_log else None)
