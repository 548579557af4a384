"""When a pool node may answer a read from its own views alone, shared by every process of the node.

A replicated pool reads a key from R replicas before it answers (cluster/key_reads.py). That costs an inter-node
call per read. The node may skip it when two things hold, which the cluster code establishes and this gate
publishes (docs/architecture/replication.md, "Local reads under read leases"):

* **the node holds read leases from every peer** until ``current_until`` (a ``time.monotonic`` deadline, the same
  clock in every process of a machine): while a lease holds, its grantor acknowledges no write this node has not
  applied, so this node's views hold every acknowledged write;
* **the thing read is settled**: no event this node has applied to it belongs to a write that is still in flight
  (not yet acknowledged or refused by its coordinator). Such a write may be visible here and not yet on another
  node; answering it from here could show a value that a later read through another node does not show. Each
  event's slot (a hash of its bucket and key, its bucket, or its upload) counts such events; the cluster code
  raises a slot before the event becomes visible (engine/sequencer.py ``before_visible``) and lowers it when the
  write's coordinator says it is settled.

The gate is a small file mapped into memory (``<data>/cluster/read-gate``): the process that owns the journal
writes it, HTTP workers map it read-only, so a worker decides with two memory reads instead of a call to the
supervisor. A torn or stale read of it errs only one way: a count read as non-zero or a deadline already past
sends the read down the quorum path.

The gate also carries the other direction, cheaply: **whether this node's reads want leases at all.** A node asks
its peers for read leases only while it serves reads that consult the gate (the grantors' writes wait for every
holder's copy: a node that reads nothing should hold none). Every check below stamps the time of the read into one
word on a page of its own, the only part of the file an HTTP worker maps writable, at most every ``NOTE_EVERY_S``
per process; the heartbeat (cluster/node.py) reads the word and asks for leases while it is recent. A torn or lost
stamp costs only time (a lease asked for a heartbeat later or dropped a little sooner), never a wrong read: a read
is local only under leases actually granted.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from s4.journal.events import Event, EventType

#: Slots for keys, buckets and uploads (hash collisions only send a read down the quorum path).
SLOTS = 1 << 16
_HEADER = struct.Struct("<dqq")  # current_until (monotonic s), unsettled events in total, wide events
_SLOT = struct.Struct("<i")
_SIZE = _HEADER.size + SLOTS * _SLOT.size
_WANT = struct.Struct("<d")  # when a read last consulted the gate (monotonic s; 0: never), any process writes it
_WANT_OFFSET = -(-_SIZE // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY  # a page of its own
_FILE_SIZE = _WANT_OFFSET + _WANT.size
#: A process stamps the read time at most this often: the heartbeat looks once a second, and the stamp's age is
#: compared with seconds (S4_READ_LEASE_IDLE_SECS); one clock read and a comparison per read otherwise.
NOTE_EVERY_S = 0.25
WIDE = -1  # an event that touches more than one key (a prefix rename, IAM): every read waits for it

_BUCKET_EVENTS = frozenset({EventType.BUCKET_CREATED, EventType.BUCKET_DELETED, EventType.BUCKET_CONFIG_SET})


def gate_path(data_dir: Path) -> Path:
    return data_dir / "cluster" / "read-gate"


def _slot(bucket: str, name: str) -> int:
    return zlib.crc32(name.encode(), zlib.crc32(bucket.encode() + b"\0")) % SLOTS


def key_slot(bucket: str, key: str) -> int:
    return _slot(bucket, "k" + key)


def upload_slot(bucket: str, upload_id: str) -> int:
    return _slot(bucket, "u" + upload_id)


def bucket_slot(bucket: str) -> int:
    return _slot(bucket, "")


def slots_of(event: Event) -> tuple[int, ...]:
    """The slots a replicated event touches; ``(WIDE,)`` when it is not about one key, upload or bucket."""
    payload = event.payload
    bucket = payload.get("bucket")
    if not isinstance(bucket, str):
        return (WIDE,)
    if event.type in _BUCKET_EVENTS:
        return (bucket_slot(bucket),)
    slots: list[int] = []
    key = payload.get("key")
    if isinstance(key, str):
        slots.append(key_slot(bucket, key))
    upload = payload.get("upload_id")
    if not isinstance(upload, str) and isinstance(payload.get("upload"), dict):
        upload = payload["upload"].get("u")
    if isinstance(upload, str):
        slots.append(upload_slot(bucket, upload))
    return tuple(slots) if slots else (WIDE,)


class ReadGate:
    """The mapped gate file: ``create`` in the journal's process (zeroed: no lease, nothing unsettled, no read),
    ``attach`` in an HTTP worker: read-only but for the word a read stamps."""

    def __init__(self, mapped: mmap.mmap, *, writable: bool, clock: Callable[[], float] = time.monotonic,
                 want: mmap.mmap | None = None) -> None:
        """``want``: a worker's writable map of the read-time page alone (None: it is in ``mapped``)."""
        self._map = mapped
        self._writable = writable
        self._clock = clock
        self._lock = threading.Lock()  # writers: the sequencer thread and the event loop
        self._want, self._want_at = (mapped, _WANT_OFFSET) if want is None else (want, 0)
        self._noted = float("-inf")  # when this process last stamped a read

    @classmethod
    def create(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> ReadGate:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Written, not truncated to size: a write through the map into a hole of a file on a full disk is a
            # SIGBUS; every block is allocated now, or the start fails with ENOSPC.
            os.write(fd, bytes(_FILE_SIZE))
            return cls(mmap.mmap(fd, _FILE_SIZE), writable=True, clock=clock)
        finally:
            os.close(fd)

    @classmethod
    def attach(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> ReadGate:
        fd = os.open(path, os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, _SIZE, prot=mmap.PROT_READ)
            return cls(mapped, writable=False, clock=clock, want=mmap.mmap(fd, _WANT.size, offset=_WANT_OFFSET))
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._map.close()
            self._want.close()

    # -- readers (any process) ----------------------------------------------------------------------------------
    def _now(self) -> float:
        """The time of a read, stamped for the heartbeat (``wanted_at``) at most every ``NOTE_EVERY_S``."""
        now = self._clock()
        if now - self._noted >= NOTE_EVERY_S:
            self._noted = now
            _WANT.pack_into(self._want, self._want_at, now)
        return now

    def _open_now(self) -> bool:
        now = self._now()
        until, _, wide = _HEADER.unpack_from(self._map, 0)
        return bool(wide == 0 and now < until)

    def _clear(self, slot: int) -> bool:
        return bool(_SLOT.unpack_from(self._map, _HEADER.size + slot * _SLOT.size)[0] == 0)

    def key_local(self, bucket: str, key: str) -> bool:
        """This node may answer ``bucket/key`` (and decide on it) from its own views now."""
        return self._open_now() and self._clear(bucket_slot(bucket)) and self._clear(key_slot(bucket, key))

    def upload_local(self, bucket: str, upload_id: str) -> bool:
        return self._open_now() and self._clear(bucket_slot(bucket)) and self._clear(upload_slot(bucket, upload_id))

    def bucket_local(self, bucket: str) -> bool:
        return self._open_now() and self._clear(bucket_slot(bucket))

    def in_flight(self, bucket: str, slot: int) -> bool:
        """Whether an event of a write still in flight is visible here for ``slot`` (of ``bucket``), whatever the
        leases: a quorum read about to answer with it covers it first (cluster/key_reads.py)."""
        _, _, wide = _HEADER.unpack_from(self._map, 0)
        return bool(wide != 0 or not self._clear(bucket_slot(bucket)) or not self._clear(slot))

    def listing_local(self) -> bool:
        """A listing spans many keys: local only when nothing at all is unsettled."""
        now = self._now()
        until, total, _ = _HEADER.unpack_from(self._map, 0)
        return bool(total == 0 and now < until)

    @property
    def wanted_at(self) -> float:
        """When a read of any process of the node last consulted the gate (within ``NOTE_EVERY_S``; 0: never)."""
        return float(_WANT.unpack_from(self._want, self._want_at)[0])

    @property
    def current_until(self) -> float:
        return float(_HEADER.unpack_from(self._map, 0)[0])

    @property
    def unsettled(self) -> int:
        return int(_HEADER.unpack_from(self._map, 0)[1])

    # -- the writer (the journal's process) -----------------------------------------------------------------------
    def set_current_until(self, deadline: float) -> None:
        assert self._writable
        with self._lock:
            if self._map.closed:  # stopping: see ``add``
                return
            _, total, wide = _HEADER.unpack_from(self._map, 0)
            _HEADER.pack_into(self._map, 0, deadline, total, wide)

    def add(self, slots: Iterable[int], delta: int) -> None:
        """Count one event in (``delta`` 1) or out (-1) of each of its slots (``WIDE``: the wide counter)."""
        assert self._writable
        with self._lock:
            if self._map.closed:
                # The node is stopping: its HTTP processes have drained (nobody reads locally any more) and the
                # gate was closed with the cluster node, while a commit still in flight (a peer's stream, a job
                # ending) makes its events visible. The events are durable either way; refusing them would fail a
                # write for the gate's sake, and the next start recreates the gate empty.
                return
            until, total, wide = _HEADER.unpack_from(self._map, 0)
            for slot in slots:
                if slot == WIDE:
                    wide += delta
                else:
                    offset = _HEADER.size + slot * _SLOT.size
                    _SLOT.pack_into(self._map, offset, _SLOT.unpack_from(self._map, offset)[0] + delta)
            _HEADER.pack_into(self._map, 0, until, total + delta, wide)
