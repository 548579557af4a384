"""ApplyEvents on one long-lived stream per peer (cluster/event_stream.py), over a simulated stream: replies are
matched by id in any order; a reply's status raises what the unary call would; a request not answered in time
raises TimeoutError without breaking the stream (a late reply is ignored); a broken stream fails every request on
it and the next request opens a new one; a peer refusing the stream (UNIMPLEMENTED) is called unary, the refused
request included, until ``UNARY_RETRY_S`` passed; at most ``in_flight`` requests are outstanding; ``stop`` fails
what is pending. The server side (``serve_stream``) handles requests concurrently up to its bound, answers each
with its own id and status, and ends once the caller ended and everything sent was answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.event_stream import (
    UNARY_RETRY_S,
    StreamedEventsTransport,
    StreamLimits,
    pack_reply,
    pack_request,
    serve_messages,
    serve_stream,
    unpack_reply,
    unpack_request,
)
from s4.cluster.wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    ApplyEventsStreamReply,
    ApplyEventsStreamRequest,
    BlobTransfer,
    InlineBlob,
    JournalRange,
    PeerRange,
)

Behaviour = Callable[[ApplyEventsStreamRequest], "ApplyEventsStreamReply | None"]


def req(n: int) -> ApplyEventsRequest:
    return ApplyEventsRequest(events=[b"e%d" % n])


def sent(message: ApplyEventsStreamRequest) -> ApplyEventsRequest:
    """The request a stream message carries (the transport sends it packed)."""
    assert message.packed and message.request is None
    return unpack_request(message.packed, message.claims)


def ok(message: ApplyEventsStreamRequest) -> ApplyEventsStreamReply:
    """Answer with ``applied`` = the request's event number (so a test sees which reply went to whom)."""
    reply = ApplyEventsReply(applied=int(sent(message).events[0][1:]))
    packed, claims = pack_reply(reply)
    return ApplyEventsStreamReply(id=message.id, packed=packed, claims=claims)


class FakeStream:
    """One simulated stream: ``behaviour`` answers each sent request at once (or not: None); ``refuse`` makes the
    first receive fail as an older peer's trailers-only UNIMPLEMENTED does."""

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel
        self.inbox: asyncio.Queue[ApplyEventsStreamReply | BaseException] = asyncio.Queue()
        self.sent: list[ApplyEventsStreamRequest] = []
        self.cancelled = False
        if channel.refuse:
            self.inbox.put_nowait(GRPCError(Status.UNIMPLEMENTED, "Method not found"))

    async def send_request(self) -> None:
        pass

    async def send_message(self, message: ApplyEventsStreamRequest) -> None:
        self.sent.append(message)
        self.channel.sent.append(message)
        reply = self.channel.behaviour(message)
        if reply is not None:
            self.inbox.put_nowait(reply)

    async def recv_message(self) -> ApplyEventsStreamReply | None:
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def cancel(self) -> None:
        self.cancelled = True

    def answer(self, reply: ApplyEventsStreamReply) -> None:
        self.inbox.put_nowait(reply)

    def break_(self, error: BaseException) -> None:
        self.inbox.put_nowait(error)


class H2State:
    """What the lane's direct path reads of grpclib's stream (``Stream._stream``): the connection's ``write_ready``,
    h2's flow-control window and frame size for the stream."""

    def __init__(self) -> None:
        self.id = 1
        self.window = 65535
        self.max_outbound_frame_size = 16384
        self.connection = type("Connection", (), {"write_ready": asyncio.Event()})()
        self.connection.write_ready.set()
        self._h2_connection = self

    def local_flow_control_window(self, stream_id: int) -> int:
        assert stream_id == self.id
        return self.window


class GrpcLikeStream(FakeStream):
    """A ``FakeStream`` with grpclib's internals the direct path checks (``H2State``)."""

    def __init__(self, channel: FakeChannel) -> None:
        super().__init__(channel)
        self._stream = H2State()


@dataclass
class FakeChannel:
    behaviour: Behaviour = ok
    refuse: bool = False
    grpc_like: bool = False
    streams: list[FakeStream] = field(default_factory=list)
    sent: list[ApplyEventsStreamRequest] = field(default_factory=list)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        channel = self

        class Call:
            async def __aenter__(self) -> FakeStream:
                stream = GrpcLikeStream(channel) if channel.grpc_like else FakeStream(channel)
                channel.streams.append(stream)
                return stream

            async def __aexit__(self, *exc: object) -> None:
                channel.streams[-1].cancelled = True  # grpclib resets a stream left with an exception

        return Call()


@dataclass
class FakePool:
    channel: FakeChannel

    def stub(self, node_id: str) -> Any:
        return type("Stub", (), {"channel": self.channel})()


@dataclass
class Unary:
    calls: list[ApplyEventsRequest] = field(default_factory=list)

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        self.calls.append(request)
        return ApplyEventsReply(applied=1000)

    def catch_up(self, peer: str, request: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


def transport(channel: FakeChannel, unary: Unary | None = None, **kwargs: Any) -> StreamedEventsTransport:
    return StreamedEventsTransport(FakePool(channel), unary or Unary(), **kwargs)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_issue19_stream_matches_replies_by_id_in_any_order() -> None:
    held: list[ApplyEventsStreamRequest] = []
    channel = FakeChannel(behaviour=lambda m: held.append(m) and None)

    async def main() -> None:
        t = transport(channel)
        first = asyncio.create_task(t.apply_events("n2", req(1), timeout=5))
        second = asyncio.create_task(t.apply_events("n2", req(2), timeout=5))
        await settle()
        assert [m.id for m in held] == [1, 2] and all(m.timeout_ms > 0 for m in held)
        stream = channel.streams[0]
        stream.answer(ok(held[1]))  # the second answered first
        assert (await second).applied == 2
        assert not first.done()
        stream.answer(ok(held[0]))
        assert (await first).applied == 1
        assert len(channel.streams) == 1 and t.opened == 1  # both on the one stream
        await t.stop()

    asyncio.run(main())


def test_issue19_stream_reply_status_raises_the_unary_calls_error_and_the_stream_goes_on() -> None:
    def behaviour(m: ApplyEventsStreamRequest) -> ApplyEventsStreamReply:
        if sent(m).events[0] == b"e1":
            return ApplyEventsStreamReply(id=m.id, status=Status.DATA_LOSS.value, message="inline blob mismatch")
        return ok(m)

    channel = FakeChannel(behaviour=behaviour)

    async def main() -> None:
        t = transport(channel)
        with pytest.raises(GRPCError) as caught:
            await t.apply_events("n2", req(1), timeout=5)
        assert caught.value.status == Status.DATA_LOSS and caught.value.message == "inline blob mismatch"
        assert (await t.apply_events("n2", req(2), timeout=5)).applied == 2
        assert t.opened == 1
        await t.stop()

    asyncio.run(main())


def test_issue19_stream_request_past_its_deadline_times_out_and_its_late_reply_is_ignored() -> None:
    held: list[ApplyEventsStreamRequest] = []
    channel = FakeChannel(behaviour=lambda m: ok(m) if m.id != 1 else held.append(m) and None)

    async def main() -> None:
        t = transport(channel)
        with pytest.raises(TimeoutError):
            await t.apply_events("n2", req(1), timeout=0.05)
        channel.streams[0].answer(ok(held[0]))  # comes after all: nobody waits for it
        assert (await t.apply_events("n2", req(2), timeout=5)).applied == 2
        assert t.opened == 1  # the stream survived the timeout
        await t.stop()

    asyncio.run(main())


def test_issue19_broken_stream_fails_every_request_on_it_and_the_next_opens_a_new_one() -> None:
    channel = FakeChannel(behaviour=lambda m: None)

    async def main() -> None:
        t = transport(channel)
        calls = [asyncio.create_task(t.apply_events("n2", req(i), timeout=5)) for i in (1, 2, 3)]
        await settle()
        channel.streams[0].break_(ConnectionResetError("connection lost"))
        for call in calls:
            with pytest.raises(ConnectionResetError):
                await call
        assert channel.streams[0].cancelled
        channel.behaviour = ok
        assert (await t.apply_events("n2", req(4), timeout=5)).applied == 4
        assert t.opened == 2 and len(channel.streams) == 2
        await t.stop()

    asyncio.run(main())


def test_issue19_peer_refusing_the_stream_is_called_unary_until_the_retry_time() -> None:
    channel = FakeChannel(refuse=True)
    unary = Unary()
    now = [0.0]

    async def main() -> None:
        t = transport(channel, unary, clock=lambda: now[0])
        assert (await t.apply_events("n2", req(1), timeout=5)).applied == 1000  # refused, then sent unary
        assert (await t.apply_events("n2", req(2), timeout=5)).applied == 1000
        assert [r.events for r in unary.calls] == [[b"e1"], [b"e2"]] and t.opened == 1
        now[0] += UNARY_RETRY_S + 1  # the peer may have been upgraded: try the stream again
        channel.refuse = False
        assert (await t.apply_events("n2", req(3), timeout=5)).applied == 3
        assert len(unary.calls) == 2 and t.opened == 2
        await t.stop()

    asyncio.run(main())


def test_issue19_stream_error_after_replies_is_not_taken_for_a_refusal() -> None:
    """UNIMPLEMENTED once the peer answered on the stream is a failure of those requests, not an older peer."""
    channel = FakeChannel(behaviour=lambda m: ok(m) if m.id == 1 else None)
    unary = Unary()

    async def main() -> None:
        t = transport(channel, unary)
        assert (await t.apply_events("n2", req(1), timeout=5)).applied == 1
        call = asyncio.create_task(t.apply_events("n2", req(2), timeout=5))
        await settle()
        channel.streams[0].break_(GRPCError(Status.UNIMPLEMENTED, "gone"))
        with pytest.raises(GRPCError):
            await call
        assert unary.calls == []
        await t.stop()

    asyncio.run(main())


def test_issue19_stream_bounds_requests_in_flight() -> None:
    held: list[ApplyEventsStreamRequest] = []
    channel = FakeChannel(behaviour=lambda m: held.append(m) and None)

    async def main() -> None:
        t = transport(channel, limits=StreamLimits(in_flight=2))
        calls = [asyncio.create_task(t.apply_events("n2", req(i), timeout=5)) for i in (1, 2, 3)]
        await settle()
        assert len(channel.sent) == 2  # the third waits for a slot
        channel.streams[0].answer(ok(held[0]))
        await settle()
        assert len(channel.sent) == 3
        for m in held[1:]:
            channel.streams[0].answer(ok(m))
        assert [(await c).applied for c in calls] == [1, 2, 3]
        await t.stop()

    asyncio.run(main())


def test_issue19_stream_stop_fails_pending_requests_and_refuses_new_ones() -> None:
    channel = FakeChannel(behaviour=lambda m: None)

    async def main() -> None:
        t = transport(channel)
        call = asyncio.create_task(t.apply_events("n2", req(1), timeout=5))
        await settle()
        await t.stop()
        with pytest.raises(ConnectionAbortedError):
            await call
        with pytest.raises(ConnectionAbortedError):
            await t.apply_events("n2", req(2), timeout=5)

    asyncio.run(main())


# --- server side ----------------------------------------------------------------------------------------------------


@dataclass
class Handler:
    """An events area whose calls wait for ``gate`` (counting how many run at once)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    most: int = 0
    callers: list[str] = field(default_factory=list)

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        self.callers.append(caller)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            kind = request.events[0]
            if kind == b"hang":
                await asyncio.sleep(3600)
            await self.gate.wait()
            if kind == b"refuse":
                raise GRPCError(Status.INVALID_ARGUMENT, "does not decode")
            if kind == b"bug":
                raise RuntimeError("a bug")
            return ApplyEventsReply(applied=len(request.events))
        finally:
            self.running -= 1


async def feed(messages: list[ApplyEventsStreamRequest], release: asyncio.Event) -> AsyncIterator[
        ApplyEventsStreamRequest]:
    for message in messages:
        yield message
    await release.wait()  # the caller keeps its side open until told


def test_issue19_serve_stream_answers_each_request_with_its_id_and_status_within_its_bound() -> None:
    async def main() -> None:
        handler = Handler()
        release = asyncio.Event()
        messages = [ApplyEventsStreamRequest(id=i, request=ApplyEventsRequest(events=[kind]))
                    for i, kind in enumerate([b"a", b"refuse", b"bug", b"b", b"c"], 1)]
        messages.append(ApplyEventsStreamRequest(id=9, request=ApplyEventsRequest(events=[b"hang"]), timeout_ms=20))
        replies = serve_stream("node-1", handler, feed(messages, release), StreamLimits(in_flight=3))
        got: list[ApplyEventsStreamReply] = []

        async def collect() -> None:
            async for reply in replies:
                got.append(reply)

        task = asyncio.create_task(collect())
        await settle()
        assert handler.running == 3  # the bound: the rest not read yet
        handler.gate.set()
        for _ in range(200):
            if len(got) == len(messages):
                break
            await asyncio.sleep(0.01)
        assert not task.done()  # the caller's side is still open
        release.set()
        await asyncio.wait_for(task, 5)
        by_id = {r.id: r for r in got}
        assert sorted(by_id) == [1, 2, 3, 4, 5, 9]
        assert by_id[1].status == 0 and by_id[1].reply is not None and by_id[1].reply.applied == 1
        assert by_id[2].status == Status.INVALID_ARGUMENT.value and by_id[2].message == "does not decode"
        assert by_id[3].status == Status.UNKNOWN.value
        assert by_id[9].status == Status.DEADLINE_EXCEEDED.value
        assert handler.most <= 3 and set(handler.callers) == {"node-1"}

    asyncio.run(main())


u64 = st.integers(min_value=0, max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)


@given(events=st.lists(st.binary(max_size=64), max_size=5), blobs=st.sampled_from(list(BlobTransfer)),
       hinted=st.text(max_size=8), inline=st.lists(st.tuples(st.binary(min_size=32, max_size=32), u64,
                                                            st.binary(max_size=64)), max_size=3),
       settled=u64, ranges=st.lists(st.tuples(u64, u64), max_size=3), parts=st.lists(u32, max_size=3),
       peer_ranges=st.lists(st.tuples(st.text(max_size=8), u64, u64), max_size=3))
def test_issue19_packed_request_round_trips_every_field(events: list[bytes], blobs: BlobTransfer, hinted: str,
                                                        inline: list[tuple[bytes, int, bytes]], settled: int,
                                                        ranges: list[tuple[int, int]], parts: list[int],
                                                        peer_ranges: list[tuple[str, int, int]]) -> None:
    request = ApplyEventsRequest(events=events, blobs=blobs, hinted_for=hinted, settled_hlc=settled,
                                 inline_blobs=[InlineBlob(content_hash=h, size=n, data=d) for h, n, d in inline],
                                 journal_ranges=[JournalRange(after=a, through=t) for a, t in ranges], parts=parts,
                                 peer_ranges=[PeerRange(node=n, after=a, through=t) for n, a, t in peer_ranges])
    packed, claims = pack_request(request)
    assert bytes(unpack_request(packed, claims)) == bytes(request)
    # A receiver older than the claims reads ``packed`` alone (the envelope field it does not know is ignored):
    # the same request without them, and a request without them packs exactly as before (no claims field).
    older = unpack_request(packed)
    assert not older.parts and not older.peer_ranges and list(older.events) == list(request.events)
    assert bool(claims) == bool(parts or peer_ranges)


@given(applied=u32, had=u32, missing=st.lists(st.binary(min_size=32, max_size=32), max_size=3), hlc=u64, seq=u64,
       ranges=st.lists(st.tuples(u64, u64), max_size=3))
def test_issue19_packed_reply_round_trips_every_field(applied: int, had: int, missing: list[bytes], hlc: int,
                                                      seq: int, ranges: list[tuple[int, int]]) -> None:
    reply = ApplyEventsReply(applied=applied, already_had=had, missing_blobs=missing, hlc=hlc, journal_seq=seq,
                             journal_ranges=[JournalRange(after=a, through=t) for a, t in ranges])
    packed, claims = pack_reply(reply)
    assert bytes(unpack_reply(packed, claims)) == bytes(reply)
    older = unpack_reply(packed)  # an older caller: no ranges, nothing claimed
    assert not older.journal_ranges and older.applied == applied and bool(claims) == bool(ranges)


def test_issue19_serve_stream_answers_in_the_form_it_was_asked_and_refuses_a_bad_packed_request() -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate.set()
        release = asyncio.Event()
        release.set()
        request = ApplyEventsRequest(events=[b"a", b"b"])
        messages = [ApplyEventsStreamRequest(id=1, request=request),
                    ApplyEventsStreamRequest(id=2, packed=pack_request(request)[0]),
                    ApplyEventsStreamRequest(id=3, packed=b"\x93not a request")]
        got = {r.id: r async for r in serve_stream("node-1", handler, feed(messages, release))}
        assert got[1].reply is not None and got[1].reply.applied == 2 and not got[1].packed
        assert got[2].reply is None and unpack_reply(got[2].packed).applied == 2
        assert got[3].status == Status.INVALID_ARGUMENT.value and "does not decode" in got[3].message
        assert len(handler.callers) == 2  # the bad one never reached the events area

    asyncio.run(main())


def test_issue19_an_idle_open_lane_writes_from_the_callers_task_and_the_reply_resolves_its_future() -> None:
    """``send_now``: on an open stream that answered before, with nothing queued, the message is on the stream
    when ``send_now`` returns (no hop to the writer task); its reply and its deadline work as ``apply_events``'."""
    held: list[ApplyEventsStreamRequest] = []
    channel = FakeChannel(behaviour=lambda m: ok(m) if m.id == 1 else held.append(m) and None, grpc_like=True)

    async def main() -> None:
        t = transport(channel)
        assert t.send_now("n2", req(1), 5) is None  # no stream yet: the caller awaits apply_events
        assert (await t.apply_events("n2", req(1), timeout=5)).applied == 1  # opens it (via the writer task)
        lane = t._lanes["n2"]
        sent = t.send_now("n2", req(2), 5)
        assert sent is not None and [m.id for m in channel.sent] == [1, 2] and lane.direct == 1  # already written
        late = t.send_now("n2", req(3), 0.05)
        assert late is not None and lane.direct == 2
        channel.streams[0].answer(ok(held[0]))
        assert (await sent).applied == 2
        with pytest.raises(TimeoutError):  # the third is never answered: its deadline fails it
            await late
        assert lane._slots.free == StreamLimits().in_flight and not lane._pending  # every slot given back
        await t.stop()

    asyncio.run(main())


def test_issue19_the_direct_path_leaves_to_the_writer_what_it_cannot_write_in_one_go() -> None:
    """A paused transport, a message beyond the flow-control window or one frame, a slot short, or a writer with
    work: the message goes through the queue, in order, as before (the writer task is what no cancellation can cut
    mid-message)."""
    held: list[ApplyEventsStreamRequest] = []
    channel = FakeChannel(behaviour=lambda m: ok(m) if m.id == 1 else held.append(m) and None, grpc_like=True)

    async def main() -> None:
        t = transport(channel, limits=StreamLimits(in_flight=3))
        await t.apply_events("n2", req(1), timeout=5)
        lane, h2 = t._lanes["n2"], channel.streams[0]._stream  # type: ignore[attr-defined]
        h2.connection.write_ready.clear()
        paused = t.send_now("n2", req(2), 5)
        assert paused is not None and len(channel.sent) == 1  # queued, not written
        assert t.send_now("n2", req(3), 5) is None  # something is queued: the caller uses apply_events
        h2.connection.write_ready.set()
        await settle()
        assert [m.id for m in channel.sent] == [1, 2] and lane.direct == 0
        h2.window = 10
        small_window = t.send_now("n2", req(4), 5)
        assert small_window is not None and len(channel.sent) == 2
        await settle()
        assert [m.id for m in channel.sent] == [1, 2, 3] and lane.direct == 0
        h2.window = 65535
        third = t.send_now("n2", req(5), 5)
        assert third is not None and lane.direct == 1
        assert t.send_now("n2", req(6), 5) is None  # all three slots taken: the caller waits for one
        for m in held:
            channel.streams[0].answer(ok(m))
        assert [(await f).applied for f in (paused, small_window, third)] == [2, 4, 5]
        await t.stop()

    asyncio.run(main())


def test_issue19_a_direct_write_that_fails_ends_the_stream_and_fails_its_request() -> None:
    channel = FakeChannel(grpc_like=True)

    async def main() -> None:
        t = transport(channel)
        await t.apply_events("n2", req(1), timeout=5)
        stream = channel.streams[0]

        async def broken(message: ApplyEventsStreamRequest) -> None:
            raise ConnectionResetError("connection lost")

        stream.send_message = broken  # type: ignore[method-assign]
        sent = t.send_now("n2", req(2), 5)
        assert sent is not None
        with pytest.raises(ConnectionResetError):
            await sent
        assert (await t.apply_events("n2", req(3), timeout=5)).applied == 3 and t.opened == 2
        await t.stop()

    asyncio.run(main())

def test_issue19_serve_messages_writes_each_reply_from_its_handler_and_ends_when_a_write_fails() -> None:
    """The gRPC server's path (``serve_messages`` on grpclib's stream): each reply is written by ``send`` as soon as
    its request is handled, one write at a time; a write that fails (the stream broke) ends the call with that error
    and cancels the requests still being handled."""
    async def main() -> None:
        handler = Handler()
        release = asyncio.Event()
        writing = 0
        written: list[int] = []

        async def send(reply: ApplyEventsStreamReply) -> None:
            nonlocal writing
            writing += 1
            assert writing == 1  # serialised: one message at a time on the stream
            await asyncio.sleep(0)
            writing -= 1
            written.append(reply.id)
            if len(written) == 2:
                release.set()  # the caller's side ends once both replies are out

        messages = [ApplyEventsStreamRequest(id=i, request=ApplyEventsRequest(events=[b"x"])) for i in (1, 2)]
        handler.gate.set()
        await asyncio.wait_for(serve_messages("node-1", handler, feed(messages, release), send), 5)
        assert sorted(written) == [1, 2] and handler.callers == ["node-1", "node-1"]

        async def broken(reply: ApplyEventsStreamReply) -> None:
            raise ConnectionResetError("the stream broke")

        hanging = Handler()
        hanging.gate.set()
        messages = [ApplyEventsStreamRequest(id=1, request=ApplyEventsRequest(events=[b"x"])),
                    ApplyEventsStreamRequest(id=2, request=ApplyEventsRequest(events=[b"hang"]))]
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(serve_messages("node-1", hanging, feed(messages, asyncio.Event()), broken), 5)
        assert hanging.running == 0  # the hanging request was cancelled with the call

    asyncio.run(main())


def test_issue19_the_grpc_server_serves_apply_events_stream_with_serve_messages_and_the_rest_as_generated() -> None:
    from grpclib.const import Cardinality

    from s4.cluster.grpc_server import ClusterService
    from s4.cluster.wire.s4cluster.v1 import S4ClusterBase

    service = ClusterService.__new__(ClusterService)
    ours, generated = service.__mapping__(), S4ClusterBase.__mapping__(service)
    assert ours.keys() == generated.keys()
    stream = ours["/s4cluster.v1.S4Cluster/ApplyEventsStream"]
    assert stream.func == service._apply_events_stream and stream.cardinality == Cardinality.STREAM_STREAM
    assert (stream.request_type, stream.reply_type) == (ApplyEventsStreamRequest, ApplyEventsStreamReply)
    assert all(ours[k].func == generated[k].func for k in ours if k != "/s4cluster.v1.S4Cluster/ApplyEventsStream")
