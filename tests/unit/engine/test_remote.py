"""engine/remote: frames and errors across a real socketpair, and what happens when the peer goes away."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError
from s4.engine.remote import Channel, ChannelClosedError, LoopChannel
from s4.engine.remote.pending import PendingReplies
from s4.engine.remote.wire import LENGTH, decode_body, encode_frame

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


def test_user_maps_with_any_string_key_are_not_mistaken_for_errors() -> None:
    meta = {"__s4_error__": "s3", "-1": "x"}
    assert decode_body(encode_frame({"ok": meta})[4:]) == {"ok": meta}


def _pair(handler: Any) -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    server = Channel(a, name="server", on_request=handler)
    client = Channel(b, name="client")
    return server, client


def test_results_and_errors_cross_intact() -> None:
    def handler(channel: Channel, message: dict[str, Any]) -> None:
        what = message["what"]
        if what == "s3":
            channel.reply(message["id"], error=S3Error(ErrorCode.NO_SUCH_KEY, resource="k", Key="k",
                                                       headers={"x-amz-delete-marker": "true"}))
        elif what == "iam-value":  # IAM deciders return their refusal as a value
            channel.reply(message["id"], {"result": IamError(409, "taken")})
        elif what == "bug":
            channel.reply(message["id"], error=KeyError("oops"))
        else:
            channel.reply(message["id"], {"echo": message["payload"], "tuple": (1, 2)})

    server, client = _pair(handler)
    try:
        assert client.request({"op": "x", "what": "echo", "payload": b"\x00\xff"}).result(5) == {
            "echo": b"\x00\xff", "tuple": [1, 2]}
        with pytest.raises(S3Error) as err:
            client.request({"op": "x", "what": "s3"}).result(5)
        assert err.value.code is ErrorCode.NO_SUCH_KEY and err.value.fields == {"Key": "k"}
        assert err.value.headers == {"x-amz-delete-marker": "true"} and err.value.resource == "k"
        refusal = client.request({"op": "x", "what": "iam-value"}).result(5)["result"]
        assert isinstance(refusal, IamError) and (refusal.status, refusal.message) == (409, "taken")
        with pytest.raises(S3Error) as err:
            client.request({"op": "x", "what": "bug"}).result(5)
        assert err.value.code is ErrorCode.INTERNAL_ERROR and "KeyError" in err.value.message
    finally:
        client.close()
        server.close()


def test_many_concurrent_requests_from_many_threads_each_get_their_own_reply() -> None:
    server, client = _pair(lambda ch, m: ch.reply(m["id"], m["n"] * 2))
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(lambda n: client.request({"op": "x", "n": n}).result(10), n)
                       for n in range(2000)]
            assert [f.result() for f in futures] == [n * 2 for n in range(2000)]
    finally:
        client.close()
        server.close()


def test_pending_requests_fail_when_the_peer_goes_away() -> None:
    held = threading.Event()
    server, client = _pair(lambda ch, m: held.set())  # never answers
    closed = threading.Event()
    client._on_close = closed.set
    fut = client.request({"op": "x"})
    assert held.wait(5)
    server.close()
    with pytest.raises(ChannelClosedError):
        fut.result(5)
    assert closed.wait(5)
    with pytest.raises(ChannelClosedError):
        client.request({"op": "x"}).result(1)  # refused at once afterwards


def test_a_throttled_login_keeps_its_retry_after_across_the_boundary() -> None:
    from s4.engine.login_throttle import ThrottledError

    server, client = _pair(lambda ch, m: ch.reply(m["id"], error=ThrottledError(7)))
    try:
        with pytest.raises(ThrottledError) as err:
            client.request({"op": "throttle"}).result(5)
        assert err.value.status == 429 and err.value.retry_after_s == 7
    finally:
        client.close()
        server.close()


# -- LoopChannel: the worker's end, run by its event loop ------------------------------------------------------------
def _loop_pair(handler: Any, on_close: Any = None) -> tuple[Channel, LoopChannel]:
    a, b = socket.socketpair()
    return Channel(a, name="server", on_request=handler), LoopChannel(b, name="worker", on_close=on_close)


@pytest.mark.parametrize("loop_factory", ["asyncio", "uvloop"])
def test_loop_channel_serves_the_loop_and_other_threads(loop_factory: str) -> None:
    def handler(channel: Channel, message: dict[str, Any]) -> None:
        if message.get("fail"):
            channel.reply(message["id"], error=S3Error(ErrorCode.NO_SUCH_BUCKET, resource="b"))
        else:
            channel.reply(message["id"], message["n"] * 2)

    server, client = _loop_pair(handler)
    early = client.request({"op": "x", "n": -1})  # before the loop runs: sent on attach

    async def main() -> None:
        await client.attach()
        assert await asyncio.wrap_future(early) == -2
        results = await asyncio.gather(*(client.call({"op": "x", "n": n}) for n in range(2000)))
        assert results == [n * 2 for n in range(2000)]
        with pytest.raises(S3Error) as err:
            await client.call({"op": "x", "fail": True})
        assert err.value.code is ErrorCode.NO_SUCH_BUCKET and err.value.resource == "b"

        def from_threads() -> list[int]:  # e.g. a volume sealed on an ingest thread
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                return list(pool.map(lambda n: client.request({"op": "x", "n": n}).result(10), range(300)))

        assert await asyncio.to_thread(from_threads) == [n * 2 for n in range(300)]

    try:
        if loop_factory == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
        else:
            asyncio.run(main())
    finally:
        client.close()
        server.close()


def test_loop_channel_sends_the_frames_of_one_loop_iteration_in_one_write() -> None:
    server, client = _loop_pair(lambda ch, m: ch.reply(m["id"], m["n"]))
    writes: list[int] = []

    async def main() -> None:
        await client.attach()
        transport = client._transport
        assert transport is not None
        real_write = transport.write

        def counting_write(data: bytes) -> None:
            writes.append(len(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        calls = [asyncio.ensure_future(client.call({"op": "x", "n": n})) for n in range(50)]
        assert await asyncio.gather(*calls) == list(range(50))  # all 50 tasks send in the same iteration
        assert len(writes) == 1
        assert await client.call({"op": "x", "n": 7}) == 7  # a lone call is not held back
        assert len(writes) == 2

    try:
        asyncio.run(main())
    finally:
        client.close()
        server.close()


def test_loop_channel_fails_pending_calls_when_the_peer_goes_away() -> None:
    held = threading.Event()
    closed: list[bool] = []
    server, client = _loop_pair(lambda ch, m: held.set(), on_close=lambda: closed.append(True))

    async def main() -> None:
        await client.attach()
        waiting = asyncio.ensure_future(client.call({"op": "x"}))
        from_thread = client.request({"op": "x"})
        assert await asyncio.to_thread(held.wait, 5)
        server.close()
        with pytest.raises(ChannelClosedError):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(ChannelClosedError):
            await asyncio.wrap_future(from_thread)
        with pytest.raises(ChannelClosedError):
            await client.call({"op": "x"})  # refused at once afterwards

    asyncio.run(main())
    assert closed == [True]


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
