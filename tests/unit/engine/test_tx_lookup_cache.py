"""``Tx`` keeps the last key's object id, the last version found by id and the volume records it read decoded (a
decider looks them up, then the projection of its event looks them up again): every answer must equal what a
fresh ``Tx`` over the same transaction reads from LMDB, whichever way the databases are written."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine.views import keys
from s4.engine.views.env import Views, pack
from s4.engine.views.records import Tx

ROOT = 1


def _version(vid: str, hlc: int, size: int = 0) -> dict[str, Any]:
    return {"v": vid, "h": hlc, "o": "n1", "s": size, "e": "etag", "t": hlc}


def test_the_object_id_follows_the_namespace_writers(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        assert tx.find_object(ROOT, b"a/b") is None
        oid, created = tx.ensure_object(ROOT, b"a/b")
        assert created and tx.find_object(ROOT, b"a/b") == oid
        assert tx.ensure_object(ROOT, b"a/b") == (oid, False)
        tx.remove_object(ROOT, b"a/b")
        assert tx.find_object(ROOT, b"a/b") is None
        oid2, _ = tx.ensure_object(ROOT, b"a/c")
        assert tx.find_object(ROOT, b"a/c") == oid2
        assert tx.move_dir(ROOT, b"a/", b"z/")
        assert tx.find_object(ROOT, b"a/c") is None
        assert tx.find_object(ROOT, b"z/c") == oid2
        tx.put("ns", keys.ns_key(ROOT, b"q"), keys.ns_value(keys.NS_LEAF, 99))  # a raw write of ns drops it too
        assert tx.find_object(ROOT, b"q") == 99
        tx.delete("ns", keys.ns_key(ROOT, b"q"))
        assert tx.find_object(ROOT, b"q") is None


def test_latest_answers_from_the_kept_version_only_when_it_is_the_latest(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        tx.insert_version(5, _version("old", 10))
        tx.insert_version(5, _version("new", 20))
        found = tx.version_at(5, "old")
        assert found is not None and found[1]["v"] == "old"
        latest = tx.latest(5)
        assert latest is not None and latest["v"] == "new"
        assert tx.version(5, "new") is tx.latest(5)  # kept: the same decoded record
        order, _ = tx.version_at(5, "new")  # type: ignore[misc]
        tx.remove_version_at(5, "new", order)
        assert tx.version(5, "new") is None
        latest = tx.latest(5)
        assert latest is not None and latest["v"] == "old"


def test_a_replaced_version_is_read_back_as_stored(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        tx.insert_version(5, _version("v", 10))
        rec = tx.version(5, "v")
        assert rec is not None
        rec = dict(rec, tg={"a": "b"})
        tx.replace_version(5, rec)
        assert tx.version(5, "v") == rec == Tx(txn, views.dbs).version(5, "v")
        tx.put("versions", keys.versions_key(5, keys.version_order(10, "n1")), pack(_version("v", 10, 7)))
        again = tx.version(5, "v")
        assert again is not None and again["s"] == 7


def test_volume_records_are_the_callers_own_copies(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        stats = tx.volume_stats("vol-1")
        stats["live"] = 100  # changed but not written back: the transaction's record is unchanged
        again = tx.volume_stats("vol-1")  # from the kept copy now: changing it leaves the copy as it was
        again["live"] = 50
        assert tx.volume_stats("vol-1")["live"] == 0
        stats = tx.volume_stats("vol-1")
        stats["live"] = 5
        tx.put_volume_stats("vol-1", stats)
        stats["live"] = 6  # after the write: the kept copy is the written one
        assert tx.volume_stats("vol-1")["live"] == 5
        tx.put("volumes", keys.text_key("vol-1"), pack({"live": 9, "dead": 0, "sealed": True, "rb": 0}))
        assert tx.volume_stats("vol-1") == {"live": 9, "dead": 0, "sealed": True, "rb": 0}
        assert Tx(txn, views.dbs).volume_stats("vol-1") == tx.volume_stats("vol-1")


_KEYS = [b"a", b"b", b"d/a", b"d/e/f"]
_VIDS = ["null", "v1", "v2"]
_ops = st.lists(st.one_of(
    st.tuples(st.just("ensure"), st.sampled_from(_KEYS)),
    st.tuples(st.just("remove"), st.sampled_from(_KEYS)),
    st.tuples(st.just("move"), st.sampled_from([b"d/", b"e/"]), st.sampled_from([b"d/", b"e/", b"f/"])),
    st.tuples(st.just("insert"), st.sampled_from(_KEYS), st.sampled_from(_VIDS), st.integers(1, 50)),
    st.tuples(st.just("drop"), st.sampled_from(_KEYS), st.sampled_from(_VIDS)),
    st.tuples(st.just("tag"), st.sampled_from(_KEYS), st.sampled_from(_VIDS), st.text(max_size=3)),
    st.tuples(st.just("volume"), st.sampled_from(["x", "y"]), st.integers(0, 9)),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_every_answer_equals_a_fresh_read(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        views = Views(Path(tmp) / "views", sync=False)
        try:
            with views.env.begin(write=True) as txn:
                tx = Tx(txn, views.dbs)
                for op in ops:
                    _run(tx, op)
                    fresh = Tx(txn, views.dbs)
                    for key in _KEYS:
                        oid = tx.find_object(ROOT, key)
                        assert oid == fresh.find_object(ROOT, key)
                        if oid is None:
                            continue
                        for vid in _VIDS:
                            assert tx.version_at(oid, vid) == fresh.version_at(oid, vid)
                        assert tx.latest(oid) == fresh.latest(oid)
                    for name in ("x", "y"):
                        assert tx.volume_stats(name) == fresh.volume_stats(name)
        finally:
            views.close()


def _run(tx: Tx, op: tuple[Any, ...]) -> None:
    """One write through ``tx``, preceded by the lookups a decider makes (so that something is kept)."""
    kind = op[0]
    if kind == "ensure":
        tx.ensure_object(ROOT, op[1])
    elif kind == "remove":
        tx.find_object(ROOT, op[1])
        tx.remove_object(ROOT, op[1])
    elif kind == "move":
        tx.find_object(ROOT, op[1] + b"a")
        if op[1] != op[2] and not op[2].startswith(op[1]):
            tx.move_dir(ROOT, op[1], op[2], on_conflict=lambda _oid: None)
    elif kind == "insert":
        oid, _ = tx.ensure_object(ROOT, op[1])
        found = tx.version_at(oid, op[2])
        tx.latest(oid)
        if found is not None:
            tx.remove_version_at(oid, op[2], found[0])
        tx.insert_version(oid, _version(op[2], op[3]))
    elif kind == "drop":
        oid = tx.find_object(ROOT, op[1])
        found = tx.version_at(oid, op[2]) if oid is not None else None
        if oid is not None and found is not None:
            tx.latest(oid)
            tx.remove_version_at(oid, op[2], found[0])
    elif kind == "tag":
        oid = tx.find_object(ROOT, op[1])
        rec = tx.version(oid, op[2]) if oid is not None else None
        if oid is not None and rec is not None:
            rec["tg"] = {"t": op[3]}  # the kept record changed, then written back, as the projector does
            tx.replace_version(oid, rec)
    elif kind == "volume":
        stats = tx.volume_stats(op[1])
        stats["live"] += op[2]
        tx.put_volume_stats(op[1], stats)
