"""Divergent replicas for the quorum-read tests: three coordinators make random decisions on one bucket (objects,
versions, tags, multipart), and their logical events are dealt to replicas in random subsets and orders, while a
"full" replica gets every event. Read-side tests compare what merging the replicas gives with the full replica.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import strategies as st

from s4.cluster import reads
from s4.cluster.listing_merge import CallSource, Page
from s4.engine.errors import S3Error
from s4.engine.model import BlobLocation, version_record
from s4.engine.replica import PeerBatchResult
from s4.engine.views import keys
from s4.engine.views.env import unpack
from s4.engine.views.records import Tx
from s4.journal import Event, EventType
from tests.helpers.replicas import Node

T0 = 1_750_000_000_000
KEYS = ("a", "a.txt", "a/", "a/b", "a/c/d", "a0", "b/x", "b/y", "c")
CONTENTS = [bytes([i]) * (i + 1) for i in range(4)]
HASHES = [hashlib.sha256(c).digest() for c in CONTENTS]


class Wall:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def staged(digest: bytes) -> BlobLocation | None:
    i = HASHES.index(digest) if digest in HASHES else -1
    return BlobLocation(digest, "staged-1", 1000 * i, len(CONTENTS[i])) if i >= 0 else None


def deliver(node: Node, events: Sequence[Event]) -> None:
    if events:
        result = node.apply(list(events), staged)
        assert isinstance(result, PeerBatchResult), result


def _scan(node: Node, db: str) -> dict[bytes, Any]:
    with node.views.read() as txn:
        return {k: unpack(v) for k, v in Tx(txn, node.views.dbs).scan(db, b"")}


def _versions(node: Node, key: str) -> list[str]:
    return [r["v"] for r in reads.read_states(node.views, "object", "b", [key])[0]["vs"]]


def decide(data: st.DataObject, node: Node) -> None:
    """One random decision on ``node`` (refusals change nothing)."""
    op = data.draw(st.sampled_from(["put", "put", "put", "delete", "delete", "delete_version", "delete_version",
                                    "delete_version", "tags", "tags", "versioning", "mpu_create", "mpu_part",
                                    "mpu_part", "mpu_complete", "mpu_abort"]), label="op")
    key = data.draw(st.sampled_from(KEYS), label="key")
    content = data.draw(st.integers(0, len(CONTENTS) - 1), label="content")
    h, size = HASHES[content], len(CONTENTS[content])
    where = [[h, f"vol-{node.node_id}", 100 * content, size]]
    result: Any = None
    if op == "put":
        result = node.run("put_object", bucket="b", key=key, blobs_at=where, version=version_record(
            None, size, hashlib.md5(CONTENTS[content]).hexdigest(), content_type="text/plain", blobs=[[h, size]]))
    elif op == "delete":
        result = node.run("delete_object", bucket="b", key=key, version_id=None)
    elif op in ("delete_version", "tags"):
        held = [k for k in KEYS if _versions(node, k)]
        key = data.draw(st.sampled_from(held), label="held key") if held else key
        ids = _versions(node, key)
        vid = data.draw(st.sampled_from(ids), label="version") if ids else None
        if op == "delete_version" and vid is not None:
            result = node.run("delete_object", bucket="b", key=key, version_id=vid)
        elif op == "tags" and vid is not None:
            tags = {"t": data.draw(st.sampled_from("ab"))} if data.draw(st.booleans()) else {}
            result = node.run("set_object_tags", bucket="b", key=key, version_id=vid, tags=tags)
    elif op == "versioning":
        result = node.run("set_bucket_config", bucket="b", kind="versioning",
                          value=data.draw(st.sampled_from(["Enabled", "Suspended"])))
    elif op == "mpu_create":
        result = node.run("create_multipart", bucket="b",
                          upload={"k": key, "ct": "text/plain", "m": {}, "hd": {}, "ca": "", "tg": {}})
    else:
        uploads = sorted(_scan(node, "uploads").values(), key=lambda u: u["u"])
        if not uploads:
            return
        upload = data.draw(st.sampled_from(uploads), label="upload")
        if op == "mpu_part":
            part = {"n": 1, "e": hashlib.md5(CONTENTS[content]).hexdigest(), "s": size, "b": [[h, size]]}
            result = node.run("store_part", bucket="b", key=upload["k"], upload_id=upload["u"], part=part,
                              blobs_at=where)
        elif op == "mpu_complete":
            parts = [[p["n"], p["e"]] for k, p in sorted(_scan(node, "parts").items())
                     if k.startswith(keys.parts_prefix(upload["u"]))]
            if parts:
                result = node.run("complete_multipart", bucket="b", key=upload["k"], upload_id=upload["u"],
                                  parts=parts, min_part_bytes=0)
        else:
            result = node.run("abort_multipart", bucket="b", key=upload["k"], upload_id=upload["u"])
    if isinstance(result, BaseException) and not isinstance(result, S3Error):
        raise result


def history(data: st.DataObject, root: Path, wall: Wall, steps: tuple[int, int] = (8, 30)) -> tuple[list[Event],
                                                                                                    list[Event]]:
    """(the bucket's creation events, the other logical events) of a random history of three coordinators that
    sometimes exchange events (as quorum reads would let them see each other's writes).

    Version and upload ids come from a generator seeded per history, not ``uuid.uuid4``: the history draws a version
    to delete from the ids a node holds, in their order, so random ids made hypothesis's replay of one example take
    other branches (FlakyStrategyDefinition)."""
    ids = random.Random(0)
    with mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(int=ids.getrandbits(128), version=4)):
        return _history(data, root, wall, steps)


def _history(data: st.DataObject, root: Path, wall: Wall, steps: tuple[int, int]) -> tuple[list[Event], list[Event]]:
    coords = [Node(root / f"c{i}", f"node-{i}", wall) for i in range(3)]
    try:
        assert coords[0].run("create_bucket", bucket="b", region="us-east-1") is None
        if data.draw(st.booleans(), label="versioned"):
            assert coords[0].run("set_bucket_config", bucket="b", kind="versioning", value="Enabled") is None
        for peer in coords[1:]:
            deliver(peer, coords[0].own_events())
        for _ in range(data.draw(st.integers(*steps), label="steps")):
            wall.ms += data.draw(st.integers(0, 2), label="tick")
            if data.draw(st.integers(0, 4), label="sync?") == 0:
                src, dst = data.draw(st.permutations(coords), label="sync")[:2]
                deliver(dst, src.own_events())
            else:
                decide(data, data.draw(st.sampled_from(coords), label="coordinator"))
        events = [e for c in coords for e in c.own_events()]
    finally:
        for c in coords:
            c.close()
    first = [e for e in events if e.type is EventType.BUCKET_CREATED]
    return first, [e for e in events if e.type is not EventType.BUCKET_CREATED]


def deal(data: st.DataObject, events: list[Event], replicas: int) -> list[list[Event]]:
    """Each event to a random non-empty subset of the replicas, each replica's share in a random order."""
    shares: list[list[Event]] = [[] for _ in range(replicas)]
    for event in events:
        who = data.draw(st.sets(st.integers(0, replicas - 1), min_size=1), label="to")
        for i in who:
            shares[i].append(event)
    return [data.draw(st.permutations(share), label="order") for share in shares]


def local_source(nodes: dict[str, Node], bucket: str, prefix: str, kind: str, limit: int) -> CallSource[str]:
    """A listing-merge source reading the nodes' views directly (the server's own functions, no wire)."""
    async def page(r: str, start: bytes, inclusive: bool) -> Page:
        return reads.read_page(nodes[r].views, kind, bucket, prefix, start, inclusive, limit)

    async def fill(r: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        fill_kind = "object" if kind == "objects" else "upload"
        return dict(zip(ids, reads.read_states(nodes[r].views, fill_kind, bucket, ids), strict=True))

    return CallSource(page, fill)
