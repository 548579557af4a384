"""A pool of real s4-server processes on 127.0.0.1, .2 and .3 (the spec's quick start), and the admin-API reads and
deadline polls the cluster integration tests share."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from helpers.server import ServerProcess, free_port

ROOT_PASSWORD = "password12345"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
DEADLINE_S = 40.0


def pool_env(grpc_ports: list[int], http_ports: list[int], index: int, **extra: str) -> dict[str, str]:
    """The spec's quick start for node ``index`` (0-based), on this machine's loopback addresses."""
    grpc = [f"{h}:{p}" for h, p in zip(HOSTS, grpc_ports, strict=True)]
    return {"S4_MODE": "cluster", "S4_CLUSTER_NAME": "itest", "S4_NODE_ID": f"node-{index + 1}",
            "S4_NODE_GRPC_ADDR": grpc[index], "S4_NODE_HTTP_ADDR": f"{HOSTS[index]}:{http_ports[index]}",
            "S4_SEEDS": ",".join(grpc), "S4_POOL_NAME": "pool-1",
            "S4_POOL_NODES": ",".join(f"node-{i + 1}:{a}" for i, a in enumerate(grpc)),
            "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET, **extra}


def make_pool(tmp: Path, workers: int, overrides: dict[int, dict[str, str]] | None = None) -> list[ServerProcess]:
    grpc_ports = [free_port(h) for h in HOSTS]
    http_ports = [free_port(h) for h in HOSTS]
    return [ServerProcess(tmp / f"node-{i + 1}", host=HOSTS[i], port=http_ports[i],
                          env=pool_env(grpc_ports, http_ports, i, **{"S4_WORKERS": str(workers),
                                                                     **(overrides or {}).get(i, {})}))
            for i in range(3)]


def token(node: ServerProcess) -> str:
    resp = requests.post(f"{node.endpoint}/api/admin/login", json={"username": "root", "password": ROOT_PASSWORD},
                         timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def health(node: ServerProcess, tok: str) -> dict[str, Any]:
    resp = requests.get(f"{node.endpoint}/api/admin/cluster/health", headers={"Authorization": f"Bearer {tok}"},
                        timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["state"] for n in doc["nodes"]}


def wait_for(what: str, check: Callable[[], bool], nodes: list[ServerProcess], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {n.data_dir.name}:\n{n.log()[-4000:]}" for n in nodes)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


EVERYONE_ALIVE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}


def all_alive(pool: list[ServerProcess], tokens: list[str]) -> bool:
    """Every node of ``pool`` sees every node (itself included) alive."""
    return all(states(health(n, t)) == EVERYONE_ALIVE for n, t in zip(pool, tokens, strict=True))


def start_alive(pool: list[ServerProcess], started: list[ServerProcess]) -> list[str]:
    """Start the nodes of ``pool`` (each appended to ``started``, the test's list to stop at teardown), wait until
    every node sees the three alive, and return each node's admin token."""
    for node in pool:
        started.append(node.start())
    tokens = [token(n) for n in pool]
    wait_for("the 3 nodes alive everywhere", lambda: all_alive(pool, tokens), pool)
    return tokens


def metric(node: ServerProcess, name: str, peer: str) -> float | None:
    text = requests.get(f"{node.endpoint}/metrics", timeout=30).text
    found = re.search(rf'^{name}\{{peer="{peer}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


def incarnations(doc: dict[str, Any]) -> dict[str, int | None]:
    return {n["id"]: n["incarnation"] for n in doc["nodes"]}


@contextlib.contextmanager
def running_pool(tmp: Path, workers: int = 1, overrides: dict[int, dict[str, str]] | None = None,
                 ) -> Iterator[list[ServerProcess]]:
    """The three nodes of ``make_pool`` started, and stopped however the block ends."""
    nodes = make_pool(tmp, workers, overrides)
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
