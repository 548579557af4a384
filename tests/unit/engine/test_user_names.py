"""Issue 19, usernames are unique across a pool (engine/user_names.py): CreateUser claims the name in the pool's
name register (the bucket names' one, key space ``user/``) before ``user.created`` commits; DeleteUser frees it.

Real engines on temporary data directories (two "nodes" that do not replicate to each other, so only the register
can stop the second one); their ``names`` ports are the cluster's own ``RegisterNames`` over one ``BucketRegister``
with three in-memory acceptors (test_bucket_names.py's recording wrapper, failing chosen steps on demand).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from test_bucket_names import MemoryTransport, Names, register

from s4.cluster.caspaxos import BucketStatus
from s4.engine import Engine
from s4.engine.errors import ServiceUnavailableError
from s4.engine.iam import IamError
from s4.engine.ports import NameSpace

pytestmark = pytest.mark.anyio
PASSWORD = "password12345"


@pytest.fixture
def pool(make_engine: Callable[..., Engine], tmp_path: Any) -> list[Engine]:
    """Two nodes' engines, each proposing from its own node of one register."""
    transport = MemoryTransport()
    engines = [make_engine(data_dir=tmp_path / f"n{i}") for i in (1, 2)]
    for engine, node in zip(engines, ("n1", "n2"), strict=True):
        engine.names = Names(register(transport, node))
    return engines


async def record(engine: Engine, name: str) -> Any:
    return await engine.names.record(name, NameSpace.USER)


async def test_issue19_concurrent_create_user_of_one_name_through_two_nodes_has_exactly_one_winner(
        pool: list[Engine]) -> None:
    for round_ in range(10):
        name = f"user_{round_}"
        answers = await asyncio.gather(*(e.create_user(name, PASSWORD, "Writer") for e in pool),
                                       return_exceptions=True)
        won = [a for a in answers if isinstance(a, dict)]
        lost = [a for a in answers if isinstance(a, IamError)]
        assert len(won) == 1 and len(lost) == 1, answers
        assert (lost[0].status, lost[0].message) == (409, f"username {name!r} already exists")  # single-node answer
        rec = await record(pool[0], name)
        assert (rec.status, rec.owner, rec.incarnation) == (BucketStatus.LIVE, won[0]["id"], 1)
        assert sum(e.get_user_by_name(name) is not None for e in pool) == 1  # only the winner committed


async def test_issue19_a_deleted_username_can_be_created_again_on_any_node(pool: list[Engine]) -> None:
    a, b = pool
    alice = await a.create_user("alice", PASSWORD, "Reader")
    with pytest.raises(IamError) as taken:
        await b.create_user("alice", PASSWORD, "Reader")
    assert taken.value.status == 409
    await a.delete_user(alice["id"])
    assert (await record(a, "alice")).status is BucketStatus.DELETED
    again = await b.create_user("alice", PASSWORD, "Writer")
    assert again["id"] != alice["id"]
    rec = await record(a, "alice")
    assert (rec.status, rec.owner, rec.incarnation) == (BucketStatus.LIVE, again["id"], 2)
    await b.delete_user(again["id"])
    assert (await record(a, "alice")).status is BucketStatus.DELETED


async def test_issue19_a_delete_that_cannot_tell_the_register_is_healed_by_the_next_create(pool: list[Engine]) -> None:
    """The deletion is committed (final); the register still names the deleted user: a node that has applied the
    deletion frees that life when the name is created again. The release never frees a later life."""
    a, _ = pool
    alice = await a.create_user("alice", PASSWORD, "Reader")
    a.names.fail["mark"] = 1
    await a.delete_user(alice["id"])  # answered: the user is gone
    assert a.get_user_by_name("alice") is None
    assert (await record(a, "alice")).owner == alice["id"]  # the register was not told
    again = await a.create_user("alice", PASSWORD, "Reader")
    rec = await record(a, "alice")
    assert (rec.status, rec.owner, rec.incarnation) == (BucketStatus.LIVE, again["id"], 2)


async def test_issue19_create_user_without_a_register_majority_is_503_and_commits_nothing(pool: list[Engine]) -> None:
    a, _ = pool
    a.names.fail["create"] = 1
    with pytest.raises(ServiceUnavailableError):
        await a.create_user("bob_1", PASSWORD, "Reader")
    assert a.get_user_by_name("bob_1") is None and await record(a, "bob_1") is None
    await a.create_user("bob_1", PASSWORD, "Reader")  # the retry succeeds


async def test_issue19_a_name_taken_on_this_node_outside_the_register_is_refused_and_given_back(
        pool: list[Engine]) -> None:
    """The root user every node seeds at its first start is not in the register: CreateUser of its name is the
    single-node 409 and leaves the register's name free (no name held by a user that was never created)."""
    a, _ = pool
    root = a.seed_root("root", PASSWORD)
    assert root is not None
    with pytest.raises(IamError) as taken:
        await a.create_user("root", PASSWORD, "Reader")
    assert taken.value.status == 409
    assert (await record(a, "root")).status is BucketStatus.DELETED
    assert [u["id"] for u in a.list_users()] == [root["id"]]


async def test_issue19_user_and_bucket_names_are_separate_key_spaces(pool: list[Engine]) -> None:
    a, _ = pool
    await a.create_user("shared_name", PASSWORD, "Reader")
    assert await a.names.record("shared_name") is None  # no bucket of that name
    await a.create_bucket("shared-name-bkt", actor="AK")
    assert await record(a, "shared-name-bkt") is None
