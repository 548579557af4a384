"""The CASPaxos bucket-name register: acceptor rules, exact create/delete outcomes, and linearizability of random
concurrent histories over a simulated lossy network with crashes (hypothesis picks the schedules; a Wing-Gong
checker judges them). The checker is shown to fail on a known bad history and on a deliberately broken acceptor."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Hashable
from typing import Any

import pytest
from helpers.linearizability import Op, check
from helpers.simcluster import Faults, ForgetfulAcceptor, SimNetwork
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.caspaxos import (
    Accepted,
    Acceptor,
    Ballot,
    BucketRecord,
    BucketStatus,
    Change,
    MemoryStore,
    Outcome,
    OutcomeUnknown,
    Promise,
    Proposer,
    RegisterUnavailable,
    Reject,
    abort_delete,
    create_if_absent,
    finish_delete,
    majority,
    mark_deleting,
)

NODES = ["n1", "n2", "n3"]

# --- the sequential model: the change functions themselves, keyed by a hashable description ----------------------


def change_fn(inp: Hashable) -> Callable[[BucketRecord | None], Change[BucketRecord, Any]]:
    assert isinstance(inp, tuple)
    kind, *args = inp
    if kind == "create":
        return create_if_absent(*args)
    if kind == "mark":
        return mark_deleting(*args)
    if kind == "finish":
        return finish_delete(*args)
    if kind == "abort":
        return abort_delete(*args)
    assert kind == "read"
    return lambda v: Change(v, ("read", v))


def model_step(state: Hashable, inp: Hashable) -> tuple[Hashable, Hashable]:
    assert state is None or isinstance(state, BucketRecord)
    decided = change_fn(inp)(state)
    return decided.value, decided.outcome


# --- acceptor and change-function units ---------------------------------------------------------------------------


def test_majority_of_the_pool() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    with pytest.raises(ValueError):
        majority(0)


def test_acceptor_promises_strictly_higher_ballots_and_rejects_lower_accepts() -> None:
    async def main() -> None:
        store: MemoryStore[str] = MemoryStore()
        acc = Acceptor(store)
        b1, b2 = Ballot(1, "n1", 7), Ballot(2, "n2", 9)
        assert await acc.prepare("k", b2) == Promise(b2, Ballot(0, "", 0), None)
        assert await acc.prepare("k", b2) == Reject(b2)  # a ballot is prepared once
        assert await acc.prepare("k", b1) == Reject(b2)
        assert await acc.accept("k", b1, "old", ()) == Reject(b2)
        assert await acc.accept("k", b2, "v", ()) == Accepted(b2)
        # A restarted acceptor is a new object over the same durable store: it keeps promise and value.
        again = Acceptor(store)
        b3 = Ballot(3, "n1", 7)
        assert await again.accept("k", b1, "old", ()) == Reject(b2)
        assert await again.prepare("k", b3) == Promise(b3, b2, "v", ())

    run_sim(main())


def test_bucket_change_functions_give_exact_outcomes() -> None:
    created = create_if_absent("alice", "t1")(None)
    assert created.outcome.outcome is Outcome.CREATED
    live = created.value
    assert live == BucketRecord(BucketStatus.LIVE, "alice", 1, "t1")
    exists = create_if_absent("bob", "t2")(live)
    assert exists.outcome.outcome is Outcome.ALREADY_EXISTS and exists.value == live
    assert exists.outcome.record is not None and exists.outcome.record.owner == "alice"
    assert create_if_absent("alice", "t1")(live).outcome.outcome is Outcome.CREATED  # own retried attempt
    marked = mark_deleting("t3")(live)
    assert marked.outcome.outcome is Outcome.MARKED and marked.value is not None
    assert create_if_absent("bob", "t4")(marked.value).outcome.outcome is Outcome.ALREADY_EXISTS  # fenced
    assert finish_delete(2, "t5")(marked.value).outcome.outcome is Outcome.NO_SUCH_BUCKET  # other incarnation
    restored = abort_delete(1, "t5")(marked.value)
    assert restored.outcome.outcome is Outcome.RESTORED and restored.value is not None
    assert finish_delete(1, "t6")(restored.value).outcome.outcome is Outcome.NOT_DELETING
    deleted = finish_delete(1, "t7")(mark_deleting("t6")(live).value)
    assert deleted.outcome.outcome is Outcome.DELETED and deleted.value is not None
    assert finish_delete(1, "t8")(deleted.value).outcome.outcome is Outcome.NO_SUCH_BUCKET  # exactly once
    assert finish_delete(1, "t7")(deleted.value).outcome.outcome is Outcome.DELETED  # own retried attempt
    assert mark_deleting("t9")(deleted.value).outcome.outcome is Outcome.NO_SUCH_BUCKET
    again = create_if_absent("bob", "t10")(deleted.value)
    assert again.outcome.outcome is Outcome.CREATED and again.value is not None
    assert again.value.incarnation == 2 and again.value.owner == "bob"


def test_proposer_retries_past_a_higher_ballot_and_backs_off_through_the_injected_sleep() -> None:
    async def main() -> None:
        net = SimNetwork(NODES, random.Random(1), Faults(max_delay=0.001))
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        rival = Proposer("n2", NODES, net, incarnation=2)
        for _ in range(5):  # rival's counter runs ahead
            await rival.change("b", change_fn(("read",)))
        slow = Proposer("n1", NODES, net, incarnation=1, sleep=sleep)
        got = await slow.change("b", create_if_absent("n1", "t"))
        assert got.outcome.outcome is Outcome.CREATED
        assert got.ballot.counter > 5 and len(sleeps) == 1  # one rejected attempt, then past the rival

    run_sim(main())


def test_proposer_gives_up_after_bounded_attempts_without_a_majority() -> None:
    async def main() -> RegisterUnavailable:
        net = SimNetwork(NODES, random.Random(2))
        net.crash("n2")
        net.crash("n3")
        proposer = Proposer("n1", NODES, net, max_attempts=3, phase_timeout=0.5)
        with pytest.raises(RegisterUnavailable) as info:
            await proposer.change("b", create_if_absent("n1", "t"))
        return info.value

    err = run_sim(main())
    assert err.attempts == 3 and "1 of 3 replicas succeeded, 2 needed" in str(err)


def test_proposer_must_be_a_pool_node() -> None:
    with pytest.raises(ValueError, match="not one of the pool's nodes"):
        Proposer("n9", NODES, SimNetwork(NODES, random.Random(0)))


# --- the checker can fail -----------------------------------------------------------------------------------------


def test_checker_accepts_a_concurrent_history_and_rejects_two_sequential_winners() -> None:
    alice = ("create", "alice", "ta")
    bob = ("create", "bob", "tb")
    a_rec = BucketRecord(BucketStatus.LIVE, "alice", 1, "ta")
    b_rec = BucketRecord(BucketStatus.LIVE, "bob", 1, "tb")
    created_a = model_step(None, alice)[1]
    created_b = model_step(None, bob)[1]
    exists_b = model_step(b_rec, alice)[1]
    # Overlapping: bob's create takes effect first although alice's was invoked first.
    good = [Op("b", 0, 3, alice, exists_b), Op("b", 1, 2, bob, created_b)]
    assert check(good, None, model_step)
    # Two winners, one strictly after the other: not linearizable.
    bad = [Op("b", 0, 1, alice, created_a), Op("b", 2, 3, bob, created_b)]
    verdict = check(bad, None, model_step)
    assert not verdict and verdict.key == "b"
    # A read that goes back in time: bob's create committed, then a later read sees nothing.
    stale = [Op("b", 0, 1, bob, created_b), Op("b", 2, 3, ("read",), ("read", None))]
    assert not check(stale, None, model_step)
    # A pending operation may take effect: alice's create never answered, yet a later read sees her bucket.
    pending = [Op("b", 0, None, alice), Op("b", 1, 2, ("read",), ("read", a_rec))]
    assert check(pending, None, model_step)
    # ...but only after it was invoked.
    early = [Op("b", 0, 1, ("read",), ("read", a_rec)), Op("b", 2, None, alice)]
    assert not check(early, None, model_step)


# --- random concurrent histories over the simulated pool ----------------------------------------------------------


async def random_workload(seed: int, faults: Faults, *, crashes: int, clients: int = 3, ops: int = 6,
                          keys: tuple[str, ...] = ("b",), acceptor_type: type[Acceptor[Any]] = Acceptor) -> list[Op]:
    """Clients (one per node, round robin) run random bucket operations through their node's proposer while a
    nemesis crashes and restarts nodes (one at a time). A client whose node crashes loses its operation (recorded
    without a response); the restarted node gets a new proposer (new incarnation, counter back at zero)."""
    rng = random.Random(seed)
    net = SimNetwork(NODES, rng, faults, acceptor_type)
    events = itertools.count()
    history: list[Op] = []

    def new_proposer(node: str) -> Proposer[BucketRecord]:
        return Proposer(node, NODES, net, incarnation=rng.getrandbits(31), rng=random.Random(rng.random()),
                        phase_timeout=0.2, max_attempts=10, backoff_base=0.02, backoff_cap=0.3)

    proposers = {n: new_proposer(n) for n in NODES}
    in_flight: dict[str, dict[asyncio.Task[Any], None]] = {n: {} for n in NODES}

    async def client(c: int) -> None:
        node = NODES[c % len(NODES)]
        for i in range(ops):
            await asyncio.sleep(rng.uniform(0, 0.03))
            if not net.up(node):
                continue
            token = f"c{c}.{i}"
            inc = rng.randint(1, 3)
            inp: tuple[Any, ...] = rng.choice([("create", f"c{c}", token), ("create", f"c{c}", token),
                                               ("mark", token, None), ("mark", token, inc), ("finish", inc, token),
                                               ("abort", inc, token), ("read",)])
            key = rng.choice(keys)
            call = next(events)
            task = asyncio.ensure_future(proposers[node].change(key, change_fn(inp)))
            in_flight[node][task] = None
            try:
                done = await task
            except (RegisterUnavailable, OutcomeUnknown, asyncio.CancelledError):
                history.append(Op(key, call, None, inp, None, f"c{c}"))
                continue
            finally:
                in_flight[node].pop(task, None)
            history.append(Op(key, call, next(events), inp, done.outcome, f"c{c}"))

    async def nemesis() -> None:
        for _ in range(crashes):
            await asyncio.sleep(rng.uniform(0, 0.05))
            node = rng.choice(NODES)
            net.crash(node)
            for task in list(in_flight[node]):
                task.cancel()
            await asyncio.sleep(rng.uniform(0, 0.05))
            net.restart(node)
            proposers[node] = new_proposer(node)

    await asyncio.gather(nemesis(), *(client(c) for c in range(clients)))
    return history


schedules = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32),
    "max_delay": st.sampled_from([0.001, 0.01, 0.04]),
    "drop": st.sampled_from([0.0, 0.0, 0.05, 0.2]),
    "duplicate": st.sampled_from([0.0, 0.1, 0.3]),
    "crashes": st.integers(0, 3),
    "keys": st.sampled_from([("b",), ("b", "c")]),
})


@settings(max_examples=60)
@given(schedules)
def test_register_histories_are_linearizable_under_delays_drops_duplicates_and_crashes(s: dict[str, Any]) -> None:
    faults = Faults(max_delay=s["max_delay"], drop=s["drop"], duplicate=s["duplicate"])
    history = run_sim(random_workload(s["seed"], faults, crashes=s["crashes"], keys=s["keys"]))
    verdict = check(history, None, model_step)
    assert verdict, f"not linearizable on key {verdict.key!r}: {verdict.ops}"
    if s["drop"] == 0 and s["crashes"] == 0:
        # No faults: contention alone may leave a few outcomes unknown (dueling proposers; see replication.md),
        # but a register that cannot make progress fails here.
        assert sum(op.ret is not None for op in history) >= 0.75 * len(history)


def test_checker_catches_an_acceptor_that_forgets_promises() -> None:
    """The same workload with ForgetfulAcceptor (grants prepares without recording them): some fixed seed yields a
    non-linearizable history (two CREATED for one name), so the property test above can fail."""
    caught = []
    for seed in range(30):
        history = run_sim(random_workload(seed, Faults(max_delay=0.02), crashes=0, clients=3, ops=8,
                                          acceptor_type=ForgetfulAcceptor))
        if not check(history, None, model_step):
            caught.append(seed)
    assert caught, "the broken acceptor went unnoticed"
    for seed in range(30):  # and the correct acceptor passes the same schedules
        assert check(run_sim(random_workload(seed, Faults(max_delay=0.02), crashes=0, clients=3, ops=8)),
                     None, model_step)


# --- 50 rounds of concurrent CreateBucket of one name through three proposers ------------------------------------


@pytest.mark.parametrize("acceptor_type, expect_ok", [(Acceptor, True), (ForgetfulAcceptor, False)])
def test_fifty_rounds_of_concurrent_create_have_exactly_one_winner_each(acceptor_type: type[Acceptor[Any]],
                                                                        expect_ok: bool) -> None:
    async def main() -> tuple[list[list[Any]], list[Op]]:
        rng = random.Random(50)
        net = SimNetwork(NODES, rng, Faults(max_delay=0.02, duplicate=0.2), acceptor_type)
        proposers = [Proposer(n, NODES, net, incarnation=i, rng=random.Random(i), phase_timeout=1.0)
                     for i, n in enumerate(NODES)]
        events = itertools.count()
        history: list[Op] = []
        rounds = []

        async def create(p: Proposer[BucketRecord], name: str) -> Any:
            inp = ("create", p.node, f"{name}/{p.node}")
            call = next(events)
            done = await p.change(name, change_fn(inp))
            history.append(Op(name, call, next(events), inp, done.outcome, p.node))
            return done.outcome

        for r in range(50):
            rounds.append(list(await asyncio.gather(*(create(p, f"bucket-{r}") for p in proposers))))
        return rounds, history

    rounds, history = run_sim(main())
    winners = [[o for o in results if o.outcome is Outcome.CREATED] for results in rounds]
    if expect_ok:
        for results, won in zip(rounds, winners, strict=True):
            assert len(won) == 1
            losers = [o for o in results if o.outcome is Outcome.ALREADY_EXISTS]
            assert len(losers) == 2 and all(o.record == won[0].record for o in losers)
        assert check(history, None, model_step)
    else:  # the count and the checker both see the broken acceptor
        assert any(len(won) > 1 for won in winners)
        assert not check(history, None, model_step)
