"""Issue 19, the replicated commit path (engine/replicated_commit.py) over a real Sequencer, journal and views in a
temporary data directory, with a scripted ``ReplicationPort`` standing in for the pool (cluster/replicator.py).

What the engine promises a cluster node's client: a command's answer comes only after ``replicate`` returned; the
events handed to ``replicate`` are exactly the ones that command journaled (and, in a group-committed batch, only
its own); a refused command (decider error) replicates nothing; a node that may not coordinate (``admit`` raises)
decides nothing; a failed quorum answers 503 while the local commit stays (the write's outcome is unknown); before
``attach`` commands commit locally only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio.to_thread
import pytest
from helpers.engine_io import get, put
from prometheus_client import CollectorRegistry

from s4.api.journal_metrics import JournalMetrics
from s4.engine import Engine, EngineOptions
from s4.engine.errors import RETRY_AFTER_S, ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError
from s4.engine.replicated_commit import ReplicatedCommitPath, ReplicatedPort
from s4.engine.sequencer import Command
from s4.journal import Event

pytestmark = pytest.mark.anyio
POLL = 2000  # bounded polls of the event loop, never a wall-clock wait


class Unavailable(PoolUnavailableError):
    """What the pool answers when it cannot hold the write, as the replicator's QuorumNotReachedError and
    NotReadyError do (the engine knows only the PoolUnavailableError they share)."""


class FakePool:
    """A ``ReplicationPort``: records what it is asked, in order, and can refuse, fail or hold ``replicate``."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.calls: list[list[Event]] = []
        self.refuse: ServiceUnavailableError | None = None  # admit raises it
        self.fail: ServiceUnavailableError | None = None  # replicate raises it (after "sending")
        self.gate: asyncio.Event | None = None  # replicate waits for it

    def admit(self) -> None:
        self.log.append("admit")
        if self.refuse is not None:
            raise self.refuse

    async def replicate(self, events: Sequence[Event]) -> None:
        self.calls.append(list(events))
        self.log.append("replicate")
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.log.append("replicated")

    def replicate_sync(self, events: Sequence[Event]) -> None:
        self.calls.append(list(events))
        self.log.append("replicate_sync")
        if self.fail is not None:
            raise self.fail


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Engine, ReplicatedCommitPath]]:
    path = ReplicatedCommitPath()
    engine = Engine(EngineOptions(tmp_path / "data"), path)
    try:
        yield engine, path
    finally:
        engine.close()


def journal_after(engine: Engine, seq: int) -> list[Event]:
    assert engine.journal is not None
    return list(engine.journal.read(seq + 1))


def head(engine: Engine) -> int:
    assert engine.journal is not None
    return engine.journal.last_seq


async def test_before_attach_commands_commit_locally_only(node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    assert isinstance(engine.sequencer, ReplicatedPort) and path.replication is None
    pool = FakePool()
    await engine.create_bucket("early")
    await put(engine, "early", "k", b"local")
    path.attach(pool)
    assert path.replication is pool
    assert pool.log == [] and await get(engine, "early", "k") == b"local"


async def test_the_answer_comes_only_after_replicate_returned(node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    pool = FakePool()
    pool.gate = asyncio.Event()
    path.attach(pool)
    before = head(engine)
    task = asyncio.ensure_future(engine.create_bucket("bkt"))
    for _ in range(POLL):
        if pool.calls:
            break
        await asyncio.sleep(0.001)
    assert pool.log == ["admit", "replicate"]
    assert [e.type.value for e in journal_after(engine, before)] == ["bucket.created"]  # committed here first
    for _ in range(50):  # the loop runs on: the client still has no answer while the quorum is outstanding
        await asyncio.sleep(0)
    assert not task.done()
    pool.gate.set()
    await task
    assert pool.log == ["admit", "replicate", "replicated"]


async def test_replicate_gets_exactly_the_events_each_command_committed(
        node: tuple[Engine, ReplicatedCommitPath]) -> None:
    """Sequential commands of several kinds, then 20 concurrent ones (group-committed together): each replicate
    call carries that command's journaled events, in journal order, and together they are the journal's tail."""
    engine, path = node
    pool = FakePool()
    path.attach(pool)
    steps = [
        lambda: engine.create_bucket("bkt"),
        lambda: put(engine, "bkt", "k1", b"one"),
        lambda: put(engine, "bkt", "k1", b"two"),
        lambda: engine.set_bucket_config("bkt", "versioning", "Enabled"),
        lambda: engine.delete_object("bkt", "k1"),
    ]
    for step in steps:
        before, calls = head(engine), len(pool.calls)
        await step()
        assert len(pool.calls) == calls + 1
        assert pool.calls[-1] == journal_after(engine, before) != []
    before, calls = head(engine), len(pool.calls)
    await asyncio.gather(*(put(engine, "bkt", f"c{i}", bytes([i]) * (i + 1)) for i in range(20)))
    mine = pool.calls[calls:]
    assert len(mine) == 20 and all(len(events) == 1 for events in mine)
    assert sorted(e.seq for events in mine for e in events) == [e.seq for e in journal_after(engine, before)]
    assert {events[0].payload["key"] for events in mine} == {f"c{i}" for i in range(20)}


async def test_a_refused_command_raises_its_own_error_and_replicates_nothing(
        node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    await engine.create_bucket("bkt")
    pool = FakePool()
    path.attach(pool)
    before = head(engine)
    with pytest.raises(S3Error) as err:
        await engine.create_bucket("bkt")
    assert err.value.code is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    with pytest.raises(S3Error) as err:
        await put(engine, "nope", "k", b"x")
    assert err.value.code is ErrorCode.NO_SUCH_BUCKET
    assert pool.calls == [] and head(engine) == before


async def test_a_node_that_may_not_coordinate_decides_nothing(node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    pool = FakePool()
    pool.refuse = Unavailable("catching up")
    path.attach(pool)
    before = head(engine)
    with pytest.raises(Unavailable) as err:
        await engine.create_bucket("bkt")
    assert err.value.status == 503 and err.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
    with pytest.raises(Unavailable):
        await anyio.to_thread.run_sync(engine.sequencer.execute_sync,
                                       Command("create_bucket", {"bucket": "bkt", "region": "us-east-1"}))
    assert pool.log == ["admit", "admit"] and head(engine) == before
    with pytest.raises(S3Error) as missing:
        engine.get_bucket("bkt")
    assert missing.value.code is ErrorCode.NO_SUCH_BUCKET


async def test_a_failed_quorum_answers_503_and_the_local_commit_stays(
        node: tuple[Engine, ReplicatedCommitPath]) -> None:
    """Outcome unknown, by design (docs/architecture/replication.md, "The quorum write path"): the command was
    journaled and fsynced here before the pool was asked, so when fewer than W replicas hold it the client gets 503
    ServiceUnavailable with Retry-After, yet this node keeps the write (it serves it locally and it may still reach
    the other replicas through catch-up, hints and read repair). It is never half-applied: the command's events are
    all in this journal and all in the views. A retry of the idempotent request settles it."""
    engine, path = node
    pool = FakePool()
    path.attach(pool)
    await engine.create_bucket("bkt")
    pool.fail = Unavailable("1 of 3 replicas")
    before = head(engine)
    with pytest.raises(Unavailable) as err:
        await put(engine, "bkt", "k", b"maybe")
    assert err.value.status == 503 and err.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
    assert pool.calls[-1] == journal_after(engine, before) != []
    assert await get(engine, "bkt", "k") == b"maybe"
    with pytest.raises(Unavailable):  # the jobs' blocking path: the same outcome
        await anyio.to_thread.run_sync(engine.sequencer.execute_sync,
                                       Command("create_bucket", {"bucket": "ccc", "region": "us-east-1"}))
    assert pool.log[-2:] == ["admit", "replicate_sync"]
    assert engine.get_bucket("ccc").name == "ccc"


async def test_the_blocking_path_replicates_what_it_committed(node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    pool = FakePool()
    path.attach(pool)
    before = head(engine)
    await anyio.to_thread.run_sync(engine.sequencer.execute_sync,
                                   Command("create_bucket", {"bucket": "jobs", "region": "us-east-1"}))
    assert pool.log == ["admit", "replicate_sync"] and pool.calls == [journal_after(engine, before)]
    before = head(engine)
    with pytest.raises(S3Error):
        await anyio.to_thread.run_sync(engine.sequencer.execute_sync,
                                       Command("create_bucket", {"bucket": "jobs", "region": "us-east-1"}))
    assert len(pool.calls) == 1 and head(engine) == before


async def test_a_failed_quorum_does_not_abandon_the_volume_it_synced(
        node: tuple[Engine, ReplicatedCommitPath]) -> None:
    """A quorum failure is the pool's, not this disk's: the PUT's bytes were fsynced with its local commit. The
    engine treated every 503 as a possibly failed volume sync and abandoned the volume, so every later commit naming
    it (here a second PUT whose bytes were already in it) failed with a storage error although nothing was wrong."""
    engine, path = node
    pool = FakePool()
    path.attach(pool)
    await engine.create_bucket("bkt")
    first = await engine.ingestor.ingest_bytes(b"first")
    second = await engine.ingestor.ingest_bytes(b"second")
    assert first.volumes == second.volumes != set()
    pool.fail = Unavailable("1 of 3 replicas")
    with pytest.raises(Unavailable):
        await engine.put_object("bkt", "k1", first)
    pool.fail = None
    await engine.put_object("bkt", "k2", second)
    assert await get(engine, "bkt", "k1") == b"first" and await get(engine, "bkt", "k2") == b"second"


class EarlyPool(FakePool):
    """A pool that can send a batch before the local fsync (cluster/replicator.py ``send_early``)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.early: list[tuple[list[Event], int]] = []  # (events, journal head when handed over)
        self.abandoned: list[list[Event]] = []

    def send_early(self, events: Sequence[Event]) -> None:
        self.log.append("send_early")
        self.early.append((list(events), head(self.engine)))

    def not_durable(self, events: Sequence[Event]) -> None:
        self.abandoned.append(list(events))


async def test_issue19_attach_hands_each_batch_to_the_pool_before_its_fsync_and_replicates_after(
        node: tuple[Engine, ReplicatedCommitPath]) -> None:
    engine, path = node
    pool = EarlyPool(engine)
    path.attach(pool)
    before = head(engine)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "k", b"bytes")
    assert pool.log == ["admit", "send_early", "replicate", "replicated"] * 2
    for (events, seen_head), replicated in zip(pool.early, pool.calls, strict=True):
        assert events == replicated  # the same events, handed over first ...
        assert seen_head < events[0].seq  # ... while not yet in the journal
    assert [e.seq for events in pool.calls for e in events] == [e.seq for e in journal_after(engine, before)]
    assert pool.abandoned == []


async def test_a_pool_nodes_group_commit_metrics_count_its_batches(node: tuple[Engine, ReplicatedCommitPath]) -> None:
    """The metrics subscribe to the port's batch sizes: a pool node's port wraps the sequencer, and without the
    pass-through its ``s4_group_commit_*`` families never moved."""
    engine, path = node
    registry = CollectorRegistry()
    JournalMetrics(engine, registry)
    path.attach(FakePool())
    await engine.create_bucket("counted")
    for n in range(3):  # one at a time: three batches at least
        await put(engine, "counted", f"k{n}", b"x")
    assert (registry.get_sample_value("s4_group_commit_batches_total") or 0) >= 3
    assert (registry.get_sample_value("s4_group_commit_batch_size_count") or 0) >= 3
