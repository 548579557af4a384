"""Quorum reads, the key merge (cluster/key_merge.py): R divergent replicas, built by applying random subsets of a
random event history to real engine views, merge to exactly the state of a replica that got every event; the merge
names every replica that must be repaired; and with blocking repair, successive quorum reads never go backwards."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster import reads
from s4.cluster.key_merge import merge_bucket_states, merge_key_states, merge_upload_states
from s4.engine.projector import stamp_of
from s4.journal import Event
from tests.helpers.read_history import KEYS, Wall, deal, deliver, history
from tests.helpers.replicas import Node

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def states(node: Node, kind: str, ids: list[str]) -> list[dict[str, Any]]:
    return reads.read_states(node.views, kind, "b", ids)


def upload_ids(nodes: list[Node], events: list[Event]) -> list[str]:
    return sorted({e.payload["upload_id"] if "upload_id" in e.payload else e.payload["upload"]["u"]
                   for e in events if e.type.value.startswith("multipart.")})


@SETTINGS
@given(data=st.data())
def test_merge_of_divergent_replicas_is_the_state_of_one_that_got_every_event(data: st.DataObject) -> None:
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        first, events = history(data, Path(tmp), wall)
        r = data.draw(st.integers(2, 3), label="R")
        nodes = [Node(Path(tmp) / f"r{i}", f"replica-{i}", wall) for i in range(r)]
        full = Node(Path(tmp) / "full", "full", wall)
        try:
            for node, share in zip(nodes, deal(data, events, r), strict=True):
                deliver(node, first)
                deliver(node, share)
            deliver(full, first + sorted(events, key=lambda e: (e.hlc, e.origin)))
            for kind, ids, merge in (("object", list(KEYS), merge_key_states),
                                     ("upload", upload_ids(nodes, events), merge_upload_states),
                                     ("bucket", ["b"], merge_bucket_states)):
                answers = [states(n, kind, ids) for n in nodes]
                want = states(full, kind, ids)
                for i, ident in enumerate(ids):
                    merged = merge({n.node_id: a[i] for n, a in zip(nodes, answers, strict=True)})
                    expected = dict(want[i])
                    if kind == "bucket":  # the derived counts are the answering replica's, not merged
                        for rec in (merged.state["b"], expected["b"]):
                            rec.pop("n"), rec.pop("sz")
                    assert merged.state == expected, (kind, ident)
                    # exactly the replicas whose own state differs from the merge are named stale
                    for n, a in zip(nodes, answers, strict=True):
                        own = dict(a[i])
                        if kind == "bucket":
                            own["b"] = {k: v for k, v in own["b"].items() if k not in ("n", "sz")}
                        assert (n.node_id in merged.stale) == (own != expected), (kind, ident, n.node_id)
        finally:
            for n in [*nodes, full]:
                n.close()


def latest_stamp(state: dict[str, Any]) -> tuple[int, str] | None:
    return stamp_of(state["vs"][0]) if state["vs"] else None


def newest_fact(state: dict[str, Any]) -> tuple[int, str]:
    """The newest (hlc, origin) the merged state of a key reflects: its versions and its tombstones."""
    stamps = [stamp_of(v) for v in state["vs"]] + [stamp_of(t) for t in state["vt"].values()]
    return max(stamps, default=(0, ""))


@SETTINGS
@given(data=st.data())
def test_quorum_reads_with_blocking_repair_never_go_backwards(data: st.DataObject) -> None:
    """N=3, R=2: replicas gain events over time (never lose any); each read asks two replicas, merges, and repairs
    the stale ones with what the others held before answering. A later read of the key, through any two replicas,
    never reflects an older newest fact than an earlier read returned (monotonic reads)."""
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        first, events = history(data, Path(tmp), wall)
        nodes = [Node(Path(tmp) / f"r{i}", f"replica-{i}", wall) for i in range(3)]
        held: list[set[int]] = [set() for _ in nodes]
        try:
            for node in nodes:
                deliver(node, first)
            returned: dict[str, tuple[int, str]] = {}
            for _ in range(data.draw(st.integers(5, 40), label="steps")):
                if events and data.draw(st.booleans(), label="deliver?"):
                    i = data.draw(st.integers(0, len(events) - 1), label="event")
                    to = data.draw(st.integers(0, 2), label="to")
                    if i not in held[to]:
                        deliver(nodes[to], [events[i]])
                        held[to].add(i)
                    continue
                key = data.draw(st.sampled_from(KEYS), label="key")
                chosen = data.draw(st.permutations(range(3)), label="quorum")[:2]
                merged = merge_key_states({j: states(nodes[j], "object", [key])[0] for j in chosen})
                fact = newest_fact(merged.state)
                assert fact >= returned.get(key, (0, "")), key
                returned[key] = fact
                # blocking read repair: the stale replicas get what the others of the quorum held of this key
                union = set().union(*(held[j] for j in chosen))
                for j in merged.stale:
                    missing = sorted(union - held[j])
                    deliver(nodes[j], [events[m] for m in missing])
                    held[j] |= set(missing)
                after = merge_key_states({j: states(nodes[j], "object", [key])[0] for j in chosen})
                assert not after.stale and after.state == merged.state
        finally:
            for n in nodes:
                n.close()


def test_a_tombstone_on_one_replica_hides_the_version_another_still_holds(tmp_path: Path) -> None:
    """The minimal case of the merge rule: A holds a version, B removed it (its leaf is gone, its tombstone stays).
    The merge has no version, and A is the stale one."""
    wall = Wall()
    a, b = Node(tmp_path / "a", "node-a", wall), Node(tmp_path / "b", "node-b", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        assert a.run("set_bucket_config", bucket="b", kind="versioning", value="Enabled") is None
        deliver(b, a.own_events())
        from s4.engine.model import version_record
        from tests.helpers.read_history import HASHES
        assert not isinstance(a.run("put_object", bucket="b", key="k", blobs_at=[[HASHES[0], "v", 0, 1]],
                                    version=version_record(None, 1, "e", blobs=[[HASHES[0], 1]])), BaseException)
        deliver(b, a.own_events())
        vid = states(b, "object", ["k"])[0]["vs"][0]["v"]
        wall.ms += 1
        assert not isinstance(b.run("delete_object", bucket="b", key="k", version_id=vid), BaseException)
        sa, sb = states(a, "object", ["k"])[0], states(b, "object", ["k"])[0]
        assert sa["vs"] and not sb["vs"] and vid in sb["vt"]
        merged = merge_key_states({"a": sa, "b": sb})
        assert merged.state["vs"] == [] and merged.stale == {"a": (("tomb", vid),)}
    finally:
        a.close()
        b.close()


def test_a_lock_set_that_overtook_its_version_does_not_make_a_replica_stale_for_good(tmp_path: Path) -> None:
    """Issue 22: B receives a version's ``object.lock_set`` before the version itself (a hint delivered late). B
    keeps it in ``lock_clocks`` and the version takes the lock when it arrives, so A and B agree. The merge judges a
    replica's lock by its lock clocks, never by the lock fields of its version record: two replicas holding the same
    clocks are not stale even where their records' lock fields differ (views of an older layout, a clock collected
    with its tombstone), which no catch-up could change (a 503 for the key on every read)."""
    wall = Wall()
    a, b = Node(tmp_path / "a", "node-a", wall), Node(tmp_path / "b", "node-b", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1", object_lock=True) is None
        deliver(b, a.own_events())
        from s4.engine.model import version_record
        from tests.helpers.read_history import HASHES
        seen = len(a.own_events())
        put = a.run("put_object", bucket="b", key="k", blobs_at=[[HASHES[0], "v", 0, 1]],
                    version=version_record(None, 1, "e", blobs=[[HASHES[0], 1]]))
        assert not isinstance(put, BaseException)
        wall.ms += 1
        assert a.run("set_object_lock", bucket="b", key="k", version_id=put["v"], legal_hold=True) == put["v"]
        version_put, lock_set = a.own_events()[seen:]
        deliver(b, [lock_set])
        deliver(b, [version_put])
        sa, sb = states(a, "object", ["k"])[0], states(b, "object", ["k"])[0]
        assert sa["vs"][0].get("lh") is True and sb["vs"][0].get("lh") is True
        assert sa["lkc"] == sb["lkc"] and merge_key_states({"a": sa, "b": sb}).stale == {}
        unlocked = dict(sb, vs=[{k: v for k, v in sb["vs"][0].items() if k not in ("lh", "lc")}])
        merged = merge_key_states({"a": sa, "b": unlocked})
        assert merged.stale == {} and merged.state["vs"][0]["lh"] is True
        without_clock = dict(sb, lkc={})
        assert merge_key_states({"a": sa, "b": without_clock}).stale == {"b": (("lock", put["v"]),)}
    finally:
        a.close()
        b.close()
