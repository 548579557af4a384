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
from s4.journal.hlc import physical_ms
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


def _two_coordinators(tmp_path: Path, wall: Wall) -> tuple[Node, Node, Node, str, list[Event]]:
    """node-1 and node-2 both hold a version of ``k`` (written on node-1); r-1 holds the bucket only."""
    a, b, r = _lock_bucket(tmp_path, ["node-1", "node-2", "r-1"], wall)
    created = a.own_events()
    vid = _put(a)
    _deliver(b, a.own_events()[len(created):])
    return a, b, r, vid, created


def _exchange(nodes: list[Node], created: list[Event]) -> None:
    """Every node gets every other's events (in the order each decided them)."""
    own = {n.node_id: [e for e in n.own_events() if e not in created] for n in nodes}
    for dst in nodes:
        for src in nodes:
            if src is not dst:
                _deliver(dst, own[src.node_id])


def test_issue22_concurrent_retention_and_legal_hold_on_two_nodes_both_survive(tmp_path: Path) -> None:
    """A COMPLIANCE retention decided on node-1 and a legal hold decided on node-2 a moment later, neither having
    seen the other: every replica ends with both, whatever order it got them in. Before per-field clocks the
    lock_set was the whole lock state, last writer wins: node-2's (hold on, no retention) erased the acknowledged
    COMPLIANCE retention everywhere."""
    wall = Wall()
    a, b, r, vid, created = _two_coordinators(tmp_path, wall)
    try:
        until = T0 + 2 * DAY
        wall.ms += 1
        assert a.run("set_object_lock", bucket="b", key="k", version_id=vid,
                     retention={"m": object_lock.COMPLIANCE, "u": until}) == vid
        wall.ms += 1
        assert b.run("set_object_lock", bucket="b", key="k", version_id=vid, legal_hold=True) == vid
        _deliver(r, [e for e in a.own_events() if e not in created])
        _deliver(r, [e for e in b.own_events() if e not in created][::-1])  # the hold's lock_set before the put
        _exchange([a, b], created)
        for node in (a, b, r):
            rec = _version(node, "k", vid)
            assert rec is not None, node.node_id
            assert (rec.get("lk"), rec.get("lh")) == ({"m": object_lock.COMPLIANCE, "u": until}, True), node.node_id
            refused = node.run("delete_object", bucket="b", key="k", version_id=vid, bypass=True)
            assert isinstance(refused, S3Error) and refused.code is ErrorCode.ACCESS_DENIED
        # the quorum-read merge of a node with only its own lock event and one with both carries both too
        merged = merge_key_states({"b": _key_state(b), "r": _key_state(r)})
        assert (merged.state["vs"][0].get("lk"), merged.state["vs"][0].get("lh")) == (
            {"m": object_lock.COMPLIANCE, "u": until}, True)
        with a.views.read() as x, r.views.read() as y:
            assert merkle.root(Tx(x, a.views.dbs), "b") == merkle.root(Tx(y, r.views.dbs), "b")
    finally:
        for node in (a, b, r):
            node.close()


def test_issue22_a_concurrent_governance_shortening_never_reduces_an_acknowledged_compliance_retention(
        tmp_path: Path) -> None:
    """The version was written with a GOVERNANCE retention. node-1 turns it into COMPLIANCE (with the
    bypass); node-2, later by the clock and without having seen that, shortens the GOVERNANCE one with the bypass.
    Last writer wins would keep node-2's: the acknowledged COMPLIANCE retention lost. The join keeps COMPLIANCE on
    every replica; a GOVERNANCE decision stamped after the COMPLIANCE retention ended would stand."""
    wall = Wall()
    a, b, r = _lock_bucket(tmp_path, ["node-1", "node-2", "r-1"], wall)
    try:
        created = a.own_events()
        vid = _put(a)
        wall.ms += 1
        a.run("set_object_lock", bucket="b", key="k", version_id=vid,
              retention={"m": object_lock.GOVERNANCE, "u": T0 + 3 * DAY})
        _deliver(b, a.own_events()[len(created):])
        synced = a.own_events()
        wall.ms += 1
        compliance = {"m": object_lock.COMPLIANCE, "u": T0 + 3 * DAY + 5}
        assert a.run("set_object_lock", bucket="b", key="k", version_id=vid, retention=compliance, bypass=True) == vid
        wall.ms += 1
        shorter = {"m": object_lock.GOVERNANCE, "u": T0 + DAY}
        assert b.run("set_object_lock", bucket="b", key="k", version_id=vid, retention=shorter, bypass=True) == vid
        _deliver(r, [e for e in b.own_events() if e not in created])
        _deliver(r, [e for e in a.own_events() if e not in created][::-1])
        _deliver(a, [e for e in b.own_events() if e not in created])
        _deliver(b, [e for e in a.own_events() if e not in synced])
        for node in (a, b, r):
            assert _version(node, "k", vid)["lk"] == compliance, node.node_id  # type: ignore[index]
        # once it ended, a later decision (here: a GOVERNANCE retention on node-2) stands everywhere
        wall.ms = compliance["u"] + 1
        later = {"m": object_lock.GOVERNANCE, "u": wall.ms + DAY}
        assert b.run("set_object_lock", bucket="b", key="k", version_id=vid, retention=later) == vid
        _deliver(a, [b.own_events()[-1]])
        _deliver(r, [b.own_events()[-1]])
        for node in (a, b, r):
            assert _version(node, "k", vid)["lk"] == later, node.node_id  # type: ignore[index]
    finally:
        for node in (a, b, r):
            node.close()


def test_issue22_lock_state_join_is_a_semilattice_and_keeps_the_strongest_compliance() -> None:
    """Unit of engine/object_lock.py: the join is commutative, associative and idempotent over random events, and
    the effective retention is never a COMPLIANCE shorter than one the events hold unless decided after it ended."""
    @settings(max_examples=300, deadline=None)
    @given(st.lists(_lock_event(), min_size=1, max_size=8, unique_by=lambda e: (e["h"], e["o"])))
    def check(events: list[dict[str, Any]]) -> None:
        states = [object_lock.event_state(e["f"], e["lk"], e["lh"], e["h"], e["o"]) for e in events]
        joined: dict[str, Any] = {}
        for state in states:
            joined = object_lock.join(joined, state)
        backwards: dict[str, Any] = {}
        for state in reversed(states):
            backwards = object_lock.join(state, backwards)
        assert joined == backwards == object_lock.join(joined, joined)
        lk, _ = object_lock.effective(joined)
        latest_retention = max((e["h"] for e in events if e["f"] != object_lock.LEGAL_HOLD), default=None)
        for e in events:
            if e["f"] != object_lock.LEGAL_HOLD and e["lk"] and e["lk"]["m"] == object_lock.COMPLIANCE:
                assert (lk is not None and lk["m"] == object_lock.COMPLIANCE and lk["u"] >= e["lk"]["u"]) or (
                    latest_retention is not None and physical_ms(latest_retention) >= e["lk"]["u"])
    check()


def _lock_event() -> st.SearchStrategy[dict[str, Any]]:
    retention = st.none() | st.fixed_dictionaries({"m": st.sampled_from(object_lock.MODES),
                                                   "u": st.integers(0, 40)})
    return st.fixed_dictionaries({
        "f": st.sampled_from([None, object_lock.RETENTION, object_lock.LEGAL_HOLD]), "lk": retention,
        "lh": st.none() | st.booleans(), "h": st.integers(0, 40).map(lambda ms: ms << 16),
        "o": st.sampled_from(["node-1", "node-2"])})


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
            "m": data.draw(st.sampled_from(object_lock.MODES)),
            "u": wall.ms + data.draw(st.sampled_from([2, 4, DAY, 2 * DAY]), label="for")}  # some end in the test
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


def _is_retention(event: Event) -> bool:
    return event.type is EventType.OBJECT_LOCK_SET and event.payload.get("f") != "lh"  # "lh": a legal hold only


def _worm_kept(node: Node, held: list[Event]) -> None:
    """No acknowledged COMPLIANCE retention the node holds is reduced (issue 22): each version still there has a
    COMPLIANCE retention at least as long, unless a retention decision stamped after it ended replaced it (what a
    decider allows then). Last writer wins over whole lock states broke this for concurrent decisions."""
    present = {rec["v"]: rec for rec in _key_state(node)["vs"]}
    for event in held:
        lk = event.payload.get("lk")
        rec = present.get(event.payload.get("version_id", ""))
        if not _is_retention(event) or not lk or lk["m"] != object_lock.COMPLIANCE or rec is None:
            continue
        kept = rec.get("lk") is not None and rec["lk"]["m"] == object_lock.COMPLIANCE and rec["lk"]["u"] >= lk["u"]
        ended = any(_is_retention(e) and e.payload["version_id"] == rec["v"] and physical_ms(e.hlc) >= lk["u"]
                    for e in held)
        assert kept or ended, (node.node_id, rec, lk)


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
                wall.ms += data.draw(st.integers(0, 3), label="tick")
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
                _worm_kept(replica, order[:cut])
                _deliver(replica, order[cut:])
                _worm_kept(replica, order)
            _deliver(replicas[2], sorted(events, key=lambda e: (e.hlc, e.origin)))
            _worm_kept(replicas[2], events)

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


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_issue22_concurrent_lock_decisions_on_two_nodes_converge_and_keep_every_compliance_retention(
        data: st.DataObject) -> None:
    """Two nodes decide retentions and legal holds on one version, syncing now and then (so many decisions are
    concurrent); replicas get all their events in any order, cut anywhere. Every replica reaches the same lock
    state, at every point no acknowledged COMPLIANCE retention it holds is reduced (``_worm_kept``), and a legal
    hold decided concurrently with a retention never erases it nor is erased by it."""
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = _lock_bucket(Path(tmp), ["node-1", "node-2", "r-1", "r-2", "r-sorted"], wall)
        coords, replicas = nodes[:2], nodes[2:]
        try:
            created = coords[0].own_events()
            vid = _put(coords[0])
            _deliver(coords[1], coords[0].own_events()[len(created):])
            for _ in range(data.draw(st.integers(2, 10), label="steps")):
                wall.ms += data.draw(st.integers(0, 3), label="tick")
                node = data.draw(st.sampled_from(coords), label="coordinator")
                op = data.draw(st.sampled_from(["retain", "hold", "sync"]), label="op")
                if op == "sync":
                    other = coords[1] if node is coords[0] else coords[0]
                    _deliver(node, [e for e in other.own_events() if e not in created])
                elif op == "hold":
                    node.run("set_object_lock", bucket="b", key="k", version_id=vid,
                             legal_hold=data.draw(st.booleans(), label="on?"))
                else:
                    retention = None if data.draw(st.integers(0, 3), label="remove?") == 0 else {
                        "m": data.draw(st.sampled_from(object_lock.MODES), label="mode"),
                        "u": wall.ms + data.draw(st.sampled_from([2, 4, DAY]), label="for")}
                    node.run("set_object_lock", bucket="b", key="k", version_id=vid, retention=retention,
                             bypass=data.draw(st.booleans(), label="bypass?"))
            events = [e for c in coords for e in c.own_events() if e not in created]
            for replica in replicas[:2]:
                order = data.draw(st.permutations(events), label="order")
                cut = data.draw(st.integers(0, len(order)), label="cut")
                _deliver(replica, order[:cut])
                _worm_kept(replica, order[:cut])
                _deliver(replica, order[cut:])
                _worm_kept(replica, order)
            _deliver(replicas[2], sorted(events, key=lambda e: (e.hlc, e.origin)))
            _worm_kept(replicas[2], events)
            expected = _locks(replicas[2])
            for node in replicas[:2]:
                assert _locks(node) == expected
            holds = [e for e in events if e.type is EventType.OBJECT_LOCK_SET and e.payload.get("f") == "lh"]
            if holds:  # the newest legal hold decision stands, whatever retention was decided with it
                newest = max(holds, key=lambda e: (e.hlc, e.origin))
                assert expected["vs"][vid][0].get("lh") == newest.payload["lh"]
        finally:
            for node in nodes:
                node.close()


def test_issue22_a_lock_clock_of_an_older_release_merges_as_one_whole_state_event() -> None:
    """A peer of the release before per-field clocks answers ``lkc`` entries ``{h, o, k, lk, lh?}``: the quorum-read
    merge takes one as an event setting both fields at its stamp (it used to be the whole state), never fails."""
    old = {"h": 5 << 16, "o": "node-1", "k": "k", "lk": {"m": object_lock.COMPLIANCE, "u": 1000}, "lh": True}
    new = {"h": 7 << 16, "o": "node-2", "k": "k", **object_lock.event_state(object_lock.LEGAL_HOLD, None, False,
                                                                              7 << 16, "node-2")}
    for a, b in ((old, new), (new, old)):
        state: dict[str, Any] = {"k": "k", "i": [1, "node-1"], "bt": None, "vc": None, "vs": [], "vt": {}, "tc": {}}
        merged = merge_key_states({"a": {**state, "lkc": {"v": a}}, "b": {**state, "lkc": {"v": b}}}).state
        lk, lh = object_lock.effective(merged["lkc"]["v"])
        assert (lk, lh) == ({"m": object_lock.COMPLIANCE, "u": 1000}, False)
