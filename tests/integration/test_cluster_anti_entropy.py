"""Issue 20: Merkle anti-entropy alone converges a node that missed writes and deletes.

Three real s4-server processes with hints off (``S4_HINT_TTL_HOURS=0``), journal catch-up off (``S4_CATCH_UP=off``,
the diagnostics switch) and a short anti-entropy interval: nothing but anti-entropy can bring a node what it missed.
Node-3 is killed (kill -9); node-1 takes writes, overwrites, a delete, tags, and a new bucket with an object. After
node-3's restart, ``GET /api/admin/cluster/repair-status`` shows the anti-entropy exchanges that repaired it, then one
that finds no difference left; node-3's data directory opened alone (S4_MODE=single) serves every write and none of
the deleted keys. Every wait is a deadline poll."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import make_pool, metric, token, wait_for
from test_cluster_catch_up import body, holds, put_all

BUCKET = "replicated"  # test_cluster_catch_up.holds reads this bucket
LATER_BUCKET = "made-while-away"
ALONE = {"S4_HINT_TTL_HOURS": "0", "S4_CATCH_UP": "off", "S4_ANTI_ENTROPY_INTERVAL_SECS": "2"}


def repair_status(node: ServerProcess, tok: str) -> dict[str, Any]:
    resp = requests.get(f"{node.endpoint}/api/admin/cluster/repair-status",
                        headers={"Authorization": f"Bearer {tok}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def repaired_with_node3(pool: list[ServerProcess], toks: list[str]) -> int:
    """Keys and buckets anti-entropy repaired between node-3 and the others, counted by every node."""
    total = 0
    for i, node in enumerate(pool):
        for peer, entry in repair_status(node, toks[i])["peers"].items():
            if i == 2 or peer == "node-3":
                total += entry["anti_entropy"]["keys_repaired"]
    return total


def node3_converged(node: ServerProcess, tok: str, after_ms: int) -> bool:
    """Node-3 ended an exchange with each peer, started after ``after_ms``, that found no difference."""
    peers = repair_status(node, tok)["peers"]
    return all(p["anti_entropy"]["last_exchange_ms"] is not None and p["anti_entropy"]["last_exchange_ms"] > after_ms
               and p["anti_entropy"]["last_differences"] == 0 for p in peers.values())


@pytest.mark.parametrize("workers", [1, 2])  # the node in the single process, and in the supervisor
def test_issue20_anti_entropy_alone_converges_a_node_that_missed_writes_and_deletes(
        tmp_path: Path, nodes: list[ServerProcess], workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers, overrides={i: ALONE for i in range(3)})
    for node in pool:
        nodes.append(node.start())
    clients = [make_client(n.endpoint) for n in pool]
    first = {f"first/{i}.txt": body(f"first/{i}", 1000 + 97 * i) for i in range(6)}
    clients[0].create_bucket(Bucket=BUCKET)
    put_all(clients[0], first)
    toks = [token(n) for n in pool]
    doc = repair_status(pool[2], toks[2])
    assert doc["catch_up"] is False and doc["anti_entropy"]["interval_s"] == 2
    assert set(doc["peers"]) == {"node-1", "node-2"} and "scrub" in doc

    pool[2].kill_group()  # kill -9: it misses everything below
    later = {f"later/{i}": body(f"later/{i}", 3000 + i) for i in range(5)}
    later["later/big.bin"] = body("later-big", 2 * 1024 * 1024 + 7)
    put_all(clients[0], later)
    first["first/1.txt"] = body("first/1-overwritten", 4321)
    clients[0].put_object(Bucket=BUCKET, Key="first/1.txt", Body=first["first/1.txt"])
    deleted = ["first/0.txt", "first/2.txt"]
    for key in deleted:
        clients[0].delete_object(Bucket=BUCKET, Key=key)
        del first[key]
    clients[0].put_object_tagging(Bucket=BUCKET, Key="first/3.txt",
                                  Tagging={"TagSet": [{"Key": "colour", "Value": "blue"}]})
    clients[0].create_bucket(Bucket=LATER_BUCKET)
    clients[0].put_object(Bucket=LATER_BUCKET, Key="k", Body=b"made while node-3 was away")
    everything = {**first, **later}
    missed = len(later) + 1 + len(deleted) + 1  # keys node-3 lacks (not counting the new bucket's)

    restarted_ms = int(time.time() * 1000)
    pool[2].start()
    toks[2] = token(pool[2])
    wait_for("anti-entropy repaired node-3", lambda: repaired_with_node3(pool, toks) >= missed, pool, 90)
    wait_for("an exchange of node-3 with each peer that finds nothing left to repair",
             lambda: node3_converged(pool[2], toks[2], restarted_ms), pool, 90)
    doc = repair_status(pool[2], toks[2])
    for peer in ("node-1", "node-2"):
        assert doc["peers"][peer]["hints"]["pending"] == 0
        assert doc["peers"][peer]["anti_entropy"]["failures"] == 0 or doc["peers"][peer]["anti_entropy"][
            "last_error"] is None
    # with workers, the supervisor publishes the counters to every worker's /metrics after its heartbeat rounds
    wait_for("the anti-entropy metrics", lambda: (metric(pool[2], "s4_cluster_anti_entropy_exchanges_total",
                                                         "node-1") or 0) >= 1, pool)

    # Proof: node-3's data directory alone holds every write and no deleted key.
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    alone = ServerProcess(pool[2].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"})
    nodes.append(alone.start())
    client = make_client(alone.endpoint)
    assert holds(client, everything)
    for key in deleted:
        with pytest.raises(ClientError) as gone:
            client.head_object(Bucket=BUCKET, Key=key)
        assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    tags = client.get_object_tagging(Bucket=BUCKET, Key="first/3.txt")["TagSet"]
    assert tags == [{"Key": "colour", "Value": "blue"}]
    assert client.get_object(Bucket=LATER_BUCKET, Key="k")["Body"].read() == b"made while node-3 was away"
