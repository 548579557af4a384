"""Listings merged over R divergent replicas (cluster/listing_merge.py): paging through the merge, with random
page sizes on both sides (the client's max-keys and each replica's ListRange page), yields page for page what the
engine's listing gives on a replica that got every event: ListObjects V2 (start-after, then continuation) and V1
(marker), ListObjectVersions (key and version-id markers), ListMultipartUploads, with and without a delimiter."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster import listing_merge
from s4.engine import listing
from s4.engine.views.records import Tx
from tests.helpers.read_history import KEYS, Wall, deal, deliver, history, local_source
from tests.helpers.replicas import Node

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PREFIXES = ("", "a", "a/", "b/", "z")
MAX_PAGES = 60  # every listing here has fewer entries than that: a paging loop that does not end fails


def on_full(full: Node, fn: Any, *args: Any) -> Any:
    with full.views.read() as txn:
        tx = Tx(txn, full.views.dbs)
        bucket = tx.bucket("b")
        assert bucket is not None
        return fn(tx, bucket, *args)


def build(data: st.DataObject, tmp: Path) -> tuple[dict[str, Node], Node]:
    wall = Wall()
    first, events = history(data, tmp, wall)
    r = data.draw(st.integers(2, 3), label="R")
    nodes = {f"replica-{i}": Node(tmp / f"r{i}", f"replica-{i}", wall) for i in range(r)}
    full = Node(tmp / "full", "full", wall)
    for node, share in zip(nodes.values(), deal(data, events, r), strict=True):
        deliver(node, first)
        deliver(node, share)
    deliver(full, first + sorted(events, key=lambda e: (e.hlc, e.origin)))
    return nodes, full


def close(nodes: dict[str, Node], full: Node) -> None:
    for n in [*nodes.values(), full]:
        n.close()


@SETTINGS
@given(data=st.data())
def test_merged_object_listing_pages_exactly_like_the_replica_with_every_event(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nodes, full = build(data, Path(tmp))
        try:
            prefix = data.draw(st.sampled_from(PREFIXES), label="prefix")
            delimiter = data.draw(st.sampled_from(["", "/"]), label="delimiter")
            style = data.draw(st.sampled_from(["v1", "v2"]), label="style")
            start_after = data.draw(st.sampled_from(("", *KEYS)), label="start-after") if style == "v2" else ""
            whole = on_full(full, listing.list_objects, prefix, delimiter, start_after, 1000)
            got_entries, got_prefixes = [], []
            marker = start_after
            for _ in range(MAX_PAGES):
                max_keys = data.draw(st.integers(1, 4), label="max-keys")
                source = local_source(nodes, "b", prefix, "objects", data.draw(st.integers(1, 3), label="limit"))
                page, _ = asyncio.run(listing_merge.list_objects(source, list(nodes), "b", prefix, delimiter, marker,
                                                                 max_keys))
                assert page == on_full(full, listing.list_objects, prefix, delimiter, marker, max_keys)
                got_entries += page.entries
                got_prefixes += page.common_prefixes
                if not page.is_truncated:
                    break
                marker = page.next_marker  # V1 NextMarker / V2 continuation token: the same resume point
            else:
                raise AssertionError("paging did not end")
            assert got_entries == whole.entries and got_prefixes == whole.common_prefixes
        finally:
            close(nodes, full)


@SETTINGS
@given(data=st.data())
def test_merged_version_listing_pages_exactly_like_the_replica_with_every_event(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nodes, full = build(data, Path(tmp))
        try:
            prefix = data.draw(st.sampled_from(PREFIXES), label="prefix")
            delimiter = data.draw(st.sampled_from(["", "/"]), label="delimiter")
            whole = on_full(full, listing.list_versions, prefix, delimiter, "", "", 1000)
            got: list[Any] = []
            key_marker = version_marker = ""
            for _ in range(MAX_PAGES):
                max_keys = data.draw(st.integers(1, 4), label="max-keys")
                source = local_source(nodes, "b", prefix, "objects", data.draw(st.integers(1, 3), label="limit"))
                page, _ = asyncio.run(listing_merge.list_versions(source, list(nodes), "b", prefix, delimiter,
                                                                  key_marker, version_marker, max_keys))
                assert page == on_full(full, listing.list_versions, prefix, delimiter, key_marker, version_marker,
                                       max_keys)
                got += page.versions + page.common_prefixes
                if not page.is_truncated:
                    break
                key_marker, version_marker = page.next_key_marker, page.next_version_id_marker
            else:
                raise AssertionError("paging did not end")
            assert [g for g in got if not isinstance(g, str)] == whole.versions
            assert [g for g in got if isinstance(g, str)] == whole.common_prefixes
        finally:
            close(nodes, full)


@SETTINGS
@given(data=st.data())
def test_merged_upload_listing_pages_exactly_like_the_replica_with_every_event(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nodes, full = build(data, Path(tmp))
        try:
            prefix = data.draw(st.sampled_from(PREFIXES), label="prefix")
            delimiter = data.draw(st.sampled_from(["", "/"]), label="delimiter")
            key_marker = upload_marker = ""
            for _ in range(MAX_PAGES):
                max_uploads = data.draw(st.integers(1, 4), label="max-uploads")
                source = local_source(nodes, "b", prefix, "uploads", data.draw(st.integers(1, 3), label="limit"))
                page, _ = asyncio.run(listing_merge.list_uploads(source, list(nodes), "b", prefix, delimiter,
                                                                 key_marker, upload_marker, max_uploads))
                assert page == on_full(full, listing.list_uploads, prefix, delimiter, key_marker, upload_marker,
                                       max_uploads)
                if not page.is_truncated:
                    break
                key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker
            else:
                raise AssertionError("paging did not end")
        finally:
            close(nodes, full)
