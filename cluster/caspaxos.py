"""A CASPaxos register per key, replicated over the pool's nodes: linearizable bucket create and delete.

CASPaxos (Rystsov, "CASPaxos: Replicated State Machines without logs", 2018, arXiv:1802.07000) is single-decree
Paxos run again for every change: a proposer picks a ballot, **prepares** it on a majority of acceptors (each
promises to ignore smaller ballots and returns the value it last accepted), applies a *change function* to the
value with the highest accepted ballot, and asks the acceptors to **accept** the result under the same ballot. A
majority of accepts commits the change; a rejection means a higher ballot is in flight, and the proposer retries
with a higher one. Reads are changes too (the identity function), so they are linearizable.

Every node of a pool of N is an acceptor and may propose; quorums are majorities (``N // 2 + 1``), so the
register works with up to ``(N - 1) // 2`` nodes down. Any two majorities intersect, which is the whole proof:
see docs/architecture/replication.md for the invariants and what is (not) promised.

The network and the disk are ports: ``AcceptorTransport`` (a gRPC adapter implements it, the tests simulate it)
and ``AcceptorStore``. **An acceptor's store must be durable before the acceptor answers** (fsync the promise or the
accepted value, then reply): an acceptor that forgets a promise after a crash can let two proposers both commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic, NamedTuple, Protocol, TypeVar

from .quorum import QuorumError, call_quorum

V = TypeVar("V", bound=Hashable)
Out = TypeVar("Out")


class Ballot(NamedTuple):
    """Totally ordered as a tuple. ``counter`` grows past every ballot seen; ``node`` makes ballots of different
    nodes differ; ``incarnation`` differs per proposer process, so a proposer that restarted (its counter back at 0,
    it is not persisted) never reuses a ballot its previous life used with another value."""

    counter: int
    node: str
    incarnation: int = 0


ZERO = Ballot(0, "", 0)
"""Below every real ballot: the promise and accepted ballot of a key no proposer has touched."""

LINEAGE = 16
"""How many ancestor ballots a value carries: a retry can tell whether its earlier attempt took effect as long as
fewer than this many changes were made on top of it."""


def majority(n: int) -> int:
    """Quorum size for n acceptors: any two sets of this size intersect."""
    if n < 1:
        raise ValueError(f"a pool needs at least one node, got {n}")
    return n // 2 + 1


# --- acceptor ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot(Generic[V]):
    """An acceptor's durable state for one key. Invariants: ``accepted <= promised``; ``lineage`` is strictly
    decreasing and below ``accepted``. ``lineage`` holds the ballots of the values this one was derived from,
    newest first (the value the change was applied to, its own parent, ...; at most LINEAGE): it lets a proposer
    tell whether a value it finds builds on its own earlier, possibly accepted attempt."""

    promised: Ballot = ZERO
    accepted: Ballot = ZERO
    value: V | None = None
    lineage: tuple[Ballot, ...] = ()


@dataclass(frozen=True)
class Promise(Generic[V]):
    """Prepare granted: the acceptor ignores ballots below ``ballot`` from now on, and last accepted ``value`` at
    ``accepted`` (ZERO and None if never)."""

    ballot: Ballot
    accepted: Ballot
    value: V | None
    lineage: tuple[Ballot, ...] = ()


@dataclass(frozen=True)
class Accepted:
    ballot: Ballot


@dataclass(frozen=True)
class Reject:
    """Refused: the acceptor has promised ``seen``, a ballot at least as high as the one asked for."""

    seen: Ballot


class AcceptorStore(Protocol[V]):
    """Per-key acceptor state. ``save`` returns only once the slot is durable (fsynced): the acceptor replies
    after it, and a promise or accept forgotten in a crash breaks the register's safety."""

    async def load(self, key: str) -> Slot[V]: ...

    async def save(self, key: str, slot: Slot[V]) -> None: ...


class MemoryStore(Generic[V]):
    """An AcceptorStore in a dict: durable for as long as the object lives (tests keep it across a simulated
    crash and restart of the acceptor)."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot[V]] = {}

    async def load(self, key: str) -> Slot[V]:
        return self.slots.get(key, Slot())

    async def save(self, key: str, slot: Slot[V]) -> None:
        self.slots[key] = slot


class AcceptorNotReady(Exception):
    """This acceptor does not vote (it lost its state and has not restored it yet: cluster/cas_restore.py); the
    proposer counts the call as a failed vote."""


class Acceptor(Generic[V]):
    """The acceptor rules. All state is in the store (nothing cached), so a restarted acceptor is a new object
    over the same store. A lock per key serialises load-check-save of that key: the durable store fsyncs every
    save, and one key's fsync must not hold up the others.

    ``refusing`` (a reason) makes every prepare and accept raise AcceptorNotReady: an acceptor that forgot its
    promises must not vote until it has restored them (a replaced node: docs/architecture/replication.md)."""

    def __init__(self, store: AcceptorStore[V], *, refusing: str | None = None) -> None:
        self.store = store
        self.refusing = refusing
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # tasks holding or waiting for each key's lock (dropped at zero)

    @contextlib.asynccontextmanager
    async def _key_lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def _ready(self) -> None:
        if self.refusing is not None:
            raise AcceptorNotReady(self.refusing)

    async def prepare(self, key: str, ballot: Ballot) -> Promise[V] | Reject:
        """Promise ``ballot`` if it is above every ballot promised so far (strictly: a ballot is prepared once)."""
        self._ready()
        async with self._key_lock(key):
            slot = await self.store.load(key)
            if ballot <= slot.promised:
                return Reject(slot.promised)
            await self.store.save(key, replace(slot, promised=ballot))
            return Promise(ballot, slot.accepted, slot.value, slot.lineage)

    async def accept(self, key: str, ballot: Ballot, value: V | None,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject:
        """Accept ``value`` (derived from the values accepted at ``lineage``) under ``ballot`` unless a higher
        ballot was promised since."""
        self._ready()
        async with self._key_lock(key):
            slot = await self.store.load(key)
            if ballot < slot.promised:
                return Reject(slot.promised)
            await self.store.save(key, Slot(promised=ballot, accepted=ballot, value=value, lineage=lineage))
            return Accepted(ballot)


# --- proposer ------------------------------------------------------------------------------------------------


class AcceptorTransport(Protocol[V]):
    """How a proposer reaches the acceptor on node ``peer`` (itself included). Raising means "no answer"."""

    async def prepare(self, peer: str, key: str, ballot: Ballot) -> Promise[V] | Reject: ...

    async def accept(self, peer: str, key: str, ballot: Ballot, value: V | None,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject: ...


@dataclass(frozen=True)
class Change(Generic[V, Out]):
    """What a change function decided: the register's new value (may equal the old one) and the outcome to report."""

    value: V | None
    outcome: Out
    already_applied: bool = False  # the value shows this very change was applied before (a retried request)


ChangeFn = Callable[[V | None], Change[V, Out]]


@dataclass(frozen=True)
class Committed(Generic[V, Out]):
    outcome: Out
    value: V | None
    ballot: Ballot


class Rejected(Exception):
    """An acceptor refused our ballot (counts as a failed call in the quorum)."""

    def __init__(self, seen: Ballot) -> None:
        super().__init__(f"acceptor has promised {tuple(seen)}")
        self.seen = seen


class RegisterUnavailable(Exception):
    """No majority could be reached within the retry budget, and no attempt got as far as a possibly accepted
    value: the change did not take effect (OutcomeUnknown is raised otherwise)."""

    def __init__(self, key: str, attempts: int, last: QuorumError) -> None:
        super().__init__(f"register {key!r}: no majority after {attempts} attempts; last: {last}")
        self.key = key
        self.attempts = attempts
        self.last = last


class OutcomeUnknown(Exception):
    """The change may or may not have taken effect (an accept phase failed after some acceptor may have accepted
    it, and the register moved on since). The caller reports a retryable error; a read settles the state."""

    def __init__(self, key: str, last: QuorumError | None = None) -> None:
        detail = f"; last: {last}" if last else ""
        super().__init__(f"register {key!r}: the change may or may not have taken effect{detail}")
        self.key = key
        self.last = last


class Proposer(Generic[V]):
    """Runs changes against the register of ``key`` over ``peers`` (all N nodes of the pool).

    Conflicts (a higher ballot seen) and unreachable majorities are retried up to ``max_attempts`` times with a
    higher ballot after a jittered exponential backoff (``sleep`` and ``rng`` are injectable for tests); each phase
    waits at most ``phase_timeout`` seconds for its majority."""

    def __init__(self, node: str, peers: Sequence[str], transport: AcceptorTransport[V], *,
                 incarnation: int | None = None, max_attempts: int = 10, phase_timeout: float = 2.0,
                 backoff_base: float = 0.01, backoff_cap: float = 0.5,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, remote: bool = False) -> None:
        """``remote``: this node is no acceptor of ``peers`` (a node of another pool proposing to the cluster's
        bucket registry: docs/architecture/pools.md); ballots stay unique by ``node``, which is unique cluster-wide."""
        if node not in peers and not remote:
            raise ValueError(f"proposer node {node!r} is not one of the pool's nodes {list(peers)!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.node = node
        self.peers = tuple(peers)
        self.quorum = majority(len(self.peers))
        self.transport = transport
        self.incarnation = secrets.randbits(63) if incarnation is None else incarnation
        self.max_attempts = max_attempts
        self.phase_timeout = phase_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._counter = 0

    def _next_ballot(self) -> Ballot:
        self._counter += 1
        return Ballot(self._counter, self.node, self.incarnation)

    def _saw(self, ballot: Ballot) -> None:
        self._counter = max(self._counter, ballot.counter)

    async def change(self, key: str, fn: ChangeFn[V, Out]) -> Committed[V, Out]:
        """Apply ``fn`` to the register's current value atomically; return its outcome once a majority accepted.

        ``fn`` must be a pure function of the value: it may run once per attempt. Retrying never applies a change
        twice: an attempt whose accept phase failed after some acceptor may have accepted its value is remembered;
        if a later prepare finds that value, or a value derived from it (its ``lineage``), the chain is completed
        with the earlier outcome; if the lineage shows the value does not build on any of our attempts, the change is
        applied afresh (committing a higher ballot buries the earlier attempts for good); if the lineage is too
        short to tell, OutcomeUnknown is raised, unless ``fn`` recognises its own effect (``already_applied``)."""
        last: QuorumError | None = None
        maybe: dict[Ballot, Change[V, Out]] = {}  # our attempts some acceptor may have accepted, that changed state
        for attempt in range(self.max_attempts):
            if attempt:
                await self._sleep(self._rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt)))
            ballot = self._next_ballot()
            try:
                seen = await self._prepare(key, ballot)
            except QuorumError as err:
                last = self._note_rejections(err)
                continue
            chain = (seen.accepted, *seen.lineage)
            ours = [b for b in chain if b in maybe]
            if ours:  # our earlier value, or values derived from it: our change took effect; complete the chain
                decided = Change(seen.value, maybe[ours[0]].outcome, True)
            else:
                decided = fn(seen.value)
                # The chain is known down to chain[-1]: if that is newer than one of our attempts, the part below
                # (unknown) may contain it.
                if maybe and chain[-1] > min(maybe) and not decided.already_applied:
                    raise OutcomeUnknown(key)
            try:
                await self._accept(key, ballot, decided.value, chain[:LINEAGE])
            except QuorumError as err:
                last = self._note_rejections(err)
                none_accepted = not err.successes and len(err.failures) == len(self.peers) and all(
                    isinstance(f, Rejected) for f in err.failures.values())
                if not none_accepted and decided.value != seen.value:
                    maybe[ballot] = decided
                continue
            return Committed(decided.outcome, decided.value, ballot)
        assert last is not None
        if maybe:
            raise OutcomeUnknown(key, last)
        raise RegisterUnavailable(key, self.max_attempts, last)

    def _note_rejections(self, err: QuorumError) -> QuorumError:
        for failure in err.failures.values():
            if isinstance(failure, Rejected):
                self._saw(failure.seen)
        return err

    async def read(self, key: str) -> V | None:
        """A linearizable read: the identity change (it writes the value back, so a later read cannot see older)."""
        return (await self.change(key, lambda v: Change(v, None))).value

    async def _prepare(self, key: str, ballot: Ballot) -> Promise[V]:
        """A majority of promises; the one with the highest accepted ballot holds the register's value."""

        async def one(peer: str) -> Promise[V]:
            answer = await self.transport.prepare(peer, key, ballot)
            if isinstance(answer, Reject):
                raise Rejected(answer.seen)
            return answer

        got = await call_quorum(self.peers, one, self.quorum, timeout=self.phase_timeout)
        return max(got.successes.values(), key=lambda p: p.accepted)

    async def _accept(self, key: str, ballot: Ballot, value: V | None, lineage: tuple[Ballot, ...]) -> None:
        async def one(peer: str) -> Accepted:
            answer = await self.transport.accept(peer, key, ballot, value, lineage)
            if isinstance(answer, Reject):
                raise Rejected(answer.seen)
            return answer

        # Left running: the value still reaches the slow acceptors, so later prepares agree sooner.
        await call_quorum(self.peers, one, self.quorum, timeout=self.phase_timeout, stragglers="leave")


# --- bucket names --------------------------------------------------------------------------------------------


class BucketStatus(StrEnum):
    LIVE = "live"
    DELETING = "deleting"  # a delete is checking emptiness: the name is fenced, not free
    DELETED = "deleted"  # a tombstone: register keys are never removed (see replication.md)


@dataclass(frozen=True)
class BucketRecord:
    """The register value of one bucket name. ``incarnation`` counts creations, so a bucket deleted and created
    again is a different bucket (a delete of the old one cannot remove the new one). ``token`` is the request id of
    the change that last wrote the record: a proposer whose accept phase failed may find its own value adopted by
    the next prepare, and must report the outcome it caused (CREATED), not what it then sees (ALREADY_EXISTS).

    ``pool`` is the pool the bucket is pinned to and ``created_ms`` its creation time (wall-clock ms of the node
    that created it), both set by the create that took the name and kept by every later change of that life
    (docs/architecture/pools.md). A record written before pools existed has neither: ``pool`` "" means the
    registry's own pool (the first by name), ``created_ms`` 0 unknown."""

    status: BucketStatus
    owner: str
    incarnation: int
    token: str
    pool: str = ""
    created_ms: int = 0


class Outcome(StrEnum):
    CREATED = "created"
    ALREADY_EXISTS = "already_exists"
    MARKED = "marked"  # delete started: now check emptiness, then finish_delete or abort_delete
    DELETED = "deleted"
    RESTORED = "restored"
    NO_SUCH_BUCKET = "no_such_bucket"
    NOT_DELETING = "not_deleting"  # finish_delete after someone aborted the delete


@dataclass(frozen=True)
class BucketResult:
    """The exact outcome and the record as it is after the change (None: the name never existed)."""

    outcome: Outcome
    record: BucketRecord | None


BucketChange = Change[BucketRecord, BucketResult]


def _same(record: BucketRecord | None, outcome: Outcome) -> BucketChange:
    return Change(record, BucketResult(outcome, record))


def create_if_absent(owner: str, token: str, pool: str = "",
                     created_ms: int = 0) -> Callable[[BucketRecord | None], BucketChange]:
    """CreateBucket: CREATED if the name is free (never used or deleted), pinned to ``pool``; else ALREADY_EXISTS
    with the holder (whatever pool holds it)."""

    def fn(current: BucketRecord | None) -> BucketChange:
        if current is None or current.status is BucketStatus.DELETED:
            new = BucketRecord(BucketStatus.LIVE, owner, (current.incarnation if current else 0) + 1, token, pool,
                               created_ms)
            return Change(new, BucketResult(Outcome.CREATED, new))
        if current.token == token:  # our own earlier attempt, adopted: nobody changed it since
            return Change(current, BucketResult(Outcome.CREATED, current), already_applied=True)
        return _same(current, Outcome.ALREADY_EXISTS)

    return fn


def _matches(current: BucketRecord | None, incarnation: int | None, *status: BucketStatus) -> bool:
    return (current is not None and current.status in status
            and (incarnation is None or current.incarnation == incarnation))


def mark_deleting(token: str, incarnation: int | None = None) -> Callable[[BucketRecord | None], BucketChange]:
    """DeleteBucket, step 1: fence a live bucket (of this incarnation, if given) while the caller checks it is
    empty. A bucket already being deleted is MARKED again (the fence is shared; the last marker's token wins)."""

    def fn(current: BucketRecord | None) -> BucketChange:
        if current is not None and _matches(current, incarnation, BucketStatus.LIVE, BucketStatus.DELETING):
            new = replace(current, status=BucketStatus.DELETING, token=token)
            return Change(new, BucketResult(Outcome.MARKED, new), already_applied=current.token == token)
        return _same(current, Outcome.NO_SUCH_BUCKET)

    return fn


def finish_delete(incarnation: int, token: str) -> Callable[[BucketRecord | None], BucketChange]:
    """DeleteBucket, step 2 (the bucket was found empty): DELETED exactly once per incarnation; NOT_DELETING if the
    delete was aborted meanwhile; NO_SUCH_BUCKET if someone else finished it or the name moved on."""

    def fn(current: BucketRecord | None) -> BucketChange:
        if current is not None and _matches(current, incarnation, BucketStatus.DELETING):
            new = replace(current, status=BucketStatus.DELETED, token=token)
            return Change(new, BucketResult(Outcome.DELETED, new))
        if _matches(current, incarnation, BucketStatus.DELETED) and current is not None and current.token == token:
            return Change(current, BucketResult(Outcome.DELETED, current), already_applied=True)  # adopted
        if _matches(current, incarnation, BucketStatus.LIVE):
            return _same(current, Outcome.NOT_DELETING)
        return _same(current, Outcome.NO_SUCH_BUCKET)

    return fn


def abort_delete(incarnation: int, token: str) -> Callable[[BucketRecord | None], BucketChange]:
    """DeleteBucket, step 2 (the bucket was not empty): lift the fence; RESTORED (also when already lifted)."""

    def fn(current: BucketRecord | None) -> BucketChange:
        if current is not None and _matches(current, incarnation, BucketStatus.DELETING):
            new = replace(current, status=BucketStatus.LIVE, token=token)
            return Change(new, BucketResult(Outcome.RESTORED, new))
        if current is not None and _matches(current, incarnation, BucketStatus.LIVE):
            return Change(current, BucketResult(Outcome.RESTORED, current), already_applied=current.token == token)
        return _same(current, Outcome.NO_SUCH_BUCKET)

    return fn
