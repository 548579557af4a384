"""Issue 19: the liveness state machine of a node's peers (cluster/liveness.py) on a simulated clock, and the
heartbeat and health document of ClusterNode over a simulated transport (no sockets, no sleeps). Issue 20: in a
ClusterNode the states are SWIM's; the Ping heartbeat records the rest (tests/unit/cluster/test_swim_node.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.config import build_cluster_config
from s4.cluster.liveness import ALIVE, DEAD, SUSPECT, Liveness, LivenessSettings
from s4.cluster.node import ClusterNode
from s4.cluster.swim import Change
from s4.cluster.wire.s4cluster.v1 import PingReply


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def liveness(clock: Clock, **settings: float) -> Liveness:
    return Liveness(["b", "c"], LivenessSettings(**settings), clock=clock, wall=lambda: 1_700_000_000 + clock.now)


def test_issue19_peer_never_seen_is_suspect_then_dead_never_alive() -> None:
    clock = Clock()
    live = liveness(clock)
    assert live.state("b") == SUSPECT  # unproven from the start: a refused node never shows alive
    clock.now += 10.0
    assert live.state("b") == SUSPECT
    clock.now += 0.001
    assert live.state("b") == DEAD


def test_issue19_peer_alive_then_suspect_after_3s_then_dead_after_10s_then_alive_again() -> None:
    clock = Clock()
    live = liveness(clock)
    live.seen("b", hlc=5, journal_seq=7, http_addr="127.0.0.2:9000")
    assert live.state("b") == ALIVE and live.state("c") == SUSPECT
    clock.now += 3.0
    assert live.state("b") == ALIVE  # the bound itself: still alive
    live.missed("b", "ConnectionRefusedError")
    clock.now += 0.5
    assert live.state("b") == SUSPECT
    clock.now += 6.5
    assert live.state("b") == SUSPECT
    clock.now += 0.5
    assert live.state("b") == DEAD
    record = dict((r.node_id, r) for r, _ in live.snapshot())["b"]
    assert (record.last_error, record.http_addr, record.journal_seq) == ("ConnectionRefusedError", "127.0.0.2:9000", 7)
    assert record.last_seen_ms == (1_700_000_000 + 1000) * 1000  # wall ms of the proof, not of the question
    live.seen("b", hlc=6, journal_seq=9)
    assert live.state("b") == ALIVE
    record = dict((r.node_id, r) for r, _ in live.snapshot())["b"]
    assert (record.last_error, record.http_addr, record.journal_seq) == ("", "127.0.0.2:9000", 9)


def test_issue19_constants_are_configurable_and_checked() -> None:
    clock = Clock()
    live = liveness(clock, interval_s=0.1, ping_timeout_s=0.05, suspect_after_s=0.3, dead_after_s=1.0)
    live.seen("b", 1, 1)
    clock.now += 0.31
    assert live.state("b") == SUSPECT
    clock.now += 0.7
    assert live.state("b") == DEAD
    with pytest.raises(ValueError, match="suspect_after_s < dead_after_s"):
        LivenessSettings(suspect_after_s=10, dead_after_s=3)
    with pytest.raises(ValueError, match="ping_timeout_s"):
        LivenessSettings(ping_timeout_s=2.0, interval_s=1.0)


def test_issue19_unknown_node_is_not_tracked_and_seqs_never_go_back() -> None:
    clock = Clock()
    live = liveness(clock)
    live.seen("intruder", 1, 1)
    assert live.peers == ("b", "c")
    live.seen("b", hlc=10, journal_seq=20)
    live.seen("b", hlc=9, journal_seq=19)  # an older Ping overtaken in flight
    record = dict((r.node_id, r) for r, _ in live.snapshot())["b"]
    assert (record.hlc, record.journal_seq, record.journal_lag) == (10, 20, 20)
    live.applied("b", 15)
    assert dict((r.node_id, r) for r, _ in live.snapshot())["b"].journal_lag == 5


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=5, allow_nan=False), st.booleans()), max_size=40))
def test_issue19_state_is_a_function_of_the_silence(steps: list[tuple[float, bool]]) -> None:
    """Whatever the history of answers and misses: alive iff seen within 3 s; dead iff silent more than 10 s."""
    clock = Clock()
    live = liveness(clock)
    started, last_seen = clock.now, None
    for advance, answered in steps:
        clock.now += advance
        if answered:
            live.seen("b", 1, 1)
            last_seen = clock.now
        else:
            live.missed("b", "timeout")
        silence = clock.now - (last_seen if last_seen is not None else started)
        expected = ALIVE if last_seen is not None and silence <= 3.0 else SUSPECT if silence <= 10.0 else DEAD
        assert live.state("b") == expected


# -- ClusterNode over a simulated transport ------------------------------------------------------------------------

def node_config() -> Any:
    return build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id="a", node_grpc_addr="127.0.0.1:7001",
        node_http_addr="127.0.0.1:9001", pool_name="p1",
        pool_nodes="a:127.0.0.1:7001,b:127.0.0.2:7002,c:127.0.0.3:7003",
        replication_factor=3, write_quorum=2, read_quorum=2, cluster_secret="a-long-shared-secret"))


class FakePool:
    """Stands in for PeerPool: answers for the peers in ``up``, refuses the others, hangs for ``slow``."""

    def __init__(self) -> None:
        self.up = {"b": PingReply(node_id="b", hlc=50, journal_seq=12, http_addr="127.0.0.2:9002")}
        self.slow: set[str] = set()
        self.sent: list[tuple[str, int, int]] = []

    async def ping(self, node_id: str, hlc: int, journal_seq: int, *, timeout_s: float | None = None,
                   **_lease: Any) -> PingReply:
        self.sent.append((node_id, hlc, journal_seq))
        if node_id in self.slow:
            await asyncio.sleep(3600)
        if node_id not in self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        return self.up[node_id]

    def close(self) -> None:
        pass


def test_issue19_heartbeat_round_records_answers_and_bounds_a_hanging_peer() -> None:
    clock = Clock()
    node = ClusterNode(node_config(), lambda: (77, 5), LivenessSettings(ping_timeout_s=0.05, interval_s=0.1,
                                                                        suspect_after_s=0.3, dead_after_s=1.0),
                       clock=clock, wall=lambda: 1_700_000_000.0)
    pool = FakePool()
    node.pool = pool  # type: ignore[assignment]
    rounds: list[int] = []
    node.listeners.append(lambda: rounds.append(len(rounds)))
    pool.slow.add("c")

    async def main() -> dict[str, Any]:
        await asyncio.wait_for(node.beat(), timeout=30)  # "c" hangs: its Ping is cut at ping_timeout_s
        return await node.health()

    doc = asyncio.run(main())
    assert sorted(pool.sent) == [("b", 77, 5), ("c", 77, 5)] and rounds == [0]
    assert doc["cluster"] == "prod" and doc["node_id"] == "a" and doc["mode"] == "cluster"
    assert doc["pools"] == [{"name": "p1", "nodes": ["a", "b", "c"], "replication_factor": 3, "write_quorum": 2,
                             "read_quorum": 2}]
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id["a"] == {"id": "a", "pool": "p1", "http_addr": "127.0.0.1:9001", "grpc_addr": "127.0.0.1:7001",
                          "state": "alive", "last_seen": 1_700_000_000_000, "incarnation": 1_700_000_000_000,
                          "draining": False, "hints_pending": 0}
    # b answered the Ping (its clock, journal and S3 address are recorded), but SWIM has not heard of it yet
    assert by_id["b"] == {"id": "b", "pool": "p1", "http_addr": "127.0.0.2:9002", "grpc_addr": "127.0.0.2:7002",
                          "state": "suspect", "last_seen": 1_700_000_000_000, "incarnation": None,
                          "draining": False, "hints_pending": 0}  # as b's Ping answer told
    assert by_id["c"]["state"] == "suspect" and by_id["c"]["last_seen"] is None and by_id["c"]["http_addr"] is None
    record = dict((r.node_id, r) for r, _ in node.liveness.snapshot())["c"]
    assert record.last_error == "TimeoutError"
    node._member_changed(Change("b", "127.0.0.2:7002", None, "alive", 41))  # SWIM hears of b
    health = {p.peer: p for p in node.peer_health()}
    assert (health["b"].up, health["b"].journal_lag, health["b"].last_seen_s) == (True, 12, 1_700_000_000.0)
    assert (health["c"].up, health["c"].last_seen_s) == (False, None)
    clock.now += 0.31  # beyond the heartbeat's suspect_after_s: SWIM's verdict stands, not the Ping's silence
    assert {n["id"]: (n["state"], n["incarnation"]) for n in node.health_document()["nodes"]} == {
        "a": ("alive", 1_700_000_000_000), "b": ("alive", 41), "c": ("suspect", None)}
    clock.now += 1.0  # c never heard of by SWIM, dead_after_s after this node's start: dead
    assert {n["id"]: n["state"] for n in node.health_document()["nodes"]} == {"a": "alive", "b": "alive",
                                                                             "c": "dead"}


def test_issue20_incoming_ping_records_the_peer_and_swim_decides_its_state() -> None:
    clock = Clock()
    node = ClusterNode(node_config(), lambda: (1, 1), clock=clock)
    node.peer_seen("c", hlc=3, journal_seq=4, http_addr="127.0.0.3:9003")
    assert node.liveness.state("c") == SUSPECT  # a Ping is no longer a verdict
    assert {n["id"]: n["http_addr"] for n in node.health_document()["nodes"]}["c"] == "127.0.0.3:9003"
    node._member_changed(Change("c", "127.0.0.3:7003", None, "alive", 5))
    assert node.liveness.state("c") == ALIVE
