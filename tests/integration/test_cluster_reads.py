"""Issue 19, quorum reads over real sockets: three ClusterServers in this process on 127.0.0.1/.2/.3, each serving
ReadKeys/ListRange (Handlers(reads=ReadsService)) from a real Engine in a tmp dir. The replicas diverge by
construction: every object event reaches exactly two of the three through LocalCommitPath.apply_peer_events, so
any two of them together hold every event, and each one alone misses some. read_quorum and the merged listing
over the wire must give what a replica holding every event holds."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from helpers.cluster_pool import pool_configs

from s4.cluster import listing_merge, reads
from s4.cluster.config import ClusterConfig
from s4.cluster.grpc_server import ClusterServer, Handlers
from s4.cluster.peers import PeerPool
from s4.engine import Engine, EngineOptions, listing
from s4.engine.local_commit import LocalCommitPath
from s4.engine.model import version_record
from s4.engine.views.records import Tx
from s4.journal import Event, EventType
from tests.helpers.read_history import CONTENTS, HASHES, Wall, deliver
from tests.helpers.replicas import Node as Coordinator

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
KEYS = ("a.txt", "a/b", "a/c", "a0", "d/e/f", "gone", "marked")



def configs() -> list[ClusterConfig]:
    return pool_configs(HOSTS, cluster="reads")


class Quiet:
    def status(self) -> tuple[int, int]:
        return 0, 0

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


def history(coordinator: Coordinator) -> tuple[list[Event], list[Event]]:
    """A versioned bucket; puts, overwrites, a delete marker, a removed version, tags; (bucket events, the rest)."""
    run = coordinator.run
    assert run("create_bucket", bucket="b", region="us-east-1") is None
    assert run("set_bucket_config", bucket="b", kind="versioning", value="Enabled") is None
    for i, key in enumerate(KEYS * 2):
        h, size = HASHES[i % 4], len(CONTENTS[i % 4])
        out = run("put_object", bucket="b", key=key, blobs_at=[[h, "vol", 0, size]],
                  version=version_record(None, size, hashlib.md5(CONTENTS[i % 4]).hexdigest(), blobs=[[h, size]]))
        assert not isinstance(out, BaseException), out
    assert not isinstance(run("delete_object", bucket="b", key="marked", version_id=None), BaseException)
    state = reads.read_states(coordinator.views, "object", "b", ["gone"])[0]
    for rec in state["vs"]:
        assert not isinstance(run("delete_object", bucket="b", key="gone", version_id=rec["v"]), BaseException)
    vid = reads.read_states(coordinator.views, "object", "b", ["a/b"])[0]["vs"][1]["v"]
    assert not isinstance(run("set_object_tags", bucket="b", key="a/b", version_id=vid, tags={"t": "x"}),
                          BaseException)
    events = coordinator.own_events()
    first = [e for e in events if e.type in (EventType.BUCKET_CREATED, EventType.BUCKET_CONFIG_SET)]
    return first, [e for e in events if e not in first]


def test_issue19_quorum_read_and_merged_listing_over_the_wire_of_divergent_replicas(tmp_path: Path) -> None:
    wall = Wall()
    coordinator = Coordinator(tmp_path / "coordinator", "coord", wall)
    full = Coordinator(tmp_path / "full", "full", wall)
    first, rest = history(coordinator)
    deliver(full, first + rest)
    cfgs = configs()
    engines: list[Engine] = []
    paths: list[LocalCommitPath] = []
    for cfg in cfgs:
        path = LocalCommitPath()
        path.pooled = True  # pool members' views: they take peer events (docs/architecture/views.md, "Flavour")
        engines.append(Engine(EngineOptions(tmp_path / cfg.node_id, node_id=cfg.node_id), commit_path=path))
        paths.append(path)
    for i, (engine, path) in enumerate(zip(engines, paths, strict=True)):
        # the blobs stored in this node's own volumes (as a PutBlob would), then every object event to two of the
        # three replicas, a different pair each time
        stored = {h: engine.volumes.append(c, h) for h, c in zip(HASHES, CONTENTS, strict=True)}
        engine.volumes.sync({loc.volume for loc in stored.values()})
        share = [e for j, e in enumerate(rest) if j % 3 != i]
        path.apply_peer_events(first, stored.get).result(timeout=30)
        path.apply_peer_events(share, stored.get).result(timeout=30)

    async def main() -> None:
        services = [reads.ReadsService(engine.views) for engine in engines]
        servers = [ClusterServer(cfg, Quiet(), Handlers(reads=svc)) for cfg, svc in zip(cfgs, services, strict=True)]
        pool = PeerPool(cfgs[0])
        try:
            for server in servers:
                await server.start()
            local = reads.LocalReads(services[0], "node-1")

            def stub_of(node: str) -> reads.ReadsStub:
                return local if node == "node-1" else pool.stub(node)

            members = [cfg.node_id for cfg in cfgs]
            expected = reads.read_states(full.views, "object", "b", list(KEYS))
            for key, want in zip(KEYS, expected, strict=True):
                for replicas in (members, members[1:], members[::-1]):
                    merged = await asyncio.wait_for(reads.read_quorum(stub_of, replicas, 2, "b", key), 30)
                    assert merged.state == want, key
            # each replica alone misses some event, so a quorum read finds some stale replica
            stale_seen = set()
            for key in KEYS:
                stale_seen |= set((await reads.read_quorum(stub_of, members, 3, "b", key)).stale)
            assert stale_seen == set(members)

            for delimiter in ("", "/"):
                with full.views.read() as txn:
                    tx = Tx(txn, full.views.dbs)
                    bucket = tx.bucket("b")
                    assert bucket is not None
                    want_objects = listing.list_objects(tx, bucket, "", delimiter, "", 1000)
                    want_versions = listing.list_versions(tx, bucket, "", delimiter, "", "", 1000)
                entries, prefixes, marker = [], [], ""
                for _ in range(len(KEYS) + 1):
                    source = reads.WireSource(stub_of, "b", "", limit=2, timeout=10)
                    page, _ = await listing_merge.list_objects(source, members[1:], "b", "", delimiter, marker, 2)
                    entries += page.entries
                    prefixes += page.common_prefixes
                    if not page.is_truncated:
                        break
                    marker = page.next_marker
                assert (entries, prefixes) == (want_objects.entries, want_objects.common_prefixes)
                source = reads.WireSource(stub_of, "b", "", limit=3, timeout=10)
                versions, _ = await listing_merge.list_versions(source, members[:2], "b", "", delimiter, "", "", 1000)
                assert versions == want_versions
        finally:
            pool.close()
            for server in servers:
                await server.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        for engine in engines:
            engine.close()
        coordinator.close()
        full.close()
