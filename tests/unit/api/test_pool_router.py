"""Issue 20, pools: the routing rules of a node of several pools (api/pool_router.py), with a fake app, registry
and forwarder: what is served here, what is forwarded where, and what is answered 503."""

from __future__ import annotations

import asyncio
from typing import Any

from s4.api.pool_router import LOCATE_TTL_S, PoolRouter
from s4.engine.errors import ServiceUnavailableError


class Fakes:
    def __init__(self) -> None:
        self.served: list[tuple[str, bytes, list[Any]]] = []
        self.forwarded: list[tuple[str, bytes, tuple[Any, ...]]] = []
        self.unavailable: list[str] = []
        self.registry: dict[str, str | None] = {}
        self.registry_down = False
        self.lookups = 0
        self.now = 0.0
        self.watches = {"pool-1": "watch-1", "pool-3": "watch-3"}
        self.usage = {"pool-1": 500, "pool-3": 100}

    # the app
    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        body = await _body(receive)
        headers: list[Any] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers.extend(message["headers"])
        await send_through(send, capture)
        self.served.append((scope["path"], body, headers))

    # the forwarder (GatewayApp)
    async def forward(self, scope: Any, headers: Any, receive: Any, send: Any, backends: Any = None,
                      extra: tuple[Any, ...] = ()) -> None:
        self.forwarded.append((backends, await _body(receive), extra))

    async def unavailable_answer(self, scope: Any, send: Any, message: str) -> None:
        self.unavailable.append(message)

    # the pools
    def of(self, name: str) -> Any:
        return self.watches.get(name)

    async def start(self) -> None:
        pass

    async def locate(self, bucket: str) -> str | None:
        self.lookups += 1
        if self.registry_down:
            raise ServiceUnavailableError("no majority")
        return self.registry.get(bucket)

    def router(self, held: tuple[str, ...] = (), iam_pool: str | None = None,
               locate_deadline_s: float = 0.0) -> PoolRouter:
        fakes = self

        class Forwarder:
            forward = fakes.forward
            unavailable = fakes.unavailable_answer

        router = PoolRouter(self.app, node_id="node-2", pool="pool-2", region="us-east-1",
                            vhost_domains=("localhost",), pools=self, forwarder=Forwarder(),  # type: ignore[arg-type]
                            locate=self.locate, held_here=lambda b: b in held, own_usage=lambda: 300,
                            clock=lambda: self.now, iam_pool=iam_pool, locate_deadline_s=locate_deadline_s)

        async def stored(name: str, watch: Any) -> int | None:
            return self.usage.get(name)
        router._stored = stored  # type: ignore[method-assign]
        return router


async def send_through(send: Any, capture: Any) -> None:
    for message in ({"type": "http.response.start", "status": 200, "headers": []},
                    {"type": "http.response.body", "body": b"", "more_body": False}):
        await capture(message)
        await send(message)


async def _body(receive: Any) -> bytes:
    out = b""
    while True:
        message = await receive()
        out += message.get("body", b"")
        if not message.get("more_body"):
            return out


def request(router: PoolRouter, method: str, path: str, body: bytes = b"", query: bytes = b"",
            headers: tuple[tuple[bytes, bytes], ...] = ()) -> list[Any]:
    sent: list[Any] = []
    chunks = [{"type": "http.request", "body": body[:5], "more_body": len(body) > 5},
              {"type": "http.request", "body": body[5:], "more_body": False}] if body else \
        [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Any:
        return chunks.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [(b"host", b"127.0.0.2:9000"), *headers]}
    asyncio.run(router(scope, receive, send))
    return sent


def create_body(constraint: str) -> bytes:
    return (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>'
            + constraint.encode() + b"</LocationConstraint></CreateBucketConfiguration>")


def test_issue20_a_bucket_held_here_is_served_here_and_tagged_with_the_pool() -> None:
    fakes = Fakes()
    sent = request(fakes.router(held=("mine",)), "GET", "/mine/key")
    assert [s[0] for s in fakes.served] == ["/mine/key"] and (b"x-s4-pool", b"pool-2") in sent[0]["headers"]
    assert fakes.lookups == 0 and not fakes.forwarded


def test_issue20_a_bucket_of_another_pool_is_forwarded_whole_with_the_hop_marker() -> None:
    fakes = Fakes()
    fakes.registry["theirs"] = "pool-1"
    request(fakes.router(), "PUT", "/theirs/key", body=b"0123456789")
    assert fakes.forwarded == [("watch-1", b"0123456789", (("x-s4-forwarded", "node-2"),))] and not fakes.served


def test_issue20_a_forwarded_request_is_served_here_never_forwarded_again() -> None:
    fakes = Fakes()
    fakes.registry["theirs"] = "pool-1"
    request(fakes.router(), "GET", "/theirs/key", headers=((b"x-s4-forwarded", b"node-1"),))
    assert [s[0] for s in fakes.served] == ["/theirs/key"] and not fakes.forwarded and fakes.lookups == 0


def test_issue20_no_such_bucket_and_this_pools_buckets_are_served_here() -> None:
    fakes = Fakes()
    fakes.registry["ours"] = "pool-2"
    router = fakes.router()
    nothing = request(router, "GET", "/nothing/key")
    ours = request(router, "GET", "/ours/key")
    assert [s[0] for s in fakes.served] == ["/nothing/key", "/ours/key"] and not fakes.forwarded
    assert (b"x-s4-pool", b"pool-2") not in nothing[0]["headers"]  # nothing learnt about a bucket nobody holds
    assert (b"x-s4-pool", b"pool-2") in ours[0]["headers"]


def test_issue20_a_remembered_pool_outlives_the_registry_but_nothing_is_guessed() -> None:
    fakes = Fakes()
    fakes.registry["theirs"] = "pool-1"
    router = fakes.router()

    async def run() -> None:
        await router(*scope_of("GET", "/theirs/a"))
        fakes.registry_down, fakes.now = True, LOCATE_TTL_S + 1  # due for a refresh, and the registry cannot answer
        await router(*scope_of("GET", "/theirs/b"))
        await asyncio.sleep(0.01)  # the refresh ran (and failed) beside the request
        await router(*scope_of("GET", "/theirs/c"))
        await asyncio.sleep(0.01)
        await router(*scope_of("GET", "/unknown/a"))
    asyncio.run(run())
    assert [f[0] for f in fakes.forwarded] == ["watch-1"] * 3 and fakes.lookups == 4
    assert len(fakes.unavailable) == 1 and not fakes.served  # the fake forwarder's 503 for the unknown bucket


def scope_of(method: str, path: str) -> tuple[Any, Any, Any]:
    """One request's scope, receive and send (no body), for several requests on one loop."""
    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass
    return ({"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"127.0.0.2:9000")]}, receive, send)


def test_robust19_a_refresh_never_holds_up_a_request_for_a_remembered_bucket() -> None:
    """A registry replica that hangs (a busy box, a node restarting) while a remembered pool is due for a refresh:
    the requests are routed at once by the remembered pool, and one refresh runs for all of them."""
    fakes = Fakes()
    fakes.registry["theirs"] = "pool-1"
    router = fakes.router()
    hang = asyncio.Event()

    async def run() -> None:
        await router(*scope_of("GET", "/theirs/a"))
        fakes.now = LOCATE_TTL_S + 1

        async def slow(bucket: str) -> str | None:
            fakes.lookups += 1
            await hang.wait()
            return "pool-1"
        router.locate = slow
        async with asyncio.timeout(5):
            await asyncio.gather(*(router(*scope_of("GET", f"/theirs/{i}")) for i in range(5)))
        assert len(fakes.forwarded) == 6 and fakes.lookups == 2  # the first lookup, then one shared refresh
        hang.set()
        await asyncio.sleep(0.01)
        assert router._located["theirs"] == ("pool-1", LOCATE_TTL_S + 1) and not router._lookups
    asyncio.run(run())


def test_robust19_a_registry_that_fails_for_a_moment_costs_no_503() -> None:
    """Nothing remembered (another HTTP worker's memory, a node just started) and the registry's first answers are
    failures (no majority within the proposer's retries, a busy box): the request asks again within its deadline,
    concurrent requests share the lookup, and the bucket is served; a registry that stays down is a 503."""
    fakes = Fakes()
    fakes.registry["theirs"] = "pool-1"
    router = fakes.router(locate_deadline_s=3.0)
    failures = [ServiceUnavailableError("no majority")] * 2

    async def flaky(bucket: str) -> str | None:
        fakes.lookups += 1
        await asyncio.sleep(0.01)
        if failures:
            raise failures.pop()
        return fakes.registry.get(bucket)
    router.locate = flaky

    async def run() -> None:
        await asyncio.gather(*(router(*scope_of("GET", f"/theirs/{i}")) for i in range(3)))
    asyncio.run(run())
    assert [f[0] for f in fakes.forwarded] == ["watch-1"] * 3 and not fakes.unavailable and fakes.lookups == 3
    down = Fakes()
    down.registry_down = True
    request(down.router(locate_deadline_s=0.6), "GET", "/theirs/a")
    assert len(down.unavailable) == 1 and not down.forwarded and not down.served and down.lookups >= 2


def test_issue20_create_bucket_goes_to_the_pool_its_location_constraint_names() -> None:
    fakes = Fakes()
    router = fakes.router()
    request(router, "PUT", "/new-a", body=create_body("pool-1"))
    assert fakes.forwarded == [("watch-1", create_body("pool-1"), (("x-s4-forwarded", "node-2"),))]
    request(router, "PUT", "/new-b", body=create_body("pool-2"))  # this pool: created here, body replayed whole
    request(router, "PUT", "/new-c", body=create_body("pool-9"))  # unknown: this node refuses it (the app)
    assert [(s[0], s[1]) for s in fakes.served] == [("/new-b", create_body("pool-2")),
                                                   ("/new-c", create_body("pool-9"))]


def test_issue20_create_bucket_without_a_pool_goes_to_the_least_used() -> None:
    fakes = Fakes()
    router = fakes.router()
    request(router, "PUT", "/new-a")  # pool-3 holds 100 bytes, this pool 300, pool-1 500
    request(router, "PUT", "/new-b", body=create_body("us-east-1"))
    assert [f[0] for f in fakes.forwarded] == ["watch-3", "watch-3"]
    fakes.usage = {"pool-1": 500}  # pool-3's number unknown: left out; this pool is then the least used
    request(router, "PUT", "/new-c")
    assert [s[0] for s in fakes.served] == ["/new-c"]
    request(router, "PUT", "/new-d", query=b"versioning")  # a bucket sub-resource, not CreateBucket
    assert fakes.lookups == 1
    request(router, "PUT", "/new-e", query=b"x-id=CreateBucket", body=create_body("pool-1"))  # an SDK's own query
    assert fakes.forwarded[-1][:2] == ("watch-1", create_body("pool-1"))


def test_iam_user_requests_of_a_node_outside_the_registry_pool_go_to_the_registry_pool() -> None:
    """docs/architecture/pools.md, "IAM across pools": IAM is decided in the registry pool only; a node outside it
    forwards the admin API's user requests there (every method, credentials included) and serves the rest (login
    from its own copy, the other admin endpoints, health)."""
    fakes = Fakes()
    router = fakes.router(iam_pool="pool-1")
    for method, path in (("POST", "/api/admin/users"), ("GET", "/api/admin/users"), ("PUT", "/api/admin/users/u1"),
                         ("DELETE", "/api/admin/users/u1"), ("POST", "/api/admin/users/u1/credentials")):
        request(router, method, path, body=b'{"username": "someone"}' if method == "POST" else b"")
    assert [f[0] for f in fakes.forwarded] == ["watch-1"] * 5
    assert all(f[2] == (("x-s4-forwarded", "node-2"),) for f in fakes.forwarded)
    for path in ("/api/admin/login", "/api/admin/usersx", "/api/admin/cluster/health", "/api/stats", "/health"):
        request(router, "GET" if path != "/api/admin/login" else "POST", path)
    assert [s[0] for s in fakes.served] == ["/api/admin/login", "/api/admin/usersx", "/api/admin/cluster/health",
                                           "/api/stats", "/health"]
    assert len(fakes.forwarded) == 5 and fakes.lookups == 0


def test_iam_user_requests_of_a_registry_pool_node_are_served_there() -> None:
    fakes = Fakes()
    router = fakes.router(iam_pool=None)
    request(router, "POST", "/api/admin/users", body=b"{}")
    request(router, "POST", "/api/admin/users", body=b"{}", headers=((b"x-s4-forwarded", b"node-9"),))
    assert [s[0] for s in fakes.served] == ["/api/admin/users"] * 2 and not fakes.forwarded
    fakes = Fakes()  # one arriving forwarded outside the registry pool: neither decided here nor sent on (no loop)
    request(fakes.router(iam_pool="pool-1"), "DELETE", "/api/admin/users/u1",
            headers=((b"x-s4-forwarded", b"node-9"),))
    assert not fakes.served and not fakes.forwarded and len(fakes.unavailable) == 1
