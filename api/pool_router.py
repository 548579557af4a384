"""A node of a cluster of several pools (S4_CLUSTER_POOLS): a request for a bucket of another pool is forwarded.

ASGI middleware in front of the node's S3 app (docs/architecture/pools.md, "Requests for a bucket of another pool").
Per request that names a bucket (path-style or virtual host, parsed as the app does):

* **CreateBucket** (as the app's routing table says: ``PUT /bucket`` naming no sub-resource) picks the pool: its
  ``LocationConstraint`` names a pool -> that pool; the region, ``US`` or none -> the least used pool (fewest bytes
  stored: this pool's from the local views, the others' from a node's open ``/api/stats``, remembered for
  ``USAGE_TTL_S``; a placement hint only, a stale number picks a worse pool, never a wrong result); anything else
  is this node's to refuse (``InvalidLocationConstraint``, api/s3/buckets.py). The body (a small XML document, at
  most ``MAX_CREATE_BODY``) is read here and replayed to whoever serves the request. The node that serves it claims
  the name in the cluster's registry, pinned to its own pool (cluster/buckets_register.py).
* **Any other request**: a bucket this node holds is served here. Otherwise the registry says where it lives
  (``locate``: a linearizable read of the cluster's register, remembered, refreshed after ``LOCATE_TTL_S``; while
  the registry cannot answer, the remembered pool still routes, so reads and writes of existing buckets outlive
  the registry pool's majority); this pool, or no such bucket, is served here (the app answers NoSuchBucket or
  settles a bucket created moments ago through a peer). A remembered pool due for a refresh keeps routing while
  one refresh runs beside the requests (a slow registry delays no request it already answered); a bucket nothing
  is remembered of waits for one lookup shared by every request for it (no duel of proposers on one register),
  asked again until ``locate_deadline_s`` when the registry fails (a busy box, a restarting registry node): 503
  only after that, and never a guessed pool.
* Forwarding is the gateway's (api/gateway.py ``GatewayApp.forward``): the whole HTTP request to a live node of the
  pool, fail-over only when it was certainly not sent, 503 ``ServiceUnavailable`` otherwise. The forwarded request
  carries ``x-s4-forwarded`` (this node's id): the receiving node serves it and never forwards it again, so no
  request loops between pools whose configurations disagree for a while. Authentication happens on the node that
  serves the request (the signature covers what the client sent, which arrives unchanged).
* A bucket request served here answers with ``x-s4-pool: <this pool>``, from which a gateway learns the bucket's
  pool (api/gateway.py ``BucketPools``).
* **IAM users** (``/api/admin/users...``) live in the registry pool (docs/architecture/pools.md, "IAM across
  pools"): a node outside it forwards those requests there, so every IAM change is decided and committed in one
  pool and the other pools follow it (cluster/iam_feed.py). No live node of it: 503, nothing changed. Such a
  request arriving forwarded (a configuration that disagrees) is a 503 too, never decided here nor sent on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import access_log
from .admin.router import AdminApi
from .app import HEALTH_PATHS
from .gateway import FORWARDED_HEADER, POOL_HEADER, Backends, GatewayApp, Message, Receive, Scope, Send
from .inputs import parse_query
from .s3.router import route, split_target
from .s3.xml_parse import parse_create_bucket

log = logging.getLogger("s4.pools")

FORWARDED = FORWARDED_HEADER.encode()
IAM_USERS_PATH = "/api/admin/users"
MAX_CREATE_BODY = 64 * 1024
LOCATE_TTL_S = 30.0
LOCATE_DEADLINE_S = 10.0
"""How long a request for a bucket nothing is remembered of waits for the registry before its 503: the proposer's
own retries can fail within a second or two (a restarting acceptor refuses connections), a box busy for a moment
should not cost an existing bucket's request."""
LOCATE_RETRY_S = 0.25
USAGE_TTL_S = 10.0


def bucket_of(scope: Scope, vhost_domains: tuple[str, ...]) -> str:
    """The bucket a request names ("" for none: ListBuckets, the admin API, health, metrics), as the app parses it."""
    path = scope.get("path", "")
    if path in HEALTH_PATHS or path == "/metrics" or AdminApi.handles(path):
        return ""
    raw = (scope.get("raw_path") or path.encode()).decode("latin-1")
    host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == b"host"), "")
    return split_target(raw, host, vhost_domains).bucket


def is_iam_users(path: str) -> bool:
    """The admin API's IAM user and credential requests (api/admin/router.py)."""
    return path == IAM_USERS_PATH or path.startswith(IAM_USERS_PATH + "/")


def is_create_bucket(scope: Scope, vhost_domains: tuple[str, ...]) -> bool:
    """Whether the app's routing table takes the request for CreateBucket (``PUT /bucket``, whatever query an SDK
    adds that names no sub-resource)."""
    if scope.get("method") != "PUT":
        return False
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
    raw = (scope.get("raw_path") or scope.get("path", "/").encode()).decode("latin-1")
    target = split_target(raw, headers.get("host", ""), vhost_domains)
    query_string = (scope.get("query_string") or b"").decode("latin-1")
    query = parse_query(query_string) if query_string else {}
    return route("PUT", target.bucket, target.key, query, headers).operation == "CreateBucket"


class PoolRouter:
    """The middleware; ``close()`` (awaited) stops the other pools' watches and the forwarder's connections."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, node_id: str, pool: str,
                 region: str, vhost_domains: tuple[str, ...], pools: Any, forwarder: GatewayApp,
                 locate: Callable[[str], Awaitable[str | None]], held_here: Callable[[str], bool],
                 own_usage: Callable[[], int], clock: Callable[[], float] = time.monotonic,
                 iam_pool: str | None = None, locate_deadline_s: float = LOCATE_DEADLINE_S) -> None:
        """``pools``: the other pools' watches (cluster/gateway.py ``PoolSet``: ``of(name)``, ``start``, ``stop``);
        ``iam_pool``: the registry pool, when this node is outside it (its IAM user requests are forwarded there)."""
        self.app = app
        self.node_id = node_id
        self.pool = pool
        self.region = region
        self.vhost_domains = vhost_domains
        self.pools = pools
        self.forwarder = forwarder
        self.locate = locate
        self.held_here = held_here
        self.own_usage = own_usage
        self._clock = clock
        self.iam_pool = iam_pool
        self.locate_deadline_s = locate_deadline_s
        self._located: dict[str, tuple[str, float]] = {}  # bucket -> (pool, when asked)
        self._lookups: dict[str, asyncio.Future[str | None]] = {}  # bucket -> the registry read running for it
        self._usage: dict[str, tuple[int, float]] = {}  # other pool -> (bytes stored, when asked)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.iam_pool is not None and is_iam_users(scope.get("path", "")):
            if any(k.lower() == FORWARDED for k, _ in scope.get("headers") or ()):  # never decided outside the home
                await self.forwarder.unavailable(scope, send, "IAM users are managed by the registry pool; this "
                                                              "node is not in it (S4_CLUSTER_POOLS differs?).")
                return
            await self._forward(scope, receive, send, self.iam_pool)
            return
        if scope["type"] != "http" or any(k.lower() == FORWARDED for k, _ in scope.get("headers") or ()):
            await self.app(scope, receive, send)
            return
        try:
            bucket = bucket_of(scope, self.vhost_domains)
        except Exception:  # noqa: BLE001 - a malformed target: the app answers it with the exact error
            bucket = ""
        if not bucket:
            await self.app(scope, receive, send)
            return
        if is_create_bucket(scope, self.vhost_domains):
            await self._create_bucket(scope, receive, send, bucket)
            return
        if self.held_here(bucket):
            await self.app(scope, receive, _tagged(send, self.pool))
            return
        try:
            pool = await self._pool_of(bucket)
        except Exception:  # noqa: BLE001 - the registry cannot say and nothing is remembered: 503, never a guess
            await self.forwarder.unavailable(scope, send, "The cluster's bucket registry cannot say which pool "
                                                          "holds this bucket right now; retry later.")
            return
        if pool is None or pool == self.pool or self.pools.of(pool) is None:
            await self.app(scope, receive, send if pool is None else _tagged(send, self.pool))
            return
        await self._forward(scope, receive, send, pool)

    async def _pool_of(self, bucket: str) -> str | None:
        """The registry's answer, remembered; a remembered pool routes while its refresh runs and outlives a
        registry that cannot answer."""
        known = self._located.get(bucket)
        if known is not None:
            if self._clock() - known[1] >= LOCATE_TTL_S:
                self._lookup(bucket, self._refresh)  # in the background: this request goes on with what is known
            return known[0]
        return await asyncio.shield(self._lookup(bucket, self._first))

    def _lookup(self, bucket: str, how: Callable[[str], Awaitable[str | None]]) -> asyncio.Future[str | None]:
        """The registry read running for ``bucket``, started if none is: every request for it shares one."""
        running = self._lookups.get(bucket)
        if running is None:
            running = self._lookups[bucket] = asyncio.ensure_future(how(bucket))
            running.add_done_callback(lambda done: self._looked_up(bucket, done))
        return running

    def _looked_up(self, bucket: str, done: asyncio.Future[str | None]) -> None:
        if self._lookups.get(bucket) is done:
            del self._lookups[bucket]
        if not done.cancelled():
            done.exception()  # retrieved here: a failed lookup is answered (503) by the requests awaiting it

    async def _refresh(self, bucket: str) -> str | None:
        try:
            return self._learn(bucket, await self.locate(bucket))
        except Exception as exc:  # the remembered pool routes on; the next request due for a refresh asks again
            log.info("pools: could not refresh which pool bucket %s lives in: %s", bucket, exc)
            raise

    async def _first(self, bucket: str) -> str | None:
        """Nothing remembered: ask until the registry answers or ``locate_deadline_s`` has passed (then raise)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.locate_deadline_s
        while True:
            try:
                return self._learn(bucket, await self.locate(bucket))
            except Exception as exc:  # noqa: BLE001 - ServiceUnavailable: no majority answered this time
                if loop.time() + LOCATE_RETRY_S >= deadline:
                    log.warning("pools: cannot tell which pool bucket %s lives in: %s", bucket, exc)
                    raise
                log.info("pools: the registry did not say which pool bucket %s lives in (%s); asking again",
                         bucket, exc)
            await asyncio.sleep(LOCATE_RETRY_S)

    def _learn(self, bucket: str, pool: str | None) -> str | None:
        if pool is None:
            self._located.pop(bucket, None)
        else:
            self._located[bucket] = (pool, self._clock())
        return pool

    async def _create_bucket(self, scope: Scope, receive: Receive, send: Send, bucket: str) -> None:
        body, more, replay = await _read_small(receive)
        target = self.pool
        if not more:
            constraint = _location_constraint(body)
            if constraint is not None and self.pools.of(constraint) is not None:
                target = constraint
            elif constraint in (None, "", self.region) or (constraint == "US" and self.region == "us-east-1"):
                target = await self.least_used()
        if target == self.pool:
            await self.app(scope, replay, _tagged(send, self.pool))
        else:
            await self._forward(scope, replay, send, target)

    async def least_used(self) -> str:
        """The pool with the fewest bytes stored (ties: the first by name); a pool whose number cannot be had is
        left out (this node's own is always known)."""
        usage = {self.pool: self.own_usage()}
        for name, watch in self.pools.watches.items():
            stored = await self._stored(name, watch)
            if stored is not None:
                usage[name] = stored
        return min(usage, key=lambda name: (usage[name], name))

    async def _stored(self, name: str, watch: Backends) -> int | None:
        known = self._usage.get(name)
        if known is not None and self._clock() - known[1] < USAGE_TTL_S:
            return known[0]
        await self.pools.start()
        for _, address in watch.candidates()[:2]:
            try:
                async with self.forwarder.session().get(f"http://{address}/api/stats") as resp:
                    if resp.status == 200:
                        stored = int((await resp.json())["storage_used_bytes"])
                        self._usage[name] = (stored, self._clock())
                        return stored
            except Exception as exc:  # noqa: BLE001 - a hint only: try the next node, else leave the pool out
                log.info("pools: no usage from pool %s at %s: %s", name, address, exc)
        return None

    async def _forward(self, scope: Scope, receive: Receive, send: Send, pool: str) -> None:
        entry = scope.get(access_log.SCOPE_KEY)
        if entry is not None:
            entry.operation = f"Forward:{pool}"
        await self.pools.start()  # the first forward waits for one round of Pings (the nodes' S3 addresses)
        headers = [tuple(pair) for pair in scope.get("headers") or ()]
        await self.forwarder.forward(scope, headers, receive, send, backends=self.pools.of(pool),
                                     extra=((FORWARDED_HEADER, self.node_id),))

    async def close(self) -> None:
        for running in list(self._lookups.values()):
            running.cancel()
        await self.pools.stop()
        await self.forwarder.close()


def _tagged(send: Send, pool: str) -> Send:
    """``send`` adding ``x-s4-pool`` to the response's headers."""
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (POOL_HEADER.encode(), pool.encode())]}
        await send(message)
    return tagged


async def _read_small(receive: Receive) -> tuple[bytes, bool, Receive]:
    """Up to MAX_CREATE_BODY of the body; ``more`` when there is more (then it is not parsed here); and a receive
    that replays what was read before the rest."""
    chunks: list[Message] = []
    size, more = 0, True
    while more and size <= MAX_CREATE_BODY:
        message = await receive()
        chunks.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body") or b"")
        more = bool(message.get("more_body", False))
    body = b"".join(m.get("body") or b"" for m in chunks if m["type"] == "http.request")

    async def replay() -> Message:
        return chunks.pop(0) if chunks else await receive()
    return body, more, replay


def _location_constraint(body: bytes) -> str | None:
    """The body's LocationConstraint (None: no body or none given); a malformed body is the app's to refuse."""
    if not body.strip():
        return None
    try:
        return parse_create_bucket(body)
    except Exception:  # noqa: BLE001 - MalformedXML: answered by the node that serves the request
        return None

