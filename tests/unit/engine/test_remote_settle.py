"""Issue 19, quorum reads in an HTTP worker (S4_WORKERS > 1): the worker's ``RemoteKeyReads`` asks the supervisor
to settle a key (op "settle"), and the supervisor's ``SequencerService`` runs its ``KeyReadPort`` on its loop. The
reply leaves only after ``settle_key`` returned (the worker reads its views after it); the port's error, the pool's
503 included, crosses back as itself (503 with Retry-After, not an InternalError); a settle waiting on its quorum
holds up neither commands nor other settles; a node without quorum reads answers the op as unknown at once.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from s4.engine.errors import RETRY_AFTER_S, ErrorCode, PoolUnavailableError, S3Error
from s4.engine.remote import ChannelClosedError, LoopChannel, RemoteKeyReads, SequencerService, WorkerLink
from s4.engine.remote.wire import decode_error, encode_error
from s4.engine.sequencer import Command

POLL = 2000


class ReadQuorumRefusal(PoolUnavailableError):
    """Stands in for cluster/key_reads.py ``ReadQuorumError`` (the engine's tests do not import ``cluster``)."""


class FakeKeyReads:
    """A ``KeyReadPort``: each call waits for ``gate``; ``fail`` is raised once the gate opens."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def settle_key(self, bucket: str, key: str) -> None:
        self.calls.append((bucket, key))
        await self.gate.wait()
        self.finished.append((bucket, key))
        if self.fail is not None:
            raise self.fail


class FakeLink:
    """A ``WorkerLink`` that keeps its replies: ``replies[id] = ("ok", value) | ("err", error)``."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[str, Any]] = {}

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None, *,
              flush: bool = True) -> None:
        assert request_id not in self.replies, f"request {request_id} answered twice"
        self.replies[request_id] = ("err", error) if error is not None else ("ok", value)


class EchoSequencer:
    def commit_now(self, commands: list[Command]) -> list[Any]:
        return [command.args["n"] * 2 for command in commands]


def settle_frame(request_id: int, bucket: str = "b", key: str = "k") -> dict[str, Any]:
    return {"id": request_id, "op": "settle", "kind": "key", "bucket": bucket, "ident": key}


def service_with(key_reads: FakeKeyReads | None) -> SequencerService:
    return SequencerService(EchoSequencer(), None, asyncio.get_running_loop(), None,  # type: ignore[arg-type]
                            key_reads=key_reads)


async def until(condition: Any) -> None:
    for _ in range(POLL):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def test_the_reply_leaves_only_after_settle_key_returned() -> None:
    async def main() -> None:
        port = FakeKeyReads()
        port.gate.clear()
        service, link = service_with(port), FakeLink()
        service.handle(link, settle_frame(1, "photos", "a/b.jpg"))  # type: ignore[arg-type]
        await until(lambda: port.calls)
        for _ in range(20):  # the loop runs on; the quorum read has not returned
            await asyncio.sleep(0)
        assert port.calls == [("photos", "a/b.jpg")] and link.replies == {}
        port.gate.set()
        await until(lambda: link.replies)
        assert port.finished == [("photos", "a/b.jpg")] and link.replies == {1: ("ok", None)}
        assert not service._tasks

    asyncio.run(main())


def test_the_ports_refusal_is_the_reply_and_crosses_as_a_503() -> None:
    async def main() -> None:
        port = FakeKeyReads()
        port.fail = ReadQuorumRefusal("1 of 3 replicas answered", "Fewer replicas than the read quorum ...")
        service, link = service_with(port), FakeLink()
        service.handle(link, settle_frame(7))  # type: ignore[arg-type]
        await until(lambda: link.replies)
        kind, error = link.replies[7]
        assert kind == "err" and error is port.fail

    asyncio.run(main())
    crossed = decode_error(encode_error(ReadQuorumRefusal("reason", "Fewer replicas ...")))
    assert isinstance(crossed, PoolUnavailableError) and crossed.code is ErrorCode.SERVICE_UNAVAILABLE
    assert crossed.status == 503 and crossed.headers == {"Retry-After": str(RETRY_AFTER_S)}


def test_a_settle_waiting_on_its_quorum_holds_up_neither_commands_nor_other_settles() -> None:
    async def main() -> None:
        slow, link = FakeKeyReads(), FakeLink()
        slow.gate.clear()
        service = service_with(slow)
        service.handle(link, settle_frame(1, key="slow"))  # type: ignore[arg-type]
        service.handle(link, {"id": 2, "op": "cmd", "name": "double", "args": {"n": 21}})  # type: ignore[arg-type]
        await until(lambda: 2 in link.replies)
        assert link.replies[2] == ("ok", 42) and 1 not in link.replies
        slow.gate.set()
        await until(lambda: 1 in link.replies)

    asyncio.run(main())


def test_a_settle_cancelled_by_the_supervisor_stopping_is_answered_503() -> None:
    async def main() -> None:
        port = FakeKeyReads()
        port.gate.clear()
        service, link = service_with(port), FakeLink()
        service.handle(link, settle_frame(4))  # type: ignore[arg-type]
        await until(lambda: port.calls)
        for task in list(service._tasks):
            task.cancel()
        await until(lambda: link.replies)
        kind, error = link.replies[4]
        assert kind == "err" and isinstance(error, ChannelClosedError) and error.status == 503

    asyncio.run(main())


def test_a_node_without_quorum_reads_answers_settle_as_unknown_at_once() -> None:
    async def main() -> None:
        service, link = service_with(None), FakeLink()
        service.handle(link, settle_frame(3))  # type: ignore[arg-type]
        kind, error = link.replies[3]
        assert kind == "err" and "unknown request 'settle'" in str(error)

    asyncio.run(main())


async def _channel(port: FakeKeyReads) -> tuple[SequencerService, WorkerLink, LoopChannel, list[dict[str, Any]]]:
    """A real SequencerService on the running loop, serving a LoopChannel over a socketpair; the frames it
    received are recorded."""
    a, b = socket.socketpair()
    service = service_with(port)
    frames: list[dict[str, Any]] = []
    handle = service.handle

    def recording(link: WorkerLink, message: dict[str, Any]) -> None:
        frames.append(dict(message))
        handle(link, message)

    service.handle = recording  # type: ignore[method-assign]
    link = await service.attach(a, "worker-1")
    client = LoopChannel(b, name="worker")
    await client.attach()
    return service, link, client, frames


def test_remote_key_reads_sends_one_settle_frame_and_returns_after_the_supervisor_settled() -> None:
    async def main() -> None:
        port = FakeKeyReads()
        port.gate.clear()
        service, link, client, frames = await _channel(port)
        try:
            call = asyncio.ensure_future(RemoteKeyReads(client).settle_key("b", "dir/k"))
            await until(lambda: port.calls)
            assert [{k: v for k, v in f.items() if k != "id"} for f in frames] == [
                {"op": "settle", "kind": "key", "bucket": "b", "ident": "dir/k"}]
            for _ in range(20):
                await asyncio.sleep(0)
            assert not call.done()
            port.gate.set()
            assert await asyncio.wait_for(call, 5) is None
            assert port.finished == [("b", "dir/k")]
        finally:
            client.close()
            link.close()

    asyncio.run(main())


def test_remote_key_reads_raises_the_supervisors_503_as_the_pools_503() -> None:
    async def main() -> None:
        port = FakeKeyReads()
        port.fail = ReadQuorumRefusal("2 of 3 peers dead", "Fewer replicas than the read quorum could answer.")
        service, link, client, _ = await _channel(port)
        try:
            with pytest.raises(S3Error) as err:
                await asyncio.wait_for(RemoteKeyReads(client).settle_key("b", "k"), 5)
            assert isinstance(err.value, PoolUnavailableError)
            assert err.value.status == 503 and err.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
            assert err.value.message == "Fewer replicas than the read quorum could answer."
        finally:
            client.close()
            link.close()

    asyncio.run(main())


class ListingKeyReads(FakeKeyReads):
    """A ``KeyReadPort`` that also settles listings (cluster/key_reads.py ``QuorumKeyReads.settle_listing``)."""

    def __init__(self) -> None:
        super().__init__()
        self.listings: list[tuple[str, list[str], list[str], bool]] = []

    async def settle_listing(self, bucket: str, answered: list[str], stale: list[str], in_flight: bool) -> None:
        self.listings.append((bucket, list(answered), list(stale), in_flight))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail


def test_robust19_a_workers_listing_is_settled_by_the_supervisor_before_it_returns() -> None:
    """A listing merged in an HTTP worker hands its stale replicas and in-flight flag to the supervisor's key reads
    (op "settle", kind "listing") and returns only once they were repaired and covered; a refusal is the 503."""
    async def main() -> None:
        port = ListingKeyReads()
        port.gate.clear()
        _, link, client, _ = await _channel(port)
        try:
            call = asyncio.ensure_future(RemoteKeyReads(client).settle_listing("b", ["n2"], ["n1", "n2"], True))
            await until(lambda: port.listings)
            for _ in range(20):
                await asyncio.sleep(0)
            assert port.listings == [("b", ["n2"], ["n1", "n2"], True)] and not call.done()
            port.gate.set()
            await asyncio.wait_for(call, 5)
            port.fail = ReadQuorumRefusal("n2 could not catch up", "retry later")
            with pytest.raises(PoolUnavailableError) as refused:
                await asyncio.wait_for(RemoteKeyReads(client).settle_listing("b", ["n2"], ["n2"], False), 5)
            assert refused.value.status == 503
        finally:
            client.close()
            link.close()

    asyncio.run(main())
