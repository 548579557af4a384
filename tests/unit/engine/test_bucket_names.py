"""Issue 19, CreateBucket and DeleteBucket in a pool (engine/bucket_names.py): the name register decides first,
then the event commits.

A real Engine on a temporary data directory; its ``names`` port is the cluster's own ``RegisterNames`` over a
``BucketRegister`` whose acceptors are in memory (three of them, so concurrent proposers really contend), wrapped to
record every step and to fail chosen ones. Checked: the register is the truth for existence (ALREADY_EXISTS is
``BucketAlreadyOwnedByYou``, the single-node code, even where this node holds no bucket), a create that commits
nothing gives the name back, a bucket older than the register is adopted, a recreate replaces a stale older life,
a delete that finds the bucket not empty lifts its fence, a delete committed here makes the register follow, and
every register failure is a 503 with Retry-After that changed nothing here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.engine_io import put

from s4.cluster.buckets_register import BucketRegister, RegisterNames
from s4.cluster.caspaxos import (
    Accepted,
    Acceptor,
    Ballot,
    BucketRecord,
    BucketStatus,
    MemoryStore,
    Promise,
    Proposer,
    Reject,
    abort_delete,
    create_if_absent,
    finish_delete,
    mark_deleting,
)
from s4.engine import Engine, accounts
from s4.engine import bucket_names as flow
from s4.engine.errors import RETRY_AFTER_S, ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError
from s4.engine.ports import NameClaim, NameOutcome, NameSpace

pytestmark = pytest.mark.anyio
NODES = ("n1", "n2", "n3")


class MemoryTransport:
    """Every acceptor in this process; a yield before each answer lets concurrent proposers interleave."""

    def __init__(self) -> None:
        self.acceptors: dict[str, Acceptor[BucketRecord]] = {n: Acceptor(MemoryStore()) for n in NODES}

    async def prepare(self, peer: str, key: str, ballot: Ballot) -> Promise[BucketRecord] | Reject:
        await asyncio.sleep(0)
        return await self.acceptors[peer].prepare(key, ballot)

    async def accept(self, peer: str, key: str, ballot: Ballot, value: BucketRecord | None,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject:
        await asyncio.sleep(0)
        return await self.acceptors[peer].accept(key, ballot, value, lineage)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def register(transport: MemoryTransport, node: str = "n1") -> BucketRegister:
    return BucketRegister(Proposer(node, NODES, transport, max_attempts=50, sleep=no_sleep))


class Names(RegisterNames):
    """The real adapter, recording its steps; ``fail[step]`` makes that step answer 503 (nothing changed)."""

    def __init__(self, reg: BucketRegister) -> None:
        super().__init__(reg)
        self.steps: list[str] = []
        self.fail: dict[str, int] = {}  # step -> how many calls still fail

    def _step(self, step: str) -> None:
        self.steps.append(step)
        if self.fail.get(step, 0) > 0:
            self.fail[step] -= 1
            raise ServiceUnavailableError(f"{step}: no majority")

    async def create(self, name: str, owner: str, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        self._step("create")
        return await super().create(name, owner, token, space)

    async def mark_deleting(self, name: str, token: str, incarnation: int | None = None,
                            space: str = NameSpace.BUCKET) -> NameClaim:
        self._step("mark")
        return await super().mark_deleting(name, token, incarnation, space)

    async def finish_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        self._step("finish")
        return await super().finish_delete(name, incarnation, token, space)

    async def abort_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        self._step("abort")
        return await super().abort_delete(name, incarnation, token, space)

    async def record(self, name: str, space: str = NameSpace.BUCKET) -> BucketRecord | None:
        return await self.register.read(name, space)


@pytest.fixture
def names(engine: Engine) -> Names:
    engine.names = Names(register(MemoryTransport()))
    return engine.names


def code(exc: pytest.ExceptionInfo[S3Error]) -> ErrorCode:
    return exc.value.code


def created_events(engine: Engine, name: str) -> list[dict[str, Any]]:
    assert engine.journal is not None
    return [e.payload for e in engine.journal.read(1) if e.type == "bucket.created" and e.payload["bucket"] == name]


async def test_issue19_create_takes_the_name_in_the_register_then_commits_the_event_with_its_incarnation(
        engine: Engine, names: Names) -> None:
    await engine.create_bucket("bkt-1", actor="AK")
    assert engine.get_bucket("bkt-1").owner == "AK"
    assert [p["ri"] for p in created_events(engine, "bkt-1")] == [1]
    record = await names.record("bkt-1")
    assert record is not None and (record.status, record.owner, record.incarnation) == (BucketStatus.LIVE, "AK", 1)
    with pytest.raises(S3Error) as again:
        await engine.create_bucket("bkt-1", actor="AK")
    assert code(again) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU  # the single-node answer, kept
    with pytest.raises(S3Error) as other:
        await engine.create_bucket("bkt-1", actor="OTHER-KEY")
    assert code(other) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU  # a key no user holds: the default account
    assert len(created_events(engine, "bkt-1")) == 1


async def test_issue19_the_register_not_this_node_decides_existence(engine: Engine, names: Names) -> None:
    """A name another node created (its event not here yet) is taken: no second bucket.created for it."""
    await names.register.create("elsewhere", "AK", "other-node-request")
    with pytest.raises(S3Error) as exc:
        await engine.create_bucket("elsewhere", actor="AK")
    assert code(exc) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    assert created_events(engine, "elsewhere") == []


async def test_issue19_concurrent_creates_of_one_name_through_three_proposers_have_exactly_one_winner(
        engine: Engine) -> None:
    """Three engines' worth of proposers (one engine, so the one winner's event is visible) over one register."""
    transport = MemoryTransport()
    ports = [Names(register(transport, node)) for node in NODES]
    for round_ in range(20):
        name = f"race-{round_}"
        answers: list[str] = []

        async def one(port: Names, name: str = name, answers: list[str] = answers) -> None:
            engine.names = port
            try:
                await flow.create_bucket(port, engine._run, name, "us-east-1", "AK")
                answers.append("created")
            except S3Error as exc:
                answers.append(exc.code.name)

        await asyncio.gather(*(one(port) for port in ports))
        assert sorted(answers) == ["BUCKET_ALREADY_OWNED_BY_YOU"] * 2 + ["created"], answers
        assert len(created_events(engine, name)) == 1


async def test_issue19_create_with_no_register_majority_is_503_and_commits_nothing(engine: Engine,
                                                                                    names: Names) -> None:
    names.fail["create"] = 1
    with pytest.raises(ServiceUnavailableError) as exc:
        await engine.create_bucket("bkt-2", actor="AK")
    assert exc.value.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert created_events(engine, "bkt-2") == [] and await names.record("bkt-2") is None
    await engine.create_bucket("bkt-2", actor="AK")  # the retry succeeds
    assert engine.get_bucket("bkt-2").name == "bkt-2"


async def test_issue19_a_create_whose_command_is_refused_gives_the_name_back(names: Names) -> None:
    async def refused(name: str, args: dict[str, Any], actor: str) -> None:
        raise S3Error(ErrorCode.INTERNAL_ERROR, "the decider refused")

    with pytest.raises(S3Error) as exc:
        await flow.create_bucket(names, refused, "bkt-3", "us-east-1", "AK")
    assert code(exc) is ErrorCode.INTERNAL_ERROR
    record = await names.record("bkt-3")
    assert record is not None and record.status is BucketStatus.DELETED  # free again: the next create gets it
    assert (await names.create("bkt-3", "AK", "next")).outcome is NameOutcome.CREATED


@pytest.mark.parametrize("error", [PoolUnavailableError("quorum"), ServiceUnavailableError("closed")])
async def test_issue19_a_create_answered_503_after_the_register_keeps_the_name(names: Names,
                                                                               error: ServiceUnavailableError) -> None:
    """The event may be committed (here, short of the quorum, or behind a broken channel): never given back."""
    async def unavailable(name: str, args: dict[str, Any], actor: str) -> None:
        raise error

    with pytest.raises(ServiceUnavailableError):
        await flow.create_bucket(names, unavailable, "bkt-4", "us-east-1", "AK")
    record = await names.record("bkt-4")
    assert record is not None and record.status is BucketStatus.LIVE
    assert names.steps == ["create"]


async def test_issue19_a_bucket_older_than_the_register_is_adopted_not_replaced(engine: Engine) -> None:
    await engine.create_bucket("old", actor="AK")  # single mode: no register
    await put(engine, "old", "k", b"data")
    names = Names(register(MemoryTransport()))
    engine.names = names
    with pytest.raises(S3Error) as exc:
        await engine.create_bucket("old", actor="AK")
    assert code(exc) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    assert engine.head_object("old", "k").size == 4  # kept
    record = await names.record("old")
    assert record is not None and record.status is BucketStatus.LIVE  # and now registered


async def test_issue19_a_recreate_replaces_the_older_life_this_node_still_holds(engine: Engine, names: Names) -> None:
    """The register granted incarnation 2 only after a delete of 1 committed (elsewhere, not applied here yet)."""
    await engine.create_bucket("life", actor="AK")
    await put(engine, "life", "k", b"old life")
    await names.register.mark_deleting("life", "elsewhere")
    await names.register.finish_delete("life", 1, "elsewhere")
    await engine.create_bucket("life", actor="AK")
    assert [p["ri"] for p in created_events(engine, "life")] == [1, 2]
    assert (await engine.list_objects("life")).entries == []


async def test_issue19_delete_marks_checks_commits_then_finishes(engine: Engine, names: Names) -> None:
    await engine.create_bucket("del-1", actor="AK")
    names.steps.clear()
    await engine.delete_bucket("del-1", actor="AK")
    assert names.steps == ["mark", "finish"]
    assert engine._bucket_here("del-1") is None
    record = await names.record("del-1")
    assert record is not None and record.status is BucketStatus.DELETED
    with pytest.raises(S3Error) as again:
        await engine.delete_bucket("del-1", actor="AK")
    assert code(again) is ErrorCode.NO_SUCH_BUCKET
    await engine.create_bucket("del-1", actor="AK")  # the name is free: a new life
    assert [p["ri"] for p in created_events(engine, "del-1")] == [1, 2]


async def test_issue19_delete_of_a_bucket_not_empty_lifts_the_fence(engine: Engine, names: Names) -> None:
    await engine.create_bucket("full", actor="AK")
    await put(engine, "full", "k", b"x")
    names.steps.clear()
    with pytest.raises(S3Error) as exc:
        await engine.delete_bucket("full", actor="AK")
    assert code(exc) is ErrorCode.BUCKET_NOT_EMPTY
    assert names.steps == ["mark", "abort"]
    record = await names.record("full")
    assert record is not None and record.status is BucketStatus.LIVE
    with pytest.raises(S3Error) as create:  # the name stays taken
        await engine.create_bucket("full", actor="AK")
    assert code(create) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU


async def test_issue19_delete_with_no_register_majority_is_503_and_deletes_nothing(engine: Engine,
                                                                                   names: Names) -> None:
    await engine.create_bucket("del-2", actor="AK")
    names.fail["mark"] = 1
    with pytest.raises(ServiceUnavailableError):
        await engine.delete_bucket("del-2", actor="AK")
    assert engine.get_bucket("del-2").name == "del-2"


async def test_issue19_delete_of_a_live_name_this_node_does_not_hold_yet_is_503_not_a_guess(
        engine: Engine, names: Names) -> None:
    await names.register.create("far", "AK", "other-node-request")
    with pytest.raises(ServiceUnavailableError):
        await engine.delete_bucket("far", actor="AK")
    assert names.steps == ["mark", "abort"]
    record = await names.record("far")
    assert record is not None and record.status is BucketStatus.LIVE


async def test_issue19_delete_of_a_deleted_name_is_no_such_bucket_even_where_the_delete_has_not_arrived(
        engine: Engine, names: Names) -> None:
    await engine.create_bucket("gone", actor="AK")
    await names.register.mark_deleting("gone", "elsewhere")
    await names.register.finish_delete("gone", 1, "elsewhere")
    with pytest.raises(S3Error) as exc:
        await engine.delete_bucket("gone", actor="AK")
    assert code(exc) is ErrorCode.NO_SUCH_BUCKET
    assert names.steps == ["create", "mark"]


async def test_issue19_a_bucket_older_than_the_register_can_be_deleted(engine: Engine) -> None:
    await engine.create_bucket("legacy", actor="AK")
    names = Names(register(MemoryTransport()))
    engine.names = names
    await engine.delete_bucket("legacy", actor="AK")
    assert names.steps == ["mark", "create", "mark", "finish"]
    assert engine._bucket_here("legacy") is None


async def test_issue19_a_delete_committed_here_short_of_the_quorum_still_finishes_in_the_register(
        engine: Engine, names: Names) -> None:
    await engine.create_bucket("del-3", actor="AK")

    async def short(name: str, args: dict[str, Any], actor: str) -> None:
        await engine._run(name, args, actor)
        raise PoolUnavailableError("1 of 2 replicas")

    names.fail["finish"] = 1  # and the register is briefly unreachable too: retried
    with pytest.raises(PoolUnavailableError):
        await flow.delete_bucket(names, short, engine._bucket_here, "del-3", "AK")
    record = await names.record("del-3")
    assert record is not None and record.status is BucketStatus.DELETED
    assert names.steps == ["create", "mark", "finish", "finish"]


async def test_issue19_a_committed_delete_overrules_a_concurrent_abort(engine: Engine, names: Names) -> None:
    """Another node's delete of the same life found the bucket not empty and lifted the shared fence after we
    committed bucket.deleted: the event is out, so the register is marked again and finished."""
    await engine.create_bucket("del-4", actor="AK")

    async def then_aborted(name: str, args: dict[str, Any], actor: str) -> None:
        await engine._run(name, args, actor)
        await names.register.mark_deleting("del-4", "other")
        await names.register.abort_delete("del-4", 1, "other")

    await flow.delete_bucket(names, then_aborted, engine._bucket_here, "del-4", "AK")
    record = await names.record("del-4")
    assert record is not None and record.status is BucketStatus.DELETED
    assert names.steps == ["create", "mark", "finish", "mark", "finish"]


def test_issue19_name_outcomes_are_the_registers_outcomes() -> None:
    """The adapter maps by value: every outcome the change functions produce has an engine name."""
    from s4.cluster.caspaxos import Outcome

    assert {o.value for o in Outcome} == {o.value for o in NameOutcome}
    for fn in (create_if_absent("o", "t"), mark_deleting("t"), finish_delete(1, "t"), abort_delete(1, "t")):
        assert fn(None).outcome.outcome.value in {o.value for o in NameOutcome}




async def test_issue21_pool_create_of_a_name_another_account_holds_is_bucket_already_exists(
        engine: Engine, names: Names) -> None:
    """Before: in a pool every taken name answered BucketAlreadyOwnedByYou, whoever held it; a single node answers
    BucketAlreadyExists to another account (engine/commands.py), and so does a pool now."""
    alt = accounts.Account(accounts.account_id("alt"), "alt")
    await engine.create_bucket("held-1", actor="ROOT-KEY")  # the default account's
    with pytest.raises(S3Error) as other:
        await engine.create_bucket("held-1", actor="ALT-KEY", account=alt)
    assert code(other) is ErrorCode.BUCKET_ALREADY_EXISTS
    with pytest.raises(S3Error) as own:
        await engine.create_bucket("held-1", actor="ROOT-KEY")
    assert code(own) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    assert len(created_events(engine, "held-1")) == 1


async def test_issue21_pool_a_name_created_on_another_node_is_held_by_its_creators_account(
        engine: Engine, names: Names) -> None:
    """The bucket is not here yet: the register's creator key names the holding account."""
    user = await engine.create_user("alt_writer", "pass-word-1", "Writer", account="alt")
    alt_key, _ = await engine.create_credential(user["id"])
    alt = accounts.Account(accounts.account_id("alt"), "alt")
    await names.register.create("elsewhere-1", alt_key, "other-node-request")
    with pytest.raises(S3Error) as other:
        await engine.create_bucket("elsewhere-1", actor="ROOT-KEY")
    assert code(other) is ErrorCode.BUCKET_ALREADY_EXISTS
    with pytest.raises(S3Error) as own:
        await engine.create_bucket("elsewhere-1", actor=alt_key, account=alt)
    assert code(own) is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    await names.register.create("elsewhere-2", "ROOT-KEY", "other-node-request")  # no user holds it: the default
    with pytest.raises(S3Error) as by_root:
        await engine.create_bucket("elsewhere-2", actor=alt_key, account=alt)
    assert code(by_root) is ErrorCode.BUCKET_ALREADY_EXISTS
    assert created_events(engine, "elsewhere-1") == created_events(engine, "elsewhere-2") == []
