"""call_quorum: returns at W successes, fails early when W is out of reach, fails at the deadline, reports every
failure and why, and cancels or leaves the slow calls as asked. Runs on simulated time (no wall clock)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import pytest
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.quorum import DeadlineExceeded, QuorumError, QuorumResult, call_quorum


class Boom(Exception):
    pass


def scripted(plan: dict[str, tuple[float, str]], log: list[str]) -> Callable[[str], Awaitable[str]]:
    """Each replica answers after ``delay`` seconds: ``ok`` returns, ``fail`` raises, ``hang`` never answers."""

    async def call(replica: str) -> str:
        delay, how = plan[replica]
        try:
            if how == "hang":
                await asyncio.Event().wait()
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.append(f"cancelled {replica}")
            raise
        if how == "fail":
            log.append(f"failed {replica}")
            raise Boom(f"{replica} is broken")
        log.append(f"answered {replica}")
        return f"value of {replica}"

    return call


def now() -> float:
    return asyncio.get_running_loop().time()


def test_returns_as_soon_as_w_replicas_succeed_and_cancels_the_rest() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "ok"), "b": (2.0, "ok"), "c": (5.0, "ok")}

    async def main() -> tuple[QuorumResult[str, str], float]:
        result = await call_quorum(["a", "b", "c"], scripted(plan, log), 2)
        at = now()
        await asyncio.sleep(10)  # c would have answered by now if it still ran
        return result, at

    result, at = run_sim(main())
    assert at == 2.0
    assert result.successes == {"a": "value of a", "b": "value of b"}
    assert result.failures == {} and result.running == {}
    assert log == ["answered a", "answered b", "cancelled c"]


def test_a_failure_before_the_quorum_is_reported_in_the_result() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "fail"), "b": (2.0, "ok"), "c": (3.0, "ok")}
    result = run_sim(call_quorum(["a", "b", "c"], scripted(plan, log), 2))
    assert list(result.successes) == ["b", "c"]
    assert isinstance(result.failures["a"], Boom)


def test_left_running_stragglers_finish_and_are_returned() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "ok"), "b": (2.0, "ok"), "c": (5.0, "ok")}

    async def main() -> tuple[QuorumResult[str, str], str]:
        result = await call_quorum(["a", "b", "c"], scripted(plan, log), 2, stragglers="leave")
        assert list(result.running) == ["c"] and now() == 2.0
        return result, await result.running["c"]

    result, late = run_sim(main())
    assert late == "value of c"
    assert log == ["answered a", "answered b", "answered c"]


def test_left_running_straggler_that_fails_later_logs_nothing_and_is_observable() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "ok"), "b": (3.0, "fail")}

    async def main() -> BaseException | None:
        result = await call_quorum(["a", "b"], scripted(plan, log), 1, stragglers="leave")
        await asyncio.sleep(5)
        return result.running["b"].exception()

    assert isinstance(run_sim(main()), Boom)


def test_fails_early_once_w_is_unreachable_without_waiting_for_the_slow_replica() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "fail"), "b": (2.0, "fail"), "c": (100.0, "ok")}

    async def main() -> tuple[QuorumError, float]:
        with pytest.raises(QuorumError) as info:
            await call_quorum(["a", "b", "c"], scripted(plan, log), 2, timeout=50)
        return info.value, now()

    err, at = run_sim(main())
    assert at == 2.0  # neither the deadline (50) nor c (100)
    assert err.needed == 2 and err.total == 3 and err.successes == {}
    assert isinstance(err.failures["a"], Boom) and isinstance(err.failures["b"], Boom)
    assert isinstance(err.failures["c"], DeadlineExceeded)
    assert err.reason == "too many replicas failed"
    assert "0 of 3 replicas succeeded, 2 needed" in str(err)
    assert "a: Boom: a is broken" in str(err) and "b: Boom: b is broken" in str(err)
    assert log == ["failed a", "failed b", "cancelled c"]


def test_deadline_passes_with_one_answer_and_names_the_silent_replicas() -> None:
    log: list[str] = []
    plan = {"a": (1.0, "ok"), "b": (0.0, "hang"), "c": (0.0, "hang")}

    async def main() -> tuple[QuorumError, float]:
        with pytest.raises(QuorumError) as info:
            await call_quorum(["a", "b", "c"], scripted(plan, log), 2, timeout=4)
        return info.value, now()

    err, at = run_sim(main())
    assert at == 4.0
    assert err.successes == {"a": "value of a"} and err.reason == "deadline passed"
    assert [type(e) for e in err.failures.values()] == [DeadlineExceeded, DeadlineExceeded]
    assert "1 of 3 replicas succeeded, 2 needed" in str(err) and "b: no answer before the deadline" in str(err)


def test_deadline_with_leave_keeps_the_silent_calls_running() -> None:
    log: list[str] = []
    plan = {"a": (9.0, "ok"), "b": (9.0, "ok")}

    async def main() -> list[str]:
        with pytest.raises(QuorumError):
            await call_quorum(["a", "b"], scripted(plan, log), 2, timeout=4, stragglers="leave")
        await asyncio.sleep(10)
        return log

    assert run_sim(main()) == ["answered a", "answered b"]


def test_a_cancelled_call_that_ends_with_its_own_error_logs_no_never_retrieved_task() -> None:
    """grpclib's call deadline turns a cancellation into ``TimeoutError('Deadline exceeded')`` when both fire together
    (a quorum read's deadline equals its calls' timeout). Such a cancelled straggler ends with an exception nobody
    asked for: asyncio then logged "Task exception was never retrieved" with a traceback, at ERROR, on every read
    quorum that timed out (seen on a partitioned node, tests/integration/test_cluster_faults.py)."""
    reported: list[str] = []

    async def call(replica: str) -> str:
        if replica == "a":
            return "value of a"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise TimeoutError("Deadline exceeded") from None
        raise AssertionError("unreachable")

    async def main() -> dict[str, str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
        why: dict[str, str] = {}
        try:
            await call_quorum(["a", "b"], call, 2, timeout=2.0)
        except QuorumError as exc:  # handled and dropped, as the callers do (its traceback holds the tasks)
            why = {replica: type(failure).__name__ for replica, failure in exc.failures.items()}
        await asyncio.sleep(1)  # the straggler ends with its TimeoutError
        gc.collect()  # the finished task is collected: asyncio reports an unretrieved exception now
        return why

    assert run_sim(main()) == {"b": "DeadlineExceeded"}
    assert reported == []


def test_cancelling_the_caller_cancels_every_call() -> None:
    log: list[str] = []
    plan = {"a": (5.0, "ok"), "b": (5.0, "ok")}

    async def main() -> None:
        task = asyncio.ensure_future(call_quorum(["a", "b"], scripted(plan, log), 1, stragglers="leave"))
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(10)

    run_sim(main())
    assert sorted(log) == ["cancelled a", "cancelled b"]


def test_a_call_that_raises_synchronously_counts_as_a_failure() -> None:
    def call(replica: str) -> Awaitable[str]:
        raise Boom(f"cannot even start {replica}")

    with pytest.raises(QuorumError, match="cannot even start a"):
        run_sim(call_quorum(["a"], call, 1))


@pytest.mark.parametrize("need", [0, 4, -1])
def test_need_out_of_range_is_rejected(need: int) -> None:
    with pytest.raises(ValueError, match="need must be between 1 and 3"):
        run_sim(call_quorum(["a", "b", "c"], scripted({}, []), need))


def test_duplicate_replicas_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        run_sim(call_quorum(["a", "a"], scripted({}, []), 1))


outcome = st.tuples(st.integers(0, 20).map(float), st.sampled_from(["ok", "fail", "hang"]))


@settings(max_examples=200)
@given(plan=st.lists(outcome, min_size=1, max_size=6), data=st.data())
def test_quorum_outcome_matches_a_direct_computation(plan: list[tuple[float, str]], data: st.DataObject) -> None:
    """For any mix of answers, failures and silent replicas: success at the first moment W replicas have succeeded,
    failure at the first moment W became impossible, else failure at the deadline."""
    replicas = [f"r{i}" for i in range(len(plan))]
    need = data.draw(st.integers(1, len(plan)))
    timeout = data.draw(st.integers(1, 25)) + 0.5  # never tied with an answer
    script = dict(zip(replicas, plan, strict=True))
    log: list[str] = []

    async def main() -> tuple[QuorumResult[str, str] | QuorumError, float]:
        try:
            return await call_quorum(replicas, scripted(script, log), need, timeout=timeout), now()
        except QuorumError as err:
            return err, now()

    got, at = run_sim(main())
    successes = failures = 0
    for t in sorted({d for d, how in plan if how != "hang" and d < timeout}):  # one wake-up per distinct time
        successes += sum(1 for d, how in plan if d == t and how == "ok")
        failures += sum(1 for d, how in plan if d == t and how == "fail")
        if successes >= need:
            assert isinstance(got, QuorumResult) and at == t and len(got.successes) == successes
            return
        if failures > len(plan) - need:
            assert isinstance(got, QuorumError) and at == t and got.reason == "too many replicas failed"
            assert len(got.successes) + len(got.failures) == len(plan)
            return
    assert isinstance(got, QuorumError) and got.reason == "deadline passed" and at == timeout
    assert len(got.successes) + len(got.failures) == len(plan)
