"""Issue 19, "what it must show": a read-after-write history with kills, and concurrent writes of one key.

Three real s4-server processes on 127.0.0.1/.2/.3 (N=3, W=2, R=2; node-1 with two HTTP workers behind its
supervisor, the others single-process), driven by boto3 clients that never retry (each recorded operation is one
HTTP attempt).

1. A random workload: several client threads PUT (a body unique to the operation), DELETE and GET a few keys
   through random nodes, recording each operation's invocation and completion (one monotonic clock) and outcome,
   while a controller kills one node with kill -9, lets the load run on the two others, restarts it and waits until it
   caught up, several times (never two nodes down). The history is checked by tests/helpers/rw_history.py:

   - every successful GET returns (byte-exact) the value of a write of that key invoked before the GET completed
     (404: a DELETE's, or the initial absence);
   - it did not miss a newer acknowledged write: no acknowledged write of that key completed before the GET started
     and was invoked after the write it returned had completed (no acknowledged write unseen by a later quorum read);
   - a GET never goes backwards: it does not return a write that had completed before the write an earlier GET
     (completed before this one started) returned was invoked.

   A write answered 503 or cut (connection reset, timeout) may or may not have happened: it may explain a value but
   never requires one; a write whose connection was refused (the node is dead) cannot have happened. A failed GET
   says nothing. After the load, with every node up and caught up, every key reads the same through all three
   nodes, and those final reads obey the same rule. Disaster recovery: the node killed last is stopped, its data
   directory passes ``s4-journal verify`` and, opened alone with S4_MODE=single, serves every key's final value.
2. Concurrent PUTs of one key through the three nodes at once (a barrier), twenty rounds: all acknowledged, and right
   after each round every node returns the same value, one of that round's. (It found a pass of catch-up failing
   when what superseded a held-back put was committed after the stream began: the quorum read before a PUT then
   answered 503 with every node up; tests/unit/cluster/test_catch_up_client.py.)

No wall-time assertion: every wait is a deadline poll or a bounded count of operations."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError
from helpers.rw_history import MAYBE, OK, REFUSED, Rec, check
from helpers.s3client import make_client
from helpers.server import ServerProcess, track_client
from helpers.server_pool import health, make_pool, states, token, wait_for

BUCKET = "history"
KEYS = [f"key-{i}" for i in range(6)]
CLIENTS = 5
KILLS = 3
OPS_BEFORE_KILL = 40  # operations completed (any outcome) after the pool is whole, before the next kill
OPS_WHILE_DOWN = 60  # operations completed while the victim is dead
MAX_OPS_PER_CLIENT = 600  # bounds the load if the controller's waits run long
ROUNDS = 20
ALL_ALIVE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}


def no_retries(endpoint: str, region: str = "us-east-1") -> Any:
    """One HTTP attempt per call (boto3 retries 503s and connection errors by default), bounded in time."""
    return make_client(endpoint, region, retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                       read_timeout=60)


def body_of(op_id: int, key: str, rng: random.Random) -> bytes:
    """A body unique to the operation: mostly small, sometimes a few blocks (the peers fetch the bytes)."""
    head = f"op={op_id} key={key}|".encode()
    size = rng.choice([0, 16, 100, 1000, 40_000, 300_000])
    seed = hashlib.sha256(head).digest()
    return head + (seed * (size // len(seed) + 1))[:size]


class History:
    """The operations recorded by every client thread (appends under a lock), and a count to pace the controller."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: list[Rec] = []
        self.next_id = 0

    def op_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def add(self, rec: Rec) -> None:
        with self.lock:
            self.ops.append(rec)

    def count(self) -> int:
        with self.lock:
            return len(self.ops)


def attempt(client: Any, kind: str, key: str, op_id: int, value: bytes | None, via: str) -> Rec:
    """One operation, classified: ok (with a GET's value, None for 404), maybe (503, a cut connection, a timeout:
    a write's outcome unknown), refused (no connection was made: nothing was sent)."""
    start = time.monotonic()
    outcome, got, detail = OK, value, ""
    try:
        if kind == "put":
            client.put_object(Bucket=BUCKET, Key=key, Body=value)
        elif kind == "delete":
            client.delete_object(Bucket=BUCKET, Key=key)
        else:
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        if kind == "get" and code == "NoSuchKey":
            got = None
        else:
            outcome, detail = MAYBE, f"{status} {code}"
    except EndpointConnectionError as exc:  # the TCP connection was never established: nothing was sent
        outcome, detail = REFUSED, type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - a cut connection or a timeout: the outcome is unknown
        outcome, detail = MAYBE, f"{type(exc).__name__}: {exc}"
    return Rec(op_id, kind, key, start, time.monotonic(), outcome, got, via, detail)


def client_loop(index: int, seed: int, clients: list[Any], history: History, done: threading.Event,
                errors: list[BaseException], max_ops: int = MAX_OPS_PER_CLIENT) -> None:
    rng = random.Random(seed * 1000 + index)
    try:
        for _ in range(max_ops):
            if done.is_set():
                return
            node = rng.randrange(3)
            key = rng.choice(KEYS)
            kind = rng.choices(["put", "delete", "get"], weights=[5, 1, 4])[0]
            op_id = history.op_id()
            value = body_of(op_id, key, rng) if kind == "put" else None
            history.add(attempt(clients[node], kind, key, op_id, value, f"node-{node + 1}"))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
        errors.append(exc)


def wait_ops(history: History, count: int, pool: list[ServerProcess], what: str) -> None:
    wait_for(what, lambda: history.count() >= count, pool, deadline_s=120)


def whole(pool: list[ServerProcess], tokens: list[str]) -> bool:
    return all(health(n, t)["caught_up"] is True and states(health(n, t)) == ALL_ALIVE
               for n, t in zip(pool, tokens, strict=True))


def read_final(clients: list[Any], history: History) -> dict[str, bytes | None] | None:
    """Every key through every node (recorded in the history); the values when all three agree on every key."""
    final: dict[str, bytes | None] = {}
    for key in KEYS:
        seen = [attempt(c, "get", key, history.op_id(), None, f"node-{i + 1}") for i, c in enumerate(clients)]
        for rec in seen:
            history.add(rec)
        if any(r.outcome != OK for r in seen) or len({r.value for r in seen}) != 1:
            return None
        final[key] = seen[0].value
    return final


def has_bucket(client: Any) -> bool:
    try:
        client.head_bucket(Bucket=BUCKET)
    except ClientError:
        return False
    return True


def value_alone(client: Any, key: str) -> bytes | None:
    try:
        return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def test_issue19_history_with_kills_every_acknowledged_write_seen_by_later_quorum_reads_and_recovers_alone(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    seed = random.randrange(1 << 30)
    pool = make_pool(tmp_path, workers=1, overrides={0: {"S4_WORKERS": "2"}})
    for node in pool:
        nodes.append(node.start())
    tokens = [token(n) for n in pool]
    admin = make_client(pool[0].endpoint)
    admin.create_bucket(Bucket=BUCKET)
    per_thread = [[no_retries(n.endpoint) for n in pool] for _ in range(CLIENTS)]
    wait_for("the bucket on every node", lambda: all(has_bucket(c) for c in per_thread[0]), pool)

    history = History()
    done = threading.Event()
    errors: list[BaseException] = []
    threads = [threading.Thread(target=client_loop, args=(i, seed, per_thread[i], history, done, errors),
                                name=f"client-{i}") for i in range(CLIENTS)]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    victims: list[int] = []
    try:
        for cycle in range(KILLS):
            wait_ops(history, history.count() + OPS_BEFORE_KILL, pool, f"load before kill {cycle + 1}")
            victim = rng.randrange(3)
            victims.append(victim)
            pool[victim].kill_group()  # kill -9, supervisor and workers at once, with writes in flight
            wait_ops(history, history.count() + OPS_WHILE_DOWN, pool, f"load with node-{victim + 1} dead")
            pool[victim].start()
            for row in per_thread:  # the kill closed the clients' connections; keep them closed at the end
                track_client(pool[victim].endpoint, row[victim])
            wait_for(f"node-{victim + 1} caught up and every node alive", lambda: whole(pool, tokens), pool)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    assert not errors, errors

    ops = list(history.ops)
    refused_while_up = [r for r in ops if r.outcome == REFUSED and r.via not in {f"node-{v + 1}" for v in victims}]
    assert not refused_while_up, [r.describe() for r in refused_while_up[:5]]
    unexpected = [r for r in ops if r.outcome == MAYBE and r.detail[:3].isdigit() and not r.detail.startswith("503")]
    assert not unexpected, [r.describe() for r in unexpected[:10]]  # only 503s, never a 500 or a 4xx
    acked = [r for r in ops if r.kind != "get" and r.outcome == OK]
    reads = [r for r in ops if r.kind == "get" and r.outcome == OK]
    assert len(acked) >= 50 and len(reads) >= 50, (len(acked), len(reads))

    final_box: list[dict[str, bytes | None]] = []

    def converged() -> bool:
        got = read_final(per_thread[0], history)
        if got is not None:
            final_box.append(got)
        return got is not None

    wait_for("every key reads the same through the three nodes", converged, pool)
    final = final_box[-1]
    violations = check(history.ops)
    summary = (f"seed {seed}, kills {[f'node-{v + 1}' for v in victims]}, {len(history.ops)} ops: "
               + ", ".join(f"{o} {sum(r.outcome == o for r in history.ops)}" for o in (OK, MAYBE, REFUSED)))
    print(summary)  # shown with -s: how much of the history the checker saw
    assert not violations, summary + "\n" + "\n".join(violations[:10])

    # Disaster recovery: the node killed last, stopped, is a complete data directory on its own.
    last = pool[victims[-1]]
    assert last.stop(timeout_s=40) == 0, last.log()[-4000:]
    verify = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "verify", "--data-dir", str(last.data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    alone = ServerProcess(last.data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"})
    nodes.append(alone.start())
    solo = make_client(alone.endpoint)
    assert {k: value_alone(solo, k) for k in KEYS} == final, summary


def test_issue19_concurrent_puts_of_one_key_through_three_nodes_converge_to_one_winner_everywhere(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    pool = make_pool(tmp_path, workers=1)
    for node in pool:
        nodes.append(node.start())
    writers = [no_retries(n.endpoint) for n in pool]
    readers = [no_retries(n.endpoint) for n in pool]
    writers[0].create_bucket(Bucket=BUCKET)
    wait_for("the bucket on every node", lambda: all(has_bucket(c) for c in readers), pool)
    barrier = threading.Barrier(3)

    def put_through(node: int, round_: int) -> Callable[[], bytes]:
        def run() -> bytes:
            data = f"round {round_} through node-{node + 1}".encode() * (1 + node)
            barrier.wait(timeout=60)
            writers[node].put_object(Bucket=BUCKET, Key="contended", Body=data)
            return data
        return run

    with ThreadPoolExecutor(max_workers=3) as executor:
        for round_ in range(ROUNDS):
            written = {f.result() for f in [executor.submit(put_through(i, round_)) for i in range(3)]}
            seen = [value_alone(c, "contended") for c in readers]
            assert len(set(seen)) == 1, f"round {round_}: the nodes disagree: {seen}"
            assert seen[0] in written, f"round {round_}: {seen[0]!r} is none of {written}"
