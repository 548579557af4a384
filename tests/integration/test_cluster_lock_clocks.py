"""Issue 22, Object Lock in a pool: a node that missed a lock is repaired and then refuses the removal.

Three real s4-server processes on 127.0.0.1/.2/.3 (N=3, W=2, R=2) with hints off (``S4_HINT_TTL_HOURS=0``) and journal
catch-up off (``S4_CATCH_UP=off``): the only way node-3 can learn what it missed is anti-entropy, and the quorum read
that comes before every delete decision. node-3 holds the version; an nftables partition (tests/helpers/netns.py)
cuts it off while node-1 puts a legal hold and a COMPLIANCE retention on it (acknowledged by node-1 and node-2).

After the heal, a delete of that version through node-3 is never acknowledged: at first node-3 knows it lacks the
newest lock clock (the quorum-read merge marks it stale, and with catch-up off it answers 503); once anti-entropy
has shipped the lock_set (its clock is part of the Merkle digests), node-3 answers AccessDenied like every node.
Before the lock clocks, node-3's copy differed from the others only in its lock fields, which neither the merge nor
the digests compared: node-3 decided the delete on its unlocked copy and the version was removed everywhere.

Needs root (the namespace) and ``nft``; skipped with the reason otherwise. Every wait is a deadline poll."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.netns import Partition, problem
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import EVERYONE_ALIVE, health, make_pool, start_alive, states, wait_for

BUCKET = "worm"
ALONE = {"S4_HINT_TTL_HOURS": "0", "S4_CATCH_UP": "off", "S4_ANTI_ENTROPY_INTERVAL_SECS": "2"}
PROBLEM = problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]


def no_retries(endpoint: str) -> Any:
    """The first answer, within a bound: boto3 retries 503s by default."""
    return make_client(endpoint, retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                       read_timeout=40)


def answer(call: Any) -> tuple[int, str]:
    """(HTTP status, error code or "") of a call."""
    try:
        meta = call()["ResponseMetadata"]
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], str(exc.response["Error"]["Code"])
    return int(meta["HTTPStatusCode"]), ""


def lock_seen(client: Any, version: str, until: datetime.datetime) -> bool:
    """The node answers the version's legal hold and retention (a 503 while it still repairs counts as not yet)."""
    try:
        head = client.head_object(Bucket=BUCKET, Key="k", VersionId=version)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503:
            return False
        raise
    return (head.get("ObjectLockLegalHoldStatus"), head.get("ObjectLockMode"),
            head.get("ObjectLockRetainUntilDate")) == ("ON", "COMPLIANCE", until)


def test_a_node_partitioned_while_the_lock_was_set_refuses_the_delete_after_the_heal(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    pool = make_pool(tmp_path, workers=1, overrides={i: ALONE for i in range(3)})
    tokens = start_alive(pool, nodes)
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    version = clients[0].put_object(Bucket=BUCKET, Key="k", Body=b"kept")["VersionId"]
    wait_for("every node holds the version", lambda: all(
        answer(lambda c=c: c.head_object(Bucket=BUCKET, Key="k", VersionId=version))[0] == 200 for c in clients), pool)

    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).replace(microsecond=0)
    clients[0].put_object_legal_hold(Bucket=BUCKET, Key="k", VersionId=version, LegalHold={"Status": "ON"})
    clients[0].put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    assert lock_seen(clients[1], version, until)
    partition.heal()
    wait_for("node-3 sees its peers alive again", lambda: states(health(pool[2], tokens[2])) == EVERYONE_ALIVE, pool)

    # At once: node-3 never deletes on its copy without the lock (503 while it lacks the lock clock, or refused).
    first = answer(lambda: clients[2].delete_object(Bucket=BUCKET, Key="k", VersionId=version))
    assert first in ((503, "ServiceUnavailable"), (403, "AccessDenied")), first
    # Anti-entropy brings node-3 the lock_set; from then on it answers the lock and refuses like every node.
    wait_for("node-3 answers the lock", lambda: lock_seen(clients[2], version, until), pool, 90)
    for client in clients:
        assert answer(lambda c=client: c.delete_object(Bucket=BUCKET, Key="k", VersionId=version)) == (
            403, "AccessDenied")
    for client in clients:
        assert client.get_object(Bucket=BUCKET, Key="k", VersionId=version)["Body"].read() == b"kept"


QUORUM_ONE = {"S4_WRITE_QUORUM": "1", "S4_READ_QUORUM": "1", "S4_ANTI_ENTROPY_INTERVAL_SECS": "2"}


def lock_of(client: Any, version: str) -> tuple[Any, ...] | None:
    """(legal hold, retention mode, retain-until) a node answers for the version; None while it cannot answer (503)
    or does not hold the version yet (404: with R=1 a node answers from its own views)."""
    try:
        head = client.head_object(Bucket=BUCKET, Key="k", VersionId=version)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 503):
            return None
        raise
    return head.get("ObjectLockLegalHoldStatus"), head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")


def test_issue22_retention_and_legal_hold_set_on_two_sides_of_a_partition_both_survive_the_heal(
        tmp_path: Path, nodes: list[ServerProcess], partitions: list[Partition]) -> None:
    """A pool run with W=1, R=1 (available on both sides of a partition) is cut in two by nftables: node-1 sets a
    COMPLIANCE retention on a version, then node-3, alone on the other side, sets a legal hold on it (later by the
    clock, never having seen the retention). After the heal every node answers both, and refuses the delete.
    Before per-field lock clocks each lock_set was the whole lock state, last writer wins: node-3's (hold on, no
    retention) won everywhere and the acknowledged COMPLIANCE retention was gone."""
    pool = make_pool(tmp_path, workers=1, overrides={i: QUORUM_ONE for i in range(3)})
    start_alive(pool, nodes)
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    wait_for("every node holds the bucket", lambda: all(
        answer(lambda c=c: c.head_bucket(Bucket=BUCKET))[0] == 200 for c in clients), pool)
    version = clients[0].put_object(Bucket=BUCKET, Key="k", Body=b"kept")["VersionId"]
    wait_for("every node holds the version", lambda: all(
        lock_of(c, version) == (None, None, None) for c in clients), pool)

    partition = Partition(pool, isolated=2)
    partitions.append(partition)
    partition.cut()
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).replace(microsecond=0)
    clients[0].put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    assert lock_of(clients[0], version) == (None, "COMPLIANCE", until)
    clients[2].put_object_legal_hold(Bucket=BUCKET, Key="k", VersionId=version, LegalHold={"Status": "ON"})
    assert lock_of(clients[2], version) == ("ON", None, None)  # decided without the retention
    partition.heal()

    def agreed() -> bool:
        seen = [lock_of(c, version) for c in clients]
        return seen[0] is not None and seen[0][0] == "ON" and seen.count(seen[0]) == 3
    wait_for("every node answers the same lock, with node-3's legal hold", agreed, pool, 90)
    for client in clients:
        assert lock_of(client, version) == ("ON", "COMPLIANCE", until)
        assert answer(lambda c=client: c.delete_object(Bucket=BUCKET, Key="k", VersionId=version)) == (
            403, "AccessDenied")
