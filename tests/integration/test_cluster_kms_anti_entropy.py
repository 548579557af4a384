"""Issue 22: KMS keys in the Merkle anti-entropy. A node cut off (nftables, tests/helpers/netns.py) while a KMS key
is created and rotated, and an object is written under its new version, gets the key once healed, with hints off
(``S4_HINT_TTL_HOURS=0``: the hint window long past) and journal catch-up off: anti-entropy alone must bring it. It
then decrypts the object itself, and a disable made while it is cut off again reaches it the same way.

Before, ``kms.*`` events reached a node only by replication and catch-up: the object's record came back through
anti-entropy but the key never did, so the node could not decrypt the object (nor learn of a disable) for good.

Needs root (the namespace) and ``nft``; skipped with the reason otherwise. Every wait is a deadline poll."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.netns import Partition, problem
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import EVERYONE_ALIVE, health, make_pool, start_alive, states, wait_for

BUCKET = "sse"
ALONE = {"S4_HINT_TTL_HOURS": "0", "S4_CATCH_UP": "off", "S4_ANTI_ENTROPY_INTERVAL_SECS": "2"}
PROBLEM = problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]


def admin(node: ServerProcess, tok: str, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{node.endpoint}/api/admin/kms/keys{path}", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {tok}"})


def key_doc(node: ServerProcess, tok: str) -> dict[str, Any] | None:
    """The node's own view of the key (the admin API reads the local KMS view), None while it has none."""
    resp = admin(node, tok, "GET", "/k1")
    return dict(resp.json()) if resp.status_code == 200 else None


def body_of(client: Any) -> bytes | None:
    """The object as the node serves it; None while it answers an error (503 while it repairs, or the key's)."""
    try:
        return bytes(client.get_object(Bucket=BUCKET, Key="o")["Body"].read())
    except ClientError:
        return None


def node3_dead(pool: list[ServerProcess], tokens: list[str]) -> None:
    """Wait until node-1 declares node-3 dead: from then its writes are not sent to node-3 at all. (A write sent
    while node-3 was merely unreachable stays in flight, TCP retransmitting, and would land after a quick heal:
    that is replication, not the repair this test is about.)"""
    wait_for("node-1 declares node-3 dead", lambda: states(health(pool[0], tokens[0]))["node-3"] == "dead", pool,
             90)


def test_issue22_a_node_partitioned_while_a_kms_key_was_created_and_rotated_gets_it_by_anti_entropy(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    pool = make_pool(tmp_path, workers=1, overrides={i: ALONE for i in range(3)})
    tokens = start_alive(pool, nodes)
    clients = [make_client(n.endpoint, retries={"total_max_attempts": 1, "mode": "standard"}) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)

    def bucket_everywhere() -> bool:
        try:
            return all(c.head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200 for c in clients)
        except ClientError:
            return False
    wait_for("every node holds the bucket", bucket_everywhere, pool)

    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    node3_dead(pool, tokens)
    assert admin(pool[0], tokens[0], "POST", "", {"key_id": "k1"}).status_code == 201
    rotated = admin(pool[0], tokens[0], "POST", "/k1/rotate")
    assert rotated.status_code == 200, rotated.text
    body = os.urandom(100_000)
    clients[0].put_object(Bucket=BUCKET, Key="o", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId="k1")
    expected = key_doc(pool[0], tokens[0])
    assert expected is not None and expected["versions"] == 2 and expected["enabled"] is True
    assert key_doc(pool[2], tokens[2]) is None
    partition.heal()
    wait_for("node-3 sees its peers alive again", lambda: states(health(pool[2], tokens[2])) == EVERYONE_ALIVE, pool)

    wait_for("node-3 holds the key as node-1 does", lambda: key_doc(pool[2], tokens[2]) == expected, pool, 90)
    wait_for("node-3 decrypts the object under the new key version", lambda: body_of(clients[2]) == body, pool, 90)
    assert clients[2].head_object(Bucket=BUCKET, Key="o")["SSEKMSKeyId"] == "k1"

    # a disable node-3 misses reaches it the same way: from then it refuses to decrypt, as node-1 does
    again = Partition(pool, isolated=2)
    partitions.append(again)
    again.cut()
    node3_dead(pool, tokens)
    assert admin(pool[0], tokens[0], "PUT", "/k1", {"enabled": False}).json()["enabled"] is False
    assert body_of(clients[0]) is None
    again.heal()
    wait_for("node-3 learns the key is disabled", lambda: (key_doc(pool[2], tokens[2]) or {}).get("enabled") is False,
             pool, 90)
    assert body_of(clients[2]) is None
