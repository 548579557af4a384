"""The projection's flavour (issue 18, CPU per small write): views of a node that never served in a pool keep no
last-writer-wins bookkeeping (event identities, version tombstones and their count, tag clocks, upload ends, the
Merkle view), hold everything else exactly as the replicated projection does, and are rebuilt from the journal with
the bookkeeping when the directory joins a pool (docs/architecture/views.md, "Flavour").
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine import Engine, EngineOptions, datadir
from s4.engine.errors import ErrorCode, PeerBatchRefused, S3Error
from s4.engine.replicated_commit import ReplicatedCommitPath
from s4.engine.views import keys
from s4.engine.views.env import Views
from s4.journal import REPLICATED
from tests.helpers.engine_io import get, list_all_versions, put
from tests.helpers.views_compare import dump_views, replay_events

#: What a single node's projection leaves out; everything else is the same in both flavours.
BOOKKEEPING = ("event_ids", "vtombs", "tag_clocks", "upload_ends", "ae_keys", "ae_leaves")
FLAVOUR_META = (keys.META_FLAVOUR, keys.META_TOMBSTONES)

pytestmark = pytest.mark.anyio


def _engine(data_dir: Path, *, pooled: bool = False) -> Engine:
    return Engine(EngineOptions(data_dir), ReplicatedCommitPath() if pooled else None)


async def _workload(engine: Engine) -> None:
    """Every kind of write the bookkeeping is kept for: overwrite, delete, versioned deletes, tags, multipart."""
    await engine.create_bucket("plain")
    await put(engine, "plain", "a", b"one")
    await put(engine, "plain", "a", b"two")  # the null version replaced
    await put(engine, "plain", "b", b"bee")
    await engine.put_object_tags("plain", "b", None, {"t": "1"})
    await engine.delete_object("plain", "b")
    await engine.create_bucket("versioned")
    await engine.set_bucket_config("versioned", "versioning", "Enabled")
    v1 = await put(engine, "versioned", "k", b"v1")
    await put(engine, "versioned", "k", b"v2")
    await engine.delete_object("versioned", "k")  # a delete marker
    await engine.delete_object("versioned", "k", v1.version_id)  # a version removed
    upload = await engine.create_multipart_upload("plain", "mpu")
    etag = await engine.upload_part("plain", "mpu", upload, 1, await engine.ingestor.ingest_bytes(b"part"))
    await engine.complete_multipart_upload("plain", "mpu", upload, [(1, etag)])
    aborted = await engine.create_multipart_upload("plain", "gone")
    await engine.abort_multipart_upload("plain", "gone", aborted)


def _rebuilt(engine: Engine, out: Path, *, replicated: bool) -> dict[str, dict[bytes, bytes]]:
    views = Views(out, sync=False, replicated=replicated)
    try:
        replay_events(engine._commit_path.journal.read(), views)  # type: ignore[union-attr]
        return dump_views(views)
    finally:
        views.close()


def _without_bookkeeping(dump: dict[str, dict[bytes, bytes]]) -> dict[str, dict[bytes, bytes]]:
    out = {db: rows for db, rows in dump.items() if db not in BOOKKEEPING}
    out["meta"] = {k: v for k, v in dump["meta"].items() if k not in FLAVOUR_META}
    return out


async def test_single_node_views_keep_no_replicated_bookkeeping(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "data")
    try:
        await _workload(engine)
        assert engine.views.replicated is False
        dump = dump_views(engine.views)
        assert {db: len(dump[db]) for db in BOOKKEEPING} == dict.fromkeys(BOOKKEEPING, 0)
        assert dump["meta"][keys.META_FLAVOUR] == keys.FLAVOUR_SINGLE
        assert keys.META_TOMBSTONES not in dump["meta"]
        # and every read still answers as before
        assert await get(engine, "plain", "a") == b"two"
        assert await get(engine, "plain", "mpu") == b"part"
        with pytest.raises(S3Error) as err:
            engine.head_object("plain", "b")
        assert err.value.code is ErrorCode.NO_SUCH_KEY
        versions, _ = await list_all_versions(engine, "versioned")
        assert [(k, dm) for k, _, dm in versions] == [("k", True), ("k", False)]
        assert [u.upload_id for u in (await engine.list_uploads("plain")).uploads] == []
        # the replicated projection of the same journal differs in the bookkeeping only
        single = dump_views(engine.views)
        replicated = _rebuilt(engine, tmp_path / "replicated", replicated=True)
        assert replicated["event_ids"] and replicated["vtombs"] and replicated["ae_keys"]
        assert _without_bookkeeping(single) == _without_bookkeeping(replicated)
        assert single == _rebuilt(engine, tmp_path / "single", replicated=False)  # replay is deterministic
    finally:
        engine.close()


OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "delete_version", "tags", "versioning", "rename",
                                          "multipart", "abort"]),
                         st.sampled_from(["x", "y", "d/z"]), st.integers(0, 3)), min_size=1, max_size=14)


async def _run_ops(engine: Engine, ops: list[tuple[str, str, int]]) -> None:
    await engine.create_bucket("bkt")
    for op, key, n in ops:
        try:
            if op == "put":
                await put(engine, "bkt", key, bytes([n]) * (n + 1))
            elif op == "delete":
                await engine.delete_object("bkt", key)
            elif op == "delete_version":
                versions, _ = await list_all_versions(engine, "bkt", key)
                mine = [vid for k, vid, _ in versions if k == key]
                if mine:
                    await engine.delete_object("bkt", key, mine[n % len(mine)])
            elif op == "tags":
                await engine.put_object_tags("bkt", key, None, {"n": str(n)})
            elif op == "versioning":
                await engine.set_bucket_config("bkt", "versioning", ["Enabled", "Suspended"][n % 2])
            elif op == "rename":
                await engine.rename("bkt", key, f"r{n}")
            elif op in ("multipart", "abort"):
                upload = await engine.create_multipart_upload("bkt", key)
                etag = await engine.upload_part("bkt", key, upload, 1, await engine.ingestor.ingest_bytes(b"p" * n))
                if op == "abort":
                    await engine.abort_multipart_upload("bkt", key, upload)
                else:
                    await engine.complete_multipart_upload("bkt", key, upload, [(1, etag)])
        except S3Error:
            pass  # refused (no such key, a rename onto itself...): nothing journaled


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_single_projection_equals_the_replicated_one_but_for_the_bookkeeping(ops: list[tuple[str, str, int]]
                                                                             ) -> None:
    """A single node applies only its own events, in order, so no check the bookkeeping feeds can refuse one: the
    views it keeps are the replicated projection's minus the bookkeeping, for any sequence of writes."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp) / "data")
        try:
            asyncio.run(_run_ops(engine, ops))
            single = dump_views(engine.views)
            assert {db: len(single[db]) for db in BOOKKEEPING} == dict.fromkeys(BOOKKEEPING, 0)
            replicated = _rebuilt(engine, Path(tmp) / "replicated", replicated=True)
            assert _without_bookkeeping(single) == _without_bookkeeping(replicated)
        finally:
            engine.close()


async def test_a_single_nodes_directory_started_in_a_pool_is_rebuilt_with_the_bookkeeping(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = _engine(data)
    await _workload(engine)
    engine.close()
    assert not datadir.pooled(data)

    pooled = _engine(data, pooled=True)
    try:
        assert datadir.pooled(data)  # marked before the views opened
        assert pooled.views.replicated is True
        events = list(pooled._commit_path.journal.read())  # type: ignore[union-attr]
        live = dump_views(pooled.views)
        assert len(live["event_ids"]) == sum(e.type in REPLICATED for e in events)
        rebuilt = _rebuilt(pooled, tmp_path / "rebuilt", replicated=True)
        assert live == rebuilt  # the Merkle view included
        assert await get(pooled, "plain", "a") == b"two"
    finally:
        pooled.close()

    # Started alone again, it keeps the bookkeeping: its journal may now hold peers' events out of their order.
    again = _engine(data)
    try:
        assert again.views.replicated is True
        await put(again, "plain", "c", b"sea")
        await again.delete_object("plain", "c")
        with again.views.read() as txn:
            assert txn.get(keys.object_version_key("plain", "c", "null"), db=again.views.dbs["vtombs"]) is not None
    finally:
        again.close()


async def test_single_flavour_views_refuse_a_peers_events(make_engine: Any, tmp_path: Path) -> None:
    """The projection leaves out what a peer's event is checked against: such views must never take one."""
    src, single = make_engine(tmp_path / "src", commit_path=ReplicatedCommitPath()), make_engine()
    await src.create_bucket("bkt")
    events = list(src._commit_path.journal.read())
    before = single.views.last_seq()
    with pytest.raises(PeerBatchRefused, match="single node"):
        single._commit_path.apply_peer_events(events).result(timeout=30)
    assert single.views.last_seq() == before


def test_views_without_a_flavour_stamp_keep_the_bookkeeping(tmp_path: Path) -> None:
    """Views written before the flavour existed hold the bookkeeping: they count as replicated, and a single node
    keeps them so (never rebuilt down to the single flavour)."""
    data = tmp_path / "data"
    engine = _engine(data)
    engine.close()
    views = Views(data / "views")
    with views.env.begin(write=True) as txn:
        txn.delete(keys.META_FLAVOUR, db=views.dbs["meta"])
    views.close()
    assert Views(data / "views", replicated=False).replicated is True
    engine = _engine(data)
    try:
        assert engine.views.replicated is True
    finally:
        engine.close()


def test_a_directory_with_the_cluster_nodes_stores_counts_as_pooled(tmp_path: Path) -> None:
    """A data directory that served in a pool before the ``pooled`` marker existed has the cluster node's stores."""
    (tmp_path / datadir.CLUSTER_DIR).mkdir()
    assert datadir.pooled(tmp_path)
    engine = _engine(tmp_path)
    try:
        assert engine.views.replicated is True
    finally:
        engine.close()
