"""Issue 19: S4_MODE=cluster starts a real node with liveness and health. Three real s4-server processes on
127.0.0.1, .2 and .3 with the spec's quick-start variables (the same S3 keys, no S4_CLUSTER_SECRET: the derived
key, with its warning) see each other alive in GET /api/admin/cluster/health and in /metrics; a node killed with
kill -9 becomes suspect then dead on the others and alive again after its restart; a node of another cluster or
with another secret is refused and never shown alive; impossible settings and a taken gRPC port stop start-up
naming the setting. Every wait is a deadline poll."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port
from helpers.server_pool import (
    HOSTS,
    JWT_SECRET,
    ROOT_PASSWORD,
    health,
    incarnations,
    make_pool,
    metric,
    pool_env,
    states,
    token,
    wait_for,
)


def test_issue19_three_nodes_alive_then_kill9_suspect_dead_and_alive_after_restart(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    """Issue 20: the states are SWIM's; each entry shows the member's incarnation, the same on every node, and the
    restarted node comes back alive at a higher one (its start stamp) everywhere."""
    pool = make_pool(tmp_path, workers=1)
    for node in pool:
        nodes.append(node.start())
    tokens = [token(n) for n in pool]
    all_alive = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
    wait_for("every node to see the 3 nodes alive",
             lambda: all(states(health(n, t)) == all_alive for n, t in zip(pool, tokens, strict=True)), pool)

    doc = health(pool[0], tokens[0])
    grpc = pool[0].extra_env["S4_POOL_NODES"].split(",")
    assert set(doc) == {"cluster", "node_id", "mode", "nodes", "pools", "caught_up", "read_lease", "membership",
                        "tombstone_gc", "draining", "cas"}  # issue 20: docs/architecture/tombstones.md
    assert doc["cas"] == {"acceptor": "voting", "restored_registers": 0}  # not a replaced node: votes from the start
    assert set(doc["tombstone_gc"]) == {"version_tombstones", "collected", "sweeps", "blocked_by", "horizon_ms",
                                        "horizon_seq", "waived"}
    assert doc["membership"]["protocol"] == "swim" and doc["membership"]["probes"] > 0
    assert doc["membership"]["awareness"] >= 0 and doc["membership"]["foreign_dropped"] == 0
    assert set(doc["read_lease"]) == {"local_reads", "remaining_s", "unsettled_events", "asking"}
    assert (doc["cluster"], doc["node_id"], doc["mode"]) == ("itest", "node-1", "cluster")
    assert doc["pools"] == [{"name": "pool-1", "nodes": ["node-1", "node-2", "node-3"], "replication_factor": 3,
                             "write_quorum": 2, "read_quorum": 2}]
    for i, entry in enumerate(doc["nodes"]):
        assert set(entry) == {"id", "pool", "http_addr", "grpc_addr", "state", "last_seen", "incarnation",
                              "draining", "hints_pending"}
        assert isinstance(entry["incarnation"], int) and entry["incarnation"] > 0
        assert entry["id"] == f"node-{i + 1}" and entry["pool"] == "pool-1"
        assert entry["http_addr"] == f"{HOSTS[i]}:{pool[i].port}"  # told in Ping, for the peers
        assert entry["grpc_addr"] == grpc[i].partition(":")[2]
        assert isinstance(entry["last_seen"], int) and abs(entry["last_seen"] / 1000 - time.time()) < 60
    for node in pool:  # the derived key's warning, at start-up
        assert "S4_CLUSTER_SECRET is unset" in node.log()
    assert metric(pool[0], "s4_cluster_peer_up", "node-2") == 1.0
    assert metric(pool[0], "s4_cluster_peer_last_seen_seconds", "node-3") > 0  # type: ignore[operator]
    assert metric(pool[0], "s4_cluster_peer_journal_lag", "node-2") is not None
    assert re.search(r"^s4_cluster_swim_probes_total [1-9]", requests.get(f"{pool[0].endpoint}/metrics",
                                                                         timeout=30).text, re.M)
    wait_for("every node to hold node-3 at the incarnation node-3 states itself",
             lambda: len({incarnations(health(n, t))["node-3"] for n, t in zip(pool, tokens, strict=True)}) == 1,
             pool)
    before = incarnations(health(pool[2], tokens[2]))["node-3"]
    assert isinstance(before, int)

    pool[2].kill_group()  # kill -9
    survivors = list(zip(pool[:2], tokens[:2], strict=True))
    wait_for("node-3 suspect on the survivors",
             lambda: all(states(health(n, t))["node-3"] == "suspect" for n, t in survivors), pool)
    assert all(states(health(n, t))["node-1"] == "alive" for n, t in survivors)
    wait_for("node-3 dead on the survivors",
             lambda: all(states(health(n, t))["node-3"] == "dead" for n, t in survivors), pool)
    assert metric(pool[0], "s4_cluster_peer_up", "node-3") == 0.0

    pool[2].start()  # same data directory, same addresses
    tokens[2] = token(pool[2])
    wait_for("node-3 alive again everywhere, at a higher incarnation",
             lambda: all(states(health(n, t)) == all_alive and (incarnations(health(n, t))["node-3"] or 0) > before
                         for n, t in zip(pool, tokens, strict=True)), pool)
    assert metric(pool[1], "s4_cluster_peer_up", "node-3") == 1.0
    for node in pool:  # SIGTERM: gRPC server, heartbeat and channels stop; the process exits cleanly, promptly
        assert node.stop(timeout_s=20) == 0, node.log()[-4000:]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_issue19_single_mode_health_is_a_one_node_document(tmp_path: Path, nodes: list[ServerProcess],
                                                           workers: str) -> None:
    node = ServerProcess(tmp_path / "data", env={"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET,
                                                 "S4_WORKERS": workers})
    nodes.append(node.start())
    doc = health(node, token(node))
    assert {k: v for k, v in doc.items() if k != "nodes"} == {"cluster": None, "node_id": doc["node_id"],
                                                              "mode": "single", "pools": []}
    [me] = doc["nodes"]
    assert (me["id"], me["state"], me["http_addr"], me["pool"]) == (doc["node_id"], "alive",
                                                                   f"127.0.0.1:{node.port}", None)
    assert "s4_cluster_peer_up" not in requests.get(f"{node.endpoint}/metrics", timeout=30).text


@pytest.mark.parametrize("intruder", [{"S4_CLUSTER_SECRET": "another-long-shared-secret"},
                                      {"S4_CLUSTER_NAME": "other"}], ids=["secret", "cluster-name"])
def test_issue19_node_of_another_cluster_or_secret_is_refused_never_alive_with_two_workers(
        tmp_path: Path, nodes: list[ServerProcess], intruder: dict[str, str]) -> None:
    """Two good nodes with S4_WORKERS=2 (the health API answered by HTTP workers, through the supervisor) and a
    third with another secret or cluster name in the same pool list: the good ones see each other alive, refuse it
    (and log why), and never show it alive; it sees none of them alive."""
    pool = make_pool(tmp_path, workers=2, overrides={2: {**intruder, "S4_WORKERS": "1"}})
    for node in pool:
        nodes.append(node.start())
    tokens = [token(n) for n in pool]
    good = list(zip(pool[:2], tokens[:2], strict=True))
    wait_for("the two good nodes alive to each other, the third refused by both",
             lambda: all(states(health(n, t))["node-1"] == states(health(n, t))["node-2"] == "alive"
                         for n, t in good)
             and all("refused inter-node call" in n.log() and "caller 'node-3'" in n.log() for n, _ in good),
             pool)
    for _ in range(6):  # several requests: new connections, spread over both HTTP workers
        for node, tok in good:
            assert states(health(node, tok))["node-3"] != "alive"
    intruder_view = states(health(pool[2], tokens[2]))
    assert intruder_view["node-3"] == "alive" and intruder_view["node-1"] != "alive" and \
        intruder_view["node-2"] != "alive"
    why = "MAC does not match" if "S4_CLUSTER_SECRET" in intruder else "belongs to cluster 'other'"
    assert why in pool[0].log()
    # the workers' /metrics show the supervisor's peer gauges (multi-process files)
    assert metric(pool[0], "s4_cluster_peer_up", "node-2") == 1.0
    assert metric(pool[0], "s4_cluster_peer_up", "node-3") == 0.0
    for node in pool:  # SIGTERM to the supervisors: workers, heartbeat and gRPC server stop, exit 0
        assert node.stop(timeout_s=40) == 0, node.log()[-4000:]


def run_server(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    full.update(S4_DATA_DIR=str(tmp_path / "data"), S4_ACCESS_KEY_ID=ACCESS_KEY, S4_SECRET_ACCESS_KEY=SECRET_KEY,
                S4_BIND=f"127.0.0.1:{free_port()}", **env)
    return subprocess.run([sys.executable, "-m", "s4.tools.server"], env=full, capture_output=True, text=True,
                          timeout=60)


def quick_start(**extra: str) -> dict[str, str]:
    grpc = [free_port(h) for h in HOSTS]
    return pool_env(grpc, [free_port(h) for h in HOSTS], 0, **extra)


@pytest.mark.parametrize(("extra", "named"), [
    ({"S4_WRITE_QUORUM": "4"}, "S4_WRITE_QUORUM"),
    ({"S4_READ_QUORUM": "5"}, "S4_READ_QUORUM"),
    ({"S4_NODE_ID": "node-9"}, "S4_POOL_NODES"),
])
def test_issue19_impossible_cluster_settings_exit_non_zero_naming_the_setting(
        tmp_path: Path, extra: dict[str, str], named: str) -> None:
    done = run_server(tmp_path, quick_start(**extra))
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_issue19_grpc_port_in_use_stops_start_up_naming_s4_node_grpc_addr(tmp_path: Path, workers: str) -> None:
    env = quick_start(S4_WORKERS=workers)
    host, port = env["S4_NODE_GRPC_ADDR"].split(":")
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen()
        done = run_server(tmp_path, env)
    assert done.returncode == 1
    assert f"S4_NODE_GRPC_ADDR={host}:{port}: cannot listen" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
