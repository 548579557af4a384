"""Issue 19: bucket create and delete are linearizable across the pool, over the real wire.

Three nodes in this test process, each a grpclib ClusterServer on its own loopback address (127.0.0.1/.2/.3, real
sockets, signed calls), each with a durable LMDB acceptor store in tmp_path and a BucketRegister whose proposer
calls its own acceptor in process and the two others over gRPC. Every operation is recorded (a 503 as an operation
without a response: it may or may not have taken effect) and the history is judged by the Wing-Gong checker."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any

import pytest
from helpers.linearizability import Op, check

from s4.cluster.buckets_register import KEY_PREFIX, CasNode
from s4.cluster.cas_rpc import ballot_from_wire, ballot_to_wire
from s4.cluster.caspaxos import Ballot, BucketRecord, BucketResult, BucketStatus, Outcome, create_if_absent
from s4.cluster.config import ClusterConfig, build_cluster_config
from s4.cluster.grpc_server import ClusterServer, Handlers
from s4.cluster.peers import PeerPool
from s4.cluster.wire.s4cluster.v1 import CasPrepareRequest
from s4.engine.errors import ServiceUnavailableError

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
SECRET = "cas-test-shared-secret"
DEADLINE_S = 120


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_config(pool: str, i: int) -> ClusterConfig:
    entry = pool.split(",")[i]
    return build_cluster_config(dict(
        mode="cluster", cluster_name="cas", node_id=f"node-{i + 1}", node_grpc_addr=entry.partition(":")[2],
        node_http_addr=f"{HOSTS[i]}:9000", pool_name="pool-1", pool_nodes=pool, replication_factor=3,
        write_quorum=2, read_quorum=2, cluster_secret=SECRET, max_clock_offset_s=60.0))


class Quiet:
    """LocalStatus for Ping (unused here)."""

    def status(self) -> tuple[int, int]:
        return 0, 0

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


class Node:
    """One node: its CAS share (store, acceptor, register) and the gRPC server that exposes the acceptor."""

    def __init__(self, config: ClusterConfig, data_dir: Path, **options: Any) -> None:
        self.config, self.data_dir, self.options = config, data_dir, options
        self.peers = PeerPool(config)
        self.pool: list[Node] = []
        self.cas = CasNode.open(config, data_dir, self.peers, **options)
        self.server: ClusterServer | None = None

    @property
    def id(self) -> str:
        return self.config.node_id

    async def serve(self) -> None:
        self.server = ClusterServer(self.config, Quiet(), Handlers(cas=self.cas.service))
        await self.server.start()

    async def stop_serving(self) -> None:
        """The node goes away: its server stops, and its peers' connections to it drop, as when its process dies.
        (grpclib's Server.close() stops accepting but keeps serving connections already open, so the peers' kept
        channels are closed here; their next call dials a closed port and is refused.)"""
        if self.server is not None:
            await self.server.stop()
            self.server = None
        for other in self.pool:
            channel = other.peers._channels.pop(self.id, None)
            other.peers._stubs.pop(self.id, None)
            if channel is not None:
                channel.close()

    async def restart(self) -> None:
        """A process restart: server down, store closed, reopened (new proposer incarnation), server up."""
        await self.stop_serving()
        self.cas.close()
        self.cas = CasNode.open(self.config, self.data_dir, self.peers, **self.options)
        await self.serve()

    async def close(self) -> None:
        await self.stop_serving()
        self.peers.close()
        self.cas.close()


async def start_pool(tmp_path: Path, **options: Any) -> list[Node]:
    pool = ",".join(f"node-{i + 1}:{host}:{free_port(host)}" for i, host in enumerate(HOSTS))
    nodes = [Node(node_config(pool, i), tmp_path / f"n{i + 1}", **options) for i in range(len(HOSTS))]
    for node in nodes:
        node.pool = nodes
        await node.serve()
    return nodes


def run(tmp_path: Path, body: Callable[[list[Node]], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        nodes = await start_pool(tmp_path, **options)
        try:
            await asyncio.wait_for(body(nodes), DEADLINE_S)
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


# --- the recorded history and its sequential model ---------------------------------------------------------------


def model_step(state: Hashable, inp: Hashable) -> tuple[Hashable, Hashable]:
    assert state is None or isinstance(state, BucketRecord)
    assert isinstance(inp, tuple)
    if inp[0] == "read":
        return state, state
    decided = create_if_absent(inp[1], inp[2])(state)
    return decided.value, decided.outcome


class History:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.events = itertools.count()

    async def create(self, node: Node, name: str, owner: str, token: str) -> BucketResult | None:
        """None: 503 (the outcome is unknown to the client; recorded without a response)."""
        inp = ("create", owner, token)
        call = next(self.events)
        try:
            result = await node.cas.register.create(name, owner, token)
        except ServiceUnavailableError as exc:
            assert exc.code.status == 503 and exc.headers["Retry-After"]
            self.ops.append(Op(name, call, None, inp, None, node.id))
            return None
        self.ops.append(Op(name, call, next(self.events), inp, result, node.id))
        return result

    async def read(self, node: Node, name: str) -> BucketRecord | None:
        call = next(self.events)
        record = await node.cas.register.read(name)
        self.ops.append(Op(name, call, next(self.events), ("read",), record, node.id))
        return record

    def assert_linearizable(self) -> None:
        verdict = check(self.ops, None, model_step)
        assert verdict, f"not linearizable on {verdict.key!r}: {verdict.ops}"


# --- the tests -----------------------------------------------------------------------------------------------------


def test_issue19_fifty_rounds_of_concurrent_create_through_three_nodes_have_one_winner_each(tmp_path: Path) -> None:
    history = History()
    rng = random.Random(19)

    async def body(nodes: list[Node]) -> None:
        for r in range(50):
            name = f"round-{r}"
            results = await asyncio.gather(*(history.create(n, name, n.id, f"{name}/{n.id}") for n in nodes))
            won = [x for x in results if x is not None and x.outcome is Outcome.CREATED]
            lost = [x for x in results if x is not None and x.outcome is Outcome.ALREADY_EXISTS]
            assert len(won) == 1 and len(lost) == 2, results
            assert won[0].record is not None and won[0].record.status is BucketStatus.LIVE
            assert all(x.record == won[0].record for x in lost)  # the losers see the winner's record
            assert await history.read(rng.choice(nodes), name) == won[0].record

    run(tmp_path, body, max_attempts=20)
    history.assert_linearizable()


def test_issue19_create_survives_one_node_down_and_refuses_with_503_when_two_are(tmp_path: Path) -> None:
    history = History()

    async def body(nodes: list[Node]) -> None:
        n1, n2, n3 = nodes
        await n3.stop_serving()
        results = await asyncio.gather(history.create(n1, "one-down", "node-1", "t1"),
                                       history.create(n2, "one-down", "node-2", "t2"))
        assert sorted(x.outcome for x in results if x is not None) == [Outcome.ALREADY_EXISTS, Outcome.CREATED]
        # Node 3's proposer still reaches the two others (only its server is down): a majority, so it commits.
        solo = await history.create(n3, "solo", "node-3", "t3")
        assert solo is not None and solo.outcome is Outcome.CREATED

        await n2.stop_serving()
        assert await history.create(n1, "two-down", "node-1", "t4") is None  # a 503, never a 200
        with pytest.raises(ServiceUnavailableError):
            await n1.cas.register.read("two-down")

        await n2.serve()
        await n3.serve()
        # Nothing half-created: the refused create left no value that a read could find...
        assert await history.read(n2, "two-down") is None
        # ...and a retry of the same request gives a definite outcome, on any node, any number of times.
        again = await history.create(n3, "two-down", "node-1", "t4")
        assert again is not None and again.outcome is Outcome.CREATED
        assert await history.create(n1, "two-down", "node-1", "t4") == again
        # The node that was down learns the values committed without it (its prepare meets a majority).
        winner = next(x for x in results if x is not None and x.outcome is Outcome.CREATED)
        assert await history.read(n3, "one-down") == winner.record
        assert await history.read(n3, "solo") == solo.record

    run(tmp_path, body, max_attempts=3, phase_timeout=1.0)
    history.assert_linearizable()


def test_issue19_a_restarted_node_keeps_its_promises_and_accepted_values(tmp_path: Path) -> None:
    history = History()

    async def body(nodes: list[Node]) -> None:
        n1, n2, n3 = nodes
        created = await history.create(n1, "kept", "node-1", "t1")
        assert created is not None and created.outcome is Outcome.CREATED
        key = KEY_PREFIX + "kept"
        before = n2.cas.store.load_sync(key)
        assert before.value is not None and before.promised.node == "node-1"
        incarnation = n2.cas.register.proposer.incarnation

        await n2.restart()
        assert n2.cas.store.load_sync(key) == before
        assert n2.cas.register.proposer.incarnation > incarnation
        # Over the wire: a ballot below the promise made before the restart is refused, naming that promise.
        low = Ballot(before.promised.counter - 1 if before.promised.counter else 0, "node-1", 0)
        reply = await n1.peers.stub("node-2").cas_prepare(CasPrepareRequest(key=key, ballot=ballot_to_wire(low)))
        assert not reply.promised and ballot_from_wire(reply.conflict) == before.promised
        # The restarted proposer (counter back at zero) gets past the old ballots and sees the bucket.
        lost = await history.create(n2, "kept", "node-2", "t2")
        assert lost is not None and lost.outcome is Outcome.ALREADY_EXISTS and lost.record == created.record

        for node in nodes:  # the whole pool restarts: the register's state is all on disk
            await node.restart()
        assert await history.read(n3, "kept") == created.record

    run(tmp_path, body)
    history.assert_linearizable()


def test_issue19_a_silent_peer_is_a_failed_vote_not_an_error(tmp_path: Path) -> None:
    """Node 3's address accepts TCP connections but never speaks gRPC: its votes time out. With nodes 1 and 2 the
    register commits; with node 2 down too, the deadline makes it a 503 (nothing escapes as another error)."""
    history = History()

    async def body(nodes: list[Node]) -> None:
        n1, n2, n3 = nodes
        await n3.stop_serving()
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind((n3.config.grpc_addr.host, n3.config.grpc_addr.port))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
        try:
            done = await history.create(n1, "silent", "node-1", "s1")
            assert done is not None and done.outcome is Outcome.CREATED
            await n2.stop_serving()
            assert await history.create(n1, "silent-2", "node-1", "s2") is None
        finally:
            silent.close()

    run(tmp_path, body, max_attempts=2, phase_timeout=0.5)
    history.assert_linearizable()


def test_issue19_two_step_delete_over_the_wire(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        n1, n2, n3 = nodes
        created = await n1.cas.register.create("gone", "alice", "c1")
        assert created.outcome is Outcome.CREATED

        async def not_empty(record: BucketRecord) -> bool:
            # While the delete checks emptiness the name is fenced: a create elsewhere sees it taken.
            assert record.status is BucketStatus.DELETING
            fenced = await n3.cas.register.create("gone", "bob", "c2")
            assert fenced.outcome is Outcome.ALREADY_EXISTS
            return False

        kept = await n2.cas.register.delete("gone", "d1", not_empty)
        assert kept.outcome is Outcome.RESTORED and kept.record is not None
        assert kept.record.status is BucketStatus.LIVE

        async def empty(record: BucketRecord) -> bool:
            return True

        gone = await n2.cas.register.delete("gone", "d2", empty)
        assert gone.outcome is Outcome.DELETED
        assert (await n3.cas.register.delete("gone", "d3", empty)).outcome is Outcome.NO_SUCH_BUCKET
        again = await n3.cas.register.create("gone", "bob", "c3")
        assert again.outcome is Outcome.CREATED and again.record is not None
        assert (again.record.owner, again.record.incarnation) == ("bob", 2)
        # A delete step of the old incarnation cannot touch the new bucket.
        stale = await n1.cas.register.finish_delete("gone", 1, "d2")
        assert stale.outcome is Outcome.NO_SUCH_BUCKET and await n1.cas.register.read("gone") == again.record

    run(tmp_path, body)
