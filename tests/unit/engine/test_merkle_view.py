"""The Merkle view of anti-entropy (engine/views/merkle.py; docs/architecture/anti-entropy.md).

Coordinators make random decisions (tests/unit/engine/test_replicated_apply.py's); replicas get random subsets of
their events in random orders. For every pair of replicas and every key: the key digests are equal exactly when the
key's replicated records are (its versions' ``(id, hlc, origin)``, tombstones and tag clocks); the bucket roots are
equal exactly when every key and the bucket's own state are; the digests kept as events apply equal the ones
recomputed from the key views (``rebuild_corrections`` finds nothing), and a drifted view is put right by it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine import reads
from s4.engine.views import keys, merkle
from s4.engine.views.records import Tx
from s4.journal import EventType
from tests.helpers.replicas import Node
from tests.helpers.views_compare import dump_views, replay_events
from tests.unit.engine.test_replicated_apply import KEYS, Wall, decide, deliver, put_args


def _digests(node: Node) -> dict[str, bytes]:
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        return {rec[0]: bytes(rec[1]) for _, rec in ((k, reads.unpack(v)) for k, v in tx.scan("ae_keys", b"b\0"))}


def _records(node: Node, key: str) -> Any:
    """The key's replicated records, as anti-entropy means them: what the digest must be a function of."""
    with node.views.read() as txn:
        state = reads.key_state(Tx(txn, node.views.dbs), "b", key)
    return (sorted((r["v"], r["h"], r["o"]) for r in state["vs"]),
            sorted((v, s[0], s[1]) for v, s in state["vt"].items()),
            sorted((v, c["h"], c["o"]) for v, c in state["tc"].items()),
            sorted((v, c["h"], c["o"]) for v, c in state["lkc"].items()))


def _root(node: Node) -> bytes:
    with node.views.read() as txn:
        return merkle.root(Tx(txn, node.views.dbs), "b")


def _bucket_state(node: Node) -> Any:
    with node.views.read() as txn:
        state = reads.bucket_state(Tx(txn, node.views.dbs), "b")
    return state["i"], state["bt"][:2] if state["bt"] else None, sorted((k, v[1]) for k, v in state["cfg"].items())


def _corrections(node: Node) -> merkle.Correction:
    with node.views.read() as txn:
        return merkle.rebuild_corrections(Tx(txn, node.views.dbs), "b")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_merkle_digests_equal_exactly_when_replicated_states_are(data: st.DataObject) -> None:
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coords = [Node(root / f"c{i}", f"node-{i}", wall) for i in range(2)]
        replicas = [Node(root / f"r{i}", f"replica-{i}", wall) for i in range(3)]
        try:
            assert coords[0].run("create_bucket", bucket="b", region="us-east-1") is None
            deliver(coords[1], coords[0].own_events())
            counter = [0]
            for _ in range(data.draw(st.integers(2, 18), label="steps")):
                wall.ms += data.draw(st.integers(0, 2), label="tick")
                decide(data, data.draw(st.sampled_from(coords), label="coordinator"), counter)
            events = [e for c in coords for e in c.own_events()]
            created = [e for e in events if e.type is EventType.BUCKET_CREATED]
            rest = [e for e in events if e.type is not EventType.BUCKET_CREATED]
            for replica in replicas:
                subset = data.draw(st.lists(st.sampled_from(rest), unique_by=lambda e: (e.hlc, e.origin))
                                   if rest else st.just([]), label="subset")
                deliver(replica, created + subset)
            nodes = coords + replicas
            for node in nodes:
                assert not _corrections(node), "the incrementally kept digests equal the recomputed ones"
            for a in nodes:
                for b in nodes:
                    da, db = _digests(a), _digests(b)
                    same_keys = True
                    for key in set(da) | set(db) | set(KEYS):
                        same = _records(a, key) == _records(b, key)
                        same_keys &= same
                        assert (da.get(key) == db.get(key)) == same, (key, _records(a, key), _records(b, key))
                    same_bucket = _bucket_state(a) == _bucket_state(b)
                    assert (_root(a) == _root(b)) == (same_keys and same_bucket)
            # replaying a node's journal rebuilds the same Merkle view (it is a projection like any other)
            from s4.engine.views.env import Views
            rebuilt = Views(root / "rebuilt", sync=False)
            try:
                replay_events(replicas[0].journal.read(), rebuilt)
                mine, theirs = dump_views(replicas[0].views), dump_views(rebuilt)
                assert mine["ae_keys"] == theirs["ae_keys"] and mine["ae_leaves"] == theirs["ae_leaves"]
            finally:
                rebuilt.close()
        finally:
            for node in coords + replicas:
                node.close()


def test_merkle_rebuild_corrects_a_drifted_view_and_a_prefix_rename(tmp_path: Path) -> None:
    """A prefix rename moves keys in O(1) and leaves their digests under the old names; a lost update (drift) does
    the same kind of harm. ``rebuild_corrections`` finds both, and the correction, applied after more writes
    (XOR is linear), leaves the view equal to a recomputation."""
    wall = Wall()
    node = Node(tmp_path / "n", "node-1", wall)
    try:
        assert node.run("create_bucket", bucket="b", region="us-east-1") is None
        for key in ("a/x", "a/y", "k1"):
            assert node.run("put_object", **put_args(node, key, 0)) is not None
        assert not _corrections(node)
        assert node.run("rename", bucket="b", src="a/", dst="z/") is None
        with node.views.read() as txn:
            names = {k for k, _, _ in ((rec[0], 0, 0) for rec in (
                reads.unpack(v) for _, v in Tx(txn, node.views.dbs).scan("ae_keys", b"b\0")))}
        assert names == {"a/x", "a/y", "k1"}, "a prefix rename is not followed incrementally"
        fix = _corrections(node)
        assert set(fix.keys) == {merkle.key_hash(k) for k in ("a/x", "a/y", "z/x", "z/y")}
        # drift: a key's digest lost from the view
        with node.views.begin_write() as txn:
            tx = Tx(txn, node.views.dbs)
            txn.delete(keys.ae_key_key("b", merkle.key_hash("k1")), db=tx.dbs["ae_keys"])
        fix = _corrections(node)
        assert merkle.key_hash("k1") in fix.keys
        assert node.run("put_object", **put_args(node, "k2", 1)) is not None  # a write between snapshot and fix
        with node.views.begin_write() as txn:
            merkle.apply_correction(Tx(txn, node.views.dbs), "b", fix)
        assert not _corrections(node)
        assert set(_digests(node)) == {"k1", "k2", "z/x", "z/y"}
    finally:
        node.close()


def test_merkle_key_rename_moves_the_digests(tmp_path: Path) -> None:
    node = Node(tmp_path / "n", "node-1", Wall())
    try:
        assert node.run("create_bucket", bucket="b", region="us-east-1") is None
        assert node.run("put_object", **put_args(node, "k1", 0)) is not None
        assert node.run("put_object", **put_args(node, "k2", 1)) is not None
        assert node.run("rename", bucket="b", src="k1", dst="k2") is None
        assert set(_digests(node)) == {"k2"}
        assert not _corrections(node)
    finally:
        node.close()
