"""Issue 20, operations: graceful shutdown hands off, and drain (cluster/drain.py).

Real s4-server processes on 127.0.0.1/.2/.3 in a private network namespace (tests/helpers/netns.py):

* **Shutdown hands off hints.** Writes through node-1 while node-2 is stopped leave hints for it. node-2 restarts
  with the link node-1 <-> node-2 cut by an nftables table (node-3 reaches both, so node-1 learns it is alive):
  node-1's delivery fails and backs off. Healed, node-1 is SIGTERMed at once: it delivers them before it exits
  (node-2 runs with S4_CATCH_UP=off, anti-entropy is off, nothing reads those keys and node-1 does not restart
  before the check, so hints are the only way they reach it: its data directory opened alone holds them). The
  others see node-1 dead through its leave (their ``leaves`` counter), not a suspicion, and alive again at a higher
  incarnation after its restart.
  Before the hand-off, stop() cancelled the hint loops and the hints waited in feed.lmdb for the restart.
* **Drain.** POST /api/admin/cluster/nodes/node-2/drain on node-1 (forwarded over the Drain RPC): node-2's /health
  answers 503 {"status": "draining"} (in every worker), every node's health shows it draining, it keeps serving S3
  requests and replicating; unknown id 404; an unreachable node 503; DELETE cancels it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.netns import NFT, grpc_port, problem
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, incarnations, make_pool, states, token, wait_for

PROBLEM = problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]
BUCKET = "ops"
ALL_ALIVE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}


class Link:
    """The gRPC traffic between two nodes dropped both ways (an nftables table of the test's namespace)."""

    def __init__(self, a: ServerProcess, b: ServerProcess) -> None:
        self.a, self.b, self.table = a, b, "s4test_link"

    def cut(self) -> None:
        a, b, pa, pb = self.a.host, self.b.host, grpc_port(self.a), grpc_port(self.b)
        rules = f"""
table inet {self.table} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        ip saddr {a} ip daddr {b} tcp dport {pb} drop
        ip saddr {a} ip daddr {b} tcp sport {pa} drop
        ip saddr {b} ip daddr {a} tcp dport {pa} drop
        ip saddr {b} ip daddr {a} tcp sport {pb} drop
    }}
}}
"""
        done = subprocess.run([NFT, "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def heal(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", self.table], capture_output=True, timeout=30)


def admin(node: ServerProcess, tok: str, method: str, path: str) -> requests.Response:
    return requests.request(method, f"{node.endpoint}{path}", headers={"Authorization": f"Bearer {tok}"}, timeout=30)


def hints_for(node: ServerProcess, tok: str, peer: str) -> int:
    doc = admin(node, tok, "GET", "/api/admin/cluster/repair-status").json()
    return int(doc["peers"][peer]["hints"]["pending"])


def test_issue20_sigterm_delivers_pending_hints_to_a_live_peer_and_announces_its_leave(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    quiet = {"S4_ANTI_ENTROPY_INTERVAL_SECS": "0"}  # hints are the only way the writes can reach node-2
    pool = make_pool(tmp_path, workers=1, overrides={0: quiet, 1: {**quiet, "S4_CATCH_UP": "off"}, 2: quiet})
    for node in pool:
        nodes.append(node.start())
    toks = [token(n) for n in pool]
    wait_for("3 nodes alive everywhere", lambda: all(states(health(n, t)) == ALL_ALIVE
                                                     for n, t in zip(pool, toks, strict=True)), pool)
    client = make_client(pool[0].endpoint)
    client.create_bucket(Bucket=BUCKET)
    assert pool[1].stop(timeout_s=60) == 0
    objects = {f"hinted/{i}": f"written while node-2 was away: {i}".encode() for i in range(5)}
    for key, data in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
    assert hints_for(pool[0], toks[0], "node-2") >= len(objects)
    link = Link(pool[0], pool[1])
    link.cut()  # node-2 comes back reachable from node-3 only: node-1's connection attempts hang
    try:
        failures = pool[0].log().count("hint delivery to node-2 failed")
        nodes.append(pool[1].start())
        wait_for("node-1 to see node-2 alive (through node-3) and fail to deliver its hints",
                 lambda: states(health(pool[0], toks[0]))["node-2"] == "alive"
                 and pool[0].log().count("hint delivery to node-2 failed") > failures, pool, deadline_s=90)
        assert hints_for(pool[0], toks[0], "node-2") >= len(objects)
    finally:
        link.heal()
    old = incarnations(health(pool[2], toks[2]))["node-1"]
    leaves = [health(pool[i], toks[i])["membership"]["leaves"] for i in (1, 2)]
    assert pool[0].stop(timeout_s=60) == 0  # at once: its hint loop is waiting out its backoff
    log = pool[0].log()
    delivered = re.search(r"shutdown: delivered (\d+) hint\(s\) to live peers; (\d+) of (\d+) left", log)
    assert delivered is not None, log[-4000:]
    assert int(delivered.group(1)) >= len(objects) and delivered.group(2) == "0", delivered.group(0)
    assert "shutdown: SWIM leave announced to 2 member(s)" in log
    for i, before in zip((1, 2), leaves, strict=True):  # dead through its leave, not a suspicion of theirs
        doc = health(pool[i], toks[i])
        assert states(doc)["node-1"] == "dead" and doc["membership"]["leaves"] == before + 1, doc
    # node-2's data directory alone holds the hinted writes (no catch-up, no anti-entropy, no read repair ran, and
    # node-1 has not restarted: its hint loop did not deliver them after a restart)
    assert pool[1].stop(timeout_s=60) == 0
    alone = ServerProcess(pool[1].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"})
    nodes.append(alone.start())
    single = make_client(alone.endpoint)
    for key, data in objects.items():
        assert single.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert alone.stop(timeout_s=60) == 0
    nodes.append(pool[0].start())  # its next life: alive again at a higher incarnation
    wait_for("node-1 alive again on node-3", lambda: states(health(pool[2], toks[2]))["node-1"] == "alive", pool)
    assert incarnations(health(pool[2], toks[2]))["node-1"] > old  # type: ignore[operator]


def drained(doc: dict[str, Any]) -> dict[str, bool | None]:
    return {n["id"]: n["draining"] for n in doc["nodes"]}


def test_issue20_drain_takes_a_node_out_of_health_checks_while_it_keeps_serving(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    pool = make_pool(tmp_path, workers=2)
    for node in pool:
        nodes.append(node.start())
    toks = [token(n) for n in pool]
    wait_for("3 nodes alive everywhere", lambda: all(states(health(n, t)) == ALL_ALIVE
                                                     for n, t in zip(pool, toks, strict=True)), pool)
    path = "/api/admin/cluster/nodes/{}/drain"
    resp = admin(pool[0], toks[0], "POST", path.format("node-2"))  # forwarded to node-2 over the Drain RPC
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"node_id": "node-2", "draining": True, "hints_pending": 0}
    for _ in range(8):  # every worker of node-2 answers 503 draining (the supervisor's marker file)
        answer = requests.get(f"{pool[1].endpoint}/health", timeout=30)
        assert (answer.status_code, answer.json()) == (503, {"status": "draining"})
    assert requests.head(f"{pool[1].endpoint}/health", timeout=30).status_code == 503
    assert requests.get(f"{pool[0].endpoint}/health", timeout=30).status_code == 200
    doc = health(pool[1], toks[1])
    assert doc["draining"] is True and drained(doc)["node-2"] is True
    wait_for("every node to show node-2 draining (told in Ping)",
             lambda: all(drained(health(n, t)) == {"node-1": False, "node-2": True, "node-3": False}
                         for n, t in zip(pool, toks, strict=True)), pool)
    assert all(n["hints_pending"] == 0 for n in health(pool[0], toks[0])["nodes"])
    assert "draining: /health answers 503" in pool[1].log()
    # it keeps serving what still reaches it, and stays a replica
    through2, through1 = make_client(pool[1].endpoint), make_client(pool[0].endpoint)
    through2.create_bucket(Bucket=BUCKET)
    through2.put_object(Bucket=BUCKET, Key="via-draining", Body=b"still served")
    assert through1.get_object(Bucket=BUCKET, Key="via-draining")["Body"].read() == b"still served"
    through1.put_object(Bucket=BUCKET, Key="via-node-1", Body=b"replicated to the draining node")
    assert through2.get_object(Bucket=BUCKET, Key="via-node-1")["Body"].read() == b"replicated to the draining node"
    assert health(pool[1], toks[1])["read_lease"]["local_reads"] is False  # its read leases were given back
    # errors: unknown id, a node that does not answer; and a plain user may not drain
    unknown = admin(pool[0], toks[0], "POST", path.format("node-9"))
    assert unknown.status_code == 404 and "node-9" in unknown.json()["error"]
    assert requests.post(f"{pool[0].endpoint}{path.format('node-2')}", timeout=30).status_code == 401
    # cancel, on the node itself
    resp = admin(pool[1], toks[1], "DELETE", path.format("node-2"))
    assert resp.status_code == 200 and resp.json()["draining"] is False
    assert requests.get(f"{pool[1].endpoint}/health", timeout=30).json() == {"status": "ok"}
    wait_for("node-2's read leases back (asked for again: its reads want them)",
             lambda: through2.get_object(Bucket=BUCKET, Key="via-node-1") is not None and
             health(pool[1], toks[1])["read_lease"]["local_reads"], pool)
    assert pool[2].stop(timeout_s=60) == 0
    unreachable = admin(pool[0], toks[0], "POST", path.format("node-3"))
    assert unreachable.status_code == 503 and "node-3" in unreachable.json()["error"], unreachable.text
