"""Tombstone GC in the engine (engine/tombstones.py, docs/architecture/tombstones.md): which tombstones a horizon lets
go, the decider's re-check, the node-local event that replays to the same views, and that events this node already
held never come back after their tombstone went."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine.tombstones import KINDS, Horizon, candidates
from s4.engine.views import merkle
from s4.engine.views.env import unpack
from s4.engine.views.keys import MAX_U64
from s4.engine.views.records import Tx
from s4.journal import EventType
from tests.helpers.replicas import Node, logical_state
from tests.helpers.views_compare import check_live_vs_rebuild
from tests.unit.engine.test_replicated_apply import T0, Wall, decide, deliver, put_args, scan, versions_of

EVERYTHING = Horizon(before_ms=MAX_U64, max_seq=MAX_U64)


def collect(node: Node, horizon: Horizon) -> int:
    """One GC sweep as cluster/tombstone_gc.py runs it: candidates in a read transaction, then the decider."""
    entries = []
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        for db in KINDS:
            after: bytes | None = None
            while True:
                page, after = candidates(tx, horizon, db=db, after=after, limit=2)
                entries += page
                if after is None:
                    break
    if not entries:
        return 0
    result = node.run("collect_tombstones", entries=entries)
    assert isinstance(result, int), result
    return result


def removal_seq(node: Node, key: str) -> int:
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        for _, raw in tx.scan("vtombs", b""):
            tomb = unpack(raw)
            if tomb["k"] == key:
                seq = tx.event_seq(tomb["o"], tomb["h"])
                assert seq is not None
                return seq
    raise AssertionError(f"no tombstone for {key}")


def tomb_keys(node: Node) -> list[str]:
    return sorted(t["k"] for t in scan(node, "vtombs").values())


def test_gc_drops_only_tombstones_past_the_grace_and_held_by_every_peer(tmp_path: Path) -> None:
    wall = Wall()
    a = Node(tmp_path / "a", "node-1", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        for key in ("k1", "k2", "k3"):
            a.run("put_object", **put_args(a, key, 0))
        for key, at in (("k1", 10), ("k2", 1000), ("k3", 2000)):
            wall.ms = T0 + at
            a.run("delete_object", bucket="b", key=key, version_id=None)
        assert tomb_keys(a) == ["k1", "k2", "k3"]
        seqs = {key: removal_seq(a, key) for key in ("k1", "k2", "k3")}

        assert collect(a, Horizon(before_ms=T0 + 9, max_seq=MAX_U64)) == 0  # nothing old enough
        assert collect(a, Horizon(before_ms=T0 + 500, max_seq=MAX_U64)) == 1  # k1 past the grace
        assert tomb_keys(a) == ["k2", "k3"]
        assert collect(a, Horizon(before_ms=MAX_U64, max_seq=seqs["k2"] - 1)) == 0  # a peer lacks k2's removal
        assert collect(a, Horizon(before_ms=MAX_U64, max_seq=seqs["k2"])) == 1
        assert tomb_keys(a) == ["k3"]
        assert collect(a, EVERYTHING) == 1 and tomb_keys(a) == []
        assert logical_state(a.views)["tombstone_count"] == 0
        collected = [e for e in a.journal.read() if e.type is EventType.TOMBSTONES_COLLECTED]
        assert len(collected) == 3 and all(e.type not in {EventType.OBJECT_VERSION_REMOVED} for e in collected)
        check_live_vs_rebuild(a.views, a.journal, tmp_path / "rebuilt")  # replay drops the same ones
    finally:
        a.close()


def test_a_put_already_held_stays_removed_after_its_tombstone_went(tmp_path: Path) -> None:
    """The GC horizon's first half: once this node holds every older event (event_ids), a duplicate delivery of the
    removed put (a peer's journal, a hint, a repair) is refused as held, never applied as new."""
    wall = Wall()
    a, b = Node(tmp_path / "a", "node-1", wall), Node(tmp_path / "b", "node-2", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("set_object_tags", bucket="b", key="k1", version_id=None, tags={"t": "x"})
        wall.ms += 5
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        deliver(b, a.own_events())
        assert versions_of(b, "k1") == [] and scan(b, "tag_clocks")
        assert collect(b, EVERYTHING) == 2  # the tombstone and the tags clock of the removed version
        assert scan(b, "vtombs") == {} and scan(b, "tag_clocks") == {}
        before = logical_state(b.views)
        deliver(b, [e for e in a.own_events() if e.type is not EventType.BUCKET_CREATED])
        assert versions_of(b, "k1") == [] and logical_state(b.views) == before
    finally:
        a.close()
        b.close()


def test_a_tombstone_replaced_since_it_was_found_is_not_collected(tmp_path: Path) -> None:
    """The decider re-checks each candidate: a newer removal of the same version (unversioned: ``null`` again) has
    its own, later event, which the horizon has not cleared."""
    wall = Wall()
    a = Node(tmp_path / "a", "node-1", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        with a.views.read() as txn:
            found, _ = candidates(Tx(txn, a.views.dbs), EVERYTHING, db="vtombs", after=None, limit=10)
        assert len(found) == 1
        wall.ms += 5
        a.run("put_object", **put_args(a, "k1", 1))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        assert a.run("collect_tombstones", entries=found) == 0
        assert tomb_keys(a) == ["k1"]
    finally:
        a.close()


def test_user_credential_and_upload_tombstones_are_collected(tmp_path: Path) -> None:
    wall = Wall()
    a = Node(tmp_path / "a", "node-1", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        upload_id = a.run("create_multipart", bucket="b",
                          upload={"k": "m", "ct": "text/plain", "m": {}, "hd": {}, "ca": "", "tg": {}})
        a.run("abort_multipart", bucket="b", key="m", upload_id=upload_id)
        user = a.run("iam_create_user", username="alice", role="Writer", password_hash="h")
        user_id = user["id"] if isinstance(user, dict) else next(iter(scan(a, "users"))).decode()
        a.run("iam_create_credential", user_id=user_id, access_key="S4AK0000000000000001", secret_key=b"c")
        a.run("iam_delete_credential", user_id=user_id)
        a.run("iam_delete_user", user_id=user_id)
        assert scan(a, "upload_ends") and scan(a, "cred_tombs") and scan(a, "user_clocks")
        assert collect(a, EVERYTHING) == 3
        assert not scan(a, "upload_ends") and not scan(a, "cred_tombs") and not scan(a, "user_clocks")
        check_live_vs_rebuild(a.views, a.journal, tmp_path / "rebuilt")
    finally:
        a.close()


def test_a_live_users_clocks_are_not_a_tombstone(tmp_path: Path) -> None:
    a = Node(tmp_path / "a", "node-1", Wall())
    try:
        a.run("iam_create_user", username="alice", role="Writer", password_hash="h")
        assert collect(a, EVERYTHING) == 0 and scan(a, "user_clocks")
    finally:
        a.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_gc_changes_no_logical_state_and_held_events_never_come_back(data: st.DataObject) -> None:
    """Random decisions on two coordinators, a replica taking their events in random batches with GC sweeps at
    random horizons between them: a sweep changes nothing but tombstone bookkeeping; once everything arrived,
    delivering every event again changes nothing (no removed version, user or credential returns); the journal
    replays to the live views."""
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coords = [Node(root / f"c{i}", f"node-{i}", wall) for i in range(2)]
        replica = Node(root / "r", "replica", wall)
        try:
            assert coords[0].run("create_bucket", bucket="b", region="us-east-1") is None
            deliver(coords[1], coords[0].own_events())
            counter = [0]
            for _ in range(data.draw(st.integers(3, 20), label="steps")):
                wall.ms += data.draw(st.integers(0, 3), label="tick")
                decide(data, data.draw(st.sampled_from(coords), label="coordinator"), counter)
            events = [e for c in coords for e in c.own_events()]
            events.sort(key=lambda e: (e.type is not EventType.BUCKET_CREATED, e.hlc, e.origin))
            while events:
                n = data.draw(st.integers(1, len(events)), label="batch")
                deliver(replica, events[:n])
                events = events[n:]
                state = _without_tombstones(logical_state(replica.views))
                cut = data.draw(st.integers(0, 5), label="horizon") * 2
                collect(replica, Horizon(before_ms=T0 + cut, max_seq=replica.journal.last_seq))
                assert _without_tombstones(logical_state(replica.views)) == state
            after = logical_state(replica.views)
            deliver(replica, [e for c in coords for e in c.own_events()])
            assert logical_state(replica.views) == after
            check_live_vs_rebuild(replica.views, replica.journal, root / "rebuilt")
        finally:
            for node in (*coords, replica):
                node.close()


def _without_tombstones(state: dict[str, Any]) -> dict[str, Any]:
    dropped = {"tombstone_count", *KINDS, "tag_clocks", "lock_clocks", "vtombs"}
    return {k: v for k, v in state.items() if k not in dropped}



def test_issue20_collected_tombstones_leave_the_merkle_digests(tmp_path: Path) -> None:
    """Anti-entropy compares Merkle digests (engine/views/merkle.py): a collected tombstone or tag clock must leave
    its key's digest in the same transaction, else the stored digests differ from what the node holds (and from a
    peer that never had the record) until the next rebuild."""
    wall = Wall()
    a = Node(tmp_path / "a", "node-1", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        for key in ("k1", "k2"):
            a.run("put_object", **put_args(a, key, 0))
        assert isinstance(a.run("set_object_tags", bucket="b", key="k1", version_id=None, tags={"t": "1"}), str)
        assert scan(a, "tag_clocks"), "the tag clock this test collects"
        for key in ("k1", "k2"):
            a.run("delete_object", bucket="b", key=key, version_id=None)
        assert collect(a, EVERYTHING) == 3 and tomb_keys(a) == [] and not scan(a, "tag_clocks")
        with a.views.read() as txn:
            tx = Tx(txn, a.views.dbs)
            assert not merkle.rebuild_corrections(tx, "b"), "the stored digests still hold collected records"
            assert merkle.leaves(tx, "b") == [merkle.ZERO] * merkle.LEAVES  # nothing left in the bucket
    finally:
        a.close()


def test_a_removed_versions_lock_clock_is_collected_with_its_tombstone(tmp_path: Path) -> None:
    """Issue 22: ``lock_clocks`` (a version's newest lock_set, docs/architecture/object-lock.md) is a
    last-writer-wins clock like ``tag_clocks``: it goes with the tombstone of its version when no newer, and leaves
    the Merkle digests in the same transaction."""
    wall = Wall()
    a = Node(tmp_path / "a", "node-1", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1", object_lock=True) is None
        vid = a.run("put_object", **put_args(a, "k1", 0))["v"]
        for hold in (True, False):
            wall.ms += 1
            assert a.run("set_object_lock", bucket="b", key="k1", version_id=vid, legal_hold=hold) == vid
        assert len(scan(a, "lock_clocks")) == 1, "the newest lock_set only"
        wall.ms += 1
        assert not isinstance(a.run("delete_object", bucket="b", key="k1", version_id=vid), BaseException)
        assert collect(a, EVERYTHING) == 2 and tomb_keys(a) == [] and not scan(a, "lock_clocks")
        with a.views.read() as txn:
            tx = Tx(txn, a.views.dbs)
            assert not merkle.rebuild_corrections(tx, "b"), "the stored digests still hold the collected lock clock"
            assert merkle.leaves(tx, "b") == [merkle.ZERO] * merkle.LEAVES
        check_live_vs_rebuild(a.views, a.journal, tmp_path / "rebuilt")
    finally:
        a.close()
