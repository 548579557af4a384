"""Applying peers' events (engine/replica.py, projector LWW rules; docs/architecture/replication.md).

Three simulated coordinators make random decisions through their own sequencers (sometimes exchanging events, as
quorum reads would let them see each other's writes); their logical events reach three fresh replicas in random
orders, in random batches, with random duplicates. Every replica must end in the same logical state, the state
of a replica that got the events in (hlc, origin) order; applying everything again changes nothing; replaying a
replica's journal rebuilds its views exactly.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine.errors import MissingBlobsError, PeerEventRefused, S3Error
from s4.engine.iam import IamError, root_user_id
from s4.engine.model import BlobLocation, version_record
from s4.engine.replica import Applied, PeerBatchResult
from s4.engine.replicated_commit import ReplicatedCommitPath
from s4.engine.views import keys, namespace
from s4.engine.views.env import Views, unpack
from s4.engine.views.records import Tx
from s4.journal import Event, EventType
from s4.journal.hlc import ClockOffsetError
from tests.helpers.engine_io import get, put
from tests.helpers.replicas import Node, check_blob_refs, event_ids, logical_state
from tests.helpers.views_compare import dump_views, replay_events

T0 = 1_750_000_000_000
KEYS = ("k1", "k2", "d/k3")
CONTENTS = [bytes([i]) * (i + 1) for i in range(6)]
HASHES = [hashlib.sha256(c).digest() for c in CONTENTS]
USERNAMES = ("alice", "bob_1", "carol")
ROOT_ID = root_user_id("test-cluster", "root")


class Wall:
    """One wall clock for every simulated node (their HLCs still differ): steps of 0-2 ms make equal stamps from
    two nodes likely, so ties broken by origin are exercised."""

    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def staged(digest: bytes) -> BlobLocation | None:
    """The replicas' resolver: every test blob was 'stored' by the caller at a made-up place."""
    i = HASHES.index(digest) if digest in HASHES else -1
    return BlobLocation(digest, "staged-1", 1000 * i, len(CONTENTS[i])) if i >= 0 else None


def put_args(node: Node, key: str, content: int) -> dict[str, Any]:
    h, size = HASHES[content], len(CONTENTS[content])
    return {"bucket": "b", "key": key, "blobs_at": [[h, f"vol-{node.node_id}", 100 * content, size]],
            "version": version_record(None, size, hashlib.md5(CONTENTS[content]).hexdigest(),
                                      content_type="text/plain", blobs=[[h, size]])}


def versions_of(node: Node, key: str) -> list[str]:
    with node.views.read() as txn:
        tx = Tx(txn, node.views.dbs)
        bucket = tx.bucket("b")
        if bucket is None:
            return []
        oid = namespace.find_object(txn, tx.dbs["ns"], bucket.root, key.encode())
        return [] if oid is None else [rec["v"] for _, rec in tx.versions(oid)]


def scan(node: Node, db: str) -> dict[bytes, Any]:
    with node.views.read() as txn:
        return {k: unpack(v) for k, v in Tx(txn, node.views.dbs).scan(db, b"")}


def decide(data: st.DataObject, node: Node, counter: list[int]) -> None:
    """One random decision on ``node``; refusals (S3Error, IamError) are fine, they change nothing."""
    op = data.draw(st.sampled_from([
        "put", "put", "put", "delete", "delete_version", "tags", "versioning", "cors", "mpu_create", "mpu_part",
        "mpu_part", "mpu_complete", "mpu_abort", "user_create", "user_update", "user_delete", "cred_create",
        "cred_delete", "root_seed"]), label="op")
    key = data.draw(st.sampled_from(KEYS), label="key")
    content = data.draw(st.integers(0, len(CONTENTS) - 1), label="content")
    result: Any = None
    if op == "put":
        result = node.run("put_object", **put_args(node, key, content))
    elif op == "delete":
        result = node.run("delete_object", bucket="b", key=key, version_id=None)
    elif op in ("delete_version", "tags"):
        ids = versions_of(node, key)
        vid = data.draw(st.sampled_from(ids), label="version") if ids and data.draw(st.booleans()) else None
        if op == "delete_version" and vid is not None:
            result = node.run("delete_object", bucket="b", key=key, version_id=vid)
        elif op == "tags":
            tags = {"t": data.draw(st.sampled_from("abc"))} if data.draw(st.booleans()) else {}
            result = node.run("set_object_tags", bucket="b", key=key, version_id=vid, tags=tags)
    elif op == "versioning":
        result = node.run("set_bucket_config", bucket="b", kind="versioning",
                          value=data.draw(st.sampled_from(["Enabled", "Suspended"])))
    elif op == "cors":
        value = {"rules": data.draw(st.integers(0, 3))} if data.draw(st.booleans()) else None
        result = node.run("set_bucket_config", bucket="b", kind="cors", value=value)
    elif op == "mpu_create":
        result = node.run("create_multipart", bucket="b",
                          upload={"k": key, "ct": "text/plain", "m": {}, "hd": {}, "ca": "", "tg": {}})
    elif op.startswith("mpu_"):
        uploads = sorted(scan(node, "uploads").values(), key=lambda u: u["u"])
        if not uploads:
            return
        upload = data.draw(st.sampled_from(uploads), label="upload")
        if op == "mpu_part":
            h, size = HASHES[content], len(CONTENTS[content])
            part = {"n": data.draw(st.integers(1, 3)), "e": hashlib.md5(CONTENTS[content]).hexdigest(), "s": size,
                    "b": [[h, size]]}
            result = node.run("store_part", bucket="b", key=upload["k"], upload_id=upload["u"], part=part,
                              blobs_at=[[h, f"vol-{node.node_id}", 100 * content, size]])
        elif op == "mpu_complete":
            parts = [[p["n"], p["e"]] for k, p in sorted(scan(node, "parts").items())
                     if k.startswith(keys.parts_prefix(upload["u"]))]
            if parts:
                result = node.run("complete_multipart", bucket="b", key=upload["k"], upload_id=upload["u"],
                                  parts=parts, min_part_bytes=0)
        else:
            result = node.run("abort_multipart", bucket="b", key=upload["k"], upload_id=upload["u"])
    elif op == "root_seed":  # a pool's nodes each seed the one root user (engine/iam.py root_user_id)
        result = node.run("iam_create_user", username="root", role="SuperUser", password_hash=f"hash-{counter[0]}",
                          user_id=ROOT_ID)
        counter[0] += 1
    elif op == "user_create":
        result = node.run("iam_create_user", username=data.draw(st.sampled_from(USERNAMES)), role="Writer",
                          password_hash=f"hash-{counter[0]}")
        counter[0] += 1
    else:
        users = sorted(scan(node, "users"))
        if not users:
            return
        user_id = data.draw(st.sampled_from(users), label="user").decode()
        if op == "user_update":
            change = data.draw(st.sampled_from([{"role": "Reader"}, {"role": "SuperUser"},
                                                {"password_hash": f"hash-{counter[0]}"}, {"active": False},
                                                {"active": True}]))
            counter[0] += 1
            result = node.run("iam_update_user", user_id=user_id, **change)
        elif op == "user_delete":
            result = node.run("iam_delete_user", user_id=user_id)
        elif op == "cred_create":
            result = node.run("iam_create_credential", user_id=user_id, access_key=f"S4AK{counter[0]:016d}",
                              secret_key=b"ciphertext")
            counter[0] += 1
        else:
            result = node.run("iam_delete_credential", user_id=user_id)
    if isinstance(result, BaseException) and not isinstance(result, S3Error | IamError):
        raise result


def deliver(node: Node, events: list[Event]) -> None:
    result = node.apply(events, staged)
    assert isinstance(result, PeerBatchResult), result


def buckets_first(events: list[Event]) -> list[Event]:
    """Bucket creation and deletion are linearized by the cluster's register (replication.md): every replica
    applies them before the bucket's other events. The rest may come in any order."""
    return [e for e in events if e.type is EventType.BUCKET_CREATED] + \
        [e for e in events if e.type is not EventType.BUCKET_CREATED]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_replicas_converge_whatever_the_order_and_duplicates(data: st.DataObject) -> None:
    wall = Wall()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coords = [Node(root / f"c{i}", f"node-{i}", wall) for i in range(3)]
        replicas = [Node(root / f"r{i}", f"replica-{i}", wall) for i in range(4)]
        try:
            created = coords[0].run("create_bucket", bucket="b", region="us-east-1")
            assert created is None
            for peer in coords[1:]:
                deliver(peer, coords[0].own_events())
            counter = [0]
            for _ in range(data.draw(st.integers(3, 25), label="steps")):
                wall.ms += data.draw(st.integers(0, 2), label="tick")
                if data.draw(st.integers(0, 4), label="sync?") == 0:
                    src, dst = data.draw(st.permutations(coords), label="sync")[:2]
                    deliver(dst, src.own_events())
                else:
                    decide(data, data.draw(st.sampled_from(coords), label="coordinator"), counter)
            events = [e for c in coords for e in c.own_events()]

            # three replicas: random order, duplicates, random batches; the fourth gets them in (hlc, origin) order
            for replica in replicas[:3]:
                shuffled = buckets_first(data.draw(st.permutations(events), label="order"))
                dups = data.draw(st.lists(st.sampled_from(shuffled), max_size=5), label="duplicates")
                stream = shuffled + dups
                cuts = sorted(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=4), label="cuts"))
                for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                    if start < end:
                        deliver(replica, stream[start:end])
            deliver(replicas[3], sorted(events, key=lambda e: (e.hlc, e.origin)))

            expected = logical_state(replicas[3].views)
            for node in replicas:
                assert logical_state(node.views) == expected
                check_blob_refs(node.views)
                assert {(e.origin, e.hlc) for e in events} == event_ids(node.views)

            # the coordinators converge too, once each has every other's events
            for coord in coords:
                deliver(coord, [e for c in coords if c is not coord for e in c.own_events()])
                assert logical_state(coord.views) == expected
                check_blob_refs(coord.views)

            # applying everything twice changes nothing, and nothing is journaled again
            replica = replicas[0]
            before, last_seq = dump_views(replica.views), replica.journal.last_seq
            again = replica.apply(events, staged)
            assert isinstance(again, PeerBatchResult)
            assert set(again.outcomes) <= {Applied.ALREADY_HAD}
            assert dump_views(replica.views) == before and replica.journal.last_seq == last_seq

            # replaying the replica's journal rebuilds exactly the same views
            rebuilt = Views(root / "rebuilt", sync=False)
            try:
                replay_events(replica.journal.read(), rebuilt)
                assert dump_views(rebuilt) == before
            finally:
                rebuilt.close()
        finally:
            for node in coords + replicas:
                node.close()


# -- deterministic cases ----------------------------------------------------------------------------------------
def _pair(tmp_path: Path, wall: Wall | None = None) -> tuple[Node, Node, Wall]:
    wall = wall or Wall()
    a, b = Node(tmp_path / "a", "node-a", wall), Node(tmp_path / "b", "node-b", wall)
    assert a.run("create_bucket", bucket="b", region="us-east-1") is None
    deliver(b, a.own_events())
    return a, b, wall


def test_a_missing_blob_refuses_the_whole_batch_and_changes_nothing(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("put_object", **put_args(a, "k2", 1))
        before, last_seq = dump_views(b.views), b.journal.last_seq
        only_first = lambda h: staged(h) if h == HASHES[0] else None  # noqa: E731
        refused = b.apply(a.own_events(), only_first)
        assert isinstance(refused, MissingBlobsError) and refused.hashes == [HASHES[1]]
        assert dump_views(b.views) == before and b.journal.last_seq == last_seq
        result = b.apply(a.own_events(), staged)
        assert isinstance(result, PeerBatchResult)
        assert result.outcomes == (Applied.ALREADY_HAD, Applied.APPLIED, Applied.APPLIED)
        assert versions_of(b, "k2") == ["null"]
    finally:
        a.close()
        b.close()


def test_a_put_deleted_since_applies_without_its_bytes_after_what_supersedes_it(tmp_path: Path) -> None:
    """A replica away while k1 was put and deleted gets both events, but the put's blob is gone on every node (its
    reference was released by the delete). In one batch the put is applied after the delete, without the bytes, as
    the no-op it is; alone it is refused (it would be a live version without bytes); once the delete is held, the
    put alone applies too. Replaying the replica's journal rebuilds the same views (the put is journaled after
    what supersedes it)."""
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        events = a.own_events()
        nothing = lambda h: None  # noqa: E731 - no node holds the blob any more
        result = b.apply(events, nothing)
        assert isinstance(result, PeerBatchResult)  # the bucket's creation it had; the put and delete it applied
        assert result.outcomes == (Applied.ALREADY_HAD, Applied.APPLIED, Applied.APPLIED)
        assert versions_of(b, "k1") == []
        check_blob_refs(b.views)
        journaled = [e for e in b.journal.read() if e.type in (EventType.OBJECT_VERSION_PUT,
                                                                 EventType.OBJECT_VERSION_REMOVED)]
        assert [e.type for e in journaled] == [EventType.OBJECT_VERSION_REMOVED, EventType.OBJECT_VERSION_PUT]
        rebuilt = Views(tmp_path / "rebuilt", sync=False)
        try:
            replay_events(b.journal.read(), rebuilt)
            assert dump_views(rebuilt) == dump_views(b.views)
        finally:
            rebuilt.close()
    finally:
        a.close()
        b.close()
    a, b, _ = _pair(tmp_path / "second")
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        events = a.own_events()
        put_event = next(e for e in events if e.type is EventType.OBJECT_VERSION_PUT)
        refused = b.apply([e for e in events if e.seq <= put_event.seq], lambda h: None)
        assert isinstance(refused, MissingBlobsError) and refused.hashes == [HASHES[0]]
        assert isinstance(b.apply([e for e in events if e.seq > put_event.seq], lambda h: None), PeerBatchResult)
        assert isinstance(b.apply([put_event], lambda h: None), PeerBatchResult)  # superseded by now
        assert versions_of(b, "k1") == []
    finally:
        a.close()
        b.close()


def test_a_far_future_hlc_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    a, b, wall = _pair(tmp_path)
    try:
        wall.ms += 3_600_000  # a's clock an hour ahead of b's wall clock
        a.run("put_object", **put_args(a, "k1", 0))
        wall.ms -= 3_600_000
        before, last_seq, clock = dump_views(b.views), b.journal.last_seq, b.clock.last
        refused = b.apply(a.own_events(), staged)
        assert isinstance(refused, ClockOffsetError)
        assert dump_views(b.views) == before and b.journal.last_seq == last_seq and b.clock.last == clock
    finally:
        a.close()
        b.close()


def test_a_peers_node_local_event_is_refused(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        moved = Event(1, a.clock.tick(), "node-a", EventType.BLOB_MOVED, {"hash": HASHES[0], "volume": "v",
                                                                         "offset": 0})
        before = dump_views(b.views)
        refused = b.apply([moved], staged)
        assert isinstance(refused, PeerEventRefused) and not refused.behind
        assert dump_views(b.views) == before
    finally:
        a.close()
        b.close()


def test_an_event_of_a_bucket_not_created_here_is_refused_as_behind(tmp_path: Path) -> None:
    wall = Wall()
    a, c = Node(tmp_path / "a", "node-a", wall), Node(tmp_path / "c", "node-c", wall)
    try:
        a.run("create_bucket", bucket="b", region="us-east-1")
        a.run("put_object", **put_args(a, "k1", 0))
        put = a.own_events()[1:]
        refused = c.apply(put, staged)
        assert isinstance(refused, PeerEventRefused) and refused.behind
        assert c.journal.last_seq == 0
    finally:
        a.close()
        c.close()


def test_equal_hlcs_of_two_nodes_keep_both_versions(tmp_path: Path) -> None:
    """Two nodes stamp versions of one key with the same hlc: the versions' keys include the origin, so neither
    overwrites the other (with an hlc-only key one would silently replace the other in ``versions``)."""
    wall = Wall()
    a, b = Node(tmp_path / "a", "node-a", wall), Node(tmp_path / "b", "node-b", wall)
    try:
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        a.run("set_bucket_config", bucket="b", kind="versioning", value="Enabled")
        deliver(b, a.own_events())
        a.clock.observe(b.clock.last)
        b.clock.observe(a.clock.last)  # both clocks at the same stamp: their next ticks are equal
        a.run("put_object", **put_args(a, "k1", 0))
        b.run("put_object", **put_args(b, "k1", 1))
        ea, eb = a.own_events()[-1], b.own_events()[-1]
        assert ea.hlc == eb.hlc
        deliver(a, [eb])
        deliver(b, [ea])
        assert logical_state(a.views) == logical_state(b.views)
        assert len(versions_of(a, "k1")) == 2
        latest = versions_of(a, "k1")[0]
        assert latest == eb.payload["version"]["v"]  # "node-b" > "node-a" breaks the tie
        check_blob_refs(a.views)
    finally:
        a.close()
        b.close()


def test_an_older_put_arriving_after_the_removal_stays_removed(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        put, removed = a.own_events()[1:]
        assert removed.type is EventType.OBJECT_VERSION_REMOVED
        deliver(b, [removed])
        deliver(b, [put])
        assert versions_of(b, "k1") == [] and logical_state(b.views) == logical_state(a.views)
        assert logical_state(b.views)["tombstone_count"] == 1
        check_blob_refs(b.views)
    finally:
        a.close()
        b.close()


def test_events_of_a_deleted_buckets_old_incarnation_are_ignored(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        late_put = a.own_events()[-1]
        a.run("delete_object", bucket="b", key="k1", version_id=None)
        assert a.run("delete_bucket", bucket="b") is None
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        events = a.own_events()
        deliver(b, [e for e in events if e is not late_put and e.type is not EventType.OBJECT_VERSION_PUT])
        deliver(b, [late_put])  # the first life's put, arriving after the name was deleted and re-created
        assert versions_of(b, "k1") == []
        assert logical_state(b.views) == logical_state(a.views)
        duplicate_create = [e for e in events if e.type is EventType.BUCKET_CREATED][0]
        expected = logical_state(b.views)
        fresh = Node(tmp_path / "c", "node-c", Wall())
        try:
            deliver(fresh, [e for e in events if e.type is not EventType.OBJECT_VERSION_PUT])
            deliver(fresh, [duplicate_create, late_put])  # a late copy of the first creation changes nothing
            assert logical_state(fresh.views) == expected
        finally:
            fresh.close()
    finally:
        a.close()
        b.close()


def test_a_recreation_arriving_before_the_old_lifes_delete_is_not_lost(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        assert a.run("delete_bucket", bucket="b") is None
        assert a.run("create_bucket", bucket="b", region="us-east-1") is None
        a.run("put_object", **put_args(a, "k1", 0))
        deleted, created, put = a.own_events()[1:]
        deliver(b, [created, put])  # b still holds the first life: the second replaces it
        assert versions_of(b, "k1") == ["null"]
        deliver(b, [deleted])  # the first life's delete, late: leaves the second alone
        assert logical_state(b.views) == logical_state(a.views)
    finally:
        a.close()
        b.close()


def test_a_retried_rename_applies_once(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "d/x", 0))
        a.run("rename", bucket="b", src="d/", dst="e/", client_token="t1")
        deliver(b, a.own_events())
        a.run("put_object", **put_args(a, "d/x", 1))  # the old name is used again
        deliver(b, a.own_events()[-1:])
        rename = [e for e in a.own_events() if e.type is EventType.PREFIX_RENAMED]
        result = b.apply(rename, staged)
        assert isinstance(result, PeerBatchResult) and result.outcomes == (Applied.ALREADY_HAD,)
        assert versions_of(b, "d/x") == ["null"] and versions_of(b, "e/x") == ["null"]
        assert logical_state(b.views) == logical_state(a.views)
    finally:
        a.close()
        b.close()


def test_every_decider_event_of_a_bucket_carries_its_incarnation(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    try:
        a.run("put_object", **put_args(a, "k1", 0))
        created, put = a.own_events()
        assert put.payload["inc"] == [created.hlc, created.origin]
    finally:
        a.close()
        b.close()


@pytest.mark.anyio
async def test_a_peers_put_through_the_local_commit_path_is_readable(make_engine: Any, tmp_path: Path) -> None:
    """The entry point cluster code calls: LocalCommitPath.apply_peer_events, with blobs the caller just stored."""
    src, dst = make_engine(tmp_path / "src"), make_engine(commit_path=ReplicatedCommitPath())
    await src.create_bucket("bkt")
    await put(src, "bkt", "k", b"hello, replica")
    events = [e for e in src._commit_path.journal.read() if e.type in (EventType.BUCKET_CREATED,
                                                                        EventType.OBJECT_VERSION_PUT)]
    stored = await dst.ingestor.ingest_bytes(b"hello, replica")  # what cluster/blobs.py would stage
    staged_here = {loc[0]: BlobLocation.from_record(loc) for loc in stored.blobs_at}
    future = dst._commit_path.apply_peer_events(events, staged_here.get, tuple(stored.volumes))
    result = future.result(timeout=30)
    assert result.outcomes == (Applied.APPLIED, Applied.APPLIED)
    assert await get(dst, "bkt", "k") == b"hello, replica"
    assert dst.head_object("bkt", "k").hlc == events[1].hlc
    again = dst._commit_path.apply_peer_events(events, staged_here.get).result(timeout=30)
    assert again.outcomes == (Applied.ALREADY_HAD, Applied.ALREADY_HAD)



def test_issue19_root_seeds_of_a_pool_converge_to_one_root_user_keeping_rotations(tmp_path: Path) -> None:
    """Each node of a pool seeds the root user at its first start. With one id for every node's seed they are one
    user: the first seed's password is the base, a password rotated through the admin API overrides every seed,
    also one made later (a node that joins the pool later, with another S4_ROOT_PASSWORD), in any order."""
    a, b, wall = _pair(tmp_path)
    c = Node(tmp_path / "c", "node-c", wall)
    try:
        assert a.run("iam_create_user", username="root", role="SuperUser", password_hash="hash-a",
                     user_id=ROOT_ID)["id"] == ROOT_ID
        wall.ms += 1
        assert b.run("iam_create_user", username="root", role="SuperUser", password_hash="hash-b",
                     user_id=ROOT_ID)["id"] == ROOT_ID
        for x, y in ((a, b), (b, a)):
            deliver(y, x.own_events())
        for node in (a, b):
            [root] = scan(node, "users").values()
            assert (root["id"], root["password_hash"], root["created_ms"]) == (ROOT_ID, "hash-a", T0)
        wall.ms += 1
        rotated = a.run("iam_update_user", user_id=ROOT_ID, password_hash="rotated", active=False)
        assert rotated["password_hash"] == "rotated"
        wall.ms += 1  # a node joining later seeds the same user again, with another password
        assert c.run("iam_create_user", username="root", role="SuperUser", password_hash="hash-c",
                     user_id=ROOT_ID)["id"] == ROOT_ID
        everything = a.own_events() + b.own_events() + c.own_events()
        for node in (a, b, c):
            deliver(node, [e for e in everything if e.origin != node.node_id][::-1])
            [root] = scan(node, "users").values()
            assert (root["password_hash"], root["active"], root["created_ms"]) == ("rotated", False, T0)
            assert node.run("iam_create_user", username="root", role="SuperUser", password_hash="x",
                            user_id=ROOT_ID).status == 409
    finally:
        a.close()
        b.close()
        c.close()
