"""Issue 20, pools: the bucket registry is cluster-wide (docs/architecture/pools.md, "The cluster-wide bucket
registry"). Two pools in this test process, each node a real grpclib ClusterServer on its own loopback address with
a durable acceptor store: pool-a (the first by name: the registry) of two nodes, pool-b of one. pool-b's node
proposes to pool-a's acceptors; a name taken through one pool is taken for the other; pool-a admits only the name
registers from pool-b, and pool-b (no registry) admits no CAS call from pool-a."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from test_cluster_cas import SECRET, Quiet, free_port

from s4.cluster import cas_rpc
from s4.cluster.buckets_register import CasNode
from s4.cluster.cas_rpc import ballot_to_wire
from s4.cluster.caspaxos import Ballot, BucketStatus, Outcome
from s4.cluster.config import ClusterConfig, build_cluster_config
from s4.cluster.grpc_server import ClusterServer, Handlers
from s4.cluster.peers import PeerPool
from s4.cluster.wire.s4cluster.v1 import CasPrepareRequest

DEADLINE_S = 60
HOSTS = {"node-1": "127.0.0.1", "node-2": "127.0.0.2", "node-3": "127.0.0.3"}
POOL_OF = {"node-1": "pool-a", "node-2": "pool-a", "node-3": "pool-b"}


def configs() -> dict[str, ClusterConfig]:
    entries = {node: f"{node}:{host}:{free_port(host)}" for node, host in HOSTS.items()}
    pools = ";".join(f"{pool}={','.join(e for n, e in entries.items() if POOL_OF[n] == pool)}"
                     for pool in ("pool-b", "pool-a"))
    return {node: build_cluster_config(dict(
        mode="cluster", cluster_name="pools", node_id=node, node_grpc_addr=entries[node].partition(":")[2],
        node_http_addr=f"{HOSTS[node]}:9000", pool_name=POOL_OF[node], cluster_pools=pools, replication_factor=1,
        write_quorum=1, read_quorum=1, cluster_secret=SECRET, max_clock_offset_s=60.0)) for node in HOSTS}


def test_issue20_a_node_of_another_pool_proposes_to_the_registry_pool(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cas_rpc, "MAX_LIST", 1)  # every CasList answer a page of one: the listing pages through
    async def main() -> None:
        nodes: dict[str, tuple[PeerPool, CasNode, ClusterServer]] = {}
        try:
            for node, config in configs().items():
                peers = PeerPool(config)
                cas = CasNode.open(config, tmp_path / node, peers, phase_timeout=2.0)
                server = ClusterServer(config, Quiet(), Handlers(cas=cas.service))
                nodes[node] = (peers, cas, server)
                await server.start()
            await asyncio.wait_for(body(nodes), DEADLINE_S)
        finally:
            for peers, cas, server in nodes.values():
                await server.stop()
                peers.close()
                cas.close()

    async def body(nodes: dict[str, tuple[PeerPool, CasNode, ClusterServer]]) -> None:
        reg_a, reg_b = nodes["node-1"][1].register, nodes["node-3"][1].register
        created = await reg_b.create("photos", "alice", "t1")
        assert created.outcome is Outcome.CREATED and created.record is not None
        assert created.record.pool == "pool-b" and created.record.created_ms > 0
        taken = await reg_a.create("photos", "bob", "t2")  # the name is taken for the whole cluster
        assert taken.outcome is Outcome.ALREADY_EXISTS and taken.record == created.record
        assert await nodes["node-2"][1].names.pool_of("photos", "pool-a") == "pool-b"
        assert (await reg_a.create("logs", "bob", "t3")).record.pool == "pool-a"  # type: ignore[union-attr]
        assert await nodes["node-3"][1].names.pool_of("logs", "pool-a") == "pool-a"
        assert await nodes["node-3"][1].names.pool_of("nothing", "pool-a") is None
        # the registry lives on pool-a's acceptors only: pool-b's own store holds no name
        assert not [k for k in nodes["node-3"][1].store.keys() if k.startswith("bucket/")]
        assert "bucket/photos" in nodes["node-1"][1].store.keys()
        # the registry lists every pool's names from a majority of its acceptors, in pages, from any pool
        listed = await nodes["node-3"][1].names.list_buckets("pool-a")
        assert [(b["name"], b["pool"]) for b in listed] == [("logs", "pool-a"), ("photos", "pool-b")]
        assert all(b["created_ms"] > 0 for b in listed)
        assert await nodes["node-2"][1].names.list_buckets("pool-a") == listed
        deleted = await reg_b.delete("photos", "t4", lambda record: _true())
        assert deleted.outcome is Outcome.DELETED and deleted.record.status is BucketStatus.DELETED  # type: ignore
        assert [b["name"] for b in await nodes["node-3"][1].names.list_buckets("pool-a")] == ["logs"]

        # pool-a admits pool-b's node for names only, never for its own registers (job leases)
        stub_a = nodes["node-3"][1].registry_peers.stub("node-1")  # type: ignore[union-attr]
        ballot = ballot_to_wire(Ballot(10**9, "node-3", 1))
        with pytest.raises(GRPCError) as refused:
            await stub_a.cas_prepare(CasPrepareRequest(key="lease/lifecycle", ballot=ballot))
        assert refused.value.status is Status.PERMISSION_DENIED
        # pool-b is no registry: pool-a's nodes may not call its acceptor at all
        async with PeerPool(nodes["node-1"][0].config, nodes=nodes["node-3"][0].config.pool) as to_b:
            with pytest.raises(GRPCError) as unauthenticated:
                await to_b.stub("node-3").cas_prepare(CasPrepareRequest(
                    key="bucket/x", ballot=ballot_to_wire(Ballot(1, "node-1", 1))))
            assert unauthenticated.value.status is Status.UNAUTHENTICATED

    asyncio.run(main())


async def _true() -> bool:
    return True


def test_issue20_the_registry_never_moves_to_a_pool_added_with_a_lower_name(tmp_path: Path) -> None:
    """pool-b held the names alone; restarted with pool-a (sorting first) added, its node refuses to start: the
    registry would silently move to pool-a's empty acceptors and every name would look free."""
    from s4.cluster.config import ClusterConfigError

    config = configs()["node-3"]
    alone = build_cluster_config(dict(
        mode="cluster", cluster_name="pools", node_id="node-3", node_grpc_addr=str(config.grpc_addr),
        node_http_addr="127.0.0.3:9000", pool_name="pool-b", pool_nodes=f"node-3:{config.grpc_addr}",
        replication_factor=1, write_quorum=1, read_quorum=1, cluster_secret=SECRET))

    async def create_alone() -> None:
        with_peers = PeerPool(alone)
        cas = CasNode.open(alone, tmp_path, with_peers)
        try:
            assert (await cas.register.create("photos", "alice", "t1")).outcome is Outcome.CREATED
        finally:
            with_peers.close()
            cas.close()

    asyncio.run(create_alone())
    with pytest.raises(ClusterConfigError, match="the registry never moves"):
        CasNode.open(config, tmp_path, PeerPool(config))
    CasNode.open(alone, tmp_path, PeerPool(alone)).close()  # alone it still opens
