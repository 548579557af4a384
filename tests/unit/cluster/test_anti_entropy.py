"""Merkle anti-entropy over an in-process transport (cluster/anti_entropy.py, cluster/merkle_service.py).

Two coordinators make random decisions; replica A gets one random subset of their events, replica B another. One
exchange from A with B leaves both holding the union, for everything anti-entropy covers (buckets, their configs,
keys' versions, tombstones and tags), exactly as a replica that got every event; a second exchange finds nothing.
Plus: what no event explains (drifted digests) is rebuilt; a tombstone past the GC grace is not shipped back; the
token bucket bounds the rate.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster.anti_entropy import AntiEntropy, AntiEntropySettings
from s4.cluster.merkle_service import MerkleService
from s4.cluster.rate_limit import TokenBucket
from s4.cluster.reads import ReadsService
from s4.cluster.wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    GetEventsReply,
    GetEventsRequest,
    MerkleTreeReply,
    MerkleTreeRequest,
    ReadKeysReply,
    ReadKeysRequest,
)
from s4.cluster.wiring import ApplyOutcome
from s4.engine.errors import MissingBlobsError
from s4.engine.replica import Applied
from s4.engine.views import keys, merkle
from s4.engine.views.records import Tx
from s4.journal import EventType
from s4.journal.codec import decode_event
from s4.journal.events import Event
from tests.helpers.replicas import Node, logical_state
from tests.unit.engine.test_replicated_apply import Wall, decide, deliver, put_args, staged

COVERED = ("buckets", "objects", "bucket_cfg", "cfg_clocks", "bucket_tombs", "vtombs", "tag_clocks")


class Applier:
    """The apply port over a test node (every blob resolves: the tests' ``staged``)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def apply_peer_events(self, events: list[Event]) -> ApplyOutcome:
        result = self.node.apply(events, staged)
        if isinstance(result, MissingBlobsError):
            return ApplyOutcome(0, 0, tuple(result.hashes))
        if isinstance(result, BaseException):
            raise result
        applied = sum(1 for o in result.outcomes if o is Applied.APPLIED)
        return ApplyOutcome(applied, len(result.outcomes) - applied)


class Network:
    """Each node's MerkleService, ReadsService and apply port, called in-process; counts calls per RPC."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.calls: dict[str, int] = {}

    def _count(self, rpc: str) -> None:
        self.calls[rpc] = self.calls.get(rpc, 0) + 1

    async def merkle_tree(self, peer: str, request: MerkleTreeRequest) -> MerkleTreeReply:
        self._count(f"tree:{request.what}")
        node = self.nodes[peer]
        return await MerkleService(node.views, node.journal).merkle_tree("caller", request)

    async def get_events(self, peer: str, request: GetEventsRequest) -> GetEventsReply:
        self._count("get_events")
        node = self.nodes[peer]
        return await MerkleService(node.views, node.journal).get_events("caller", request)

    async def read_keys(self, peer: str, request: ReadKeysRequest) -> ReadKeysReply:
        self._count("read_keys")
        return await ReadsService(self.nodes[peer].views).read_keys("caller", request)

    async def apply_events(self, peer: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        self._count("apply_events")
        result = await Applier(self.nodes[peer]).apply_peer_events([decode_event(bytes(e)) for e in request.events])
        return ApplyEventsReply(applied=result.applied, already_had=result.already_had,
                                missing_blobs=list(result.missing_blobs))


def _ae(node: Node, peers: dict[str, Node], net: Network, now_s: float, **overrides: Any) -> AntiEntropy:
    return AntiEntropy(node.node_id, list(peers), node.views, node.journal, Applier(node), net,
                       settings=AntiEntropySettings(keys_per_s=0, bytes_per_s=0, **overrides), wall=lambda: now_s)


def covered(node: Node) -> dict[str, Any]:
    state = logical_state(node.views)
    out = {k: state[k] for k in COVERED}
    out["buckets"] = {name: {f: v for f, v in rec.items() if f not in ("n", "sz")} for name, rec in
                      out["buckets"].items()}  # derived counts: they follow the events (uploads are not covered)
    out["objects"] = {k: v for k, v in out["objects"].items() if v}
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_anti_entropy_converges_two_replicas_holding_any_subsets(data: st.DataObject) -> None:
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coords = [Node(root / f"c{i}", f"node-{i}", wall) for i in range(2)]
        a, b, full = (Node(root / n, n, wall) for n in ("ra", "rb", "full"))
        try:
            assert coords[0].run("create_bucket", bucket="b", region="us-east-1") is None
            deliver(coords[1], coords[0].own_events())
            counter = [0]
            for _ in range(data.draw(st.integers(2, 16), label="steps")):
                wall.ms += data.draw(st.integers(0, 2), label="tick")
                decide(data, data.draw(st.sampled_from(coords), label="coordinator"), counter)
            events = [e for c in coords for e in c.own_events()]
            created = [e for e in events if e.type is EventType.BUCKET_CREATED]
            rest = [e for e in events if e.type is not EventType.BUCKET_CREATED]
            union: dict[tuple[int, str], Event] = {}
            for replica in (a, b):
                subset = data.draw(st.lists(st.sampled_from(rest), unique_by=lambda e: (e.hlc, e.origin))
                                   if rest else st.just([]), label="subset")
                with_bucket = data.draw(st.booleans(), label="bucket") or replica is a
                given = (created + subset) if with_bucket else []
                deliver(replica, given)
                union.update(((e.hlc, e.origin), e) for e in given)
            deliver(full, sorted(union.values(), key=lambda e: (e.hlc, e.origin)))  # a replica holding the union
            net = Network({"ra": a, "rb": b})
            ae = _ae(a, {"rb": b}, net, wall.ms / 1000)
            asyncio.run(ae.exchange("rb"))
            expected = covered(full)
            assert covered(a) == expected
            assert covered(b) == expected
            again = asyncio.run(ae.exchange("rb"))
            assert again.differences == 0 and again.unrepaired == 0
            assert ae.stats["rb"].exchanges == 2 and ae.stats["rb"].failures == 0
        finally:
            for node in (*coords, a, b, full):
                node.close()


def _pair(tmp_path: Path, wall: Wall) -> tuple[Node, Node]:
    a, b = Node(tmp_path / "a", "ra", wall), Node(tmp_path / "b", "rb", wall)
    assert a.run("create_bucket", bucket="b", region="us-east-1") is None
    deliver(b, a.own_events())
    return a, b


def test_anti_entropy_descends_only_into_differing_leaves_and_repairs_both_ways(tmp_path: Path) -> None:
    wall = Wall()
    a, b = _pair(tmp_path, wall)
    try:
        for i in range(40):
            a.run("put_object", **put_args(a, f"k{i}", i % 6))
        deliver(b, a.own_events())
        a.run("put_object", **put_args(a, "only-a", 1))
        b.run("put_object", **put_args(b, "only-b", 2))
        net = Network({"ra": a, "rb": b})
        ae = _ae(a, {"rb": b}, net, wall.ms / 1000)
        found = asyncio.run(ae.exchange("rb"))
        assert found.differences == 2 and found.repaired == 2 and found.pulled == 1 and found.pushed == 1
        assert net.calls["read_keys"] == 1 and net.calls["tree:keys"] == 1  # 2 leaves at most, one call
        assert covered(a) == covered(b)
        stats = ae.stats["rb"].document()
        assert stats["keys_repaired"] == 2 and stats["last_exchange_ms"] is not None
    finally:
        a.close()
        b.close()


def test_anti_entropy_rebuilds_digests_that_drifted(tmp_path: Path) -> None:
    """Equal records, different digests (a digest lost on one side): no event to ship, so the bucket's digests are
    rebuilt from the key views, and the next exchange finds nothing."""
    wall = Wall()
    a, b = _pair(tmp_path, wall)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        deliver(b, a.own_events())
        with b.views.begin_write() as txn:
            khash = merkle.key_hash("k1")
            txn.delete(keys.ae_key_key("b", khash), db=b.views.dbs["ae_keys"])
            txn.delete(keys.ae_leaf_key("b", keys.leaf_of(khash)), db=b.views.dbs["ae_leaves"])
        net = Network({"ra": a, "rb": b})
        ae_b = _ae(b, {"ra": a}, net, wall.ms / 1000)
        found = asyncio.run(ae_b.exchange("ra"))
        assert found.unrepaired == 1 and ae_b.rebuilds == 1
        assert asyncio.run(ae_b.exchange("ra")).differences == 0
    finally:
        a.close()
        b.close()


def test_anti_entropy_does_not_send_back_a_tombstone_past_the_gc_grace(tmp_path: Path) -> None:
    """A tombstone GC removed on one replica (every replica had it, and it is older than S4_GC_GRACE_DAYS) is not
    pushed back to it; a younger one is."""
    wall = Wall()
    a, b = _pair(tmp_path, wall)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        # b holds the tombstone (removal) only: as if it had the put and delete, and GC dropped nothing yet
        removal = [e for e in a.own_events() if e.type is EventType.OBJECT_VERSION_REMOVED]
        deliver(b, removal)
        # GC on b: its tombstone dropped (with its digest, as tombstone GC does)
        with b.views.begin_write() as txn:
            tx = Tx(txn, b.views.dbs)
            vkey = keys.object_version_key("b", "k1", "null")
            old = tx.packed("vtombs", vkey)
            tx.delete("vtombs", vkey)
            merkle.clock(tx, merkle.TOMBSTONE, "b", "k1", "null", old, None)
        net = Network({"ra": a, "rb": b})
        grace_days = 7.0
        later = wall.ms / 1000 + (grace_days + 1) * 86_400
        found = asyncio.run(_ae(a, {"rb": b}, net, later, gc_grace_days=grace_days).exchange("rb"))
        assert found.pushed == 0 and found.pulled == 0 and found.unrepaired == 0
        found = asyncio.run(_ae(a, {"rb": b}, net, wall.ms / 1000, gc_grace_days=grace_days).exchange("rb"))
        assert found.pushed == 1  # within the grace: the tombstone goes
    finally:
        a.close()
        b.close()


def test_anti_entropy_converges_a_deleted_bucket(tmp_path: Path) -> None:
    wall = Wall()
    a, b = _pair(tmp_path, wall)
    try:
        assert a.run("delete_bucket", bucket="b") is None
        net = Network({"ra": a, "rb": b})
        found = asyncio.run(_ae(b, {"ra": a}, net, wall.ms / 1000).exchange("ra"))
        assert found.pulled == 1
        with b.views.read() as txn:
            assert Tx(txn, b.views.dbs).bucket("b") is None
        assert covered(a) == covered(b)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("rate", [10.0, 1000.0])
def test_token_bucket_never_exceeds_its_rate(rate: float) -> None:
    now = [0.0]

    async def sleep(s: float) -> None:
        now[0] += s

    bucket = TokenBucket(rate, clock=lambda: now[0], sleep=sleep)

    async def run() -> None:
        for n in [1, 5, 50, 3, 200, 1, 1]:
            await bucket.take(n)

    asyncio.run(run())
    taken = 1 + 5 + 50 + 3 + 200 + 1 + 1
    assert now[0] >= (taken - bucket.burst) / rate - 1e-9  # beyond the burst, at most ``rate`` a second
    assert now[0] <= taken / rate + 1e-9


def _kms_view(node: Node) -> dict[bytes, bytes]:
    with node.views.read() as txn:
        return {bytes(k): bytes(v) for k, v in Tx(txn, node.views.dbs).scan("kms_keys", b"")}


def test_issue22_anti_entropy_brings_kms_keys_their_rotations_and_disables(tmp_path: Path) -> None:
    """KMS keys travel in the exchange like bucket configs: a replica that missed a key's creation, a rotation
    and a disable (on one side) and another key's rotation (on the other) ends with the same ``kms_keys`` view as
    its peer, both ways, and a second exchange finds nothing. Before, only replication and catch-up carried
    ``kms.*`` events: a node that missed them past the hint window never got the key."""
    wall = Wall()
    a, b = _pair(tmp_path, wall)
    try:
        def kms(node: Node, command: str, **args: Any) -> None:
            result = node.run(command, **args)
            assert not isinstance(result, BaseException), result

        kms(a, "kms_create_key", key_id="both", version="v1", material=b"wrapped-1")
        deliver(b, a.own_events())
        wall.ms += 1
        kms(a, "kms_create_key", key_id="only-a", version="v1", material=b"wrapped-2")
        wall.ms += 1
        kms(a, "kms_rotate_key", key_id="only-a", version="v2", material=b"wrapped-3")
        wall.ms += 1
        kms(a, "kms_set_key_enabled", key_id="only-a", enabled=False)
        kms(b, "kms_rotate_key", key_id="both", version="v2", material=b"wrapped-4")
        assert _kms_view(a) != _kms_view(b)
        net = Network({"ra": a, "rb": b})
        ae = _ae(a, {"rb": b}, net, wall.ms / 1000)
        found = asyncio.run(ae.exchange("rb"))
        assert found.pulled == 1 and found.pushed == 3, found
        assert _kms_view(a) == _kms_view(b)
        again = asyncio.run(ae.exchange("rb"))
        assert again.differences == 0 and net.calls["tree:kms"] == 1
    finally:
        a.close()
        b.close()
