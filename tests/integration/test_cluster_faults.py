"""Issue 19, faults between real nodes: a network partition (nftables) and clock skew (libfaketime).

Three real s4-server processes on 127.0.0.1/.2/.3 (N=3, W=2, R=2), S4_WORKERS=1.

* **Partition.** node-3 is cut off from node-1 and node-2 by an nftables table of the test's own that *drops* (never
  rejects) the gRPC traffic between them, so calls hang until their deadlines as on a real network failure. node-1
  and node-2 keep acknowledging writes and serving reads (W=2, R=2 with each other); every write through node-3 is
  refused with 503 ServiceUnavailable and Retry-After, never 200, within its deadline. Healed, node-3 catches up by
  itself (its data directory opened alone holds every write of the partition) and a refused write is visible on
  every node or on none.
* **Clock skew.** node-3's clock +30 s (inside S4_MAX_CLOCK_OFFSET, 60 s): a write of a key through node-3 then a
  later write through node-1 (whose clock is 30 s behind): the later one wins on every node (read before write, and
  the HLC's ``max(now, seen + 1)``), also when node-1 was cut off (nftables) while node-3 wrote. node-3 restarted at
  +180 s: the peers refuse its calls and log why, its writes get 503, nothing of it reaches them, and node-1 and
  node-2 keep serving. Restarted with the right time, it is back in the pool and takes writes.

Where the faults live: each test runs in a private network namespace it creates (tests/helpers/netns.py): its
three nodes, its clients and its nftables table exist only there, so a partition touches nothing else on the machine
and the kernel deletes the rules with the namespace, whatever happens to the test run. Each node keeps its own
127.0.0.x and its gRPC calls leave from it (cluster/peers.py ``source_address``), so a rule can name the two ends of
a link by address; only the gRPC ports are cut, so the test keeps talking S3 to every node.

Needs root (the namespace), ``nft`` and ``faketime`` (.ci/run installs them); skipped with the reason otherwise.
Every wait is a deadline poll."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.faketime import faketime_env
from helpers.netns import Partition, problem
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import (
    EVERYONE_ALIVE,
    HOSTS,
    all_alive,
    health,
    make_pool,
    metric,
    start_alive,
    states,
    token,
    wait_for,
)
from test_cluster_quorum_writes import body, counter

BUCKET = "faults"


PROBLEM = problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]


def no_retries(endpoint: str) -> Any:
    """The first answer, within a bound: boto3 retries 503s by default, and a hang must fail the test."""
    return make_client(endpoint, retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                       read_timeout=40)


def fault_pool(tmp: Path, overrides: dict[int, dict[str, str]] | None = None) -> list[ServerProcess]:
    """The three nodes on 127.0.0.1/.2/.3 (each one's gRPC calls leave from its own address)."""
    return make_pool(tmp, workers=1, overrides=overrides)


def status_of(call: Any) -> tuple[int, dict[str, str], str]:
    """HTTP status, headers and error code of a call that must fail (200 fails the test)."""
    try:
        call()
    except ClientError as exc:
        meta = exc.response["ResponseMetadata"]
        return meta["HTTPStatusCode"], meta["HTTPHeaders"], exc.response["Error"]["Code"]
    raise AssertionError("acknowledged (2xx) where the pool cannot reach a quorum")


def assert_503(call: Any) -> None:
    status, headers, code = status_of(call)
    assert (status, code) == (503, "ServiceUnavailable"), (status, code)
    assert int(headers["retry-after"]) > 0


def has_bucket(client: Any) -> bool:
    try:
        client.head_bucket(Bucket=BUCKET)
    except ClientError:
        return False
    return True


def present(client: Any, key: str) -> bytes | None:
    try:
        return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def reads_back(client: Any, objects: dict[str, bytes | None]) -> bool:
    """Every object readable through ``client`` with exactly its bytes (None: absent); False while one differs."""
    return all(present(client, key) == data for key, data in objects.items())


def test_issue19_partition_with_nftables_majority_serves_minority_refuses_503_then_catches_up(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    pool = fault_pool(tmp_path)
    tokens = start_alive(pool, nodes)
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    wait_for("every node holds the bucket", lambda: all(has_bucket(c) for c in clients), pool)
    expected: dict[str, bytes | None] = {f"before/{i}": body(f"before/{i}", 300 + i) for i in range(3)}
    for key, data in expected.items():
        clients[0].put_object(Bucket=BUCKET, Key=key, Body=data)

    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()

    # The majority side: every write through node-1 or node-2 is acknowledged (no retries) and read back through the
    # other, from the first moments of the partition (the first ones once node-3's read lease has run out).
    for i in range(6):
        writer, reader = (clients[0], clients[1]) if i % 2 == 0 else (clients[1], clients[0])
        key, data = f"during/{i}", body(f"during/{i}", 1000 + 111 * i)
        writer.put_object(Bucket=BUCKET, Key=key, Body=data)
        assert present(reader, key) == data
        expected[key] = data
    clients[1].delete_object(Bucket=BUCKET, Key="before/0")
    expected["before/0"] = None
    assert present(clients[0], "before/0") is None
    big = body("during-big", 3 * 1024 * 1024 + 7)
    clients[0].put_object(Bucket=BUCKET, Key="during/big", Body=big)
    assert present(clients[1], "during/big") == big
    expected["during/big"] = big

    # The minority side: node-3 refuses writes with 503 + Retry-After, before and after it sees its peers dead.
    refused = ["refused/early", "before/1"]
    assert_503(lambda: clients[2].put_object(Bucket=BUCKET, Key="refused/early", Body=b"never acknowledged"))
    assert_503(lambda: clients[2].delete_object(Bucket=BUCKET, Key="before/1"))
    wait_for("node-3 sees node-1 and node-2 dead",
             lambda: {s for n, s in states(health(pool[2], tokens[2])).items() if n != "node-3"} == {"dead"}, pool)
    assert states(health(pool[0], tokens[0]))["node-3"] == "dead"
    assert_503(lambda: clients[2].put_object(Bucket=BUCKET, Key="refused/late", Body=b"never acknowledged"))
    refused.append("refused/late")
    assert_503(lambda: clients[2].get_object(Bucket=BUCKET, Key="before/2"))  # R=2 is out of reach as well
    assert counter(pool[2], "s4_cluster_quorum_failures_total") >= 3
    wait_for("node-1 keeps hints of what node-3 missed",
             lambda: counter(pool[0], "s4_cluster_hints_pending", "node-3") > 0, pool)

    partition.heal()
    wait_for("node-3 sees its peers alive again", lambda: states(health(pool[2], tokens[2])) == EVERYONE_ALIVE, pool)
    wait_for("node-1 and node-2 delivered their hints to node-3, node-3 pulled their journals",
             lambda: all(counter(n, "s4_cluster_hints_pending", "node-3") == 0 for n in pool[:2])
             and all(metric(pool[2], "s4_cluster_peer_journal_lag", p) == 0 for p in ("node-1", "node-2")), pool)
    assert health(pool[2], tokens[2])["caught_up"] is True

    # The refused writes converge one way: each key is the same on every node (with no quorum the write was never
    # decided, so the keys are as before the partition; what matters is that no node shows a different state).
    outcome = {key: {present(c, key) for c in clients} for key in refused}
    assert all(len(seen) == 1 for seen in outcome.values()), outcome
    for i, client in enumerate(clients):
        assert reads_back(client, expected), f"node-{i + 1} misses a write of the partition"

    for node in pool:  # the faults are logged as warnings, never as an unhandled error
        assert "Task exception was never retrieved" not in node.log(), node.log()[-4000:]

    # node-3 caught up by itself (not only through the read repair of a quorum read): its data directory, opened
    # alone, holds every write of the partition and the refused writes exactly as the pool shows them.
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    alone = ServerProcess(pool[2].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"}, host=HOSTS[2])
    nodes.append(alone.start())
    local = make_client(alone.endpoint)
    assert reads_back(local, expected)
    assert {key: {present(local, key)} for key in refused} == outcome


def clock_ahead_s(node: ServerProcess) -> float:
    """How far the node's wall clock runs ahead of this process's: the time its access log gives a request (its
    ``time.time()``; the HTTP Date header is a per-second cache, no clock probe) minus our time after the answer."""
    request_id = requests.get(f"{node.endpoint}/health", timeout=30).headers["x-amz-request-id"]
    after = time.time()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in node.log().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp() - after
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} not in the access log of {node.data_dir.name}")


def test_issue19_clock_skew_with_faketime_later_write_wins_and_a_clock_beyond_the_limit_is_refused(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    pool = fault_pool(tmp_path, overrides={2: faketime_env(30)})
    for node in pool:
        nodes.append(node.start())
    assert 20 < clock_ahead_s(pool[2]) < 40  # the preload took: node-3 lives 30 s ahead
    tokens = [token(n) for n in pool]
    wait_for("the 3 nodes alive everywhere (30 s is inside the 60 s limit)",
             lambda: all_alive(pool, tokens), pool)
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    wait_for("every node holds the bucket", lambda: all(has_bucket(c) for c in clients), pool)

    # node-3 stamps its write 30 s ahead; node-1 writes the same key afterwards with its clock 30 s behind that
    # stamp: without read-before-write node-3's older write would win everywhere for 30 s.
    for round_ in range(3):
        key = f"skewed/{round_}"
        clients[2].put_object(Bucket=BUCKET, Key=key, Body=b"first, through node-3 (+30 s)")
        clients[0].put_object(Bucket=BUCKET, Key=key, Body=b"later, through node-1")
        for i, client in enumerate(clients):
            assert present(client, key) == b"later, through node-1", f"node-{i + 1}: the earlier write won"
    # And the other way round: node-3's later write wins over node-1's too (its stamp is simply larger).
    clients[0].put_object(Bucket=BUCKET, Key="skewed/back", Body=b"first, through node-1")
    clients[2].put_object(Bucket=BUCKET, Key="skewed/back", Body=b"later, through node-3")
    for client in clients:
        assert present(client, "skewed/back") == b"later, through node-3"

    # node-1 cut off for a moment: node-3's write reaches node-2 alone (W=2); node-1, 30 s behind and perhaps still
    # without it, writes the key right after the partition heals. Its quorum read finds node-3's stamp (and repairs
    # node-1 before deciding), so its write is stamped above it and wins everywhere, whatever arrived first.
    partition = Partition(pool, isolated=0)
    partitions.append(partition)
    partition.cut()
    clients[2].put_object(Bucket=BUCKET, Key="skewed/cut", Body=b"first, through node-3, node-1 cut off")
    assert present(clients[1], "skewed/cut") == b"first, through node-3, node-1 cut off"
    partition.heal()
    make_client(pool[0].endpoint).put_object(Bucket=BUCKET, Key="skewed/cut", Body=b"later, through node-1")  # retried
    for i, client in enumerate(clients):
        assert present(client, "skewed/cut") == b"later, through node-1", f"node-{i + 1}: the earlier write won"

    # node-3 restarted with its clock 180 s ahead, beyond S4_MAX_CLOCK_OFFSET: refused by its peers, loudly.
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    pool[2].extra_env.update(faketime_env(180))
    pool[2].start()
    clients[2] = no_retries(pool[2].endpoint)
    tokens[2] = token(pool[2])
    assert 170 < clock_ahead_s(pool[2]) < 190
    wait_for("node-1 and node-2 refuse node-3's calls and log the clock offset",
             lambda: all("refused inter-node call" in n.log() and "beyond S4_MAX_CLOCK_OFFSET=60s" in n.log()
                         and "caller 'node-3'" in n.log() for n in pool[:2]), pool)
    wait_for("node-3 is not alive on node-1 and node-2",
             lambda: all(states(health(n, t))["node-3"] != "alive" for n, t in zip(pool[:2], tokens[:2],
                                                                                   strict=True)), pool)
    assert all(s != "alive" for n, s in states(health(pool[2], tokens[2])).items() if n != "node-3")

    assert_503(lambda: clients[2].put_object(Bucket=BUCKET, Key="from-the-future", Body=b"never acknowledged"))
    assert_503(lambda: clients[2].put_object(Bucket=BUCKET, Key="skewed/0", Body=b"never acknowledged"))
    # node-1 and node-2 keep serving: writes through one read back through the other, with node-3 refused.
    clients[1].put_object(Bucket=BUCKET, Key="meanwhile", Body=b"W=2 without node-3")
    assert present(clients[0], "meanwhile") == b"W=2 without node-3"
    clients[0].put_object(Bucket=BUCKET, Key="skewed/1", Body=b"overwritten meanwhile")
    assert present(clients[1], "skewed/1") == b"overwritten meanwhile"
    # Nothing node-3 sent was applied: its refused writes are nowhere on node-1 and node-2.
    for client in clients[:2]:
        assert present(client, "from-the-future") is None
        assert present(client, "skewed/0") == b"later, through node-1"

    # Its clock fixed (restarted without the offset), node-3 is accepted again, catches up and takes writes.
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    for name in faketime_env(0):
        pool[2].extra_env.pop(name)
    pool[2].start()
    clients[2], tokens[2] = no_retries(pool[2].endpoint), token(pool[2])
    wait_for("the 3 nodes alive everywhere again",
             lambda: all_alive(pool, tokens), pool)
    clients[2].put_object(Bucket=BUCKET, Key="fixed", Body=b"node-3 back in time")
    assert present(clients[0], "fixed") == b"node-3 back in time"
    for client in clients:
        assert present(client, "from-the-future") is None
        assert present(client, "skewed/1") == b"overwritten meanwhile"


def read_lease(node: ServerProcess, tok: str) -> dict[str, Any]:
    return dict(health(node, tok)["read_lease"])


def _read_or_none(client: Any, key: str) -> bool:
    """A read through a node (it makes the node want read leases), whatever it answers: True."""
    try:
        present(client, key)
    except ClientError:
        pass
    return True


def test_issue19_read_leases_a_cut_off_node_never_answers_older_data_than_an_acknowledged_write(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    """Local reads under read leases (docs/architecture/replication.md): node-3 answers reads from its own copy
    while it holds leases from both peers; cut off, it keeps believing so until its leases run out, and node-1
    acknowledges a write without it only after that. So once the write is acknowledged, a read through node-3 is
    refused (503), never answered with the value before it; healed, node-3 catches up, gets its leases back and
    serves the new value. node-3 runs two HTTP workers: they read the lease state from the shared gate file, and
    their reads are what makes node-3 ask for leases at all (a node asks only while it serves reads), so every
    wait for its leases reads through it."""
    pool = fault_pool(tmp_path, overrides={2: {"S4_WORKERS": "2"}})
    for node in pool:
        nodes.append(node.start())
    tokens = [token(n) for n in pool]
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    old, new = body("lease/old", 5000), body("lease/new", 6000)
    clients[0].put_object(Bucket=BUCKET, Key="k", Body=old)
    assert present(clients[2], "k") == old  # through the quorum path: node-3 asked for no lease yet
    wait_for("node-3 local with nothing in flight (asking: its reads want leases)",
             lambda: present(clients[2], "k") == old and read_lease(pool[2], tokens[2]) | {"remaining_s": 0} ==
             {"local_reads": True, "remaining_s": 0, "unsettled_events": 0, "asking": True}, pool)

    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    clients[0].put_object(Bucket=BUCKET, Key="k", Body=new)  # acknowledged once node-3's lease ran out
    assert present(clients[1], "k") == new
    for _ in range(5):  # every process of node-3 knows its leases are gone: 503, never the old bytes
        assert_503(lambda: clients[2].get_object(Bucket=BUCKET, Key="k"))
    assert read_lease(pool[2], tokens[2])["local_reads"] is False

    partition.heal()
    wait_for("node-3 holds its leases again",
             lambda: _read_or_none(clients[2], "k") and read_lease(pool[2], tokens[2])["local_reads"], pool)
    assert present(clients[2], "k") == new
