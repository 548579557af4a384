"""Issue 19, the quorum write path: three real s4-server processes on 127.0.0.1/.2/.3 (N=3, W=2).

A write acknowledged by a node is journaled and fsynced on W replicas before the answer: with node-3 killed (kill -9)
every PUT through node-1 is acknowledged, and node-1 is then killed too, right after its last answer. With two
nodes down, writes and reads are refused with 503 ServiceUnavailable and Retry-After, never 200 (counted in
``s4_cluster_quorum_failures``), a retried DELETE included. node-3 restarted beside node-2 (node-1 still dead)
reads every acknowledged object byte-exact through its quorum read: the bytes can only have come from node-2, so
node-2 had them when node-1 answered. node-1 restarted catches up, the refused delete converges one way, and every
read through any node after a write through another sees it. Every wait is a deadline poll."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, token, wait_for

BUCKET = "quorum"
BIG = 5 * 1024 * 1024 + 4321  # more than one chunk: the peers fetch several blobs before they answer


def body(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size] if size < 4096 else os.urandom(size)


def no_retries(endpoint: str) -> Any:
    """A client that shows the first answer (boto3 retries 503s by default)."""
    return make_client(endpoint, retries={"total_max_attempts": 1, "mode": "standard"})


def reads_back(client: Any, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert got == data, f"{key}: {len(got)} bytes read, not the {len(data)} written"


def holds(client: Any, objects: dict[str, bytes]) -> bool:
    try:
        reads_back(client, objects)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchKey"):
            return False
        raise
    return True


def has_bucket(client: Any) -> bool:
    try:
        client.head_bucket(Bucket=BUCKET)
    except ClientError:
        return False
    return True


def counter(node: ServerProcess, name: str, peer: str | None = None) -> float:
    text = requests.get(f"{node.endpoint}/metrics", timeout=30).text
    labels = "" if peer is None else rf'\{{peer="{peer}"\}}'
    found = re.search(rf"^{name}{labels} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("workers", [1, 2])  # the coordinator in the single process, and behind the supervisor
def test_issue19_an_acknowledged_write_is_on_w_replicas_and_two_nodes_down_refuse_writes_with_503(
        tmp_path: Path, nodes: list[ServerProcess], workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers)
    for node in pool:
        nodes.append(node.start())
    clients = [make_client(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    wait_for("node-2 and node-3 hold the bucket", lambda: all(has_bucket(c) for c in clients), pool)

    pool[2].kill_group()  # kill -9 node-3: node-1 still reaches W=2 with node-2
    acked = {f"a/{i}.txt": body(f"a/{i}", 100 + 37 * i) for i in range(12)}
    acked["a/big.bin"] = body("big", BIG)
    for key, data in acked.items():
        clients[0].put_object(Bucket=BUCKET, Key=key, Body=data)
    clients[0].delete_object(Bucket=BUCKET, Key="a/0.txt")
    del acked["a/0.txt"]

    pool[0].kill_group()  # kill -9 node-1 right after its last answer: node-2 must hold everything already

    # Two of three down: node-2 alone is below W and R: writes and reads are refused with 503 and Retry-After.
    refused = no_retries(pool[1].endpoint)
    with pytest.raises(ClientError) as unavailable:
        refused.put_object(Bucket=BUCKET, Key="refused.txt", Body=b"never acknowledged")
    answer = unavailable.value.response
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 503, answer
    assert answer["Error"]["Code"] == "ServiceUnavailable"
    assert int(answer["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) > 0
    with pytest.raises(ClientError) as unavailable:
        refused.delete_object(Bucket=BUCKET, Key="a/1.txt")
    assert unavailable.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # Its retry is refused too (a quorum read comes first; and a coordinator holding a write that did not reach W
    # replicas acknowledges no other write until they have it: tests/unit/cluster/test_replicator.py).
    with pytest.raises(ClientError) as unavailable:
        refused.delete_object(Bucket=BUCKET, Key="a/1.txt")
    assert unavailable.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # A read: node-2 may answer from its own copy while the read leases the dead nodes granted it last (a few
    # seconds; they acknowledge nothing without it meanwhile, so its copy holds every acknowledged write), then 503.
    answers: list[int] = []

    def read_refused() -> bool:
        try:
            got = refused.get_object(Bucket=BUCKET, Key="a/2.txt")["Body"].read()
        except ClientError as exc:
            answers.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            return True
        assert got == acked["a/2.txt"]
        answers.append(200)
        return False

    wait_for("node-2's read leases ran out: a read needs R replicas", read_refused, pool)
    assert answers[-1] == 503 and set(answers[:-1]) <= {200}, answers
    wait_for("the quorum failures are counted",
             lambda: counter(pool[1], "s4_cluster_quorum_failures_total") >= 3, pool)
    maybe = {"a/1.txt": acked.pop("a/1.txt")}  # the refused delete's outcome is unknown

    # node-3 comes back while node-1 stays dead: every acknowledged write is read through node-3 from node-2, the
    # only node that had it (a quorum read repairs node-3 before answering).
    pool[2].start()
    clients[2] = make_client(pool[2].endpoint)
    reads_back(clients[2], acked)
    with pytest.raises(ClientError) as gone:
        clients[2].head_object(Bucket=BUCKET, Key="a/0.txt")
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    clients[2].put_object(Bucket=BUCKET, Key="two-up.txt", Body=b"W=2 again")
    acked["two-up.txt"] = b"W=2 again"

    pool[0].start()
    clients[0] = make_client(pool[0].endpoint)
    tok = token(pool[0])
    wait_for("node-1 caught up", lambda: health(pool[0], tok)["caught_up"] is True, pool)
    # The refused delete is never half-visible: once the nodes converge, a/1.txt is there on every node or gone
    # from every one.
    for i, client in enumerate(clients):
        wait_for(f"node-{i + 1} serves every acknowledged object", lambda c=client: holds(c, acked), pool)  # type: ignore[misc]
    wait_for("the refused delete converges one way on every node",
             lambda: len({holds(c, maybe) for c in clients}) == 1, pool)
    wait_for("node-1 delivered the hints it kept for node-3",
             lambda: counter(pool[0], "s4_cluster_hints_pending", "node-3") == 0, pool)
    # Writes are acknowledged through any node with every node back, and read back through the others.
    clients[2].put_object(Bucket=BUCKET, Key="after.txt", Body=b"back")
    for client in clients:
        assert client.get_object(Bucket=BUCKET, Key="after.txt")["Body"].read() == b"back"
