"""Object Lock state in a pool is last-writer-wins per version through ``lock_clocks`` (issue 22; docs/architecture/
object-lock.md, "Replication"): an ``object.lock_set`` that reaches a replica before the version it names is kept
and applied when the version arrives, so the replica refuses the removal like every other; anti-entropy digests the
clock and the quorum-read merge applies it. Before the lock clocks, such a replica dropped the lock_set for good
and would let a version locked everywhere else be deleted.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster.key_merge import merge_key_states
from s4.engine import object_lock, reads
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import LOCK_FIELDS, BlobLocation, version_record
from s4.engine.replica import PeerBatchResult
from s4.engine.views import merkle, namespace
from s4.engine.views.env import Views
from s4.engine.views.records import Tx
from s4.journal import Event, EventType
from tests.helpers.replicas import Node
from tests.helpers.views_compare import dump_views, replay_events

T0 = 1_750_000_000_000
DAY = object_lock.DAY_MS
BODY = b"worm"
DIGEST = hashlib.sha256(BODY).digest()


class Wall:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def _put(node: Node, key: str = "k") -> str:
    version = version_record(None, len(BODY), hashlib.md5(BODY).hexdigest(), content_type="text/plain",
                             blobs=[[DIGEST, len(BODY)]])
    result = node.run("put_object", bucket="b", key=key, version=version,
                      blobs_at=[[DIGEST, f"vol-{node.node_id}", 0, len(BODY)]])
    assert not isinstance(result, BaseException), result
    return str(result["v"] if isinstance(result, dict) else result.version_id)


def _staged(digest: bytes) -> BlobLocation | None:
    """The replicas' resolver: the one test blob was 'stored' by the caller at a made-up place."""
    return BlobLocation(digest, "staged-1", 0, len(BODY)) if digest == DIGEST else None


def _deliver(node: Node, events: list[Event]) -> None:
    result = node.apply(events, _staged)
    assert isinstance(result, PeerBatchResult), result


def _version(node: Node, key: str, vid: str) -> dict[str, Any] | None:
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        bucket = tx.bucket("b")
        assert bucket is not None
        oid = namespace.find_object(txn, tx.dbs["ns"], bucket.root, key.encode())
        return None if oid is None else tx.version(oid, vid)


def _lock_of(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if rec is None else {k: rec[k] for k in LOCK_FIELDS if k in rec}


def _key_state(node: Node, key: str = "k") -> dict[str, Any]:
    with node.views.read() as txn:
        return reads.key_state(Tx(txn, node.views.dbs), "b", key)


def _lock_bucket(root: Path, names: list[str], wall: Wall) -> list[Node]:
    nodes = [Node(root / name, name, wall) for name in names]
    assert nodes[0].run("create_bucket", bucket="b", region="us-east-1", object_lock=True) is None
    for node in nodes[1:]:
        _deliver(node, nodes[0].own_events())
    return nodes


def test_a_lock_set_before_its_version_is_kept_and_refuses_the_delete(tmp_path: Path) -> None:
    wall = Wall()
    coord, replica = _lock_bucket(tmp_path, ["node-1", "node-3"], wall)
    try:
        bucket_events = coord.own_events()
        vid = _put(coord)
        wall.ms += 1
        assert coord.run("set_object_lock", bucket="b", key="k", version_id=vid,
                         retention={"m": object_lock.COMPLIANCE, "u": T0 + DAY}) == vid
        wall.ms += 1
        assert coord.run("set_object_lock", bucket="b", key="k", version_id=vid, legal_hold=True) == vid
        events = coord.own_events()[len(bucket_events):]
        put, locks = events[0], events[1:]
        assert put.type is EventType.OBJECT_VERSION_PUT
        assert [e.type for e in locks] == [EventType.OBJECT_LOCK_SET] * 2

        _deliver(replica, locks[::-1])  # the lock_sets overtake their version (a hint, a catch-up), newest first
        _deliver(replica, [put])

        expected = _lock_of(_version(coord, "k", vid))
        assert expected is not None and expected["lh"] is True and expected["lk"]["m"] == object_lock.COMPLIANCE
        assert _lock_of(_version(replica, "k", vid)) == expected
        refused = replica.run("delete_object", bucket="b", key="k", version_id=vid)
        assert isinstance(refused, S3Error) and refused.code is ErrorCode.ACCESS_DENIED
        assert _version(replica, "k", vid) is not None
        # both replicas hold the same replicated records, so anti-entropy's digests agree and a merge finds none stale
        with coord.views.read() as a, replica.views.read() as b:
            assert merkle.root(Tx(a, coord.views.dbs), "b") == merkle.root(Tx(b, replica.views.dbs), "b")
        assert not merge_key_states({"c": _key_state(coord), "r": _key_state(replica)}).stale
    finally:
        coord.close()
        replica.close()


def test_a_replica_that_missed_the_lock_set_is_stale_and_the_merge_carries_the_lock(tmp_path: Path) -> None:
    """The quorum-read merge (cluster/key_merge.py) marks a replica without the newest lock clock stale ("lock"),
    so a coordinator that missed it catches up before deciding, and the merged version carries the lock."""
    wall = Wall()
    coord, behind = _lock_bucket(tmp_path, ["node-1", "node-3"], wall)
    try:
        before = len(coord.own_events())
        vid = _put(coord)
        _deliver(behind, coord.own_events()[before:])
        wall.ms += 1
        coord.run("set_object_lock", bucket="b", key="k", version_id=vid, legal_hold=True)
        merged = merge_key_states({"c": _key_state(coord), "r": _key_state(behind)})
        assert merged.stale == {"r": (("lock", vid),)}
        assert merged.state["vs"][0]["lh"] is True
        assert _version(behind, "k", vid) is not None and "lh" not in _version(behind, "k", vid)  # type: ignore[operator]
        deleted = behind.run("delete_object", bucket="b", key="k", version_id=vid)  # decided without the merge
        assert not isinstance(deleted, BaseException)
    finally:
        coord.close()
        behind.close()


# -- any order of puts, lock_sets and tag sets of one key gives the same lock state ----------------------------------
def _decide(data: st.DataObject, node: Node, wall: Wall) -> None:
    op = data.draw(st.sampled_from(["put", "retain", "hold", "tags", "delete_version"]), label="op")
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        bucket = tx.bucket("b")
        assert bucket is not None
        oid = namespace.find_object(txn, tx.dbs["ns"], bucket.root, b"k")
        ids = [] if oid is None else [rec["v"] for _, rec in tx.versions(oid)]
    if op == "put" or not ids:
        _put(node)
        return
    vid = data.draw(st.sampled_from(ids), label="version")
    if op == "retain":
        retention = None if data.draw(st.booleans(), label="remove?") else {
            "m": data.draw(st.sampled_from(object_lock.MODES)), "u": wall.ms + data.draw(st.integers(1, 3)) * DAY}
        result = node.run("set_object_lock", bucket="b", key="k", version_id=vid, retention=retention, bypass=True)
    elif op == "hold":
        result = node.run("set_object_lock", bucket="b", key="k", version_id=vid,
                          legal_hold=data.draw(st.booleans(), label="on?"))
    elif op == "tags":
        result = node.run("set_object_tags", bucket="b", key="k", version_id=vid,
                          tags={"t": data.draw(st.sampled_from("ab"))})
    else:
        result = node.run("delete_object", bucket="b", key="k", version_id=vid, bypass=True)
    if isinstance(result, BaseException) and not isinstance(result, S3Error):
        raise result


def _locks(node: Node) -> dict[str, Any]:
    """The key's versions with their lock and tags, and the node's lock clocks (by version id)."""
    state = _key_state(node)
    return {"vs": {rec["v"]: (_lock_of(rec), rec.get("tg")) for rec in state["vs"]},
            "vt": state["vt"], "lkc": {vid: dict(c) for vid, c in state.get("lkc", {}).items()}}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_any_order_of_puts_lock_sets_and_tags_gives_the_same_lock_state(data: st.DataObject) -> None:
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes = _lock_bucket(root, ["node-1", "node-2", "r-1", "r-2", "r-sorted"], wall)
        coords, replicas = nodes[:2], nodes[2:]
        try:
            created = coords[0].own_events()
            for _ in range(data.draw(st.integers(2, 14), label="steps")):
                wall.ms += data.draw(st.integers(0, 2), label="tick")
                if data.draw(st.integers(0, 3), label="sync?") == 0:
                    src, dst = data.draw(st.permutations(coords), label="sync")
                    _deliver(dst, [e for e in src.own_events() if e not in created])
                else:
                    _decide(data, data.draw(st.sampled_from(coords), label="coordinator"), wall)
            events = [e for c in coords for e in c.own_events() if e not in created]
            for replica in replicas[:2]:
                order = data.draw(st.permutations(events), label="order")
                cut = data.draw(st.integers(0, len(order)), label="cut")
                _deliver(replica, order[:cut])
                _deliver(replica, order[cut:])
            _deliver(replicas[2], sorted(events, key=lambda e: (e.hlc, e.origin)))

            expected = _locks(replicas[2])
            for replica in replicas[:2]:
                assert _locks(replica) == expected
            # a quorum-read merge of a replica with all events and a coordinator with its own only carries the same
            merged = merge_key_states({"all": _key_state(replicas[2]), "own": _key_state(coords[0])}).state
            assert {r["v"]: (_lock_of(r), r.get("tg")) for r in merged["vs"]} == expected["vs"]
            # replaying a replica's journal rebuilds exactly the same views
            rebuilt = Views(root / "rebuilt", sync=False)
            try:
                replay_events(replicas[0].journal.read(), rebuilt)
                assert dump_views(rebuilt) == dump_views(replicas[0].views)
            finally:
                rebuilt.close()
        finally:
            for node in nodes:
                node.close()
