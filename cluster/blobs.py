"""Blob transfer between the nodes of a pool: what the server and the client share, and the staged-blobs table.

The server side (``PutBlob``/``GetBlob`` handlers) is cluster/blob_server.py, the client side (``send_blob``,
``fetch_blob``, ``fetch_from_any``) cluster/blob_client.py; docs/architecture/replication.md, "Blob transfer".

**Staged blobs.** A blob received from a peer is verified and fsynced before it is acknowledged, but no journal
event references it yet (the event comes next, in ``ApplyEvents``). Until then its location is kept here, content
hash -> ``BlobLocation``, so that the replicated apply can journal the event's ``blobs_at`` with this node's own
locations (each node's volumes differ). The table is in memory and bounded by entries, bytes and age: it is a
hint, not a promise. A staged blob that no event ever references (the event never came, the entry aged out or was
evicted, the node restarted) is orphaned bytes, exactly like the chunks of an upload that failed before its event:
garbage no view names, counted dead when its volume is sealed (volumes.md, "Garbage after a crash") and reclaimed
by compaction. The sender learns of the loss from ``ApplyEvents`` (``missing_blobs``) and sends the blob again; a
sender that crashed retries the whole write, so orphans cost space once, never correctness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.model import BlobLocation

log = logging.getLogger("s4.cluster.blobs")

#: Data messages carry at most this many bytes, on 64 KiB block boundaries (engine/volumes/reads.py's piece size).
PIECE_BYTES = 1024 * 1024
#: Pieces up to this size are hashed, written or read on the event loop; larger ones on a worker thread.
INLINE_BYTES = 64 * 1024
#: Largest blob a node accepts from a peer (S3's largest single PUT); ingest's chunks are 4 MiB.
MAX_BLOB_BYTES = 5 * 1024 ** 3
HASH_BYTES = 32

STAGED_MAX_ENTRIES = 10_000
STAGED_MAX_BYTES = 4 * 1024 ** 3
STAGED_MAX_AGE_S = 900.0


def pieces(lo: int, hi: int, piece_bytes: int = PIECE_BYTES) -> list[tuple[int, int]]:
    """``(offset, length)`` of the pieces covering ``[lo, hi)``, each ending on a ``piece_bytes`` boundary."""
    out = []
    while lo < hi:
        n = min(piece_bytes - lo % piece_bytes, hi - lo)
        out.append((lo, n))
        lo += n
    return out


@dataclass(frozen=True, slots=True)
class Staged:
    location: BlobLocation
    at: float  # monotonic time it was staged


class StagedBlobs:
    """Content hash -> location of blobs received but not yet referenced by an event; bounded, thread-safe.

    Oldest entries go first when a bound is passed (entries, total blob bytes) and entries older than
    ``max_age_s`` are invisible and dropped. ``dropped`` counts entries evicted or expired (for metrics).
    """

    def __init__(self, *, max_entries: int = STAGED_MAX_ENTRIES, max_bytes: int = STAGED_MAX_BYTES,
                 max_age_s: float = STAGED_MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or max_bytes < 0 or max_age_s <= 0:
            raise ValueError("StagedBlobs bounds must be positive")
        self.max_entries, self.max_bytes, self.max_age_s = max_entries, max_bytes, max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Staged] = OrderedDict()
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return self._bytes

    def add(self, location: BlobLocation) -> None:
        """Stage a verified, durable blob (a newer copy of the same hash replaces the older one)."""
        with self._lock:
            now = self._clock()
            self._pop(location.hash)
            self._entries[location.hash] = Staged(location, now)
            self._bytes += location.size
            self._expire(now)
            while len(self._entries) > self.max_entries or (self._bytes > self.max_bytes and len(self._entries) > 1):
                digest, _ = next(iter(self._entries.items()))
                self._drop(digest, "evicted")

    def get(self, digest: bytes) -> BlobLocation | None:
        """Where this node staged the blob, or None (never staged, consumed, evicted or too old)."""
        with self._lock:
            self._expire(self._clock())
            entry = self._entries.get(digest)
            return entry.location if entry is not None else None

    def release(self, digests: list[bytes] | tuple[bytes, ...] | set[bytes]) -> None:
        """The event referencing these blobs is committed: the blobs view owns them now."""
        with self._lock:
            for digest in digests:
                self._pop(digest)

    def volumes(self) -> set[str]:
        """Volumes holding staged blobs (compaction must not retire them while staged: replication.md)."""
        with self._lock:
            self._expire(self._clock())
            return {e.location.volume for e in self._entries.values()}

    def _pop(self, digest: bytes) -> Staged | None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._bytes -= entry.location.size
        return entry

    def _drop(self, digest: bytes, why: str) -> None:
        entry = self._pop(digest)
        if entry is not None:
            self.dropped += 1
            loc = entry.location
            log.info("staged blob %s (%s at %d, %d bytes) %s before an event referenced it: orphaned bytes",
                     digest.hex(), loc.volume, loc.offset, loc.size, why)

    def _expire(self, now: float) -> None:
        while self._entries:
            digest, entry = next(iter(self._entries.items()))
            if now - entry.at <= self.max_age_s:
                return
            self._drop(digest, "expired")
