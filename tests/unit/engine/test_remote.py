"""engine/remote: frames and errors across a real socketpair, and what happens when the peer goes away."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError
from s4.engine.login_throttle import ThrottledError
from s4.engine.remote import ChannelClosedError, LoopChannel, SequencerService, WorkerLink
from s4.engine.remote.pending import PendingReplies
from s4.engine.remote.wire import LENGTH, MAX_FRAME_BYTES, FrameBuffer, FrameTooLargeError, decode_body, encode_frame
from s4.engine.sequencer import Command

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_frame_round_trip(value: Any) -> None:
    frame = encode_frame({"id": 1, "ok": value})
    (length,) = LENGTH.unpack(frame[:4])
    assert length == len(frame) - 4
    assert decode_body(frame[4:]) == {"id": 1, "ok": value}


@given(st.lists(values, min_size=1, max_size=6), st.lists(st.integers(1, 64), max_size=40))
def test_frames_reassemble_however_the_stream_is_cut(messages: list[Any], cuts: list[int]) -> None:
    stream = b"".join(encode_frame({"id": i, "ok": m}) for i, m in enumerate(messages))
    frames, got, pos = FrameBuffer(), [], 0
    for cut in [*cuts, len(stream)]:
        got += frames.feed(stream[pos:pos + cut])
        pos += cut
    got += frames.feed(stream[pos:])
    assert got == [{"id": i, "ok": m} for i, m in enumerate(messages)]
    assert frames.feed(b"") == []  # nothing left over


def test_a_frame_longer_than_allowed_is_refused_before_its_body_arrives() -> None:
    with pytest.raises(FrameTooLargeError):
        FrameBuffer().feed(LENGTH.pack(MAX_FRAME_BYTES + 1))


def test_user_maps_with_any_string_key_are_not_mistaken_for_errors() -> None:
    meta = {"__s4_error__": "s3", "-1": "x"}
    assert decode_body(encode_frame({"ok": meta})[4:]) == {"ok": meta}


class FakeSequencer:
    """Stands in for the Sequencer: each command's name says what its result is; records the batches."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def commit_now(self, commands: list[Command]) -> list[Any]:
        self.batches.append([c.name for c in commands])
        return [self._decide(c) for c in commands]

    @staticmethod
    def _decide(command: Command) -> Any:
        if command.name == "s3":
            return S3Error(ErrorCode.NO_SUCH_KEY, resource="k", Key="k", headers={"x-amz-delete-marker": "true"})
        if command.name == "iam-value":  # IAM deciders return their refusal as a value
            return {"result": IamError(409, "taken")}
        if command.name == "bug":
            return KeyError("oops")
        if command.name == "double":
            return command.args["n"] * 2
        return {"echo": command.args.get("payload"), "volumes": command.volumes, "tuple": (1, 2)}


class FakeJobs:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
        await self.release.wait()
        return {"dry_run": dry_run}

    def status(self, name: str) -> dict[str, Any]:
        return {"name": name}


class FakeThrottle:
    def attempt(self, username: str, client: str) -> None:
        if username == "locked":
            raise ThrottledError(7)


class _CountingTransport:
    """Wraps a transport (uvloop's cannot be patched) to record the size of every write."""

    def __init__(self, transport: Any, writes: list[int]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _cmd(name: str, **args: Any) -> dict[str, Any]:
    return {"op": "cmd", "name": name, "args": args, "actor": "t", "volumes": ["w01-00000001.vol"]}


def _run(main: Any, loop_factory: str = "asyncio") -> None:
    if loop_factory == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


async def _serve(on_close: Any = None) -> tuple[SequencerService, WorkerLink, LoopChannel, FakeSequencer]:
    """A real SequencerService on the running loop, serving a LoopChannel over a socketpair."""
    a, b = socket.socketpair()
    sequencer = FakeSequencer()
    service = SequencerService(sequencer, FakeJobs(), asyncio.get_running_loop(), FakeThrottle())  # type: ignore[arg-type]
    link = await service.attach(a, "worker-1")
    client = LoopChannel(b, name="worker", on_close=on_close)
    await client.attach()
    return service, link, client, sequencer


@pytest.mark.parametrize("loop_factory", ["asyncio", "uvloop"])
def test_results_and_errors_cross_intact(loop_factory: str) -> None:
    async def main() -> None:
        service, link, client, _ = await _serve()
        try:
            assert await client.call(_cmd("echo", payload=b"\x00\xff")) == {
                "echo": b"\x00\xff", "volumes": ["w01-00000001.vol"], "tuple": [1, 2]}
            with pytest.raises(S3Error) as err:
                await client.call(_cmd("s3"))
            assert err.value.code is ErrorCode.NO_SUCH_KEY and err.value.fields == {"Key": "k"}
            assert err.value.headers == {"x-amz-delete-marker": "true"} and err.value.resource == "k"
            refusal = (await client.call(_cmd("iam-value")))["result"]
            assert isinstance(refusal, IamError) and (refusal.status, refusal.message) == (409, "taken")
            with pytest.raises(S3Error) as err:
                await client.call(_cmd("bug"))
            assert err.value.code is ErrorCode.INTERNAL_ERROR and "KeyError" in err.value.message
            with pytest.raises(ThrottledError) as throttled:
                await client.call({"op": "throttle", "action": "attempt", "username": "locked", "client": "c"})
            assert throttled.value.status == 429 and throttled.value.retry_after_s == 7
            assert await client.call({"op": "throttle", "action": "attempt", "username": "ok", "client": "c"}) is None
            assert await client.call({"op": "job", "method": "status", "kwargs": {"name": "x"}}) == {"name": "x"}
            with pytest.raises(S3Error) as err:
                await client.call({"op": "nonsense"})
            assert err.value.code is ErrorCode.INTERNAL_ERROR
        finally:
            client.close()
            link.close()

    _run(main, loop_factory)


@pytest.mark.parametrize("loop_factory", ["asyncio", "uvloop"])
def test_commands_that_arrive_together_are_one_batch_with_one_reply_write(loop_factory: str) -> None:
    async def main() -> None:
        service, link, client, sequencer = await _serve()
        writes: list[int] = []
        try:
            link._transport = _CountingTransport(link._transport, writes)  # type: ignore[assignment]
            calls = [asyncio.ensure_future(client.call(_cmd("double", n=n))) for n in range(50)]
            assert await asyncio.gather(*calls) == [n * 2 for n in range(50)]
            assert sum(len(b) for b in sequencer.batches) == 50
            assert len(sequencer.batches) == len(writes) < 50  # replies leave once per batch
            assert await client.call(_cmd("double", n=4)) == 8  # a lone command is not held back

            def from_threads() -> list[int]:  # e.g. a volume sealed on an ingest thread
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    return list(pool.map(lambda n: client.request(_cmd("double", n=n)).result(10), range(300)))

            assert await asyncio.to_thread(from_threads) == [n * 2 for n in range(300)]
        finally:
            client.close()
            link.close()

    _run(main, loop_factory)


def test_the_worker_end_sends_the_frames_of_one_loop_iteration_in_one_write() -> None:
    async def main() -> None:
        service, link, client, _ = await _serve()
        writes: list[int] = []
        try:
            client._transport = _CountingTransport(client._transport, writes)  # type: ignore[assignment]
            calls = [asyncio.ensure_future(client.call(_cmd("double", n=n))) for n in range(50)]
            assert await asyncio.gather(*calls) == [n * 2 for n in range(50)]  # all 50 send in one iteration
            assert len(writes) == 1
            assert await client.call(_cmd("double", n=7)) == 14  # a lone call is not held back
            assert len(writes) == 2
        finally:
            client.close()
            link.close()

    _run(main)


def test_a_background_job_run_does_not_hold_up_commands() -> None:
    async def main() -> None:
        service, link, client, _ = await _serve()
        try:
            run = asyncio.ensure_future(client.call({"op": "job", "method": "lifecycle",
                                                     "kwargs": {"dry_run": True}}))
            assert await client.call(_cmd("double", n=1)) == 2
            assert not run.done()
            service.jobs.release.set()
            assert await asyncio.wait_for(run, 5) == {"dry_run": True}
        finally:
            client.close()
            link.close()

    _run(main)


def test_pending_calls_fail_when_the_sequencer_end_goes_away() -> None:
    closed: list[bool] = []

    async def main() -> None:
        service, link, client, _ = await _serve(on_close=lambda: closed.append(True))
        waiting = asyncio.ensure_future(client.call({"op": "job", "method": "lifecycle", "kwargs": {}}))
        from_thread = client.request({"op": "job", "method": "lifecycle", "kwargs": {}})
        await asyncio.sleep(0.05)
        link.close()
        with pytest.raises(ChannelClosedError):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(ChannelClosedError):
            await asyncio.wrap_future(from_thread)
        with pytest.raises(ChannelClosedError):
            await client.call(_cmd("double", n=1))  # refused at once afterwards
        service.jobs.release.set()  # the runs finish; their replies to the closed link are dropped
        await asyncio.sleep(0.05)

    _run(main)
    assert closed == [True]


def test_an_oversized_frame_closes_the_link() -> None:
    async def main() -> None:
        service, link, client, _ = await _serve()
        waiting = asyncio.ensure_future(client.call({"op": "job", "method": "lifecycle", "kwargs": {}}))
        await asyncio.sleep(0.05)
        assert client._transport is not None
        client._transport.write(LENGTH.pack(MAX_FRAME_BYTES + 1))
        with pytest.raises(ChannelClosedError):
            await asyncio.wait_for(waiting, 5)
        assert link.closed
        service.jobs.release.set()

    _run(main)


def test_pending_replies_register_resolve_and_close() -> None:
    pending = PendingReplies("t")
    answered, cancelled, waiting = (concurrent.futures.Future() for _ in range(3))
    ids = [decode_body(pending.frame({"op": "x"}, f)[4:])["id"] for f in (answered, cancelled, waiting)]  # type: ignore[index]
    assert len(set(ids)) == 3
    pending.resolve({"id": ids[0], "ok": 7})
    cancelled.cancel()
    pending.resolve({"id": ids[1], "ok": 8})  # nobody waits any more: dropped, no InvalidStateError
    pending.resolve({"id": 999, "ok": 9})  # unknown id: dropped
    assert answered.result() == 7
    with pytest.raises(TypeError):
        pending.frame({"op": "x", "arg": object()}, concurrent.futures.Future())  # unencodable: raised to the caller
    assert pending.close() == [waiting]  # the unencodable request left nothing registered
    assert pending.close() is None
    late: concurrent.futures.Future[Any] = concurrent.futures.Future()
    assert pending.frame({"op": "x"}, late) is None
    with pytest.raises(ChannelClosedError):
        late.result()
