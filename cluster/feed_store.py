"""The durable state of catch-up and hints: ``<data>/cluster/feed.lmdb`` (docs/architecture/replication.md,
"Catch-up" and "Hints").

Two things live here, both small and both about what flows between this node and each peer:

* **cursors**: per peer, the highest seq of *that peer's* journal this node has applied through catch-up. It only
  moves forward (``advance`` keeps the maximum), and it moves only after the events up to it were applied (made
  durable by the apply port), so a crash between the two re-applies a batch (harmless: last-writer-wins) and never
  skips one. ``reset`` is the one way back, for a peer whose journal is shorter than the cursor (its data directory
  was replaced).
* **hints**: per peer, events this node coordinated that the peer did not acknowledge, kept until they are delivered
  or older than S4_HINT_TTL_HOURS. A hint is one event envelope (journal/codec.py ``encode_event``) with the wall
  time it was written.

Every write commits one LMDB transaction and fsyncs the environment before it returns (the CAS store's rule,
cluster/cas_store.py): the write path acknowledges a client only after its hints are on disk, and a cursor never
passes events the disk does not hold. The environment is opened ``sync=False`` so that the fsync is this module's
explicit step (tests inject a failing one); a failed fsync poisons the store until the node restarts.

Layout::

    cursors  peer id (utf-8)                       -> u64 BE seq
    hints    peer id (utf-8) 0x00 u64 BE hint id   -> msgpack [created_ms, envelope bytes]
    meta     "next_hint"                           -> u64 BE (ids only grow, so a peer's hints read oldest first)
             "data_life", "last_contact_ms", "life:"/"waived:" peer -> u64 BE (cluster/rejoin.py)

Calls are blocking and serialized by one lock; the async callers run them in the store's one worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from s4.journal.segment import fsync_dir

T = TypeVar("T")
log = logging.getLogger("s4.cluster")

FEED_DIR = Path("cluster") / "feed.lmdb"
"""The store's directory, relative to the node's data directory."""
DEFAULT_MAP_SIZE = 1 << 30  # address space; doubles when full
_NEXT_HINT = b"next_hint"
_SEP = b"\x00"  # node ids never hold it (cluster/config.py NAME_RE)

_open_paths: set[Path] = set()  # LMDB forbids opening one environment twice in a process
_open_lock = threading.Lock()


class FeedStoreFailed(Exception):
    """The store cannot promise durability (an fsync failed, or it is closed)."""


@dataclass(frozen=True, slots=True)
class Hint:
    hint_id: int
    created_ms: int
    envelope: bytes


def store_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / FEED_DIR


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _prefix(peer: str) -> bytes:
    return peer.encode() + _SEP


class FeedStore:
    """Cursors and hints on one LMDB environment; ``sync`` replaces the fsync (tests inject a failing one)."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 sync: Callable[[], None] | None = None) -> None:
        self.path = Path(path).resolve()
        with _open_lock:
            if self.path in _open_paths:
                raise FeedStoreFailed(f"{self.path} is already open in this process")
            _open_paths.add(self.path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=3, sync=False, metasync=False,
                                 readahead=False, mode=0o600)
            self._cursors = self.env.open_db(b"cursors")
            self._hints = self.env.open_db(b"hints")
            self._meta = self.env.open_db(b"meta")
        except BaseException:
            with _open_lock:
                _open_paths.discard(self.path)
            raise
        self._sync = sync or (lambda: self.env.sync(True))
        self._lock = threading.Lock()
        self._failed: BaseException | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s4-feed")
        self._pending: dict[str, int] = {}
        with self.env.begin(db=self._hints) as txn:
            for key in txn.cursor().iternext(values=False):
                peer = bytes(key).partition(_SEP)[0].decode()
                self._pending[peer] = self._pending.get(peer, 0) + 1
        self._write(lambda txn: None)  # a new store: its files durable before anything relies on them
        for directory in (self.path, self.path.parent, self.path.parent.parent):
            fsync_dir(directory)

    # --- cursors ----------------------------------------------------------------------------------------------------

    def cursor(self, peer: str) -> int:
        with self._lock:
            self._check()
            with self.env.begin(db=self._cursors) as txn:
                raw = txn.get(peer.encode())
        return int.from_bytes(raw, "big") if raw else 0

    def advance(self, peer: str, seq: int) -> int:
        """Move the cursor to ``seq`` if that is forward; durable on return. The cursor after the call."""
        got: list[int] = []

        def write(txn: Any) -> None:
            raw = txn.get(peer.encode(), db=self._cursors)
            old = int.from_bytes(raw, "big") if raw else 0
            got.append(max(old, seq))
            if seq > old:
                txn.put(peer.encode(), _u64(seq), db=self._cursors)

        self._write(write)
        return got[0]

    def reset(self, peer: str) -> None:
        """Back to 0: the peer's journal is shorter than the cursor (its data directory was replaced)."""
        self._write(lambda txn: txn.delete(peer.encode(), db=self._cursors))

    # --- hints ------------------------------------------------------------------------------------------------------

    def add_hints(self, peer: str, created_ms: int, envelopes: Sequence[bytes]) -> list[int]:
        """Queue events for ``peer``; durable (fsynced) on return. Their hint ids, oldest first."""
        ids: list[int] = []

        def write(txn: Any) -> None:
            raw = txn.get(_NEXT_HINT, db=self._meta)
            next_id = int.from_bytes(raw, "big") if raw else 1
            for envelope in envelopes:
                txn.put(_prefix(peer) + _u64(next_id), msgpack.packb([created_ms, envelope], use_bin_type=True),
                        db=self._hints)
                ids.append(next_id)
                next_id += 1
            txn.put(_NEXT_HINT, _u64(next_id), db=self._meta)

        if envelopes:
            self._write(write)
            self._pending[peer] = self._pending.get(peer, 0) + len(ids)
        return ids

    def hints(self, peer: str, *, max_events: int, max_bytes: int) -> list[Hint]:
        """The oldest hints of ``peer``: at most ``max_events``, and ``max_bytes`` of envelopes (at least one)."""
        out: list[Hint] = []
        size = 0
        prefix = _prefix(peer)
        with self._lock:
            self._check()
            with self.env.begin(db=self._hints) as txn:
                cursor = txn.cursor()
                if not cursor.set_range(prefix):
                    return out
                for key, value in cursor:
                    key = bytes(key)
                    if not key.startswith(prefix) or len(out) >= max_events:
                        break
                    created_ms, envelope = msgpack.unpackb(bytes(value), raw=False)
                    if out and size + len(envelope) > max_bytes:
                        break
                    out.append(Hint(int.from_bytes(key[len(prefix):], "big"), int(created_ms), bytes(envelope)))
                    size += len(envelope)
        return out

    def remove_hints(self, peer: str, hint_ids: Sequence[int]) -> int:
        """Remove these hints (delivered); durable on return. How many were still there."""
        removed: list[int] = []

        def write(txn: Any) -> None:
            removed.append(sum(1 for i in hint_ids if txn.delete(_prefix(peer) + _u64(i), db=self._hints)))

        if not hint_ids:
            return 0
        self._write(write)
        self._pending[peer] = max(0, self._pending.get(peer, 0) - removed[0])
        return removed[0]

    def drop_older(self, peer: str, before_ms: int) -> int:
        """Remove ``peer``'s hints created before ``before_ms`` (expired); how many."""
        prefix = _prefix(peer)
        dropped: list[int] = []

        def write(txn: Any) -> None:
            cursor = txn.cursor(db=self._hints)
            n = 0
            if cursor.set_range(prefix):
                while True:
                    key = bytes(cursor.key())
                    if not key.startswith(prefix):
                        break
                    created_ms, _ = msgpack.unpackb(bytes(cursor.value()), raw=False)
                    if int(created_ms) >= before_ms:
                        # ids grow with time on one node; a clock stepped back can leave an old hint behind a newer
                        # one, which then waits for the next sweep past this one: keep scanning, it is cheap
                        if not cursor.next():
                            break
                        continue
                    n += 1
                    if not cursor.delete():
                        break
            dropped.append(n)

        self._write(write)
        self._pending[peer] = max(0, self._pending.get(peer, 0) - dropped[0])
        return dropped[0]

    def pending(self, peer: str) -> int:
        return self._pending.get(peer, 0)

    # --- small records of other cluster parts (cluster/rejoin.py): durable on return ---------------------------------

    def meta(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check()
            with self.env.begin(db=self._meta) as txn:
                raw = txn.get(key)
        return bytes(raw) if raw is not None else None

    def set_meta(self, key: bytes, value: bytes | None) -> None:
        """Store (None: delete) one record; fsynced on return."""
        self._write(lambda txn: txn.put(key, value, db=self._meta) if value is not None
                    else txn.delete(key, db=self._meta))

    def metas(self, prefix: bytes) -> dict[bytes, bytes]:
        with self._lock:
            self._check()
            with self.env.begin(db=self._meta) as txn:
                cursor = txn.cursor()
                out: dict[bytes, bytes] = {}
                if cursor.set_range(prefix):
                    for key, value in cursor:
                        if not bytes(key).startswith(prefix):
                            break
                        out[bytes(key)] = bytes(value)
        return out

    # --- lifetime ---------------------------------------------------------------------------------------------------

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking call of this store in its worker thread (never on the event loop)."""
        if self._closed:
            raise FeedStoreFailed(f"feed store {self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        with self._lock:
            self.env.close()
        with _open_lock:
            _open_paths.discard(self.path)

    # --- internals --------------------------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise FeedStoreFailed(f"feed store {self.path} is closed")
        if self._failed is not None:
            raise FeedStoreFailed(f"feed store {self.path} failed to fsync ({self._failed}); restart the node")

    def _write(self, write: Callable[[Any], None]) -> None:
        """One write transaction (growing the map when full), then the fsync; raises FeedStoreFailed if it fails."""
        with self._lock:
            self._check()
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        write(txn)
                    break
                except lmdb.MapFullError:
                    self.env.set_mapsize(self.env.info()["map_size"] * 2)
            try:
                self._sync()
            except BaseException as exc:
                self._failed = exc
                log.error("feed store %s: fsync failed (%s): catch-up and hints stop until the node is restarted",
                          self.path, exc)
                raise FeedStoreFailed(f"feed store {self.path}: fsync failed: {exc}") from exc
