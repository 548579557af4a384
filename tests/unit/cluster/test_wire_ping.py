"""Issue 19: the authenticated gRPC wire, end to end in one process: two nodes' grpclib servers on 127.0.0.1 and
127.0.0.2, and their client pools. Ping works with the shared secret; a wrong secret, another cluster, a stale
clock, an unsigned caller and a node outside the pool (but for its Ping) are refused with UNAUTHENTICATED, logged,
and the server keeps serving. RPCs without a replication handler answer UNIMPLEMENTED; with one they reach it with
the caller's id."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from s4.cluster.config import ClusterConfig, build_cluster_config
from s4.cluster.grpc_server import ClusterServer, GrpcBindError, Handlers
from s4.cluster.peers import PeerMismatch, PeerPool, source_address
from s4.cluster.wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    BlobHeader,
    CasPrepareRequest,
    PingRequest,
    PutBlobChunk,
    PutBlobReply,
    ReadKeysRequest,
    S4ClusterStub,
)

SECRET = "a-long-shared-secret"
HOSTS = ("127.0.0.1", "127.0.0.2")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pool_nodes() -> str:
    return ",".join(f"node-{i + 1}:{host}:{free_port(host)}" for i, host in enumerate(HOSTS))


def config(pool: str, node: int, **overrides: Any) -> ClusterConfig:
    entry = pool.split(",")[node - 1]
    values: dict[str, Any] = dict(mode="cluster", cluster_name="prod", node_id=f"node-{node}",
                                  node_grpc_addr=entry.partition(":")[2], node_http_addr=f"127.0.0.{node}:9000",
                                  pool_name="pool-1", pool_nodes=pool, replication_factor=2, write_quorum=2,
                                  read_quorum=1, cluster_secret=SECRET, max_clock_offset_s=60.0)
    values.update(overrides)
    return build_cluster_config(values)


class Status_:
    """A LocalStatus recording the peers that pinged."""

    def __init__(self, hlc: int, seq: int) -> None:
        self.hlc, self.seq = hlc, seq
        self.seen: list[tuple[str, int, int]] = []
        self.http_addrs: list[str] = []

    def status(self) -> tuple[int, int]:
        return self.hlc, self.seq

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        self.seen.append((node_id, hlc, journal_seq))
        self.http_addrs.append(http_addr)


def run_with_server(server_config: ClusterConfig, body: Callable[[ClusterServer, Status_], Awaitable[None]],
                    handlers: Handlers | None = None) -> Status_:
    local = Status_(hlc=777, seq=42)

    async def main() -> None:
        server = ClusterServer(server_config, local, handlers)
        await server.start()
        try:
            await asyncio.wait_for(body(server, local), timeout=60)
        finally:
            await server.stop()

    asyncio.run(main())
    return local


def test_issue19_ping_between_two_nodes_with_the_shared_secret() -> None:
    pool = pool_nodes()
    one, two = config(pool, 1), config(pool, 2)
    seen: dict[str, Any] = {}

    async def main() -> None:
        locals_ = [Status_(hlc=100, seq=1), Status_(hlc=200, seq=2)]
        servers = [ClusterServer(one, locals_[0]), ClusterServer(two, locals_[1])]
        for s in servers:
            await s.start()
        try:
            async with PeerPool(one) as p1, PeerPool(two) as p2:
                seen["1->2"] = await p1.ping("node-2", hlc=11, journal_seq=5)
                seen["2->1"] = await p2.ping("node-1", hlc=22, journal_seq=6)
                seen["again"] = await p1.ping("node-2", hlc=12, journal_seq=7)  # the same channel, reused
                assert len(p1._channels) == 1
        finally:
            for s in servers:
                await s.stop()
        seen["locals"] = [x.seen for x in locals_]
        seen["http"] = [x.http_addrs for x in locals_]

    asyncio.run(main())
    r12, r21 = seen["1->2"], seen["2->1"]
    assert (r12.node_id, r12.cluster, r12.pool, r12.hlc, r12.journal_seq) == ("node-2", "prod", "pool-1", 200, 2)
    assert (r21.node_id, r21.hlc, r21.journal_seq) == ("node-1", 100, 1)
    assert seen["locals"] == [[("node-2", 22, 6)], [("node-1", 11, 5), ("node-1", 12, 7)]]
    # each side tells the other the S3 address it serves (the health API shows it)
    assert (r12.http_addr, r21.http_addr) == ("127.0.0.2:9000", "127.0.0.1:9000")
    assert seen["http"] == [["127.0.0.2:9000"], ["127.0.0.1:9000", "127.0.0.1:9000"]]


async def _refused(pool: PeerPool, node: str = "node-2") -> GRPCError:
    with pytest.raises(GRPCError) as exc:
        await pool.ping(node, hlc=1, journal_seq=1)
    return exc.value


@pytest.mark.parametrize(("caller", "match"), [
    (dict(cluster_secret="another-long-secret"), "MAC does not match this node's key"),
    (dict(cluster_secret=None, secret_key="the-s3-secret-key"), "MAC does not match this node's key"),
    (dict(cluster_name="staging"), "belongs to cluster 'staging', this node to 'prod'"),
])
def test_issue19_wrong_secret_or_cluster_is_refused_and_logged(caller: dict[str, Any], match: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    pool = pool_nodes()
    server_config = config(pool, 2)

    async def body(server: ClusterServer, local: Status_) -> None:
        async with PeerPool(config(pool, 1, **caller)) as bad:
            error = await _refused(bad)
            assert error.status == Status.UNAUTHENTICATED and match in str(error.message)
            await _refused(bad)  # logged once, refused every time
        async with PeerPool(config(pool, 1)) as good:  # the server still serves
            assert (await good.ping("node-2", hlc=1, journal_seq=1)).node_id == "node-2"

    with caplog.at_level(logging.WARNING, logger="s4.cluster"):
        local = run_with_server(server_config, body)
    assert local.seen == [("node-1", 1, 1)]
    refusals = [r.getMessage() for r in caplog.records if "refused inter-node call" in r.getMessage()]
    assert len(refusals) == 1 and "/s4cluster.v1.S4Cluster/Ping from ('127.0.0.1'" in refusals[0]
    assert match in refusals[0]


@pytest.mark.parametrize(("skew_s", "match"), [(-120.0, "clock is -120"), (120.0, "clock is +120")])
def test_issue19_timestamp_outside_max_clock_offset_is_refused(skew_s: float, match: str) -> None:
    pool = pool_nodes()

    async def body(server: ClusterServer, local: Status_) -> None:
        async with PeerPool(config(pool, 1), clock=lambda: time.time() + skew_s) as skewed:
            error = await _refused(skewed)
            assert error.status == Status.UNAUTHENTICATED and match in str(error.message)
            assert "S4_MAX_CLOCK_OFFSET=60s" in str(error.message)

    assert run_with_server(config(pool, 2), body).seen == []


def test_issue19_unsigned_caller_and_node_outside_the_pool_are_refused() -> None:
    pool = pool_nodes()
    host, port = pool.split(",")[1].split(":")[1:]

    async def body(server: ClusterServer, local: Status_) -> None:
        channel = Channel(host, int(port))
        try:
            with pytest.raises(GRPCError) as exc:
                await S4ClusterStub(channel, timeout=10).ping(PingRequest(node_id="node-1", cluster="prod"))
            assert exc.value.status == Status.UNAUTHENTICATED
            assert "no S4 cluster credentials" in str(exc.value.message)
        finally:
            channel.close()
        # a third node holding the key, in its own idea of the pool but not in the server's: refused but for Ping
        # (a guest method, for gateways: issue 20), which is answered and records nothing of the caller
        wider = pool + f",node-3:127.0.0.3:{free_port('127.0.0.3')}"
        outsider = config(wider, 3)
        async with PeerPool(outsider) as p3:
            assert (await p3.ping("node-2", hlc=1, journal_seq=1)).node_id == "node-2"
            with pytest.raises(GRPCError) as refused:
                await p3.stub("node-2").read_keys(ReadKeysRequest())
            assert refused.value.status == Status.UNAUTHENTICATED
            assert "not in this node's pool" in str(refused.value.message)

    assert run_with_server(config(pool, 2), body).seen == []


def test_issue19_ping_answered_by_the_wrong_node_is_detected() -> None:
    """A pool entry pointing at another node's address: the reply names that node, and the caller says so."""
    pool = pool_nodes()
    swapped = ",".join(reversed([e.partition(":")[2] for e in pool.split(",")]))
    entries = [f"node-{i + 1}:{addr}" for i, addr in enumerate(swapped.split(","))]

    async def body(server: ClusterServer, local: Status_) -> None:
        # the caller (node-2 of a pool with the two addresses swapped) dials "node-1" at the address where the
        # real node-2 listens
        caller = config(",".join(entries), 2, node_grpc_addr=entries[1].partition(":")[2])
        async with PeerPool(caller) as p:
            with pytest.raises(PeerMismatch, match="answered as node 'node-2'.*expected 'node-1'"):
                await p.ping("node-1", hlc=1, journal_seq=1)

    run_with_server(config(pool, 2), body)


def test_issue19_replication_rpcs_without_a_handler_are_unimplemented() -> None:
    pool = pool_nodes()

    async def body(server: ClusterServer, local: Status_) -> None:
        async with PeerPool(config(pool, 1)) as p1:
            with pytest.raises(GRPCError) as exc:
                await p1.stub("node-2").apply_events(ApplyEventsRequest(events=[b"x"]))
            assert exc.value.status == Status.UNIMPLEMENTED and "does not serve replication" in str(exc.value.message)

    run_with_server(config(pool, 2), body)


class RecordingHandler:
    """Stands in for the replication code: records what reached it and with which caller."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        self.calls.append(("apply_events", caller, list(request.events)))
        return ApplyEventsReply(applied=len(request.events), hlc=9, journal_seq=3)

    async def put_blob(self, caller: str, header: BlobHeader, data: AsyncIterator[bytes]) -> PutBlobReply:
        chunks = [chunk async for chunk in data]
        self.calls.append(("put_blob", caller, (header.content_hash, header.size, chunks)))
        return PutBlobReply(stored=True)


def test_issue19_replication_rpcs_reach_the_handler_with_the_authenticated_caller() -> None:
    pool = pool_nodes()
    handler = RecordingHandler()

    async def body(server: ClusterServer, local: Status_) -> None:
        async with PeerPool(config(pool, 1)) as p1:
            stub = p1.stub("node-2")
            reply = await stub.apply_events(ApplyEventsRequest(events=[b"e1", b"e2"]))
            assert (reply.applied, reply.hlc, reply.journal_seq) == (2, 9, 3)
            chunks = [PutBlobChunk(header=BlobHeader(content_hash=b"h" * 32, size=6)), PutBlobChunk(data=b"abc"),
                      PutBlobChunk(data=b"def")]
            assert (await stub.put_blob(chunks)).stored
            with pytest.raises(GRPCError) as exc:  # framing: the header comes first
                await stub.put_blob([PutBlobChunk(data=b"abc")])
            assert exc.value.status == Status.INVALID_ARGUMENT and "first message must be the BlobHeader" in str(
                exc.value.message)

    run_with_server(config(pool, 2), body, Handlers(events=handler, blobs=handler))
    assert handler.calls == [("apply_events", "node-1", [b"e1", b"e2"]),
                             ("put_blob", "node-1", (b"h" * 32, 6, [b"abc", b"def"]))]


def test_issue19_closed_pool_refuses_new_calls() -> None:
    pool = PeerPool(config(pool_nodes(), 1))
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.stub("node-2")
    with pytest.raises(KeyError, match="not a peer"):
        PeerPool(config(pool_nodes(), 1)).stub("node-1")  # itself is no peer


def test_issue19_each_replication_area_is_served_only_when_given() -> None:
    """The handler ports are per area: a node serving events and blobs answers UNIMPLEMENTED for reads and cas,
    naming the area."""
    pool = pool_nodes()
    handler = RecordingHandler()

    async def body(server: ClusterServer, local: Status_) -> None:
        async with PeerPool(config(pool, 1)) as p1:
            stub = p1.stub("node-2")
            assert (await stub.apply_events(ApplyEventsRequest(events=[b"e"]))).applied == 1
            for call, area in ((stub.read_keys(ReadKeysRequest()), "reads"),
                               (stub.cas_prepare(CasPrepareRequest()), "cas")):
                with pytest.raises(GRPCError) as exc:
                    await call
                assert exc.value.status == Status.UNIMPLEMENTED and f"({area})" in str(exc.value.message)

    run_with_server(config(pool, 2), body, Handlers(events=handler, blobs=handler))
    assert [c[0] for c in handler.calls] == ["apply_events"]


def test_issue19_grpc_address_in_use_names_the_setting() -> None:
    pool = pool_nodes()
    host, port = pool.split(",")[1].split(":")[1:]

    async def main() -> None:
        with socket.socket() as holder:
            holder.bind((host, int(port)))
            holder.listen()
            server = ClusterServer(config(pool, 2), Status_(hlc=1, seq=1))
            with pytest.raises(GrpcBindError, match=f"S4_NODE_GRPC_ADDR={host}:{port}: cannot listen"):
                await server.start()
            await server.stop()  # nothing started: nothing to stop, no error

    asyncio.run(main())


def test_issue20_calls_to_a_peer_leave_from_this_nodes_own_pool_address() -> None:
    """On loopback the kernel picks 127.0.0.1 as the source of every connection, so node-2's calls looked like
    node-1's to a peer, its logs and a firewall rule; they now leave from node-2's own pool address."""
    seen: list[str] = []

    async def main() -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("peername")[0])
            writer.close()

        listener = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = PeerPool(config(f"node-1:127.0.0.1:{port},node-2:127.0.0.2:{free_port('127.0.0.2')}", 2))
        with pytest.raises((GRPCError, StreamTerminatedError, OSError, asyncio.TimeoutError)):
            await pool.ping("node-1", hlc=1, journal_seq=0, timeout_s=2)
        pool.close()
        listener.close()
        await listener.wait_closed()

    asyncio.run(main())
    assert seen and set(seen) == {"127.0.0.2"}


@pytest.mark.parametrize(("own", "peer", "expected"), [
    ("127.0.0.2", "127.0.0.1", "127.0.0.2"), ("10.0.0.5", "10.0.0.6", "10.0.0.5"), ("::1", "::1", "::1"),
    ("0.0.0.0", "127.0.0.1", None), ("node-2.local", "127.0.0.1", None), ("127.0.0.2", "10.0.0.6", None),
    ("10.0.0.5", "fd00::6", None)])
def test_issue20_source_address_only_for_a_literal_address_of_the_same_family_and_scope(
        own: str, peer: str, expected: str | None) -> None:
    assert source_address(own, peer) == expected
