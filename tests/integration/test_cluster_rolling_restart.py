"""Issue 20, operations: a rolling restart of every node under load, with no client error beyond retried 503s.

Three real s4-server processes (S4_WORKERS=1). Client threads with boto3's standard retry mode (it retries 503 and
connection errors) run PUT/DELETE/GET on a few keys, each operation through a node drawn at random among those in
rotation (what a load balancer does with /health). For each node in turn the operator's steps of
docs/operations.md "Rolling restart and drain": drain it (POST /api/admin/cluster/nodes/{id}/drain; its /health
answers 503 and it leaves the rotation), wait for its hints to reach 0, SIGTERM it (graceful: HTTP drains, hand-off,
SWIM leave), start it again, wait until it is alive everywhere and caught up, put it back.

Checked: every client operation succeeds in the end; every failure seen on the wire (a botocore ``needs-retry``
hook sees each attempt) is a 503 or a connection error to the node being restarted; the history passes
tests/helpers/rw_history.py's read-after-write rules. Bounded: at most MAX_OPS operations per client, paced by
PACE_S so that the load lasts through all three restarts on a fast machine too (an unpaced loop finished its
operations before the last restart and the test waited for load that could never come).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.netns import problem
from helpers.rw_history import OK, Rec
from helpers.rw_history import check as check_history
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, states, token, wait_for

PROBLEM = problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]
BUCKET = "rolling"
KEYS = [f"key-{i}" for i in range(5)]
CLIENTS = 3
MAX_OPS = 2000
PACE_S = 0.04
ALL_ALIVE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}


class Wire:
    """Every failed attempt botocore saw (before its retry), with the node it went to and the node being restarted
    at that moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.restarting: int | None = None
        self.failures: list[tuple[int, int | None, str]] = []

    def hook(self, node: int) -> Any:
        """A GET's 404 NoSuchKey is an answer, not a failure."""
        def needs_retry(response: Any = None, caught_exception: Any = None, **_: Any) -> None:
            if caught_exception is not None:
                what = type(caught_exception).__name__
            elif response is not None and response[0].status_code >= 400 and response[0].status_code != 404:
                what = str(response[0].status_code)
            else:
                return
            with self.lock:
                self.failures.append((node, self.restarting, what))
        return needs_retry


CONNECTION_ERRORS = {"EndpointConnectionError", "ConnectionClosedError", "ConnectionRefusedError"}


def client_loop(index: int, clients: list[Any], rotation: list[int], lock: threading.Lock, ops: list[Rec],
                done: threading.Event, errors: list[BaseException]) -> None:
    rng = random.Random(index)
    try:
        for n in range(MAX_OPS):
            if done.is_set():
                return
            with lock:
                node = rng.choice(rotation)
            key = rng.choice(KEYS)
            kind = rng.choices(["put", "delete", "get"], weights=[5, 1, 4])[0]
            value = f"client {index} op {n} {key}".encode() if kind == "put" else None
            start = time.monotonic()
            try:
                if kind == "put":
                    clients[node].put_object(Bucket=BUCKET, Key=key, Body=value)
                elif kind == "delete":
                    clients[node].delete_object(Bucket=BUCKET, Key=key)
                else:
                    value = clients[node].get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except ClientError as exc:
                if kind != "get" or exc.response["Error"]["Code"] != "NoSuchKey":
                    raise
                value = None
            with lock:
                ops.append(Rec(len(ops), kind, key, start, time.monotonic(), OK, value, f"node-{node + 1}"))
            done.wait(PACE_S)
    except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
        errors.append(exc)


def more_load(ops: list[Rec], errors: list[BaseException], threads: list[threading.Thread]) -> Callable[[], bool]:
    """A wait_for check: 20 more client operations than now (or a client error, reported after the wait). A load
    that ended (every client at MAX_OPS) fails at once rather than waiting out the deadline."""
    target = len(ops) + 20

    def check() -> bool:
        if len(ops) >= target or errors:
            return True
        if not any(thread.is_alive() for thread in threads):
            raise AssertionError(f"the client load ended ({len(ops)} operations) before the test was done: "
                                 "raise MAX_OPS or PACE_S")
        return False
    return check


def test_issue20_rolling_restart_under_load_only_retried_503s_and_refused_connections(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    pool = make_pool(tmp_path, workers=1)
    for node in pool:
        nodes.append(node.start())
    toks = [token(n) for n in pool]
    whole = lambda: all(health(n, t)["caught_up"] is True and states(health(n, t)) == ALL_ALIVE  # noqa: E731
                        for n, t in zip(pool, toks, strict=True))
    wait_for("3 nodes alive everywhere", whole, pool)
    wire = Wire()
    retries = {"retries": {"mode": "standard", "max_attempts": 10}}
    make_client(pool[0].endpoint, **retries).create_bucket(Bucket=BUCKET)
    rotation, lock, ops, errors = [0, 1, 2], threading.Lock(), [], []  # type: ignore[var-annotated]
    done = threading.Event()
    threads = []
    for index in range(CLIENTS):
        clients = [make_client(n.endpoint, **retries) for n in pool]
        for i, client in enumerate(clients):
            client.meta.events.register("needs-retry.s3", wire.hook(i))
        threads.append(threading.Thread(target=client_loop, args=(index, clients, rotation, lock, ops, done, errors),
                                        daemon=True))
    for thread in threads:
        thread.start()
    try:
        for i, node in enumerate(pool):
            wait_for("some load before the next restart", more_load(ops, errors, threads), pool, deadline_s=120)
            with wire.lock:
                wire.restarting = i
            resp = requests.post(f"{node.endpoint}/api/admin/cluster/nodes/node-{i + 1}/drain",
                                 headers={"Authorization": f"Bearer {toks[i]}"}, timeout=30)
            assert resp.status_code == 200 and resp.json()["draining"] is True, resp.text
            assert requests.get(f"{node.endpoint}/health", timeout=30).status_code == 503
            with lock:
                rotation.remove(i)  # the load balancer saw /health 503
            wait_for(f"node-{i + 1}'s hints handed off",
                     lambda i=i: health(pool[i], toks[i])["nodes"][i]["hints_pending"] == 0, pool)
            assert node.stop(timeout_s=60) == 0, node.log()[-4000:]
            nodes.append(node.start())
            toks[i] = token(node)
            wait_for(f"node-{i + 1} back, alive everywhere and caught up", whole, pool, deadline_s=90)
            with lock:
                rotation.append(i)
        wait_for("load on the whole pool again", more_load(ops, errors, threads), pool, deadline_s=120)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors[0]
    assert len(ops) >= 60
    history_errors = check_history(ops)
    assert not history_errors, "\n".join(history_errors[:10])
    unexpected = [(node, restarting, what) for node, restarting, what in wire.failures
                  if what != "503" and not (what in CONNECTION_ERRORS and node == restarting)]
    assert not unexpected, unexpected
    print(f"{len(ops)} operations; failed attempts on the wire, retried: {len(wire.failures)} "
          f"({sorted({w for _, _, w in wire.failures})})")
