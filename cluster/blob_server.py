"""The ``PutBlob`` and ``GetBlob`` handlers: blob bytes in and out of this node's volumes, verified end to end.

``put_blob`` streams a peer's blob into a volume record (VolumeStore.begin_record: the same v2 format and block
CRCs as a local PUT), hashing while it receives. Only when the size and the SHA-256 match the header does the
record get its header (engine/volumes/pending.py), then it is fdatasynced, staged (cluster/blobs.py) and
acknowledged ``stored``. Any mismatch, a cancelled stream or a full disk leaves headerless garbage that nothing
references. A blob this node already holds intact (blobs view, or staged) is acknowledged ``already_had`` at once.

``get_blob`` streams a blob, or a range of it, from local volumes: every piece is read through the volumes'
verified reader before it is sent, so no wrong byte leaves the node; a copy failing its checksums answers
``DATA_LOSS`` and is reported like a damaged local read (``on_damage``, wired to ``Engine.report_damage``).

``store_inline`` stores the blobs an ``ApplyEvents`` carries inline (``BLOB_TRANSFER_INLINE``, small writes): every
one is checked (size, SHA-256) before any is written, the ones this node lacks are appended as records, fdatasynced
and staged, exactly as a PutBlob would leave them. ``read_inline`` is the coordinator's side: the whole blob read
through the same verified reader as ``get_blob``, or None (the receiver then fetches it with GetBlob, which reports
a damaged copy).

Status codes: INVALID_ARGUMENT (bad header, size mismatch), DATA_LOSS (hash mismatch; damaged copy),
RESOURCE_EXHAUSTED (disk down to its reserve or full), NOT_FOUND (no copy here), OUT_OF_RANGE (range start past
the end). See docs/architecture/replication.md, "Blob transfer".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio.to_thread
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..engine import timeline
from ..engine.model import BlobLocation
from ..engine.space import SpaceGuard, is_disk_full
from ..engine.views.blobs import is_damaged
from ..engine.views.env import Views
from ..engine.views.records import Tx
from ..engine.volumes.pending import PendingRecord
from ..engine.volumes.reads import BlobReader
from ..engine.volumes.record import DamagedBlob, record_bytes
from ..engine.volumes.store import VolumeStore
from .blobs import HASH_BYTES, INLINE_BYTES, MAX_BLOB_BYTES, StagedBlobs, pieces
from .piece_writer import PieceWriter
from .wire.s4cluster.v1 import BlobHeader, GetBlobChunk, GetBlobRequest, InlineBlob, PutBlobReply

log = logging.getLogger("s4.cluster.blobs")

DamageReporter = Callable[[BlobLocation, str], None]


def _check_hash(digest: bytes, rpc: str) -> None:
    if len(digest) != HASH_BYTES:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{rpc}: content_hash must be {HASH_BYTES} bytes (sha256), "
                                                 f"got {len(digest)}")


def _disk_full(size: int) -> GRPCError:
    return GRPCError(Status.RESOURCE_EXHAUSTED, f"PutBlob: no room for a blob of {size} bytes: this node's disk is "
                                                "down to its reserve (S4_DISK_RESERVE) or full")


class BlobService:
    """This node's blob handlers (the blob half of cluster/grpc_server.py's ReplicationHandler)."""

    def __init__(self, views: Views, volumes: VolumeStore, *, space: SpaceGuard | None = None,
                 staged: StagedBlobs | None = None, on_damage: DamageReporter | None = None,
                 max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        self.views = views
        self.volumes = volumes
        self.space = space
        self.staged = staged if staged is not None else StagedBlobs()
        self.on_damage = on_damage
        self.max_blob_bytes = max_blob_bytes
        #: Blobs being fetched from a peer now (cluster/blob_client.py ``fetch_blob``): a second fetch of one waits.
        self.fetching: dict[bytes, asyncio.Future[None]] = {}

    # -- lookups ------------------------------------------------------------------------------------------------
    def _indexed(self, digest: bytes) -> list[Any] | None:
        with self.views.read() as txn:
            return Tx(txn, self.views.dbs).blob(digest)

    def holds(self, digest: bytes) -> BlobLocation | None:
        """An intact-as-far-as-known local copy: the blobs view's (unless marked damaged), else a staged one."""
        rec = self._indexed(digest)
        if rec is not None and not is_damaged(rec):
            return BlobLocation(digest, rec[0], rec[1], rec[2])
        return self.staged.get(digest)

    # -- PutBlob ------------------------------------------------------------------------------------------------
    async def put_blob(self, caller: str, header: BlobHeader, data: AsyncIterator[bytes]) -> PutBlobReply:
        """Store one blob; counts as stored only once its size and hash match ``header`` and it is fdatasynced."""
        digest, size = bytes(header.content_hash), int(header.size)
        _check_hash(digest, "PutBlob")
        if header.offset:
            raise GRPCError(Status.INVALID_ARGUMENT, "PutBlob sends whole blobs: the header's offset must be 0")
        if size > self.max_blob_bytes:
            raise GRPCError(Status.INVALID_ARGUMENT, f"PutBlob: {size} bytes is more than the {self.max_blob_bytes} "
                                                     "a blob may have")
        held = self.holds(digest)
        if held is not None:
            if held.size != size:
                raise GRPCError(Status.INVALID_ARGUMENT, f"PutBlob: blob {digest.hex()} has {held.size} bytes, the "
                                                         f"header says {size}")
            return PutBlobReply(already_had=True)
        nbytes = record_bytes(size)
        if self.space is not None and self.space.below_reserve(nbytes):
            log.warning("PutBlob from %s refused: %d bytes, %s", caller, size, self.space.describe())
            raise _disk_full(size)
        try:
            loc = await self._receive(digest, size, data)
        except OSError as exc:
            if is_disk_full(exc):
                log.warning("PutBlob from %s of %s: disk full (%s)", caller, digest.hex(), exc)
                raise _disk_full(size) from None
            raise
        if self.space is not None:
            self.space.consumed(nbytes)
        self.staged.add(loc)
        return PutBlobReply(stored=True)

    async def _receive(self, digest: bytes, size: int, data: AsyncIterator[bytes]) -> BlobLocation:
        """Write the stream into a new record, then header and fdatasync it; on any failure nothing is kept."""
        if timeline.enabled:
            timeline.mark("recv.begin", digest[:4].hex())
        hasher = hashlib.sha256()
        record = self.volumes.begin_record(size)
        with record:  # aborts (headerless garbage) unless finished
            if size <= INLINE_BYTES:  # a small blob: on the loop, cheaper than a thread
                async for piece in data:
                    if record.received + len(piece) > size:
                        raise GRPCError(Status.INVALID_ARGUMENT, f"PutBlob: more than the header's {size} bytes")
                    _take(record, hasher, piece)
            else:  # hashed and written on one thread while the next pieces arrive (cluster/piece_writer.py)
                writer = PieceWriter(record, hasher)
                writer.start()
                try:
                    async for piece in data:
                        if writer.queued_total + len(piece) > size:
                            raise GRPCError(Status.INVALID_ARGUMENT, f"PutBlob: more than the header's {size} bytes")
                        await writer.put(piece)
                    if timeline.enabled:
                        timeline.mark("recv.last_byte", digest[:4].hex())
                finally:
                    await writer.close()  # every piece written (or the thread's error raised) before the checks
                if timeline.enabled:
                    timeline.mark("recv.written", digest[:4].hex())
            if record.received != size:
                raise GRPCError(Status.INVALID_ARGUMENT, f"PutBlob: the stream ended after {record.received} of the "
                                                         f"header's {size} bytes")
            if hasher.digest() != digest:
                raise GRPCError(Status.DATA_LOSS, f"PutBlob: the bytes received hash to {hasher.hexdigest()}, not "
                                                  f"{digest.hex()}: refused")
            loc = await anyio.to_thread.run_sync(_finish_and_sync, self.volumes, record, digest)
        if timeline.enabled:
            timeline.mark("recv.fsynced", digest[:4].hex())
        return loc

    # -- blobs inside ApplyEvents (BLOB_TRANSFER_INLINE) -----------------------------------------------------------
    async def read_inline(self, digest: bytes, at: BlobLocation | None = None) -> bytes | None:
        """The whole blob, read through the volumes' verified reader as ``get_blob`` reads it; None when this node
        has no intact copy to give (not held, marked damaged, a check fails): the receiver fetches it with GetBlob
        then, whose path reports the damage. Never raises for a bad copy, so a write is not failed by it.

        ``at``: where the write's event says its chunk was stored (``blobs_at``). A write sent before its batch is
        committed here (cluster/replicator.py ``send_early``) is read there: the blobs view does not name a new
        chunk until the batch commits. Its bytes are checked all the same (block CRCs here, the hash on the peer)."""
        if at is not None and at.hash == digest:
            try:
                return await _read(self.volumes.blob_reader(at), 0, at.size)
            except (DamagedBlob, FileNotFoundError, OSError) as exc:
                log.info("blob %s not read where its write stored it (%s); trying the index", digest.hex(), exc)
        try:
            loc = self._location_for_read(digest)
        except GRPCError:
            return None
        try:
            return await _read(self.volumes.blob_reader(loc), 0, loc.size)
        except (DamagedBlob, FileNotFoundError, OSError) as exc:
            log.info("blob %s not sent inline (its local read failed: %s); the peer fetches it", digest.hex(), exc)
            return None

    async def store_inline(self, caller: str, blobs: Sequence[InlineBlob]) -> int:
        """Store the inline blobs this node lacks and stage them, before the events that reference them are
        applied; returns how many were written. They are not synced here: the batch that applies the events syncs
        every volume it resolves a staged blob from with its journal write (engine/replica.py ``_resolve``,
        engine/sequencer.py ``_make_durable``), so nothing is acknowledged before its bytes are durable. Every blob
        is checked first (32-byte hash, ``len(data) == size``, sha256): one mismatch refuses the whole request and
        nothing is stored."""
        checked: dict[bytes, bytes] = {}
        for blob in blobs:
            digest, data = bytes(blob.content_hash), bytes(blob.data)
            _check_hash(digest, "ApplyEvents inline blob")
            if len(data) != blob.size:
                raise GRPCError(Status.INVALID_ARGUMENT, f"ApplyEvents: inline blob {digest.hex()} has {len(data)} "
                                                         f"bytes, its size says {blob.size}")
            checked[digest] = data
        total = sum(len(d) for d in checked.values())
        if total <= INLINE_BYTES:
            wrong = _mismatched(checked)
        else:
            wrong = await anyio.to_thread.run_sync(_mismatched, checked)
        if wrong:
            raise GRPCError(Status.DATA_LOSS, f"ApplyEvents: inline blob {wrong[0].hex()} does not hash to its "
                                              f"content_hash ({len(wrong)} such): refused, nothing stored")
        wanted: dict[bytes, bytes] = {}
        for digest, data in checked.items():
            held = self.holds(digest)
            if held is None:
                wanted[digest] = data
            elif held.size != len(data):
                raise GRPCError(Status.INVALID_ARGUMENT, f"ApplyEvents: blob {digest.hex()} has {held.size} bytes "
                                                         f"here, the inline one {len(data)}")
        if not wanted:
            return 0
        nbytes = sum(record_bytes(len(d)) for d in wanted.values())
        if self.space is not None and self.space.below_reserve(nbytes):
            log.warning("ApplyEvents from %s: %d inline blobs refused, %s", caller, len(wanted),
                        self.space.describe())
            raise _disk_full(nbytes)
        try:
            if nbytes <= INLINE_BYTES:  # a few small records: a pwrite each, cheaper than a thread hop
                locations = self._append(wanted)
            else:
                locations = await anyio.to_thread.run_sync(self._append, wanted)
        except OSError as exc:
            if is_disk_full(exc):
                log.warning("ApplyEvents from %s: inline blobs: disk full (%s)", caller, exc)
                raise _disk_full(nbytes) from None
            raise
        if self.space is not None:
            self.space.consumed(nbytes)
        for loc in locations:
            self.staged.add(loc)
        return len(locations)

    def _append(self, blobs: dict[bytes, bytes]) -> list[BlobLocation]:
        """Append one record per blob (hashes already checked); synced by the batch that references them."""
        return [self.volumes.append(data, digest) for digest, data in blobs.items()]

    # -- GetBlob ------------------------------------------------------------------------------------------------
    async def get_blob(self, caller: str, request: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        """A BlobHeader (whole size, range start), then the range's bytes in pieces of at most 1 MiB, each checked
        before it is sent. The first piece is read before the header so a damaged small blob fails cleanly."""
        digest = bytes(request.content_hash)
        _check_hash(digest, "GetBlob")
        loc = self._location_for_read(digest)
        lo = int(request.offset)
        if lo > loc.size:
            raise GRPCError(Status.OUT_OF_RANGE, f"GetBlob: offset {lo} is past the end of a {loc.size}-byte blob")
        hi = loc.size if request.length == 0 else min(loc.size, lo + int(request.length))
        reader = self.volumes.blob_reader(loc)
        spans = pieces(lo, hi) or [(lo, 0)]  # an empty range still checks the record header
        first = True
        for start, n in spans:
            try:
                piece = await _read(reader, start, n)
            except (DamagedBlob, FileNotFoundError) as exc:
                # Compaction may have moved the blob (its old volume retired) or a write healed it: read it where
                # it lives now (same bytes: content-addressed). Still there: the copy is damaged.
                now = self.holds(digest)
                if now is None or now == loc or now.size != loc.size:
                    raise self._damaged(loc, exc) from None
                self._unstage(loc)
                loc, reader = now, self.volumes.blob_reader(now)
                try:
                    piece = await _read(reader, start, n)
                except (DamagedBlob, FileNotFoundError) as again:
                    raise self._damaged(loc, again) from None
            if first:
                yield GetBlobChunk(header=BlobHeader(content_hash=digest, size=loc.size, offset=lo))
                first = False
            if piece:
                yield GetBlobChunk(data=piece)

    def _location_for_read(self, digest: bytes) -> BlobLocation:
        rec = self._indexed(digest)
        if rec is not None and not is_damaged(rec):
            return BlobLocation(digest, rec[0], rec[1], rec[2])
        staged = self.staged.get(digest)
        if staged is not None:
            return staged
        if rec is not None:
            raise GRPCError(Status.DATA_LOSS, f"GetBlob: this node's copy of {digest.hex()} is marked damaged")
        raise GRPCError(Status.NOT_FOUND, f"GetBlob: this node holds no blob {digest.hex()}")

    def _unstage(self, loc: BlobLocation) -> bool:
        """Stop offering a staged copy that failed a read; True if ``loc`` was the staged one."""
        if self.staged.get(loc.hash) == loc:
            self.staged.release((loc.hash,))
            return True
        return False

    def _damaged(self, loc: BlobLocation, exc: Exception) -> GRPCError:
        """Log and report a copy that failed its checks (as Engine.damaged does for a GET), answer DATA_LOSS."""
        problem = exc.problem if isinstance(exc, DamagedBlob) else "volume file missing"
        log.error("blob %s (%s at %d, %d bytes) failed its checks while serving GetBlob: %s", loc.hash.hex(),
                  loc.volume, loc.offset, loc.size, problem)
        if self._unstage(loc):
            pass  # never referenced: nothing to mark, just stop offering it
        elif self.on_damage is not None:
            try:
                self.on_damage(loc, problem)
            except Exception:  # noqa: BLE001 - the read fails either way; the scrubber marks it later
                log.exception("could not report the damage of blob %s", loc.hash.hex())
        return GRPCError(Status.DATA_LOSS, f"GetBlob: this node's copy of {loc.hash.hex()} failed its checks: "
                                           f"{problem}")


def _mismatched(blobs: dict[bytes, bytes]) -> list[bytes]:
    """The hashes whose data does not hash to them."""
    return [digest for digest, data in blobs.items() if hashlib.sha256(data).digest() != digest]


def _finish_and_sync(volumes: VolumeStore, record: PendingRecord, digest: bytes) -> BlobLocation:
    """Header the record (its hash checked), then fdatasync its volume: one thread hop for both."""
    loc = record.finish(digest)
    volumes.sync((loc.volume,))
    return loc


def _take(record: PendingRecord, hasher: Any, piece: bytes) -> None:
    hasher.update(piece)
    record.write(piece)


async def _read(reader: BlobReader, lo: int, n: int) -> bytes:
    if n <= INLINE_BYTES:
        return reader.read(lo, n)
    return await anyio.to_thread.run_sync(reader.read, lo, n)
