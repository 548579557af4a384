"""Quorum calls: run one call per replica concurrently and return as soon as ``need`` of them succeed.

Used for replicated writes (W of N), quorum reads (R of N) and both CASPaxos phases (a majority). The helper fails
early with a QuorumError as soon as ``need`` successes can no longer happen (too many replicas failed), or when the
deadline passes; the error says how many answered and why each of the others did not. Calls still running when
the outcome is known are cancelled, or left running (``stragglers="leave"``) so a write still reaches every replica;
left-running calls are returned so the caller can await them (e.g. to hint the replicas that fail later).
A call "fails" by raising: an answer that must not count (a CASPaxos rejection) is turned into an exception by the
call itself. See docs/architecture/replication.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

R = TypeVar("R", bound=Hashable)
T = TypeVar("T")

Stragglers = Literal["cancel", "leave"]

_left_running: set[asyncio.Future[Any]] = set()  # strong references, so a left-running call is not collected


class DeadlineExceeded(Exception):
    """Recorded as the failure of a replica that had not answered when the deadline passed."""


@dataclass(frozen=True)
class QuorumResult(Generic[R, T]):
    """The answers that made the quorum (in completion order), the failures seen before it, and the calls left
    running (empty when stragglers are cancelled)."""

    successes: dict[R, T]
    failures: dict[R, BaseException]
    running: dict[R, asyncio.Future[T]] = field(default_factory=dict)


class QuorumError(Exception):
    """Fewer than ``needed`` replicas succeeded: ``successes`` answered, ``failures`` says why each other one did not
    (DeadlineExceeded for a replica still silent at the deadline). The outcome of a write that fails this way is
    unknown: some replicas may have applied it."""

    def __init__(self, needed: int, total: int, successes: Mapping[Any, object],
                 failures: Mapping[Any, BaseException], reason: str) -> None:
        self.needed = needed
        self.total = total
        self.successes = dict(successes)
        self.failures = dict(failures)
        self.reason = reason
        why = "; ".join(f"{replica}: {_describe(exc)}" for replica, exc in self.failures.items())
        super().__init__(f"quorum not reached ({reason}): {len(self.successes)} of {total} replicas succeeded, "
                         f"{needed} needed" + (f"; {why}" if why else ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeadlineExceeded):
        return "no answer before the deadline"
    if isinstance(exc, asyncio.CancelledError):
        return "call cancelled"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback of a call the quorum no longer waits for: mark its exception retrieved (no "Task exception was
    never retrieved" log) and drop it. A cancelled call can end with an exception too: grpclib's own deadline turns
    the cancellation into ``TimeoutError`` when both fire together."""
    _left_running.discard(task)
    if not task.cancelled():
        task.exception()


async def call_quorum(replicas: Sequence[R], call: Callable[[R], Awaitable[T]], need: int, *,
                      timeout: float | None = None, stragglers: Stragglers = "cancel") -> QuorumResult[R, T]:
    """Call every replica concurrently; return once ``need`` succeeded, raise QuorumError once that is impossible
    or ``timeout`` seconds (loop time) have passed. Cancelling the caller cancels every call."""
    if len(set(replicas)) != len(replicas):
        raise ValueError(f"duplicate replicas in {list(replicas)!r}")
    if not 1 <= need <= len(replicas):
        raise ValueError(f"need must be between 1 and {len(replicas)} (the number of replicas), got {need}")
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    tasks: dict[asyncio.Future[T], R] = {_start(call, r): r for r in replicas}
    order = {r: i for i, r in enumerate(replicas)}
    successes: dict[R, T] = {}
    failures: dict[R, BaseException] = {}
    pending: set[asyncio.Future[T]] = set(tasks)
    reason = ""
    try:
        while pending:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                reason = "deadline passed"
                break
            done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: order[tasks[t]]):  # deterministic order within one wake-up
                replica = tasks[task]
                if task.cancelled():
                    failures[replica] = asyncio.CancelledError()
                elif (exc := task.exception()) is not None:
                    failures[replica] = exc
                else:
                    successes[replica] = task.result()
            if len(successes) >= need:
                return QuorumResult(successes, failures, _finish(pending, tasks, order, stragglers))
            if len(failures) > len(replicas) - need:
                reason = "too many replicas failed"
                break
    except BaseException:
        for task in tasks:
            task.cancel()
            task.add_done_callback(_retrieve)
        raise
    for task in sorted(pending, key=lambda t: order[tasks[t]]):
        failures[tasks[task]] = DeadlineExceeded()
    _finish(pending, tasks, order, stragglers)
    raise QuorumError(need, len(replicas), successes, failures, reason)


def _start(call: Callable[[R], Awaitable[T]], replica: R) -> asyncio.Future[T]:
    """``call(replica)`` running: a call that gives a future already (the replicator's early-sent copies, behind
    ``asyncio.shield``) is waited on as it is, anything else becomes a task. No wrapper task per call: one loop
    iteration less between an answer and the quorum seeing it."""
    try:
        started = call(replica)
    except Exception as exc:  # noqa: BLE001 - a call failing as it starts fails like one failing later
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
    if isinstance(started, asyncio.Future):
        return started
    return asyncio.ensure_future(started)


def _finish(pending: set[asyncio.Future[T]], tasks: Mapping[asyncio.Future[T], R], order: Mapping[R, int],
            stragglers: Stragglers) -> dict[R, asyncio.Future[T]]:
    """Cancel the calls still running, or keep them referenced and return them by replica (in replica order, so
    a run on a deterministic loop stays deterministic)."""
    running: dict[R, asyncio.Future[T]] = {}
    for task in sorted(pending, key=lambda t: order[tasks[t]]):
        if stragglers == "cancel":
            task.cancel()
            task.add_done_callback(_retrieve)
        else:
            _left_running.add(task)
            task.add_done_callback(_retrieve)
            running[tasks[task]] = task
    return running
