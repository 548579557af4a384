"""Issue 19: background jobs must not act twice for one pool. Three real s4-server processes on 127.0.0.1/.2/.3
run lifecycle every second (S4_LIFECYCLE_INTERVAL_HOURS) on a versioned bucket whose rule has expired every object
(a past Expiration Date), and an operator asks every node to run it at the same moment: each object gets exactly
one delete marker, seen through every node, because only the lease holder acts. The others skip (their status
counts the skipped runs and names the holder) and an operator's run on them answers 409 naming it. After kill -9
of the holder another node takes the lease once it expired (S4_JOB_LEASE_SECS plus S4_MAX_CLOCK_OFFSET) and expires
new objects, again once each. Every wait is a deadline poll."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, token, wait_for

SETTINGS = {"S4_LIFECYCLE_INTERVAL_HOURS": "0.0002",  # every second (the schedule's floor)
            "S4_JOB_LEASE_SECS": "3", "S4_MAX_CLOCK_OFFSET": "1"}
EXPIRED = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # every current version is past it: expired at the next run


def admin(node: ServerProcess, tok: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
    resp = requests.request(method, f"{node.endpoint}{path}", headers={"Authorization": f"Bearer {tok}"}, timeout=60)
    return resp.status_code, dict(resp.json())


def run_everywhere(pool: list[ServerProcess], tokens: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """POST /api/admin/lifecycle/run on every node at the same moment."""
    barrier = threading.Barrier(len(pool))
    answers: list[tuple[int, dict[str, Any]]] = [(0, {})] * len(pool)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        answers[i] = admin(pool[i], tokens[i], "POST", "/api/admin/lifecycle/run")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pool))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a run never answered"
    return answers


def markers(client: Any, bucket: str) -> Counter[str]:
    """Delete markers per key, as one node lists the bucket's versions."""
    got: Counter[str] = Counter()
    kwargs: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = client.list_object_versions(**kwargs)
        got.update(m["Key"] for m in page.get("DeleteMarkers", []))
        if not page.get("IsTruncated"):
            return got
        kwargs.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])


def all_expired(clients: list[Any], bucket: str, keys: list[str]) -> bool:
    return all(set(markers(c, bucket)) >= set(keys) for c in clients)


@pytest.mark.parametrize("workers", [1, 2])  # the jobs in the one process, and in the supervisor
def test_issue19_lifecycle_expires_each_object_once_per_pool(tmp_path: Path, nodes: list[ServerProcess],
                                                             workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers, overrides=dict.fromkeys(range(3), SETTINGS))
    for node in pool:
        nodes.append(node.start())
    tokens = [token(node) for node in pool]
    wait_for("every node caught up", lambda: all(health(n, t).get("caught_up") is True
                                                  for n, t in zip(pool, tokens, strict=True)), pool)
    clients = [make_client(node.endpoint) for node in pool]
    clients[0].create_bucket(Bucket="expiring")
    clients[1].put_bucket_versioning(Bucket="expiring", VersioningConfiguration={"Status": "Enabled"})
    keys = [f"obj-{i:02d}" for i in range(24)]
    for i, key in enumerate(keys):
        clients[i % 3].put_object(Bucket="expiring", Key=key, Body=key.encode())
    clients[2].put_bucket_lifecycle_configuration(Bucket="expiring", LifecycleConfiguration={"Rules": [
        {"ID": "all", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Date": EXPIRED}}]})
    answers = run_everywhere(pool, tokens)  # the operator too, on every node at once, racing the schedules
    wait_for("every object expired, seen through every node", lambda: all_expired(clients, "expiring", keys), pool)

    statuses = [admin(node, tok, "GET", "/api/admin/lifecycle/status")[1] for node, tok in zip(pool, tokens,
                                                                                               strict=True)]
    holder = next(s["lease"]["holder"] for s in statuses if s["lease"] and s["lease"]["granted"])
    # Exactly one delete marker per object: one node acted, once.
    for client in clients:
        assert markers(client, "expiring") == dict.fromkeys(keys, 1)
    ids = [f"node-{i + 1}" for i in range(3)]
    for node_id, (status, body) in zip(ids, answers, strict=True):
        if node_id == holder:
            assert status == 200, body
        else:
            assert status in (200, 409), body  # 200 only if it held the lease before the holder took it
            if status == 409:
                assert body["lease"]["holder"] == holder and holder in body["error"]
    ran = [node_id for node_id, (status, _) in zip(ids, answers, strict=True) if status == 200]
    assert len(ran) == 1, answers  # the lease went to one node, which kept it

    # The others keep skipping their scheduled runs, and say who holds the lease.
    others = [i for i, node_id in enumerate(ids) if node_id != holder]

    def skipping() -> bool:
        got = [admin(pool[i], tokens[i], "GET", "/api/admin/lifecycle/status")[1] for i in others]
        return all(s["skipped_runs"] >= 2 and s["runs"] == 0 and s["lease"]["holder"] == holder for s in got)

    wait_for("the other nodes skip their runs", skipping, pool)

    # kill -9 the holder: a survivor takes the lease once it expired and expires new objects, once each.
    dead = ids.index(holder)
    pool[dead].kill_group()
    nodes.remove(pool[dead])
    alive = [i for i in range(3) if i != dead]
    fresh = [f"new-{i}" for i in range(6)]
    for i, key in enumerate(fresh):
        clients[alive[i % 2]].put_object(Bucket="expiring", Key=key, Body=b"n")
    live_clients = [clients[i] for i in alive]
    wait_for("a survivor took over and expired the new objects",
             lambda: all_expired(live_clients, "expiring", fresh), [pool[i] for i in alive])
    for client in live_clients:
        assert markers(client, "expiring") == dict.fromkeys(keys + fresh, 1)
    after = [admin(pool[i], tokens[i], "GET", "/api/admin/lifecycle/status")[1] for i in alive]
    new_holders = {s["lease"]["holder"] for s in after if s["lease"] and s["lease"]["granted"]}
    assert len(new_holders) == 1 and holder not in new_holders, after
