"""robust19's settle step (cluster/listings.py ``QuorumListings``, cluster/key_reads.py
``QuorumKeyReads.settle_listing``) for ListObjectVersions and ListMultipartUploads, which use it as ListObjects does
(tests/unit/cluster/test_listing_in_flight.py) but had no test of their own.

Same replicas as there (tests/unit/cluster/test_key_reads.py: real journals and views, ``ListRange`` and
``ReadKeys`` answered by the real ``ReadsService``, catch-up passes and ``CatchUpFrom`` that apply the events a
replica holds), plus the node's real ``ReadGate`` (engine/read_gate.py) counting the events of the write in flight
in their own slots, as the sequencer does, so what the listing asks the gate is answered as on a node.

Each history runs with the settle step removed too (``settled=False``, strict xfail with ``raises=WentBackwards``):
there the later read goes backwards, and by that assertion only, so each test can fail.

The removal histories ("removals in flight" below) found a hole in robust19's settle step: a listing covered only
a write in flight on the bucket or on a key the merge walked, and a removal in flight leaves no key to walk (a key's
last version removed: its leaf is gone; an abort names no key at all). They failed before cluster/listings.py
covered any write in flight on the node (its module docstring). Two hypothesis tests close: random histories of
versions and uploads, one for the repair (both answering replicas list what was shown), one with real gates and
leases (the leaseholder that did not answer lists what was shown).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_key_reads import IDS, Pool
from test_listing_in_flight import listings

from s4.cluster import reads
from s4.cluster.listings import QuorumListings
from s4.cluster.liveness import DEAD
from s4.cluster.read_leases import LeaseGrants, LeaseSettings
from s4.engine.read_gate import ReadGate, slots_of


class WentBackwards(AssertionError):
    """A later read does not show what an earlier listing showed (or shows what it hid)."""


WITHOUT_SETTLE = pytest.mark.xfail(strict=True, raises=WentBackwards,
                                   reason="without the settle step the later read goes backwards")
#: Each history with the settle step and without it (``settle=None``): without, it must go backwards, and by
#: ``WentBackwards`` only (any other failure of the variant fails the run).
SETTLED = pytest.mark.parametrize("settled", [True, pytest.param(False, marks=WITHOUT_SETTLE)])


def same(later: list[tuple[str, str]], shown: list[tuple[str, str]]) -> None:
    if later != shown:
        raise WentBackwards(f"a later read answered {later}, after a listing answered {shown}")


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[ReadGate]:
    gate = ReadGate.create(tmp_path / "read-gate")
    try:
        yield gate
    finally:
        gate.close()


# -- what a listing shows --------------------------------------------------------------------------------------------
def versions(through: QuorumListings) -> list[tuple[str, str]]:
    page = asyncio.run(through.list_versions("b", "", "", "", "", 1000))
    assert not page.is_truncated
    return [(entry.key, entry.version_id) for entry in page.versions]


def objects(through: QuorumListings) -> list[tuple[str, str]]:
    page = asyncio.run(through.list_objects("b", "", "", "", 1000))
    assert not page.is_truncated
    return [(entry.key, entry.version_id) for entry in page.entries]


def uploads(through: QuorumListings) -> list[tuple[str, str]]:
    page = asyncio.run(through.list_uploads("b", "", "", "", "", 1000))
    assert not page.is_truncated
    return [(upload.key, upload.upload_id) for upload in page.uploads]


def local(pool: Pool, node_id: str) -> QuorumListings:
    """A listing of ``node_id``'s own replica alone (R=1): what a local listing under read leases answers."""
    return QuorumListings(node_id, [p for p in IDS if p != node_id], 1, pool.nodes[node_id].views,
                          lambda peer: None)


def version_ids(pool: Pool, key: str) -> list[str]:
    """The version ids of ``key`` on the writer (which holds every event), newest first."""
    return [r["v"] for r in reads.read_states(pool.writer.views, reads.OBJECT, "b", [key])[0]["vs"]]


def create_upload(pool: Pool, key: str) -> tuple[str, list[int]]:
    """CreateMultipartUpload of ``key`` on the writer: the upload id and the events."""
    pool.wall.ms += 1
    upload_id = pool.writer.run("create_multipart", bucket="b",
                                upload={"k": key, "ct": "text/plain", "m": {}, "hd": {}, "ca": "", "tg": {}})
    assert isinstance(upload_id, str), upload_id
    return upload_id, pool._new_events()


def in_flight(pool: Pool, gate: ReadGate, indexes: Sequence[int]) -> None:
    """The events are of a write still in flight on the node owning ``gate`` (engine/sequencer.py
    ``before_visible`` raises their slots; its coordinator's settle would lower them)."""
    for i in indexes:
        gate.add(slots_of(pool.events[i]), 1)


def leaseholder_n2() -> LeaseGrants:
    """n1's grants: n2 holds a lease of n1 (its reads and listings are local), n3 none."""
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0, revoke_after_s=5.0))
    grants.release("n3")
    assert grants.grant("n2", 0) > 0
    return grants


# -- ListObjectVersions ----------------------------------------------------------------------------------------------
@SETTLED
def test_versions_through_a_node_holding_a_version_alone_repair_the_stale_peer_first(pool: Pool,
                                                                                      settled: bool) -> None:
    """A new version W of "k" is on n1 only (its coordinator, the copies on their way). ListObjectVersions through
    n1 merges n1 and n2 and shows W: n2 catches up from n1 before the answer, so n2's own replica shows it and a
    later listing through n3 merging n3 and n2 (n1 away) shows it too."""
    pool.give(pool.put("k", 1), IDS)
    w = pool.put("k", 2)
    pool.give(w, ["n1"])
    first, _ = listings(pool, "n1", settled=settled)
    shown = versions(first)
    assert shown == [("a", version_ids(pool, "a")[0]), *(("k", v) for v in version_ids(pool, "k"))]
    same(versions(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and pool.passes == []
    pool.states = {"n1": DEAD}
    later, _ = listings(pool, "n3")
    same(versions(later), shown)


@SETTLED
def test_versions_through_a_stale_node_catch_it_up_from_the_answering_peer_first(pool: Pool, settled: bool) -> None:
    """A delete marker M on "a" is on n2 only (another coordinator's write). ListObjectVersions through n1 shows M
    from n2: n1 catches up from n2 before answering, so n1's own replica (a later local listing) shows M too."""
    pool.give(pool.write("delete_object", key="a", version_id=None), ["n2"])
    first, _ = listings(pool, "n1", settled=settled)
    shown = versions(first)
    assert shown == [("a", v) for v in version_ids(pool, "a")] and len(shown) == 2
    same(versions(local(pool, "n1")), shown)
    assert pool.passes == [("n1", "n2")] and pool.repair_calls == []


@SETTLED
def test_versions_answering_a_version_in_flight_first_bring_it_to_a_leaseholder(pool: Pool, gate: ReadGate,
                                                                              settled: bool) -> None:
    """W (a new version of "k") applied on n1 and n3, in flight (n1's gate counts it), on its way to n2, which holds
    a lease of n1. ListObjectVersions through n1 (n1 and n3: n2 does not answer ListRange) shows W: before the
    answer n2 holds W, so n2's local listing shows it too."""
    pool.give(pool.put("k", 1), IDS)
    w = pool.put("k", 2)
    pool.give(w, ["n1", "n3"])
    in_flight(pool, gate, w)
    pool.read_fails = {"n2"}
    through, spy = listings(pool, "n1", gate=gate, grants=leaseholder_n2(), settled=settled)
    shown = versions(through)
    assert ("k", version_ids(pool, "k")[0]) in shown
    same(versions(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


# -- ListMultipartUploads --------------------------------------------------------------------------------------------
@SETTLED
def test_uploads_through_a_node_holding_an_upload_alone_repair_the_stale_peer_first(pool: Pool,
                                                                                     settled: bool) -> None:
    """CreateMultipartUpload U of "k" is on n1 only (its coordinator). ListMultipartUploads through n1 (n1 and n2)
    shows U: n2 catches up from n1 first, so n2's own replica shows U and a later listing through n3 merging n3 and
    n2 (n1 away) shows it too."""
    upload_id, created = create_upload(pool, "k")
    pool.give(created, ["n1"])
    first, _ = listings(pool, "n1", settled=settled)
    shown = uploads(first)
    assert shown == [("k", upload_id)]
    same(uploads(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and pool.passes == []
    pool.states = {"n1": DEAD}
    later, _ = listings(pool, "n3")
    same(uploads(later), shown)


@SETTLED
def test_uploads_through_a_stale_node_catch_it_up_from_the_answering_peer_first(pool: Pool, settled: bool) -> None:
    """U of "k" is on n2 only (another coordinator's). ListMultipartUploads through n1 shows it from n2: n1 catches
    up from n2 first, so n1's own replica (a later local listing) shows U."""
    upload_id, created = create_upload(pool, "k")
    pool.give(created, ["n2"])
    first, _ = listings(pool, "n1", settled=settled)
    shown = uploads(first)
    assert shown == [("k", upload_id)]
    same(uploads(local(pool, "n1")), shown)
    assert pool.passes == [("n1", "n2")] and pool.repair_calls == []


@SETTLED
def test_uploads_hiding_an_upload_ended_on_the_answering_peer_catch_the_node_up_first(pool: Pool,
                                                                                      settled: bool) -> None:
    """U of "k" is everywhere; its abort is on n2 only. ListMultipartUploads through n1 (n1 and n2) finds U's end
    marker on n2 (asked by ReadKeys: n2's walk no longer lists U) and hides U: n1 catches up from n2 first, so its
    own replica does not show U again."""
    upload_id, created = create_upload(pool, "k")
    pool.give(created, IDS)
    pool.give(pool.write("abort_multipart", key="k", upload_id=upload_id), ["n2"])
    first, _ = listings(pool, "n1", settled=settled)
    shown = uploads(first)
    assert shown == []
    same(uploads(local(pool, "n1")), shown)
    assert pool.passes == [("n1", "n2")] and pool.repair_calls == []


@SETTLED
def test_uploads_answering_an_upload_in_flight_first_bring_it_to_a_leaseholder(pool: Pool, gate: ReadGate,
                                                                             settled: bool) -> None:
    """U of "k" applied on n1 and n3, in flight, on its way to the leaseholder n2. ListMultipartUploads through n1
    (n1 and n3) shows U: before the answer n2 holds it, so n2's local listing shows it too."""
    upload_id, created = create_upload(pool, "k")
    pool.give(created, ["n1", "n3"])
    in_flight(pool, gate, created)
    pool.read_fails = {"n2"}
    through, spy = listings(pool, "n1", gate=gate, grants=leaseholder_n2(), settled=settled)
    shown = uploads(through)
    assert shown == [("k", upload_id)]
    same(uploads(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


# -- removals in flight: nothing left for the merge to walk --------------------------------------------------------
@SETTLED
def test_versions_hiding_a_key_by_a_removal_in_flight_first_bring_it_to_a_leaseholder(pool: Pool, gate: ReadGate,
                                                                                     settled: bool) -> None:
    """The removal of the only version of "k" (DELETE ?versionId) applied on n1 and n3, in flight, on its way to the
    leaseholder n2. "k" has no leaf left on n1 and n3, so the merge never walks it: ListObjectVersions through n1
    shows no "k", and n2's local listing must not show it again afterwards (it did: only walked keys were
    covered)."""
    pool.give(pool.put("k", 1), IDS)
    gone = pool.write("delete_object", key="k", version_id=version_ids(pool, "k")[0])
    pool.give(gone, ["n1", "n3"])
    in_flight(pool, gate, gone)
    pool.read_fails = {"n2"}
    through, spy = listings(pool, "n1", gate=gate, grants=leaseholder_n2(), settled=settled)
    shown = versions(through)
    assert [k for k, _ in shown] == ["a"]
    same(versions(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


@pytest.mark.parametrize("other_upload", [False, True], ids=["alone", "beside-another"])
@SETTLED
def test_uploads_hiding_an_upload_by_an_abort_in_flight_first_bring_it_to_a_leaseholder(
        pool: Pool, gate: ReadGate, settled: bool, other_upload: bool) -> None:
    """U of "k" is everywhere; its abort is applied on n1 and n3, in flight, on its way to the leaseholder n2.
    ListMultipartUploads through n1 (n1 and n3) does not show U; n2's local listing must not show it again
    afterwards (it did: an abort names no key, its one slot is U's, and U is not walked; alone, "k" is not walked
    either)."""
    upload_id, created = create_upload(pool, "k")
    pool.give(created, IDS)
    others = []
    if other_upload:
        other_id, other = create_upload(pool, "k")
        pool.give(other, IDS)
        others = [("k", other_id)]
    aborted = pool.write("abort_multipart", key="k", upload_id=upload_id)
    pool.give(aborted, ["n1", "n3"])
    in_flight(pool, gate, aborted)
    pool.read_fails = {"n2"}
    through, spy = listings(pool, "n1", gate=gate, grants=leaseholder_n2(), settled=settled)
    shown = uploads(through)
    assert shown == others
    same(uploads(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


@SETTLED
def test_objects_hiding_a_key_by_a_removal_in_flight_first_bring_it_to_a_leaseholder(pool: Pool, gate: ReadGate,
                                                                                    settled: bool) -> None:
    """The same hole in ListObjects (its settle step is the same): the removal of the only version of "k" in flight
    on n1 and n3; a listing through n1 does not show "k", n2's local listing must not show it again."""
    pool.give(pool.put("k", 1), IDS)
    gone = pool.write("delete_object", key="k", version_id=version_ids(pool, "k")[0])
    pool.give(gone, ["n1", "n3"])
    in_flight(pool, gate, gone)
    pool.read_fails = {"n2"}
    through, spy = listings(pool, "n1", gate=gate, grants=leaseholder_n2(), settled=settled)
    shown = objects(through)
    assert shown == [("a", version_ids(pool, "a")[0])]
    same(objects(local(pool, "n2")), shown)
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


def test_a_write_in_flight_with_no_leaseholder_outside_the_answering_replicas_calls_nobody(pool: Pool,
                                                                                          gate: ReadGate) -> None:
    """The cost of covering any write in flight: a CatchUpFrom only to a leaseholder outside the answering replicas.
    A write in flight on another key, n3 answering, no peer holding a lease of n1: nothing is called."""
    pool.give(pool.put("k", 1), IDS)
    w = pool.put("z", 2)
    pool.give(w, ["n1", "n3"])
    in_flight(pool, gate, w)
    pool.read_fails = {"n2"}
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0))
    grants.release("n2")
    grants.release("n3")
    through, spy = listings(pool, "n1", gate=gate, grants=grants)
    assert [k for k, _ in uploads(through)] == [] and [k for k, _ in versions(through)] == ["a", "k", "z"]
    assert pool.repair_calls == [] and pool.passes == [] and spy.calls == 2 and spy.port.covered == 2


# -- hypothesis: random histories of versions and uploads dealt to random replicas ------------------------------------
def decide(data: st.DataObject, pool: Pool) -> list[int]:
    """One random decision on the writer: a put, a delete marker, a version's removal, an upload created or
    aborted, on one of two keys (removals weigh as much as what they remove)."""
    key = data.draw(st.sampled_from(["k1", "k2"]), label="key")
    op = data.draw(st.sampled_from(["put", "put", "marker", "remove", "remove", "create", "create", "abort",
                                    "abort"]), label="op")
    if op == "put":
        return pool.put(key, data.draw(st.integers(0, 3), label="content"))
    if op == "marker":
        return pool.write("delete_object", key=key, version_id=None)
    if op == "create":
        return create_upload(pool, key)[1]
    if op == "remove":
        held = version_ids(pool, key)
        return pool.write("delete_object", key=key, version_id=data.draw(st.sampled_from(held))) if held else []
    live = [u for k, u in uploads(QuorumListings("writer", [], 1, pool.writer.views, lambda peer: None)) if k == key]
    return pool.write("abort_multipart", key=key, upload_id=data.draw(st.sampled_from(live))) if live else []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_settled_listings_of_versions_and_uploads_leave_both_answering_replicas_holding_what_they_showed(
        data: st.DataObject) -> None:
    """N=3, R=2. Writes land on random replicas between listings; each listing (versions, then uploads) goes through
    a random node, merging one random peer. After it, both replicas that answered list locally exactly what it
    showed (step 1 of the settle), so a later listing through any node meeting one of them cannot go backwards.
    With ``settled=False`` hypothesis finds a history that goes backwards within the 30 examples (checked when this
    was written; not a variant here, its shrinking takes a minute)."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(Path(tmp))
        try:
            for _ in range(data.draw(st.integers(3, 20), label="steps")):
                if data.draw(st.booleans(), label="write?"):
                    pool.give(decide(data, pool), sorted(data.draw(st.sets(st.sampled_from(IDS)), label="to")))
                    continue
                through = data.draw(st.sampled_from(IDS), label="through")
                peer = data.draw(st.sampled_from([p for p in IDS if p != through]), label="peer")
                pool.read_fails = set(IDS) - {through, peer}
                listing, _ = listings(pool, through)
                for show in (versions, uploads):
                    shown = show(listing)
                    same(show(local(pool, through)), shown)
                    same(show(local(pool, peer)), shown)
        finally:
            pool.close()


class Gates:
    """A real read gate per node, counting the events it holds of writes not yet on every replica (in flight: this
    simulation settles a write when every replica has it, so a node with nothing unsettled holds only events every
    node holds)."""

    def __init__(self, pool: Pool, root: Path) -> None:
        self.pool = pool
        self.gates = {i: ReadGate.create(root / f"gate-{i}") for i in IDS}
        self.counted: dict[str, set[int]] = {i: set() for i in IDS}
        sync = pool.sync

        def synced(source: str, target: str) -> int:
            """A catch-up pass or CatchUpFrom makes events visible: their slots rise as ``before_visible`` raises
            them, before the settle step asks the gate again."""
            new = sync(source, target)
            self.update()
            return new

        pool.sync = synced  # type: ignore[method-assign]

    def update(self) -> None:
        everywhere = set.intersection(*(self.pool.held[i] for i in IDS))
        for node_id, gate in self.gates.items():
            now = self.pool.held[node_id] - everywhere
            for i in now - self.counted[node_id]:
                gate.add(slots_of(self.pool.events[i]), 1)
            for i in self.counted[node_id] - now:
                gate.add(slots_of(self.pool.events[i]), -1)
            self.counted[node_id] = now

    def close(self) -> None:
        for gate in self.gates.values():
            gate.close()


#: Where a write lands: everywhere (settled) as often as on two replicas (in flight, the hole's shape), or on one.
SUBSETS = [list(IDS)] * 3 + [["n1", "n2"], ["n1", "n3"], ["n2", "n3"]] + [[i] for i in IDS] + [[]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_leaseholders_local_listing_after_a_settled_listing_shows_what_it_showed(data: st.DataObject) -> None:
    """N=3, R=2, every node holding leases of the others. Random writes (puts, delete markers, version removals,
    uploads created and aborted) land on random replicas, each in flight until every replica has it. A listing
    through a random node merges one random peer; the third node, a leaseholder that did not answer, then lists
    locally if it may (nothing unsettled on it: ``ReadGate.listing_local``): it must show exactly what the settled
    listing showed, versions and uploads. Against the code before cluster/listings.py covered any write in flight,
    this found the hole (a removal in flight on the two answering replicas, the third showing the entry again) in 3
    of 6 fresh seeds at these settings, so the removal tests above are the regression guard, this the wider net."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(Path(tmp))
        gates = Gates(pool, Path(tmp))
        try:
            for _ in range(data.draw(st.integers(3, 16), label="steps")):
                step = data.draw(st.sampled_from(["write", "write", "deliver", "list", "list"]), label="step")
                if step == "write":
                    pool.give(decide(data, pool), data.draw(st.sampled_from(SUBSETS), label="to"))
                elif step == "deliver":
                    lacking = [(i, n) for n in IDS for i in range(len(pool.events)) if i not in pool.held[n]]
                    if lacking:
                        i, n = data.draw(st.sampled_from(lacking), label="late event")
                        pool.give([i], [n])
                else:
                    through = data.draw(st.sampled_from(IDS), label="through")
                    peer = data.draw(st.sampled_from([p for p in IDS if p != through]), label="peer")
                    third = next(n for n in IDS if n not in (through, peer))
                    pool.read_fails = {third}
                    grants = LeaseGrants([p for p in IDS if p != through], 0, LeaseSettings(lease_s=30.0))
                    assert grants.grant(peer, 0) > 0 and grants.grant(third, 0) > 0
                    gates.update()
                    listing, _ = listings(pool, through, gate=gates.gates[through], grants=grants)
                    shown = (versions(listing), uploads(listing))
                    gates.update()
                    if gates.gates[third].unsettled == 0:
                        same(versions(local(pool, third)), shown[0])
                        same(uploads(local(pool, third)), shown[1])
                gates.update()
        finally:
            gates.close()
            pool.close()
