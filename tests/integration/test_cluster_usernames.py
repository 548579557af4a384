"""Issue 19, IAM usernames in a pool: three real s4-server processes on 127.0.0.1/.2/.3 with IAM on.

Each node seeds the root user at its first start (S4_ROOT_PASSWORD): the pool ends with one root user, one id on
every node, and root logs in through every node. Rounds of CreateUser (``POST /api/admin/users``) of one fresh
name through the three nodes at once have exactly one 201 each; the others get the single node's answer for a
taken name (409 ``username '...' already exists``), and afterwards every node lists the user once, under the
winner's id. A deleted name can be created again, through another node. With ``S4_WORKERS=2`` the HTTP workers ask
the supervisor's register (the channel op ``names``). Every wait is a deadline poll.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, token, wait_for
from test_cluster_bucket_names import at_once

ROUNDS = 12


def users(node: ServerProcess, tok: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{node.endpoint}/api/admin/users", headers={"Authorization": f"Bearer {tok}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["users"])


def ids_named(node: ServerProcess, tok: str, name: str) -> list[str]:
    return [u["id"] for u in users(node, tok) if u["username"] == name]


def create_user(node: ServerProcess, tok: str, name: str, out: list[tuple[int, Any]]) -> None:
    resp = requests.post(f"{node.endpoint}/api/admin/users", headers={"Authorization": f"Bearer {tok}"},
                         json={"username": name, "password": "user-password-1", "role": "Writer"}, timeout=60)
    out.append((resp.status_code, resp.json() if resp.content else None))


@pytest.mark.parametrize("workers", [1, 2])  # the register in the one process, and behind the supervisor
def test_issue19_one_root_user_and_concurrent_create_user_of_one_name_has_exactly_one_winner(
        tmp_path: Path, nodes: list[ServerProcess], workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers)
    for node in pool:
        nodes.append(node.start())
    tokens = [token(node) for node in pool]
    wait_for("every node caught up", lambda: all(health(n, t).get("caught_up") is True
                                                  for n, t in zip(pool, tokens, strict=True)), pool)

    # Every node seeded the root user at its first start: once every node lists the same users (the seeds have
    # replicated), there is one root user, one id on every node.
    wait_for("every node lists the same users", lambda: len(
        {tuple(sorted(u["id"] for u in users(n, t))) for n, t in zip(pool, tokens, strict=True)}) == 1, pool)
    roots = [ids_named(n, t, "root") for n, t in zip(pool, tokens, strict=True)]
    assert all(len(r) == 1 for r in roots) and len({r[0] for r in roots}) == 1, roots
    assert [token(n) for n in pool]  # and it logs in through every node with the one password

    for round_ in range(ROUNDS):
        name = f"user_{round_}"
        answers: list[list[tuple[int, Any]]] = [[], [], []]
        at_once([lambda n=n, t=t, o=o, name=name: create_user(n, t, name, o)
                 for n, t, o in zip(pool, tokens, answers, strict=True)])
        statuses = sorted(a[0][0] for a in answers)
        assert statuses == [201, 409, 409], f"round {round_}: {answers}"
        for status, body in (a[0] for a in answers):
            if status == 409:
                assert body == {"error": f"username {name!r} already exists"}, body  # the single-node answer
    winners = {}
    for round_ in range(ROUNDS):
        name = f"user_{round_}"
        wait_for(f"every node lists {name} once, under one id", lambda name=name: len(
            {tuple(ids_named(n, t, name)) for n, t in zip(pool, tokens, strict=True)} | {()}) == 2 and all(
            len(ids_named(n, t, name)) == 1 for n, t in zip(pool, tokens, strict=True)), pool)
        winners[name] = ids_named(pool[0], tokens[0], name)[0]

    # A deleted name can be created again (through another node), and every node ends with the new user only.
    for round_ in range(3):
        name = f"user_{round_}"
        gone = requests.delete(f"{pool[1].endpoint}/api/admin/users/{winners[name]}",
                               headers={"Authorization": f"Bearer {tokens[1]}"}, timeout=60)
        assert gone.status_code == 204, gone.text
        again: list[tuple[int, Any]] = []
        create_user(pool[2], tokens[2], name, again)
        assert again[0][0] == 201, again
        new_id = again[0][1]["id"]
        assert new_id != winners[name]
        wait_for(f"every node lists only the new {name}", lambda name=name, new_id=new_id: all(
            ids_named(n, t, name) == [new_id] for n, t in zip(pool, tokens, strict=True)), pool)
