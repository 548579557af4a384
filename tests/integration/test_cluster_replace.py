"""Replace a dead node (docs/operations.md): three real s4-server processes on 127.0.0.1/.2/.3. node-3 is killed with
kill -9 and its data directory deleted; ``s4-admin cluster replace`` marks a fresh one under the same id. Started
while node-1 is down, the replacement's acceptor refuses to vote (health ``cas`` restoring, waiting for node-1), so a
CreateBucket through node-2 has no majority (503), never a second winner. Once node-1 is back it restores and votes;
then CreateBucket of names that existed before (through every node, the replacement included) all lose, concurrent
creates and deletes through every node have one winner per name, and every node lists the same buckets.
Every wait is a deadline poll."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, token, wait_for
from test_cluster_bucket_names import LOSERS, REGION, answer, at_once


def names(client: object) -> set[str]:
    return {b["Name"] for b in client.list_buckets()["Buckets"]}  # type: ignore[attr-defined]


def test_replace_a_dead_node_whose_disk_is_lost_keeps_one_winner_per_bucket_name(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    pool = make_pool(tmp_path, workers=1, overrides={i: {"S4_REGION": REGION} for i in range(3)})
    for node in pool:
        nodes.append(node.start())
    tokens = [token(node) for node in pool]
    wait_for("every node caught up", lambda: all(health(n, t).get("caught_up") is True
                                                  for n, t in zip(pool, tokens, strict=True)), pool)
    clients = [make_client(node.endpoint, REGION) for node in pool]
    before = {f"before-{i}" for i in range(6)}
    for i, name in enumerate(sorted(before)):
        assert answer(lambda c=clients[i % 3], name=name: c.create_bucket(Bucket=name)) == "200"

    # node-3's machine dies with its disk; node-1 is down too while the replacement starts
    pool[2].kill_group()
    shutil.rmtree(pool[2].data_dir)
    done = subprocess.run([sys.executable, "-m", "s4.tools.admin_cli", "cluster", "replace", "--data-dir",
                           str(pool[2].data_dir), "--node-id", "node-3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pool[0].kill_group()
    pool[2].start()
    tokens[2] = token(pool[2])
    wait_for("the replacement refuses to vote, waiting for node-1",
             lambda: health(pool[2], tokens[2]).get("cas", {}).get("waiting_for") == ["node-1"], pool)
    alone = make_client(pool[1].endpoint, REGION, retries={"total_max_attempts": 1, "mode": "standard"})
    refused = answer(lambda: alone.create_bucket(Bucket="before-0"))
    assert refused == "ServiceUnavailable", refused  # node-2 alone is no majority: never a second CREATED

    pool[0].start()
    tokens[0] = token(pool[0])
    wait_for("the replacement restored its register state and votes",
             lambda: health(pool[2], tokens[2]).get("cas", {}).get("acceptor") == "voting", pool)
    clients = [make_client(node.endpoint, REGION) for node in pool]

    # The names created before the replacement are taken, through every node (the replacement's acceptor included).
    for name in sorted(before):
        answers = at_once([lambda c=c, name=name: c.create_bucket(Bucket=name) for c in clients])
        assert set(answers) <= LOSERS, f"{name}: {answers}"
    # Concurrent creates of fresh names through every node: one winner each; concurrent deletes: one winner each.
    fresh = [f"after-{i}" for i in range(10)]
    for name in fresh:
        answers = at_once([lambda c=c, name=name: c.create_bucket(Bucket=name) for c in clients])
        assert answers.count("200") == 1 and set(answers) - {"200"} <= LOSERS, f"{name}: {answers}"
    wait_for("every node holds every bucket", lambda: all(before | set(fresh) <= names(c) for c in clients), pool)
    gone = sorted(before)[:3] + fresh[:5]
    for name in gone:
        answers = at_once([lambda c=c, name=name: c.delete_bucket(Bucket=name) for c in clients])
        assert answers.count("200") == 1, f"{name}: {answers}"  # "200": any success (DeleteBucket is 204)
        assert set(answers) - {"200"} <= {"NoSuchBucket", "ServiceUnavailable"}, f"{name}: {answers}"
    expected = (before | set(fresh)) - set(gone)
    wait_for("every node lists the same buckets", lambda: all(names(c) == expected for c in clients), pool)
