"""In-process nodes for replication tests: a journal, views and a sequencer per node (no HTTP, no volumes' bytes),
a controllable clock, and the canonical dump of a node's logical state.

``logical_state`` names everything by bucket, key, version id, upload id or user id, never by a node-local id
(namespace ids, seqs, blob locations), so two nodes that hold the same facts dump equal states whatever order their
events came in. Blob refcounts are node-local: ``check_blob_refs`` checks them against the references instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from s4.engine import commands
from s4.engine.model import BlobLocation
from s4.engine.replica import PeerBatch, no_blobs
from s4.engine.sequencer import Command, Sequencer
from s4.engine.views import keys, namespace, upload_index
from s4.engine.views.env import Views, unpack
from s4.engine.views.records import Tx
from s4.journal import REPLICATED, Event, HybridClock, Journal


class NoVolumes:
    """The sequencer's volume store, for nodes whose blobs are only named (nothing to fsync)."""

    def sync(self, names: Iterable[str]) -> None:
        pass


class Node:
    """One node: its journal, views and single writer; ``run`` decides commands, ``apply`` takes peers' events."""

    def __init__(self, root: Path, node_id: str, now_ms: Callable[[], int], max_offset_ms: int = 60_000) -> None:
        self.root = root
        self.node_id = node_id
        self.clock = HybridClock(now_ms, max_offset_ms=max_offset_ms)
        self.journal = Journal(root / "journal", origin=node_id, clock=self.clock)
        self.views = Views(root / "views", sync=False)
        self.sequencer = Sequencer(self.journal, self.views, NoVolumes(), commands.DECIDERS)  # type: ignore[arg-type]

    def run(self, name: str, **args: Any) -> Any:
        """One command, decided and committed now; its result or its error (returned, not raised)."""
        return self.sequencer.commit_now([Command(name, args, actor="tester")])[0]

    def apply(self, events: Sequence[Event], resolve: Callable[[bytes], BlobLocation | None] = no_blobs) -> Any:
        """A peer batch committed now; the ``PeerBatchResult`` or the refusal (returned)."""
        return self.sequencer.commit_now([PeerBatch(tuple(events), resolve)])[0]

    def own_events(self) -> list[Event]:
        """The logical events this node decided (what it would send to its peers)."""
        return [e for e in self.journal.read() if e.origin == self.node_id and e.type in REPLICATED]

    def close(self) -> None:
        self.sequencer.close()
        self.journal.close()
        self.views.close()


def _all(tx: Tx, db: str) -> dict[bytes, Any]:
    return {k: unpack(v) for k, v in tx.scan(db, b"")}


def logical_state(views: Views) -> dict[str, Any]:
    """Every logical fact the views hold, keyed by names (see the module docstring)."""
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        state: dict[str, Any] = {}
        buckets = {}
        objects: dict[tuple[str, bytes], list[Any]] = {}
        uploads_by_key: dict[tuple[str, bytes], list[str]] = {}
        for bucket in tx.buckets():
            rec = bucket.to_record()
            rec.pop("root")
            buckets[bucket.name] = rec
            for key, oid in namespace.walk(txn, tx.dbs["ns"], bucket.root, b"", None, True):
                objects[(bucket.name, key)] = [rec for _, rec in tx.versions(oid)]
            for key, upload_id in upload_index.walk(tx, bucket.root, b"", True):
                uploads_by_key.setdefault((bucket.name, key), []).append(upload_id)
        state["buckets"] = buckets
        state["objects"] = objects
        state["uploads_by_key"] = uploads_by_key
        for db in ("bucket_cfg", "cfg_clocks", "bucket_tombs", "vtombs", "tag_clocks", "uploads", "parts",
                   "upload_ends", "completed_uploads", "rename_tokens", "users", "user_clocks", "credentials",
                   "cred_tombs", "lock_clocks"):
            state[db] = _all(tx, db)
        state["user_names"] = dict(tx.scan("user_names", b""))
        state["tombstone_count"] = tx.tombstones()
        return state


def check_blob_refs(views: Views) -> None:
    """Each blob's refcount equals the references to it from stored versions and parts, and no blob is indexed
    without a reference."""
    with views.read() as txn:
        tx = Tx(txn, views.dbs)
        refs: Counter[bytes] = Counter()
        for _, val in tx.scan("versions", b""):
            refs.update(h for h, _ in unpack(val).get("b", ()))
        for _, val in tx.scan("parts", b""):
            refs.update(h for h, _ in unpack(val)["b"])
        indexed = {k: unpack(v)[3] for k, v in tx.scan("blobs", b"")}
    assert indexed == dict(refs), (indexed, dict(refs))


def event_ids(views: Views) -> set[tuple[str, int]]:
    with views.read() as txn:
        return {keys.decode_event_id_key(k) for k, _ in Tx(txn, views.dbs).scan("event_ids", b"")}
