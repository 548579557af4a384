"""The CASPaxos acceptor's durable state on LMDB: ``<data>/cluster/cas.lmdb`` (docs/architecture/replication.md,
"Durability of the acceptor").

The acceptor replies only after ``save`` returns, and ``save`` returns only once the slot is on disk: it commits
one LMDB transaction and then fsyncs the environment (``env.sync(force=True)``, a ``fdatasync`` of the one data
file that holds the pages and the meta page). The environment is opened ``sync=False`` so that the fsync is this
module's explicit step (one per group of commits: a save whose commit an earlier fsync already covered does not
fsync again) and so a test can inject a failing one. A failed fsync *poisons* the store: the page cache may hold
pages the disk lost, and a later fsync may report success without writing them (Linux marks them clean), so every
later load and save raises ``CasStoreFailed`` until the node restarts and reopens what the disk really holds.

Values are opaque bytes (the acceptor never looks into them; the proposer's codec owns their meaning, see
cluster/cas_rpc.py). One slot is a msgpack array ``[1, promised, accepted, value, lineage]`` with ballots as
``[counter, node, incarnation]``. The ``meta`` database holds the proposer's incarnation, bumped (and fsynced) at
every start so that a restarted proposer never reuses a ballot of its previous life, and the *floor*: a promise for
every key at once (a replaced node's fence, cluster/cas_restore.py), applied to every slot ``load`` returns.

LMDB work runs in worker threads, never on the event loop; a caller cancelled meanwhile still waits for its thread,
so the acceptor's key lock is held until the read-modify-write it guards is finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from s4.journal.segment import fsync_dir

from .caspaxos import ZERO, Ballot, Slot

T = TypeVar("T")
log = logging.getLogger("s4.cluster")

CAS_DIR = Path("cluster") / "cas.lmdb"
"""The store's directory, relative to the node's data directory."""

SLOT_FORMAT = 1
MAX_KEY_BYTES = 511  # LMDB's default key size limit
DEFAULT_MAP_SIZE = 1 << 30  # address space only: the file grows with the data, and the map doubles when full
_INCARNATION = b"incarnation"
_FLOOR = b"floor"  # a promise for every key (a replaced node's fence: cluster/cas_restore.py)
_REPLACING = b"replacing"  # set by `s4-admin cluster replace`: this acceptor forgot its state (cluster/cas_restore.py)
_MEMBERS = b"members"  # the pool's node ids the acceptor first voted among (``claim_members``)

_open_paths: set[Path] = set()  # LMDB forbids opening one environment twice in a process (its locks would break)
_open_lock = threading.Lock()


class CasStoreFailed(Exception):
    """The store cannot promise durability (an fsync failed, or it is closed): the acceptor must not answer."""


def store_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / CAS_DIR


def _ballot_out(b: Ballot) -> list[Any]:
    return [b.counter, b.node, b.incarnation]


def _ballot_in(raw: Any) -> Ballot:
    counter, node, incarnation = raw
    return Ballot(int(counter), str(node), int(incarnation))


def encode_slot(slot: Slot[bytes]) -> bytes:
    return bytes(msgpack.packb([SLOT_FORMAT, _ballot_out(slot.promised), _ballot_out(slot.accepted), slot.value,
                                [_ballot_out(b) for b in slot.lineage]], use_bin_type=True))


def decode_slot(data: bytes) -> Slot[bytes]:
    fmt, promised, accepted, value, lineage = msgpack.unpackb(data, raw=False)
    if fmt != SLOT_FORMAT:
        raise CasStoreFailed(f"CAS slot format {fmt!r} is not {SLOT_FORMAT}: written by another S4 version")
    if value is not None and not isinstance(value, bytes):
        raise CasStoreFailed(f"CAS slot value is {type(value).__name__}, not bytes")
    return Slot(_ballot_in(promised), _ballot_in(accepted), value, tuple(_ballot_in(b) for b in lineage))


def _key(key: str) -> bytes:
    raw = key.encode()
    if not 0 < len(raw) <= MAX_KEY_BYTES:
        raise ValueError(f"register key must be 1-{MAX_KEY_BYTES} bytes, got {len(raw)}")
    return raw


class CasStore:
    """An ``AcceptorStore[bytes]`` (cluster/caspaxos.py) on its own LMDB environment.

    ``sync`` replaces the fsync (tests inject a failing one); by default ``env.sync(True)``."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 sync: Callable[[], None] | None = None) -> None:
        self.path = Path(path).resolve()
        with _open_lock:
            if self.path in _open_paths:
                raise CasStoreFailed(f"{self.path} is already open in this process")
            _open_paths.add(self.path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.mkdir(mode=0o700, exist_ok=True)
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=2, sync=False, metasync=False,
                                 readahead=False, mode=0o600)
            self._slots = self.env.open_db(b"slots")
            self._meta = self.env.open_db(b"meta")
        except BaseException:
            with _open_lock:
                _open_paths.discard(self.path)
            raise
        self._sync = sync or (lambda: self.env.sync(True))
        self._txn_lock = threading.Lock()  # one thread in LMDB at a time: set_mapsize needs no live transaction
        self._sync_lock = threading.Lock()  # fsyncs in turn, so the one that fails is the one that reports it
        self._committed = 0  # commits so far (under _txn_lock)
        self._synced = 0  # commits covered by a successful fsync (under _sync_lock)
        self._failed: BaseException | None = None
        self._closed = self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s4-cas")
        with self.env.begin(db=self._meta) as txn:
            raw_floor = txn.get(_FLOOR)
        self.floor = ZERO if raw_floor is None else _ballot_in(msgpack.unpackb(bytes(raw_floor), raw=False))
        # A new store: make its files and directory entries durable, so the promises it will hold survive a crash.
        self._durable(self._commit(lambda txn: txn.put(b"format", SLOT_FORMAT.to_bytes(8, "big"), db=self._meta)))
        for directory in (self.path, self.path.parent, self.path.parent.parent):
            fsync_dir(directory)

    # --- the AcceptorStore port ---------------------------------------------------------------------------------

    async def load(self, key: str) -> Slot[bytes]:
        return await self._off_loop(lambda: self.load_sync(key))

    async def save(self, key: str, slot: Slot[bytes]) -> None:
        await self._off_loop(lambda: self.save_sync(key, slot))

    # --- blocking API (worker threads, tools, tests) --------------------------------------------------------------

    def load_sync(self, key: str) -> Slot[bytes]:
        raw_key = _key(key)
        with self._txn_lock:
            self._check()
            with self.env.begin(db=self._slots) as txn:
                data = txn.get(raw_key)
        return self._floored(Slot() if data is None else decode_slot(bytes(data)))

    def _floored(self, slot: Slot[bytes]) -> Slot[bytes]:
        """The slot as the acceptor must see it: promised at least the floor (a promise made for every key)."""
        return slot if slot.promised >= self.floor else replace(slot, promised=self.floor)

    def raise_floor(self, ballot: Ballot) -> Ballot:
        """Promise ``ballot`` for every key at once, durably (floors only rise); the floor now."""
        def put(txn: Any) -> None:  # under the commit lock: a save committed after this one sees the floor
            if ballot > self.floor:
                txn.put(_FLOOR, msgpack.packb(_ballot_out(ballot), use_bin_type=True), db=self._meta)
                self.floor = ballot

        self._durable(self._commit(put))
        return self.floor

    async def raise_floor_async(self, ballot: Ballot) -> Ballot:
        return await self._off_loop(lambda: self.raise_floor(ballot))

    def save_sync(self, key: str, slot: Slot[bytes]) -> None:
        """Commit the slot and fsync: when this returns, a crash cannot lose it. Raises CasStoreFailed otherwise."""
        raw_key, data = _key(key), encode_slot(slot)

        def put(txn: Any) -> None:
            if slot.promised < self.floor:  # loaded before the floor rose: the ballot is refused now (a failed vote)
                raise CasStoreFailed(f"ballot {tuple(slot.promised)} is below the floor {tuple(self.floor)}")
            txn.put(raw_key, data, db=self._slots)

        self._durable(self._commit(put))

    def next_incarnation(self) -> int:
        """Bump and return the proposer's incarnation (durable before it is used in a ballot)."""
        got: list[int] = []

        def bump(txn: Any) -> None:
            raw = txn.get(_INCARNATION, db=self._meta)
            got.append((int.from_bytes(raw, "big") if raw else 0) + 1)
            txn.put(_INCARNATION, got[0].to_bytes(8, "big"), db=self._meta)

        self._durable(self._commit(bump))
        return got[0]

    def claim_members(self, members: list[str]) -> list[str]:
        """Record this pool's node ids on the first start, and return the ids recorded (the given ones then).

        A pool is an immutable group (docs/operations.md, "Add a node"): its register's majorities, its write and
        read quorums and its tombstone GC all count over these ids, so the caller refuses a start with others."""
        got: list[list[str]] = []

        def claim(txn: Any) -> None:
            raw = txn.get(_MEMBERS, db=self._meta)
            if raw is None:
                txn.put(_MEMBERS, ",".join(members).encode(), db=self._meta)
                got.append(list(members))
            else:
                got.append(bytes(raw).decode().split(","))

        self._durable(self._commit(claim))
        return got[0]

    def replacing(self) -> str | None:
        """Why this acceptor must restore its state before it votes (None: it holds its own state)."""
        with self._txn_lock:
            self._check()
            with self.env.begin(db=self._meta) as txn:
                raw = txn.get(_REPLACING)
        return None if raw is None else bytes(raw).decode()

    def set_replacing(self, reason: str | None) -> None:
        """Mark (or, with None, unmark) the store as a replaced node's, durably."""
        def put(txn: Any) -> None:
            if reason is None:
                txn.delete(_REPLACING, db=self._meta)
            else:
                txn.put(_REPLACING, reason.encode(), db=self._meta)

        self._durable(self._commit(put))

    async def set_replacing_async(self, reason: str | None) -> None:
        await self._off_loop(lambda: self.set_replacing(reason))

    async def scan(self, prefix: str, after: str, limit: int) -> tuple[list[tuple[str, Slot[bytes]]], bool]:
        return await self._off_loop(lambda: self.scan_sync(prefix, after, limit))

    def scan_sync(self, prefix: str, after: str, limit: int) -> tuple[list[tuple[str, Slot[bytes]]], bool]:
        """Up to ``limit`` keys starting with ``prefix`` after ``after``, in key order, with their slots; and
        whether more follow (ListBuckets across pools: docs/architecture/pools.md)."""
        start = max(prefix, after).encode()
        found: list[tuple[str, Slot[bytes]]] = []
        with self._txn_lock:
            self._check()
            with self.env.begin(db=self._slots) as txn:
                cursor = txn.cursor()
                if not cursor.set_range(start):
                    return [], False
                for raw, data in cursor:
                    key = bytes(raw).decode()
                    if not key.startswith(prefix):
                        break
                    if key == after:
                        continue
                    if len(found) == limit:
                        return found, True
                    found.append((key, self._floored(decode_slot(bytes(data)))))
        return found, False

    def keys(self) -> list[str]:
        with self._txn_lock:
            self._check()
            with self.env.begin(db=self._slots) as txn:
                return [bytes(k).decode() for k in txn.cursor().iternext(values=False)]

    def close(self) -> None:
        """Close the environment (waiting for running threads); further calls raise CasStoreFailed."""
        if self._closed or self._closing:
            return
        self._closing = True  # new async calls are refused from here; running threads finish
        self._executor.shutdown(wait=True)
        with self._sync_lock, self._txn_lock:  # the order _durable takes them in
            self._closed = True
            self.env.close()
        with _open_lock:
            _open_paths.discard(self.path)

    # --- internals ------------------------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise CasStoreFailed(f"CAS store {self.path} is closed")
        if self._failed is not None:
            raise CasStoreFailed(f"CAS store {self.path} failed to fsync ({self._failed}); restart the node")

    def _commit(self, write: Callable[[Any], None]) -> int:
        """Run ``write`` in one write transaction (growing the map when full); the commit's number."""
        with self._txn_lock:
            self._check()
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        write(txn)
                    break
                except lmdb.MapFullError:
                    self.env.set_mapsize(self.env.info()["map_size"] * 2)
            self._committed += 1
            return self._committed

    def _durable(self, commit: int) -> None:
        """Return once commit number ``commit`` is fsynced (by this call or an earlier one that covered it)."""
        with self._sync_lock:
            self._check()
            if self._synced >= commit:
                return
            with self._txn_lock:
                target = self._committed
            try:
                self._sync()
            except BaseException as exc:
                self._failed = exc
                log.error("CAS store %s: fsync failed (%s): this node stops voting on bucket names until it is "
                          "restarted", self.path, exc)
                raise CasStoreFailed(f"CAS store {self.path}: fsync failed: {exc}") from exc
            self._synced = target

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        if self._closing:
            raise CasStoreFailed(f"CAS store {self.path} is closed")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread runs on: wait for it so the caller's lock outlives the write (bounded by one LMDB call).
            while not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    continue
                except Exception:
                    break
            raise
