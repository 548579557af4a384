"""Issue 20, gateway mode: which nodes a gateway forwards to (cluster/gateway.py), and its Pings as a guest of the
pool (cluster/auth.py guest methods): answered with the node's S3 address, recording nothing on the node; any other
call from outside the pool still refused."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.auth import AuthError, Signer, Verifier, derive_key
from s4.cluster.config import ClusterConfig, build_cluster_config, build_gateway_config
from s4.cluster.gateway import DRAINING, PoolWatch, forwarding_order
from s4.cluster.grpc_server import PING_METHOD, ClusterServer
from s4.cluster.liveness import ALIVE, DEAD, SUSPECT

SECRET = "a-long-shared-secret"


def test_issue20_alive_nodes_first_then_suspect_never_dead_or_unheard() -> None:
    states = [("n1", ALIVE, "h1:1"), ("n2", SUSPECT, "h2:1"), ("n3", DEAD, "h3:1"), ("n4", ALIVE, "h4:1"),
              ("n5", ALIVE, ""), ("n6", SUSPECT, "h6:1")]
    assert forwarding_order(states, 0) == [("n1", "h1:1"), ("n4", "h4:1"), ("n2", "h2:1"), ("n6", "h6:1")]
    assert forwarding_order(states, 1) == [("n4", "h4:1"), ("n1", "h1:1"), ("n6", "h6:1"), ("n2", "h2:1")]
    assert forwarding_order([("n3", DEAD, "h3:1"), ("n5", SUSPECT, "")], 7) == []


def test_issue20_a_draining_node_is_tried_after_the_other_alive_nodes_before_suspect_ones() -> None:
    """POST /api/admin/cluster/nodes/{id}/drain takes a node out of rotation (cluster/drain.py): the gateway learns
    it from the node's Ping answer and sends it requests only when no other live node can take them."""
    states = [("n1", DRAINING, "h1:1"), ("n2", SUSPECT, "h2:1"), ("n3", ALIVE, "h3:1")]
    assert [node for node, _ in forwarding_order(states, 0)] == ["n3", "n1", "n2"]
    assert [node for node, _ in forwarding_order(states, 1)] == ["n3", "n1", "n2"]


@given(st.lists(st.tuples(st.sampled_from([ALIVE, SUSPECT, DEAD]), st.booleans()), max_size=8),
       st.integers(min_value=0, max_value=1000))
def test_issue20_forwarding_order_tries_every_usable_node_once_alive_first(nodes: list[tuple[str, bool]],
                                                                          turn: int) -> None:
    states = [(f"n{i}", state, f"h{i}:1" if known else "") for i, (state, known) in enumerate(nodes)]
    order = forwarding_order(states, turn)
    usable = {(n, a) for n, s, a in states if a and s != DEAD}
    assert len(order) == len(set(order)) and set(order) == usable
    rank = {n: s for n, s, _ in states}
    ranks = [0 if rank[n] == ALIVE else 1 for n, _ in order]
    assert ranks == sorted(ranks)
    # round robin: over as many turns as alive nodes, each alive node comes first once
    alive = [n for n, s, a in states if s == ALIVE and a]
    if alive:
        assert {forwarding_order(states, turn + k)[0][0] for k in range(len(alive))} == set(alive)


def test_issue20_a_key_holder_outside_the_pool_may_ping_and_nothing_else() -> None:
    key = derive_key(SECRET, "prod", from_s3_secret=False)
    verifier = Verifier(cluster="prod", key=key, members={"node-1"}, max_clock_offset_s=60, clock=lambda: 1e9,
                        guest_methods=(PING_METHOD,))
    gateway = Signer(cluster="prod", node_id="gw-1", key=key, clock=lambda: 1e9)
    assert verifier.verify(dict(gateway.headers(PING_METHOD)), PING_METHOD) == "gw-1"
    other = "/s4cluster.v1.S4Cluster/ApplyEvents"
    with pytest.raises(AuthError, match="not in this node's pool"):
        verifier.verify(dict(gateway.headers(other)), other)
    wrong = Signer(cluster="prod", node_id="gw-1", key=derive_key("another-long-secret", "prod", from_s3_secret=False))
    with pytest.raises(AuthError, match="MAC does not match"):  # a guest still proves the cluster key
        verifier.verify(dict(wrong.headers(PING_METHOD)), PING_METHOD)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def status(self) -> tuple[int, int]:
        return 5, 6

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        self.seen.append(node_id)


def node_config(pool: str, **extra: Any) -> ClusterConfig:
    entry = pool.split(",")[0]
    return build_cluster_config(dict(mode="cluster", cluster_name="prod", node_id="node-1",
                                     node_grpc_addr=entry.partition(":")[2], node_http_addr="127.0.0.1:9100",
                                     pool_name="pool-1", pool_nodes=pool, replication_factor=1, write_quorum=1,
                                     read_quorum=1, cluster_secret=SECRET, max_clock_offset_s=60.0, **extra))


def test_issue20_gateway_pings_learn_the_s3_address_and_record_nothing_on_the_node() -> None:
    pool = f"node-1:127.0.0.1:{free_port('127.0.0.1')},node-2:127.0.0.2:{free_port('127.0.0.2')}"  # node-2: nobody
    good = build_gateway_config(dict(mode="gateway", cluster_name="prod", node_id="gw-1", pool_name="pool-1",
                                     pool_nodes=pool, cluster_secret=SECRET))
    bad = build_gateway_config(dict(mode="gateway", cluster_name="prod", node_id="gw-1", pool_name="pool-1",
                                    pool_nodes=pool, cluster_secret="another-long-secret"))
    local = Recorder()
    found: dict[str, Any] = {}

    async def main() -> None:
        server = ClusterServer(node_config(pool), local)
        await server.start()
        try:
            for name, config in (("good", good), ("bad", bad)):
                watch = PoolWatch(config, "127.0.0.4")
                await watch.ping_all()
                found[name] = {n["id"]: n for n in watch.health_document()["nodes"]}
                found[name + "-order"] = watch.candidates()
                await watch.stop()
        finally:
            await server.stop()

    asyncio.run(main())
    assert found["good"]["node-1"]["state"] == ALIVE and found["good"]["node-1"]["http_addr"] == "127.0.0.1:9100"
    assert found["good"]["node-2"]["state"] == SUSPECT and found["good"]["node-2"]["last_error"]
    assert found["good-order"] == [("node-1", "127.0.0.1:9100")]  # node-2 never answered: no address to try
    assert found["bad"]["node-1"]["state"] == SUSPECT and "UNAUTHENTICATED" in found["bad"]["node-1"]["last_error"]
    assert found["bad-order"] == []
    assert local.seen == []  # a guest's Ping leaves no trace in the node's liveness records


def test_issue20_requests_arriving_while_the_pool_set_starts_wait_for_its_first_round() -> None:
    """A node forwards to another pool only once its first round of Pings told the S3 addresses; a second request
    arriving during that round must wait for it too, not find no candidate and answer 503."""
    import asyncio

    from s4.cluster.gateway import PoolSet

    class Slow:
        def __init__(self) -> None:
            self.pool = type("P", (), {"name": "pool-9"})()
            self.started = self.stopped = 0
            self.ready = False

        async def start(self) -> None:
            self.started += 1
            await asyncio.sleep(0.01)
            self.ready = True

        async def stop(self) -> None:
            self.stopped += 1

    async def main() -> None:
        watch = Slow()
        pools = PoolSet([watch])  # type: ignore[list-item]
        seen = []

        async def request() -> None:
            await pools.start()
            seen.append(watch.ready)
        await asyncio.gather(request(), request(), request())
        assert seen == [True, True, True] and watch.started == 1
        await pools.stop()
        await pools.stop()
        assert watch.stopped == 1

    asyncio.run(main())
