"""Background-job leases in the pool's CASPaxos register: lifecycle and multipart expiry act once per pool.

One register key per pool-wide job (``job/lifecycle``, ``job/multipart_ttl``) holds a ``LeaseRecord``: the
holder (node id and the holding process's token), the lease's ``term`` (grows each time the lease goes to a new
holder life) and when it expires, in ms on the holder's wall clock. ``claim`` is the change function: it grants
the lease if it is free, released, expired *by more than the pool's clock offset*, or already this node's, and
otherwise answers who holds it. ``RegisterLeases`` is the engine's ``JobLeasePort`` over it: the node may act
until ``deadline`` = (monotonic time when it *sent* the claim) + duration - margin.

Why at most one node acts at a time (docs/architecture/replication.md, "Background jobs: one lease per job"): the
register is linearizable, so every grant reads the newest record. A grant to node B over holder A's record needs
B's clock past ``A.expires + offset``; with any two clocks within ``S4_MAX_CLOCK_OFFSET`` of each other, A's clock
is then past ``A.expires = A's clock when it sent its claim + duration``, so more than ``duration`` has passed
since A sent it, while A stopped acting ``margin`` before ``duration`` had passed (on its monotonic clock, which
cannot jump). The margin absorbs clock-rate drift, a forward step of A's wall clock, and an action already
started when A checked its deadline.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import msgpack

from s4.engine.ports import LeaseGrant

from .cas_rpc import GrpcAcceptorTransport
from .caspaxos import Acceptor, Change, OutcomeUnknown, Proposer, RegisterUnavailable
from .config import ClusterConfig
from .peers import PeerPool

log = logging.getLogger("s4.cluster")

KEY_PREFIX = "job/"
"""Register keys of job leases (bucket names are ``bucket/<name>``: the key spaces never meet)."""
DEFAULT_DURATION_S = 60.0
MARGIN_FRACTION = 0.25
"""The holder stops acting this fraction of the duration before its lease expires (15 s of the default 60 s)."""


@dataclass(frozen=True)
class LeaseRecord:
    """The register value of one job's lease. ``holder`` "" means released (free); ``token`` tells the lives of
    one node apart (a restarted node is a new holder: its old life cannot act, the data directory's lock saw to
    that, so it may take its own lease at once)."""

    holder: str
    token: str
    term: int
    expires_ms: int


class LeaseOutcome(StrEnum):
    GRANTED = "granted"  # a new holder life took the lease (term + 1)
    RENEWED = "renewed"  # it was this life's already: extended
    HELD = "held"  # another node holds it and it has not expired (by this node's clock, less the offset)
    RELEASED = "released"
    NOT_HOLDER = "not_holder"  # release by someone who does not hold it: nothing changed


@dataclass(frozen=True)
class LeaseResult:
    """The exact outcome and the record as it is after the change (None: nobody ever took the lease)."""

    outcome: LeaseOutcome
    record: LeaseRecord | None


LeaseChange = Change[LeaseRecord, LeaseResult]


def claim(node: str, token: str, now_ms: int, duration_ms: int,
          max_offset_ms: int) -> Callable[[LeaseRecord | None], LeaseChange]:
    """Acquire or renew: GRANTED if the lease is free, released, held by an earlier life of ``node``, or expired
    more than ``max_offset_ms`` ago by ``now_ms`` (this node's clock, read before the claim was sent); RENEWED if
    this life holds it (the expiry never moves back); else HELD with the holder's record. ``now_ms`` is fixed per
    request, so the function is pure however often the proposer retries it."""

    def fn(current: LeaseRecord | None) -> LeaseChange:
        expires = now_ms + duration_ms
        if current is not None and current.holder == node and current.token == token:
            new = replace(current, expires_ms=max(current.expires_ms, expires))
            return Change(new, LeaseResult(LeaseOutcome.RENEWED, new), already_applied=True)
        if current is None or not current.holder or current.holder == node \
                or now_ms > current.expires_ms + max_offset_ms:
            new = LeaseRecord(node, token, (current.term if current else 0) + 1, expires)
            return Change(new, LeaseResult(LeaseOutcome.GRANTED, new))
        return Change(current, LeaseResult(LeaseOutcome.HELD, current))

    return fn


def release(node: str, token: str) -> Callable[[LeaseRecord | None], LeaseChange]:
    """Give the lease back: RELEASED if this life holds it (the record keeps its term), else NOT_HOLDER."""

    def fn(current: LeaseRecord | None) -> LeaseChange:
        if current is not None and current.holder == node and current.token == token:
            new = LeaseRecord("", "", current.term, 0)
            return Change(new, LeaseResult(LeaseOutcome.RELEASED, new))
        return Change(current, LeaseResult(LeaseOutcome.NOT_HOLDER, current))

    return fn


class LeaseRecordCodec:
    """A LeaseRecord as the msgpack array ``[1, holder, token, term, expires_ms]``."""

    FORMAT = 1

    def encode(self, value: LeaseRecord) -> bytes:
        return bytes(msgpack.packb([self.FORMAT, value.holder, value.token, value.term, value.expires_ms],
                                   use_bin_type=True))

    def decode(self, data: bytes) -> LeaseRecord:
        fmt, holder, token, term, expires_ms = msgpack.unpackb(data, raw=False)
        if fmt != self.FORMAT or not isinstance(holder, str) or not isinstance(token, str) \
                or not isinstance(term, int) or not isinstance(expires_ms, int):
            raise ValueError(f"not a lease record (format {fmt!r})")
        return LeaseRecord(holder, token, term, expires_ms)


LEASE_CODEC = LeaseRecordCodec()


class RegisterLeases:
    """The engine's ``JobLeasePort`` (engine/ports.py) over the register: one per node process that runs the
    jobs. ``clock`` is wall time (seconds) for the record; ``monotonic`` measures this node's deadline."""

    def __init__(self, proposer: Proposer[LeaseRecord], node_id: str, *, duration_s: float = DEFAULT_DURATION_S,
                 max_offset_s: float = 60.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, token: str | None = None) -> None:
        if not duration_s > 0:
            raise ValueError(f"a lease needs a positive duration, got {duration_s}")
        self.proposer = proposer
        self.node_id = node_id
        self.duration_s = duration_s
        self.margin_s = duration_s * MARGIN_FRACTION
        self.max_offset_s = max_offset_s
        self.token = token or secrets.token_hex(8)
        self._clock = clock
        self._monotonic = monotonic

    async def acquire(self, job: str) -> LeaseGrant:
        sent = self._monotonic()  # before the wall clock is read: the deadline can only be early
        now_ms = int(self._clock() * 1000)
        fn = claim(self.node_id, self.token, now_ms, int(self.duration_s * 1000), int(self.max_offset_s * 1000))
        try:
            result = (await self.proposer.change(KEY_PREFIX + job, fn)).outcome
        except (RegisterUnavailable, OutcomeUnknown) as exc:  # not granted; an OutcomeUnknown grant just expires
            log.info("%s lease: %s", job, exc)
            return LeaseGrant(job, False, reason=f"register unavailable: {exc}")
        record = result.record
        assert record is not None
        if result.outcome in (LeaseOutcome.GRANTED, LeaseOutcome.RENEWED):
            if result.outcome is LeaseOutcome.GRANTED:
                log.info("%s lease granted to this node (term %d)", job, record.term)
            return LeaseGrant(job, True, record.holder, record.term, record.expires_ms,
                              deadline=sent + self.duration_s - self.margin_s)
        return LeaseGrant(job, False, record.holder, record.term, record.expires_ms, reason="held")

    async def release(self, job: str) -> None:
        try:
            await self.proposer.change(KEY_PREFIX + job, release(self.node_id, self.token))
        except (RegisterUnavailable, OutcomeUnknown) as exc:
            log.info("%s lease not released (%s): it expires", job, exc)

    async def read(self, job: str) -> LeaseRecord | None:
        """A linearizable read of the job's lease record (None: never taken)."""
        return await self.proposer.read(KEY_PREFIX + job)


def open_leases(config: ClusterConfig, acceptor: Acceptor[bytes], peers: PeerPool, incarnation: int, *,
                phase_timeout: float = 2.0) -> RegisterLeases:
    """The node's leases over its acceptor and the pool: a proposer of its own (its values are lease records) with
    the node's incarnation; its keys (``job/...``) are never those of the bucket-name proposer, so the two never
    use one ballot for one key."""
    transport = GrpcAcceptorTransport(config.node_id, acceptor, peers, LEASE_CODEC, timeout_s=phase_timeout)
    proposer = Proposer(config.node_id, [n.node_id for n in config.pool], transport, incarnation=incarnation,
                        phase_timeout=phase_timeout)
    return RegisterLeases(proposer, config.node_id, duration_s=config.job_lease_s,
                          max_offset_s=config.max_clock_offset_s)
