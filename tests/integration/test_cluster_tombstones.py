"""Issue 20, tombstones and resurrection with real processes (docs/architecture/tombstones.md).

Three s4-server processes (N=3, W=2, R=2) with the windows in seconds: hints live 1 s, a node may be away 30 s,
tombstones are kept at least 33 s (S4_HINT_TTL_HOURS < S4_MAX_REJOIN_DOWNTIME_DAYS < S4_GC_GRACE_DAYS).

* **Deleted while partitioned, healed after the hints expired.** node-3 is cut off (nftables in a network namespace,
  tests/helpers/netns.py) while keys are deleted and overwritten through node-1; the hints for node-3 expire. The
  tombstones stay while node-3 lacks them; healed, node-3 pulls the deletes (catch-up), nothing deleted comes back on
  any node (also after restarting node-3, and in node-3's data directory opened alone), and once the grace passed
  every node collects its tombstones.
* **Away longer than the limit.** node-3 cut off again past S4_MAX_REJOIN_DOWNTIME_DAYS: its peers give up waiting
  for it and collect tombstones it lacks. Healed, node-3 is told its data must not rejoin and stops (exit 2, the
  message naming the setting and ``s4-admin cluster bootstrap``), refuses to start again, and after the bootstrap
  rejoins empty and is refilled: the keys deleted while it was away stay deleted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.netns import Partition
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import HOSTS, health, states, token, wait_for
from test_cluster_faults import PROBLEM, fault_pool, has_bucket, no_retries, present
from test_cluster_quorum_writes import body, counter

pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]

BUCKET = "faults"
HINT_TTL_S, REJOIN_S, GRACE_S = 1.0, 30.0, 33.0
WINDOWS = {"S4_HINT_TTL_HOURS": str(HINT_TTL_S / 3600), "S4_MAX_REJOIN_DOWNTIME_DAYS": str(REJOIN_S / 86400),
           "S4_GC_GRACE_DAYS": str(GRACE_S / 86400)}
DEADLINE_S = 150.0


def gc(node: ServerProcess, tok: str) -> dict[str, Any]:
    return dict(health(node, tok)["tombstone_gc"])


def all_alive(pool: list[ServerProcess], tokens: list[str]) -> None:
    everyone = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
    wait_for("the 3 nodes alive everywhere", lambda: all(states(health(n, t)) == everyone
                                                         for n, t in zip(pool, tokens, strict=True)), pool)


def test_issue20_deletes_while_partitioned_healed_after_hints_expired_nothing_deleted_comes_back(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    pool = fault_pool(tmp_path, overrides={i: WINDOWS for i in range(3)})
    for node in pool:
        nodes.append(node.start())
    tokens = [token(n) for n in pool]
    all_alive(pool, tokens)
    clients = [no_retries(n.endpoint) for n in pool]
    readers = [make_client(n.endpoint) for n in pool]  # retrying: a 503 while SWIM settles after a heal is fine
    clients[0].create_bucket(Bucket=BUCKET)
    wait_for("every node holds the bucket", lambda: all(has_bucket(c) for c in clients), pool)
    expected: dict[str, bytes | None] = {}
    for i in range(6):
        expected[f"k/{i}"] = body(f"k/{i}", 200 + i)
        clients[0].put_object(Bucket=BUCKET, Key=f"k/{i}", Body=expected[f"k/{i}"])
    wait_for("node-3 applied every write", lambda: counter(pool[2], "s4_cluster_peer_journal_lag", "node-1") == 0
             and present(clients[2], "k/5") == expected["k/5"], pool)

    # -- 1: node-3 cut off shorter than the rejoin limit, past the hint TTL ----------------------------------------
    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    cut_at = time.monotonic()
    for key in ("k/0", "k/1", "k/2"):
        clients[0].delete_object(Bucket=BUCKET, Key=key)
        expected[key] = None
    expected["k/3"] = body("k/3 again", 333)
    clients[0].put_object(Bucket=BUCKET, Key="k/3", Body=expected["k/3"])
    wait_for("node-1's hints for node-3 expired", lambda: counter(pool[0], "s4_cluster_hints_dropped_total", "node-3")
             >= 4 and counter(pool[0], "s4_cluster_hints_pending", "node-3") == 0, pool, DEADLINE_S)
    held = gc(pool[0], tokens[0])
    assert held["collected"] == 0 and held["version_tombstones"] >= 3, held
    assert time.monotonic() - cut_at < REJOIN_S - 5, "the partition must stay shorter than the rejoin limit"
    partition.heal()
    all_alive(pool, tokens)
    wait_for("node-3 pulled the deletes", lambda: all(counter(pool[2], "s4_cluster_peer_journal_lag", p) == 0
                                                      for p in ("node-1", "node-2")), pool)
    for client in readers:
        assert {k: present(client, k) for k in expected} == expected
    wait_for("every node collected its tombstones once the grace passed and every peer held them",
             lambda: all(gc(n, t)["version_tombstones"] == 0 and gc(n, t)["collected"] >= 3
                         for n, t in zip(pool, tokens, strict=True)), pool, GRACE_S + DEADLINE_S)
    assert pool[2].stop(timeout_s=30) == 0
    pool[2].start()
    tokens[2] = token(pool[2])
    all_alive(pool, tokens)
    for client in readers:
        assert {k: present(client, k) for k in expected} == expected, "a deleted key came back"

    # -- 2: node-3 away longer than the rejoin limit: its peers move on, it must be bootstrapped -------------------
    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    for key in ("k/4", "k/5"):
        clients[0].delete_object(Bucket=BUCKET, Key=key)
        expected[key] = None
    wait_for("node-1 and node-2 gave up waiting for node-3",
             lambda: all(gc(n, t)["waived"] == ["node-3"] for n, t in zip(pool[:2], tokens[:2], strict=True)),
             pool, REJOIN_S + DEADLINE_S)
    wait_for("node-1 and node-2 collected the tombstones node-3 lacks",
             lambda: all(gc(n, t)["version_tombstones"] == 0 for n, t in zip(pool[:2], tokens[:2], strict=True)),
             pool, GRACE_S + DEADLINE_S)
    partition.heal()
    proc = pool[2].proc
    assert proc is not None
    try:
        code = proc.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError("node-3 kept running with data that must not rejoin\n" + pool[2].log()[-4000:]) from None
    log = pool[2].log()
    assert code == 2 and "S4_MAX_REJOIN_DOWNTIME_DAYS" in log and "s4-admin cluster bootstrap" in log, log[-4000:]
    pool[2].proc = None
    for client in readers[:2]:
        assert {k: present(client, k) for k in expected} == expected
    with pytest.raises(RuntimeError, match="exited with 2"):  # the refusal is kept across restarts
        pool[2].start()
    pool[2].proc = None

    done = subprocess.run([sys.executable, "-m", "s4.tools.admin_cli", "cluster", "bootstrap", "--data-dir",
                           str(pool[2].data_dir), "--yes"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pool[2].start()
    tokens[2] = token(pool[2])
    all_alive(pool, tokens)
    wait_for("node-3 rejoined and was refilled", lambda: health(pool[2], tokens[2])["caught_up"] is True
             and all(counter(pool[2], "s4_cluster_peer_journal_lag", p) == 0 for p in ("node-1", "node-2")), pool)
    for client in readers:
        assert {k: present(client, k) for k in expected} == expected, "a deleted key came back"

    # node-3's data directory alone: refilled by catch-up, nothing deleted in it
    assert pool[2].stop(timeout_s=30) == 0
    alone = ServerProcess(pool[2].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"}, host=HOSTS[2])
    nodes.append(alone.start())
    local = make_client(alone.endpoint)
    assert {k: present(local, k) for k in expected} == expected
