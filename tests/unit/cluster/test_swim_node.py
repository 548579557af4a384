"""Issue 20, SWIM wired into a node (cluster/swim_node.py, cluster/node.py, cluster/liveness.py): the proto mapping,
the gRPC transport (routing, losses counted and swallowed, bounded in flight), the RPC's checks, and ClusterNodes
over an in-memory network of the real gRPC service (no sockets): peers become alive through SWIM alone, a stopped
one suspect then dead, a restarted one alive again at a higher incarnation, and those changes wake catch-up and
hints. Every wait is a bounded deadline poll on the event loop."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.config import ClusterConfig, build_cluster_config
from s4.cluster.grpc_server import CALLER
from s4.cluster.liveness import ALIVE, DEAD, SUSPECT, LivenessSettings
from s4.cluster.node import ClusterNode
from s4.cluster.swim import Change, Swim, SwimSettings
from s4.cluster.swim_messages import KINDS, STATES, Message, Update
from s4.cluster.swim_node import PoolTransport, from_wire, swim_settings, to_wire
from s4.cluster.wire.s4cluster.v1 import PingReply, SwimAck, SwimKind, SwimMessage, SwimState, SwimUpdate

POOL = "a:127.0.0.1:7001,b:127.0.0.2:7002,c:127.0.0.3:7003"
ADDR = {"a": "127.0.0.1:7001", "b": "127.0.0.2:7002", "c": "127.0.0.3:7003"}
FAST = LivenessSettings(interval_s=0.1, ping_timeout_s=0.05, suspect_after_s=0.3, dead_after_s=1.0)
DEADLINE_S = 30.0


def config(node_id: str, seeds: str = "") -> ClusterConfig:
    return build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id=node_id, node_grpc_addr=ADDR[node_id],
        node_http_addr=ADDR[node_id].replace(":700", ":900"), pool_name="p1", pool_nodes=POOL, seeds=seeds,
        replication_factor=3, write_quorum=2, read_quorum=2, cluster_secret="a-long-shared-secret"))


# -- the proto mapping ---------------------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
incs = st.integers(min_value=0, max_value=2**63)
updates = st.builds(Update, st.sampled_from(STATES), names, names, incs, names)
messages = st.builds(Message, st.sampled_from(KINDS), names, names, names, incs, incs, names, names,
                     st.lists(updates, max_size=5).map(tuple))


@given(messages)
def test_swim_message_survives_the_wire_field_for_field(message: Message) -> None:
    assert from_wire(SwimMessage.parse(bytes(to_wire(message)))) == message


def test_swim_wire_unknown_kind_or_state_reaches_the_core_as_malformed() -> None:
    wire = SwimMessage(kind=SwimKind.PING, cluster="prod", sender_id="b", sender_addr=ADDR["b"], sender_inc=3,
                       target_id="a", updates=[SwimUpdate(state=SwimState.UNSPECIFIED, node_id="c",
                                                          address=ADDR["c"], incarnation=1)])
    data = bytearray(bytes(wire))
    assert data[:2] == b"\x08\x01"  # field 1 (kind), varint PING
    data[1] = 9  # a kind this build does not know
    message = from_wire(SwimMessage.parse(bytes(data)))
    assert message.kind == "" and message.updates[0].state == ""
    swim = Swim(cluster="prod", node_id="a", address=ADDR["a"], incarnation=1, transport=Recorder(),
                clock=type("C", (), {"now": staticmethod(lambda: 0.0)})(), rng=random.Random(0))
    swim.start()
    swim.receive(message)
    assert swim.counters.malformed == 2  # the update and the kind; the sender's implicit alive still counts
    assert swim.member("b") is not None and swim.member("c") is None


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    def send(self, address: str, message: Message) -> None:
        self.sent.append((address, message))


def test_swim_settings_follow_the_heartbeat_interval() -> None:
    assert swim_settings(LivenessSettings()) == SwimSettings()  # 1 s period, 0.5 s probe timeout: the defaults
    fast = swim_settings(FAST)
    assert (fast.period_s, fast.probe_timeout_s) == (0.1, 0.05)
    assert swim_settings(LivenessSettings(interval_s=0.2, ping_timeout_s=0.2)).probe_timeout_s == 0.1


# -- the transport -------------------------------------------------------------------------------------------------

class Stub:
    def __init__(self, behaviour: str, got: list[tuple[str, SwimMessage]], node_id: str) -> None:
        self.behaviour, self.got, self.node_id = behaviour, got, node_id

    async def swim(self, message: SwimMessage, *, timeout: float | None = None) -> SwimAck:
        if self.behaviour == "refuse":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        self.got.append((self.node_id, message))
        return SwimAck()


def ping(target: str = "b") -> Message:
    return Message("ping", "prod", "a", ADDR["a"], 7, seq=1, target_id=target)


def test_swim_transport_routes_by_address_and_counts_lost_messages_without_raising() -> None:
    got: list[tuple[str, SwimMessage]] = []
    behaviour = {"b": "answer", "c": "refuse", "d": "hang"}
    routes = {ADDR["b"]: "b", ADDR["c"]: "c", "127.0.0.4:7004": "d"}

    async def main() -> PoolTransport:
        transport = PoolTransport(lambda n: Stub(behaviour[n], got, n), routes, timeout_s=0.05)
        for address in (ADDR["b"], ADDR["c"], "127.0.0.4:7004", "10.9.9.9:1"):
            transport.send(address, ping())  # returns at once: the call is a task
        assert transport.in_flight == 3
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while transport.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return transport

    transport = asyncio.run(main())
    c = transport.counters
    assert (c.sent, c.failed, c.unroutable, c.overflow) == (1, 2, 1, 0)  # refused and timed out: lost, counted
    assert transport.in_flight == 0
    [(node_id, wire)] = got
    assert node_id == "b" and from_wire(wire) == ping()


def test_swim_transport_bounds_calls_in_flight_and_close_cancels_them() -> None:
    async def main() -> PoolTransport:
        transport = PoolTransport(lambda n: Stub("hang", [], n), {ADDR["b"]: "b"}, timeout_s=3600, max_in_flight=2)
        for _ in range(5):
            transport.send(ADDR["b"], ping())
        assert transport.in_flight == 2
        await asyncio.wait_for(transport.close(), DEADLINE_S)
        transport.send(ADDR["b"], ping())  # after close: dropped
        return transport

    transport = asyncio.run(main())
    assert transport.in_flight == 0 and transport.counters.overflow == 4 and transport.counters.failed == 0


# -- the RPC's checks ----------------------------------------------------------------------------------------------

def wire(sender: str, *updates: Update, address: str | None = None, target: str = "a") -> SwimMessage:
    return to_wire(Message("ping", "prod", sender, ADDR[sender] if address is None else address, 5, seq=1,
                           target_id=target, updates=updates))


def call_swim(node: ClusterNode, caller: str, message: SwimMessage) -> None:
    async def main() -> None:
        token = CALLER.set(caller)
        try:
            assert await node.server.service.swim(message) == SwimAck()
        finally:
            CALLER.reset(token)

    asyncio.run(main())


def test_swim_rpc_refuses_a_message_sent_in_another_members_name() -> None:
    node = ClusterNode(config("a"), lambda: (1, 1), FAST)
    with pytest.raises(GRPCError) as err:
        call_swim(node, "c", wire("b"))
    assert err.value.status is Status.INVALID_ARGUMENT and "caller is 'c'" in str(err.value.message)
    assert node.membership.swim.member("b") is None


def test_swim_rpc_drops_what_names_an_address_or_node_outside_the_pool() -> None:
    node = ClusterNode(config("a"), lambda: (1, 1), FAST)
    call_swim(node, "b", wire("b", address="127.0.0.9:7002"))  # b's id at an address its pool entry does not have
    assert node.membership.swim.member("b") is None and node.membership.outside_pool == 1
    stranger = Update("alive", "z", "127.0.0.26:7026", 4, "z")
    moved = Update("alive", "c", "127.0.0.99:7003", 9, "c")
    c = Update("suspect", "c", ADDR["c"], 2, "b")
    me = Update("suspect", "a", ADDR["a"], node.membership.swim.incarnation, "b")  # about this node: it refutes
    call_swim(node, "b", wire("b", stranger, moved, c, me))
    swim = node.membership.swim
    assert [(m.node_id, m.state, m.incarnation) for m in swim.members()] == [("b", ALIVE, 5), ("c", SUSPECT, 2)]
    assert node.membership.outside_pool == 3 and swim.counters.refutations == 1
    assert node.liveness.state("b") == ALIVE and node.liveness.state("c") == SUSPECT
    doc = node.health_document()
    assert {n["id"]: n["incarnation"] for n in doc["nodes"]} == {"a": swim.incarnation, "b": 5, "c": 2}
    assert doc["membership"]["refutations"] == 1 and doc["membership"]["outside_pool"] == 3


def test_swim_seeds_are_the_pool_members_named_in_s4_seeds_else_every_peer() -> None:
    def seeds(node_id: str, given_seeds: str) -> tuple[str, ...]:
        return ClusterNode(config(node_id, given_seeds), lambda: (1, 1), FAST).membership.swim.seeds

    assert seeds("a", "") == (ADDR["b"], ADDR["c"])
    assert seeds("a", f"{ADDR['a']},{ADDR['c']}") == (ADDR["c"],)
    assert seeds("a", ADDR["a"]) == (ADDR["b"], ADDR["c"])  # only itself: the pool
    assert seeds("a", "10.1.1.1:7001") == (ADDR["b"], ADDR["c"])  # outside the pool: ignored (logged)


# -- the state mapping and the wake-ups ----------------------------------------------------------------------------

class Woken:
    ready = True

    def __init__(self) -> None:
        self.peers: list[str] = []

    def peer_alive(self, peer: str) -> None:
        self.peers.append(peer)

    def pending(self, peer: str) -> int:  # the Ping tells the hints this node holds (cluster/drain.py)
        return 0


def test_swim_verdicts_are_the_states_and_a_new_life_wakes_catch_up_and_hints() -> None:
    node = ClusterNode(config("a"), lambda: (1, 1), FAST, clock=lambda: 0.0)
    catch_up, hints = Woken(), Woken()
    node.catch_up, node.hints = catch_up, hints  # type: ignore[assignment]
    node._log_changes()  # the first round: unproven, not logged, nobody woken
    node.liveness.seen("b", 1, 1)  # a Ping answer records, never decides
    assert node.liveness.state("b") == SUSPECT and catch_up.peers == []
    for change, state in ((Change("b", ADDR["b"], None, ALIVE, 3), ALIVE),
                          (Change("b", ADDR["b"], ALIVE, SUSPECT, 3), SUSPECT),
                          (Change("b", ADDR["b"], SUSPECT, DEAD, 3), DEAD),
                          (Change("b", ADDR["b"], DEAD, ALIVE, 4), ALIVE),  # back: woken
                          (Change("b", ADDR["b"], ALIVE, ALIVE, 9), ALIVE),  # restarted in between: woken
                          (Change("b", ADDR["b"], ALIVE, SUSPECT, 9), SUSPECT)):
        node._member_changed(change)
        assert node.liveness.state("b") == state
    assert catch_up.peers == hints.peers == ["b", "b", "b"]
    assert {r.node_id: r.incarnation for r, _ in node.liveness.snapshot()} == {"b": 9, "c": None}


# -- ClusterNodes over an in-memory network ------------------------------------------------------------------------

class Net:
    """Delivers each SWIM call through the receiving node's gRPC service (bytes on the way, the caller set as the
    authentication wrapper would); a node in ``down`` neither sends nor receives."""

    def __init__(self) -> None:
        self.nodes: dict[str, ClusterNode] = {}
        self.down: set[str] = set()

    def pool(self, caller: str) -> Any:
        net = self

        class Pool:
            def stub(self, node_id: str) -> Any:
                return NetStub(net, caller, node_id)

            async def ping(self, node_id: str, *_args: Any, **_kwargs: Any) -> PingReply:
                raise ConnectionRefusedError(111, "no heartbeat in this test")

            def close(self) -> None:
                pass

        return Pool()


class NetStub:
    def __init__(self, net: Net, caller: str, target: str) -> None:
        self.net, self.caller, self.target = net, caller, target

    async def swim(self, message: SwimMessage, *, timeout: float | None = None) -> SwimAck:
        if self.caller in self.net.down or self.target in self.net.down:
            raise ConnectionRefusedError(111, "Connection refused")
        await asyncio.sleep(0)
        token = CALLER.set(self.caller)
        try:
            return await self.net.nodes[self.target].server.service.swim(SwimMessage.parse(bytes(message)))
        finally:
            CALLER.reset(token)


def make_node(net: Net, node_id: str, wall: Callable[[], float] = time.time) -> ClusterNode:
    node = ClusterNode(config(node_id), lambda: (1, 1), FAST, wall=wall)
    node.pool = net.pool(node_id)  # type: ignore[assignment]
    node.catch_up, node.hints = Woken(), Woken()  # type: ignore[assignment]
    net.nodes[node_id] = node
    return node


async def until(what: str, check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_swim_nodes_see_each_other_alive_a_stopped_one_suspect_then_dead_and_back_at_a_higher_incarnation() -> None:
    net = Net()
    nodes = {n: make_node(net, n) for n in "abc"}
    seen: dict[str, list[str]] = {n: [] for n in "ab"}
    for n in "ab":
        nodes[n].membership.subscribe(lambda ch, n=n: seen[n].append(ch.new) if ch.node_id == "c" else None)

    def states(n: str) -> dict[str, str]:
        return {r.node_id: s for r, s in nodes[n].liveness.snapshot()}

    async def main() -> tuple[int, int]:
        for node in nodes.values():
            await node.membership.start()
        try:
            await until("everyone alive everywhere", lambda: all(set(states(n).values()) == {ALIVE} for n in "abc"))
            assert all(nodes[n].catch_up.peers and nodes[n].hints.peers for n in "abc")  # type: ignore[union-attr]
            old = nodes["c"].membership.swim.incarnation
            net.down.add("c")  # a crash: c's messages and timers stop
            await nodes["c"].membership.stop()
            await until("c dead on a and b", lambda: states("a")["c"] == states("b")["c"] == DEAD)
            assert SUSPECT in seen["a"] + seen["b"]  # suspected before declared dead
            assert states("a")["b"] == ALIVE
            for n in "ab":
                nodes[n].catch_up.peers.clear()  # type: ignore[union-attr]
            net.down.discard("c")
            nodes["c"] = make_node(net, "c", wall=lambda: time.time() + 5)  # a new life, a later start stamp
            await nodes["c"].membership.start()
            new = nodes["c"].membership.swim.incarnation
            # alive everywhere, in its new life (at its start stamp, or above it if it refuted a suspicion since)
            await until("c alive again everywhere at its new incarnation", lambda: all(
                set(states(n).values()) == {ALIVE} for n in "abc") and all(
                ({r.node_id: r.incarnation for r, _ in nodes[n].liveness.snapshot()}["c"] or 0) >= new for n in "ab"))
            assert all("c" in nodes[n].catch_up.peers for n in "ab")  # type: ignore[union-attr]
            return old, new
        finally:
            for node in nodes.values():
                await node.membership.stop()

    old, new = asyncio.run(main())
    assert new > old
    doc = nodes["a"].health_document()
    entry = {n["id"]: n for n in doc["nodes"]}["c"]
    assert entry["state"] == ALIVE and entry["incarnation"] >= new
    assert doc["membership"]["probes"] > 0 and doc["membership"]["messages_sent"] > 0


# -- metrics -------------------------------------------------------------------------------------------------------

def test_swim_counters_reach_the_metrics_in_one_process_and_as_increments_in_several() -> None:
    from prometheus_client import CollectorRegistry

    from s4.api.metrics import ClusterMetrics, cluster_families
    from s4.engine.ports import PeerHealth

    class Status:
        counters = {"probes": 10, "suspicions": 1, "refutations": 0, "foreign_dropped": 2, "messages_lost": 3,
                    "awareness": 1}

        def peer_health(self) -> list[PeerHealth]:
            return [PeerHealth("b", True, None, 0)]

        def quorum_failures(self) -> int:
            return 0

        def membership_counters(self) -> dict[str, int]:
            return dict(self.counters)

    status = Status()
    families = {f.name: f.samples[0].value for f in cluster_families(status)  # type: ignore[arg-type]
                if f.name.startswith("s4_cluster_swim")}
    assert families == {"s4_cluster_swim_probes": 10, "s4_cluster_swim_suspicions": 1,
                        "s4_cluster_swim_refutations": 0, "s4_cluster_swim_foreign_dropped": 2,
                        "s4_cluster_swim_messages_lost": 3, "s4_cluster_swim_awareness": 1}
    registry = CollectorRegistry()
    metrics = ClusterMetrics(status, registry)  # type: ignore[arg-type]
    status.counters = {**status.counters, "probes": 25, "refutations": 1, "awareness": 0}
    metrics.update()
    metrics.update()
    value = registry.get_sample_value
    assert value("s4_cluster_swim_probes_total") == 25 and value("s4_cluster_swim_refutations_total") == 1
    assert value("s4_cluster_swim_foreign_dropped_total") == 2 and value("s4_cluster_swim_awareness") == 0
    real = ClusterNode(config("a"), lambda: (1, 1), FAST)
    assert {*Status.counters} <= set(real.membership_counters())  # the node counts every one the metrics show
