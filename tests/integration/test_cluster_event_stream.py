"""ApplyEvents on one stream per peer over real sockets (cluster/event_stream.py through cluster/grpc_server.py):
two nodes in this process on 127.0.0.1 and 127.0.0.2. Many writes share one authenticated stream (the handler sees
the caller's node id); a caller with the wrong secret is refused; a peer that stops breaks the stream and, once it
is back, the next write opens a new one; a peer without the stream RPC (an older node: grpclib's trailers-only
UNIMPLEMENTED) is written to with unary ApplyEvents."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.cluster_pool import pool_configs

from s4.cluster.catch_up import GrpcEventsTransport
from s4.cluster.config import ClusterConfig
from s4.cluster.event_stream import APPLY_EVENTS_STREAM, StreamedEventsTransport
from s4.cluster.grpc_server import Authenticated, ClusterServer, Handlers, _ClosingServer
from s4.cluster.peers import PeerPool
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest

HOSTS = ("127.0.0.1", "127.0.0.2")


def configs() -> list[ClusterConfig]:
    return pool_configs(HOSTS, replication_factor=2, write_quorum=2, read_quorum=1)


class Local:
    def status(self) -> tuple[int, int]:
        return 1, 7

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


class Events:
    """The events area: records (caller, events) and answers with the number of events."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        self.calls.append((caller, [bytes(e) for e in request.events]))
        return ApplyEventsReply(applied=len(request.events), journal_seq=len(self.calls))


def test_issue19_writes_share_one_authenticated_stream_and_a_restarted_peer_gets_a_new_one() -> None:
    one, two = configs()

    async def main() -> None:
        events = Events()
        server = ClusterServer(two, Local(), Handlers(events=events))  # type: ignore[arg-type]
        await server.start()
        pool = PeerPool(one, timeout_s=2.0)
        transport = StreamedEventsTransport(pool, GrpcEventsTransport(pool))
        try:
            replies = await asyncio.gather(*(transport.apply_events(
                "node-2", ApplyEventsRequest(events=[b"e%d" % i] * i), timeout=5) for i in range(1, 21)))
            assert [r.applied for r in replies] == list(range(1, 21))
            assert transport.opened == 1 and len(events.calls) == 20
            assert {caller for caller, _ in events.calls} == {"node-1"}

            await asyncio.wait_for(server.stop(), 5)
            with pytest.raises((OSError, GRPCError, asyncio.TimeoutError)):
                await transport.apply_events("node-2", ApplyEventsRequest(events=[b"x"]), timeout=2)
            server = ClusterServer(two, Local(), Handlers(events=events))  # type: ignore[arg-type]
            await server.start()
            for _ in range(50):  # the channel reconnects; bounded
                try:
                    reply = await transport.apply_events("node-2", ApplyEventsRequest(events=[b"y"]), timeout=2)
                    break
                except (TimeoutError, OSError, GRPCError):
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("no ApplyEvents through the restarted peer")
            assert reply.applied == 1 and transport.opened >= 2
        finally:
            await transport.stop()
            pool.close()
            await server.stop()

    asyncio.run(main())


def test_issue19_stream_from_a_caller_without_the_secret_is_refused() -> None:
    one, two = configs()
    intruder = dataclasses.replace(one, key=b"x" * 32)

    async def main() -> None:
        events = Events()
        server = ClusterServer(two, Local(), Handlers(events=events))  # type: ignore[arg-type]
        await server.start()
        pool = PeerPool(intruder, timeout_s=2.0)
        transport = StreamedEventsTransport(pool, GrpcEventsTransport(pool))
        try:
            with pytest.raises(GRPCError) as caught:
                await transport.apply_events("node-2", ApplyEventsRequest(events=[b"e"]), timeout=5)
            assert caught.value.status == Status.UNAUTHENTICATED
            assert events.calls == []
        finally:
            await transport.stop()
            pool.close()
            await server.stop()

    asyncio.run(main())


class WithoutStream:
    """An older node's service: the same handlers without ApplyEventsStream."""

    def __init__(self, inner: Authenticated) -> None:
        self.inner = inner

    def __mapping__(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner.__mapping__().items() if k != APPLY_EVENTS_STREAM}


def test_issue19_peer_without_the_stream_rpc_is_written_to_with_unary_calls() -> None:
    one, two = configs()

    async def main() -> None:
        events = Events()
        cluster = ClusterServer(two, Local(), Handlers(events=events))  # type: ignore[arg-type]
        server = _ClosingServer([WithoutStream(cluster._authenticated)])
        await server.start(two.grpc_addr.host, two.grpc_addr.port)
        pool = PeerPool(one, timeout_s=2.0)
        transport = StreamedEventsTransport(pool, GrpcEventsTransport(pool))
        try:
            for i in range(3):
                reply = await transport.apply_events("node-2", ApplyEventsRequest(events=[b"e%d" % i]), timeout=5)
                assert reply.applied == 1
            assert [e for _, e in events.calls] == [[b"e0"], [b"e1"], [b"e2"]]  # each once: unary after the refusal
            assert transport.opened == 1  # not tried again on every write
        finally:
            await transport.stop()
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
