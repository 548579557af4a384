"""Issue 19, the supervisor's channel service in a cluster node (S4_WORKERS > 1; engine/remote/service.py
``_commit_replicated``) over a real Sequencer in a temporary data directory, fake worker links (no sockets) and a
scripted ``ReplicationPort``: one replicate call per group-committed batch with exactly the events the batch
journaled; no worker hears back before it returned; when it fails, only the commands that committed events get its
503, a command refused by its decider gets its own error and one that committed nothing its result; ``admit``
refusing decides nothing. The pool's 503 crosses the channel as itself (the worker keeps its volumes).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from s4.engine import Engine, EngineOptions
from s4.engine.errors import RETRY_AFTER_S, ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError
from s4.engine.local_commit import LocalCommitPath
from s4.engine.remote import ChannelClosedError, SequencerService
from s4.engine.remote.wire import decode_error, encode_error
from s4.journal import Event

POLL = 2000


class FakeLink:
    """A ``WorkerLink`` that keeps its replies: ``replies[id] = ("ok", value) | ("err", error)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.replies: dict[int, tuple[str, Any]] = {}
        self.flushes = 0

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None, *,
              flush: bool = True) -> None:
        assert request_id not in self.replies, f"{self.name}: request {request_id} answered twice"
        self.replies[request_id] = ("err", error) if error is not None else ("ok", value)
        if flush:
            self.flush()

    def flush(self) -> None:
        self.flushes += 1


class FakePool:
    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.refuse: ServiceUnavailableError | None = None
        self.fail: ServiceUnavailableError | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    def admit(self) -> None:
        if self.refuse is not None:
            raise self.refuse

    async def replicate(self, events: Sequence[Event]) -> None:
        self.calls.append(list(events))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail

    def replicate_sync(self, events: Sequence[Event]) -> None:
        raise AssertionError("the service replicates on its loop")


@pytest.fixture
def path(tmp_path: Path) -> Iterator[LocalCommitPath]:
    path = LocalCommitPath()
    engine = Engine(EngineOptions(tmp_path / "data"), path)
    try:
        yield path
    finally:
        engine.close()


def head(path: LocalCommitPath) -> int:
    assert path.journal is not None
    return path.journal.last_seq


def tail(path: LocalCommitPath, after: int) -> list[Event]:
    assert path.journal is not None
    return list(path.journal.read(after + 1))


def create(request_id: int, bucket: str) -> dict[str, Any]:
    return {"id": request_id, "op": "cmd", "name": "create_bucket", "args": {"bucket": bucket, "region": "us-east-1"},
            "actor": "t"}


async def settle(service: SequencerService, links: Sequence[FakeLink], expected: int) -> None:
    """Run the loop until ``expected`` replies arrived and no replication task is left (bounded)."""
    for _ in range(POLL):
        if sum(len(link.replies) for link in links) >= expected and not service._tasks:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{sum(len(link.replies) for link in links)} of {expected} replies")


def service_for(path: LocalCommitPath, pool: FakePool) -> SequencerService:
    assert path.sequencer is not None
    return SequencerService(path.sequencer, None, asyncio.get_running_loop(), None,  # type: ignore[arg-type]
                            replication=pool)


def test_one_replicate_call_per_batch_and_no_reply_before_it_returned(path: LocalCommitPath) -> None:
    async def main() -> None:
        pool = FakePool()
        pool.gate.clear()
        service = service_for(path, pool)
        links = [FakeLink("w1"), FakeLink("w2")]
        before = head(path)
        for i in range(6):  # one loop iteration: one batch
            service.handle(links[i % 2], create(i, f"bucket-{i}"))
        for _ in range(POLL):
            if pool.calls:
                break
            await asyncio.sleep(0.001)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(pool.calls) == 1 and pool.calls[0] == tail(path, before)
        assert [e.payload["bucket"] for e in pool.calls[0]] == [f"bucket-{i}" for i in range(6)]
        assert all(link.replies == {} for link in links)  # committed here, not yet held by the quorum
        pool.gate.set()
        await settle(service, links, 6)
        assert links[0].replies == {i: ("ok", None) for i in (0, 2, 4)}
        assert links[1].replies == {i: ("ok", None) for i in (1, 3, 5)}
        assert [link.flushes for link in links] == [1, 1]  # one write per worker per batch

    asyncio.run(main())


def test_a_failed_quorum_fails_every_command_that_was_decided_and_the_refused_one_keeps_its_error(
        path: LocalCommitPath) -> None:
    """The batch: a new bucket, an existing one (refused by its decider), a delete of a key that does not exist
    (succeeds, commits nothing), another new bucket. The quorum fails: the two creates get its 503 (their outcome
    is unknown: they stay committed here), the refusal its own 409, and the no-op the 503 too: it was decided on
    this node's state, which now holds writes fewer than W replicas have (cluster/replicator.py)."""
    async def main() -> None:
        pool = FakePool()
        service = service_for(path, pool)
        link = FakeLink("w1")
        service.handle(link, create(0, "taken"))
        await settle(service, [link], 1)
        pool.fail = PoolUnavailableError("1 of 3 replicas", "Fewer replicas than the write quorum acknowledged")
        before = head(path)
        service.handle(link, create(1, "fresh-1"))
        service.handle(link, create(2, "taken"))
        service.handle(link, {"id": 3, "op": "cmd", "name": "delete_object", "args": {"bucket": "taken", "key": "no"},
                              "actor": "t"})
        service.handle(link, create(4, "fresh-2"))
        await settle(service, [link], 5)
        committed = tail(path, before)
        assert len(pool.calls) == 2 and pool.calls[1] == committed
        assert [e.payload["bucket"] for e in committed] == ["fresh-1", "fresh-2"]
        assert link.replies[1] == ("err", pool.fail) and link.replies[4] == ("err", pool.fail)
        kind, error = link.replies[2]
        assert kind == "err" and isinstance(error, S3Error) and error.code is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
        assert link.replies[3] == ("err", pool.fail)

    asyncio.run(main())


def test_a_batch_that_committed_nothing_is_answered_without_the_pool(path: LocalCommitPath) -> None:
    async def main() -> None:
        pool = FakePool()
        service = service_for(path, pool)
        link = FakeLink("w1")
        service.handle(link, create(0, "taken"))
        await settle(service, [link], 1)
        pool.gate.clear()  # a replicate call would now hang the replies
        service.handle(link, create(1, "taken"))
        await settle(service, [link], 2)
        assert len(pool.calls) == 1 and link.replies[1][0] == "err"

    asyncio.run(main())


def test_admit_refusing_decides_nothing(path: LocalCommitPath) -> None:
    async def main() -> None:
        pool = FakePool()
        pool.refuse = PoolUnavailableError("catching up", "This node is catching up with its peers")
        service = service_for(path, pool)
        link = FakeLink("w1")
        before = head(path)
        service.handle(link, create(0, "one"))
        service.handle(link, create(1, "two"))
        await settle(service, [link], 2)
        assert link.replies == {0: ("err", pool.refuse), 1: ("err", pool.refuse)}
        assert pool.calls == [] and head(path) == before

    asyncio.run(main())


def test_a_stopping_service_answers_the_waiting_commands_channel_closed(path: LocalCommitPath) -> None:
    async def main() -> None:
        pool = FakePool()
        pool.gate.clear()
        service = service_for(path, pool)
        link = FakeLink("w1")
        service.handle(link, create(0, "one"))
        for _ in range(POLL):
            if service._tasks:
                break
            await asyncio.sleep(0.001)
        for task in list(service._tasks):
            task.cancel()
        await settle(service, [link], 1)
        kind, error = link.replies[0]
        assert kind == "err" and isinstance(error, ChannelClosedError)

    asyncio.run(main())


def test_the_pools_503_crosses_the_worker_channel_as_itself() -> None:
    """The worker's engine keeps its volumes for a PoolUnavailableError (its bytes were synced by the supervisor's
    commit) and abandons them for any other 503, so the distinction must survive the channel."""
    pool = decode_error(encode_error(PoolUnavailableError("1 of 3", "Fewer replicas than the write quorum")))
    assert isinstance(pool, PoolUnavailableError) and pool.status == 503
    assert pool.headers == {"Retry-After": str(RETRY_AFTER_S)} and pool.message.startswith("Fewer replicas")
    other = decode_error(encode_error(ServiceUnavailableError("journal closed")))
    assert type(other) is ServiceUnavailableError and other.status == 503


def test_a_cluster_batch_is_made_durable_off_the_loop_one_batch_at_a_time_in_order(
        path: LocalCommitPath, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's loop also serves the peers' calls: while a batch syncs (held here on a thread event), the
    loop runs, the next commands wait for the next batch, and the batches are journaled in arrival order."""
    assert path.sequencer is not None
    real = path.sequencer.commit_now
    release = threading.Event()
    batches: list[int] = []

    def held(commands: Sequence[Any]) -> Sequence[Any]:
        assert threading.current_thread() is not threading.main_thread()
        batches.append(len(commands))
        release.wait(10)
        return real(commands)

    monkeypatch.setattr(path.sequencer, "commit_now", held)

    async def main() -> None:
        pool = FakePool()
        service = service_for(path, pool)
        link = FakeLink("w1")
        before = head(path)
        service.handle(link, create(0, "first"))
        for _ in range(POLL):
            if batches:
                break
            await asyncio.sleep(0.001)
        ticks = 0
        for _ in range(20):  # the loop is free while the batch is held on the committer thread
            await asyncio.sleep(0)
            ticks += 1
        service.handle(link, create(1, "second"))
        service.handle(link, create(2, "third"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert ticks == 20 and batches == [1] and link.replies == {}  # the next batch waits for this one
        release.set()
        await settle(service, [link], 3)
        assert batches == [1, 2]
        assert [e.payload["bucket"] for e in tail(path, before)] == ["first", "second", "third"]
        assert link.replies == {i: ("ok", None) for i in range(3)}

    asyncio.run(main())


def test_coord19_a_commands_blobs_cross_the_channel_and_are_offered_before_it_is_committed(
        path: LocalCommitPath) -> None:
    """A pool worker's small write carries its blob's bytes in the command (``Command.blobs``): the frame keeps
    them, and the service offers them to a replication port that takes them before the batch is decided."""
    from s4.engine.remote.client import _command_message
    from s4.engine.remote.wire import FrameBuffer, encode_frame
    from s4.engine.sequencer import Command

    command = Command("create_bucket", {"bucket": "offered", "region": "us-east-1"}, "t", (), ((b"d" * 32, b"xyz"),))
    message = {"id": 7, **_command_message(command)}
    (decoded,) = FrameBuffer().feed(encode_frame(message))
    assert decoded["blobs"] == [[b"d" * 32, b"xyz"]]
    assert "blobs" not in _command_message(Command("create_bucket", {}, "t"))  # a single node's: nothing extra

    class Offered(FakePool):
        def __init__(self) -> None:
            super().__init__()
            self.offered: list[tuple[tuple[bytes, bytes], ...]] = []

        def offer_blobs(self, blobs: tuple[tuple[bytes, bytes], ...]) -> None:
            assert not self.calls  # before the batch is committed and replicated
            self.offered.append(blobs)

    async def main() -> None:
        pool = Offered()
        service = service_for(path, pool)
        link = FakeLink("w1")
        service.handle(link, decoded)  # type: ignore[arg-type]
        await settle(service, [link], 1)
        assert pool.offered == [((b"d" * 32, b"xyz"),)] and len(pool.calls) == 1
        assert link.replies == {7: ("ok", None)}

    asyncio.run(main())
