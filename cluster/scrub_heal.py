"""Scrub healing: replace this node's bad or missing copy of a blob with a verified one from a replica.

A blob is named by its SHA-256, and every node of a pool holds every blob its objects reference, each in its own
volumes. So when the scrubber or a read finds this node's copy failing its checks (or its volume record gone),
any replica's intact copy is the same blob. ``BlobHealer.repair`` (the engine's ``BlobRepairPort``):

  1. one repair per blob at a time (a second caller waits for the first and sees its outcome), at most
     ``max_concurrent`` blobs at once;
  2. the index record is re-read: freed since -> nothing to heal (False); moved or repointed to an unmarked copy
     since -> nothing to do (True); still at the failing place and not marked -> ``mark_blob_damaged`` first and
     waited for, so nothing deduplicates onto the bad copy and the blob service no longer counts it as held;
  3. for each live replica in turn (alive first, dead ones skipped): ``GetBlob`` by the hash into this node's blob
     volumes (cluster/blob_client.py ``fetch_blob``: size and SHA-256 checked while receiving, fsynced, staged); a
     replica without the blob, with a damaged copy (it answers DATA_LOSS and marks its own), unreachable or
     sending wrong bytes is skipped; the copy must have the index's size and pass a re-read here (block CRCs and
     SHA-256 over the bytes as written: ``verify_copy``), else it is dropped and the next replica is asked;
  4. ``move_blobs`` repoints the index to the new copy through the journal (node-local ``blob.moved``, as
     compaction relocates a blob; the decider re-checks that the blob still lives at the bad place). The blob is
     no longer damaged (its current place is not in its bad list) and the old place's bytes count as dead, so
     compaction reclaims that volume. A restart replays the event: the healed state is durable;
  5. counted in the node's ``ScrubProgress`` (blobs and bytes healed, failures, read failovers) and logged.

No replica with a good copy: False, the blob stays marked damaged, and the next scrub pass (or read) tries again.
docs/architecture/recovery.md, "Scrub healing".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio.to_thread
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from s4.engine.jobs.scrub_progress import ScrubProgress
from s4.engine.model import BlobLocation
from s4.engine.sequencer import Command
from s4.engine.views.blobs import is_damaged
from s4.engine.views.env import Views
from s4.engine.views.records import Tx
from s4.engine.volumes.record import DamagedBlob
from s4.engine.volumes.store import VolumeStore

from .blob_client import BlobTransferError
from .blobs import PIECE_BYTES

log = logging.getLogger("s4.cluster.scrub")
ACTOR = "system:scrub-heal"
MAX_CONCURRENT = 4  # blobs healed at once (each one transfer from one replica at a time)
MARK_ATTEMPTS = 3  # re-reads of the index while it changes under a repair (a move, a mark, a heal racing it)

Submit = Callable[[Command], "concurrent.futures.Future[Any]"]


class HealSource(Protocol):
    """Where verified copies come from (``PoolHealSource``: GetBlob into the blob service; tests simulate it)."""

    async def fetch(self, peer: str, digest: bytes) -> BlobLocation:
        """A copy of ``digest`` from ``peer``, written, fsynced and staged in this node's volumes; raises when the
        peer cannot give one."""
        ...

    def discard(self, location: BlobLocation) -> None:
        """A fetched copy found unusable: stop offering it (it stays as unreferenced bytes, dead at the seal)."""
        ...

    def adopted(self, digest: bytes) -> None:
        """The index names the fetched copy now: the staged entry is no longer needed."""
        ...


class PoolHealSource:
    """``HealSource`` over the pool's channels and the node's blob service (cluster/blob_server.py)."""

    def __init__(self, pool: Any, blobs: Any) -> None:
        self.pool, self.blobs = pool, blobs

    async def fetch(self, peer: str, digest: bytes) -> BlobLocation:
        from .blob_client import fetch_blob

        return await fetch_blob(self.pool, peer, digest, self.blobs)

    def discard(self, location: BlobLocation) -> None:
        if self.blobs.staged.get(location.hash) == location:
            self.blobs.staged.release((location.hash,))

    def adopted(self, digest: bytes) -> None:
        self.blobs.staged.release((digest,))


def verify_copy(volumes: VolumeStore, loc: BlobLocation) -> str | None:
    """None if the record at ``loc`` passes every block checksum and its bytes hash to ``loc.hash``; else why not.
    Read back from the disk, piece by piece (bounded memory)."""
    reader = volumes.blob_reader(loc)
    hasher = hashlib.sha256()
    try:
        if loc.size == 0:
            reader.read(0, 0)
        for lo in range(0, loc.size, PIECE_BYTES):
            hasher.update(reader.read(lo, min(PIECE_BYTES, loc.size - lo)))
    except DamagedBlob as exc:
        return exc.problem
    except OSError as exc:
        return f"unreadable: {exc}"
    if hasher.digest() != loc.hash:
        return f"its bytes hash to {hasher.hexdigest()}, not its name"
    return None


class BlobHealer:
    """The engine's ``BlobRepairPort`` in the journal-owning process of a pool node (module docstring)."""

    def __init__(self, views: Views, volumes: VolumeStore, submit: Submit, source: HealSource,
                 peers: Callable[[], Sequence[str]], progress: ScrubProgress | None = None, *,
                 max_concurrent: int = MAX_CONCURRENT) -> None:
        self.views, self.volumes, self.submit, self.source = views, volumes, submit, source
        self.peers = peers
        self.progress = progress
        self.max_concurrent = max_concurrent
        self._locks: dict[bytes, tuple[asyncio.Lock, int]] = {}
        self._slots: asyncio.Semaphore | None = None

    async def repair(self, location: BlobLocation, problem: str, cause: str = "read") -> bool:
        digest = location.hash
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:  # concurrent reads of one bad blob: one fetch, the others see its outcome
                if self._slots is None:
                    self._slots = asyncio.Semaphore(self.max_concurrent)
                async with self._slots:
                    return await self._repair(location, problem, cause)
        finally:
            lock, users = self._locks[digest]
            if users <= 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)

    def _index(self, digest: bytes) -> list[Any] | None:
        with self.views.read() as txn:
            return Tx(txn, self.views.dbs).blob(digest)

    async def _commit(self, command: Command) -> Any:
        return await asyncio.wrap_future(self.submit(command))

    async def _repair(self, location: BlobLocation, problem: str, cause: str) -> bool:
        digest = location.hash
        for _ in range(MARK_ATTEMPTS):
            rec = self._index(digest)
            if rec is None:
                return False  # freed: nothing references it any more
            if [rec[0], rec[1]] != [location.volume, location.offset]:
                if not is_damaged(rec):
                    return True  # moved or healed since the caller looked: the index names another copy
                location = BlobLocation(digest, rec[0], rec[1], rec[2])
            if is_damaged(rec):
                break
            await self._commit(Command("mark_blob_damaged", {"hash": digest, "volume": location.volume,
                                                             "offset": location.offset, "problem": problem}, ACTOR))
        else:
            return self._failed(digest, "the blob index kept changing under the repair", cause)
        failures: dict[str, str] = {}
        for peer in self.peers():
            try:
                copy = await self.source.fetch(peer, digest)
            except BlobTransferError as exc:
                if exc.status is Status.RESOURCE_EXHAUSTED:
                    return self._failed(digest, f"this node's disk is full: {exc}", cause)
                failures[peer] = str(exc)
                continue
            except (GRPCError, OSError, KeyError) as exc:
                failures[peer] = f"{type(exc).__name__}: {exc}"
                continue
            if copy.size != location.size:
                self.source.discard(copy)
                failures[peer] = f"its copy has {copy.size} bytes, the index says {location.size}"
                continue
            bad = await anyio.to_thread.run_sync(verify_copy, self.volumes, copy)
            if bad is not None:
                self.source.discard(copy)
                failures[peer] = f"its copy failed verification here: {bad}"
                continue
            moved = await self._commit(Command("move_blobs", {"moves": [
                [digest, location.volume, location.offset, copy.volume, copy.offset]]}, ACTOR, (copy.volume,)))
            if moved:
                self.source.adopted(digest)
                log.warning("healed blob %s (%d bytes, bad at %s@%d: %s) with a verified copy from %s, now at %s@%d",
                            digest.hex(), location.size, location.volume, location.offset, problem, peer,
                            copy.volume, copy.offset)
                if self.progress is not None:
                    self.progress.healed(digest, location.size, peer, cause)
                return True
            self.source.discard(copy)  # the index changed meanwhile (freed, moved, re-stored by a write)
            rec = self._index(digest)
            return rec is not None and not is_damaged(rec)
        why = "; ".join(f"{peer}: {why}" for peer, why in failures.items()) or "no live replica to ask"
        return self._failed(digest, f"no replica gave a verified copy ({why})", cause)

    def _failed(self, digest: bytes, why: str, cause: str) -> bool:
        log.error("could not heal blob %s: %s; it stays marked damaged (reads of it fail; the scrubber tries again)",
                  digest.hex(), why)
        if self.progress is not None:
            self.progress.heal_failed(digest, why, cause)
        return False


def replica_order(peers: Sequence[str], state: Callable[[str], str]) -> list[str]:
    """The peers to ask for a copy: alive ones first, then suspect ones; dead ones are not asked (a call to them
    would only wait for its timeout)."""
    ranked = {"alive": 0, "suspect": 1}
    states = {p: state(p) for p in peers}
    return sorted((p for p in peers if states[p] in ranked), key=lambda p: ranked[states[p]])


def healer_for(node: Any, blobs: Any, submit: Submit, progress: ScrubProgress | None) -> BlobHealer:
    """The healer of a wired node (tools/server.py): its blob service's views and volumes, copies fetched over the
    node's peer pool from its live peers, node-local commands through ``submit`` (the engine's port)."""
    liveness = node.liveness
    return BlobHealer(blobs.views, blobs.volumes, submit, PoolHealSource(node.pool, blobs),
                      lambda: replica_order(liveness.peers, liveness.state), progress)
