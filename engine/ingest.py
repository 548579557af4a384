"""Streaming a request body into volumes: bounded memory, one pass over the bytes, dedup per chunk.

The body is cut into chunks of ``CHUNK_BYTES``. For each chunk, on a worker thread, in one pass: MD5 (the ETag)
and any requested checksums are updated, the chunk's SHA-256 names it, and the blob index is asked whether those
bytes are already stored -- if so the chunk becomes a reference, not a copy. Only new chunks are appended to the
worker's active volume. With a ``sealer`` (engine/crypto) the plaintext is hashed (MD5, checksums) and then
sealed; the content hash, the dedup lookup and the volume hold only the sealed bytes, whose random per-object
key means an encrypted chunk never deduplicates (docs/architecture/dedup.md). Nothing here is durable or
visible yet: the caller's command carries the locations and the volumes written, and the sequencer syncs those
volumes alongside the journal write of the event that references them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio.to_thread

from . import timeline
from .crypto import PartSealer
from .errors import ErrorCode, S3Error
from .model import BlobLocation
from .space import SpaceGuard, disk_full_error, is_disk_full
from .views.blobs import is_damaged
from .views.env import Views, unpack
from .volumes.record import record_bytes
from .volumes.store import VolumeStore

CHUNK_BYTES = 4 * 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes, /) -> Any: ...


@dataclass(slots=True)
class Ingested:
    """What was stored for one body: its size, MD5, chunk list and where each chunk lives."""

    size: int = 0
    md5: Any = field(default_factory=hashlib.md5)
    blobs: list[list[Any]] = field(default_factory=list)  # [sha256, size] per chunk, in order
    blobs_at: list[list[Any]] = field(default_factory=list)  # [sha256, volume, offset, size]
    volumes: set[str] = field(default_factory=set)
    written: list[bytes] = field(default_factory=list)  # sha256 of the chunks this ingest wrote (not deduplicated)
    etag_override: str = ""  # set when the chunks came from an existing object (copies)
    #: A small single-chunk body's stored bytes, ``((sha256, data),)``, when ``ingest`` was asked to keep them and
    #: wrote them: a pool node's write hands them to its supervisor, whose replicator sends them to the peers
    #: inline without reading them back from the volume (cluster/replicator.py ``offer_blobs``).
    kept: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def etag(self) -> str:
        return self.etag_override or self.md5.hexdigest()


class Ingestor:
    """Turns byte streams into stored, deduplicated chunks."""

    def __init__(self, views: Views, volumes: VolumeStore, chunk_bytes: int = CHUNK_BYTES,
                 space: SpaceGuard | None = None) -> None:
        self.views = views
        self.volumes = volumes
        self.chunk_bytes = chunk_bytes
        self.space = space

    def _append(self, data: bytes, digest: bytes) -> BlobLocation:
        """Append a new chunk, unless the disk is down to its reserve: 507 InsufficientStorage, also for an
        ENOSPC from the write itself (the bytes already appended for this body stay as garbage: compaction)."""
        space = self.space
        size = record_bytes(len(data)) if space is not None else 0
        if space is not None:
            space.check_bytes(size)
        try:
            loc = self.volumes.append(data, digest)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error() from exc
            raise
        if space is not None:
            space.consumed(size)
        return loc

    def _store_chunk(self, out: Ingested, data: bytes, hashers: Iterable[Hasher],
                     sealer: PartSealer | None = None, keep: bool = False) -> BlobLocation | None:
        """Hash and store one chunk (sealed by ``sealer``); returns where it was written, None when an intact copy
        was held already. ``keep``: a chunk written is also kept in ``out.kept`` (the bytes as stored)."""
        out.md5.update(data)
        for h in hashers:
            h.update(data)
        plain_size = len(data)
        if sealer is not None:
            data = sealer.seal_chunk(data)
        digest = hashlib.sha256(data).digest()
        raw = self.views.get("blobs", digest)  # the blob index (``Tx.blob``), in a read transaction of its own
        rec = unpack(raw) if raw else None
        written = None
        if rec is not None and not is_damaged(rec):  # never deduplicate onto a damaged copy: store it afresh
            loc = BlobLocation(digest, rec[0], rec[1], rec[2])
        else:
            loc = written = self._append(data, digest)
            if timeline.enabled:
                timeline.mark("ingest.stored", digest[:4].hex())
            out.volumes.add(loc.volume)
            out.written.append(digest)
            if keep:
                out.kept = ((digest, data),)
        out.blobs.append([digest, len(data)])
        out.blobs_at.append(loc.to_record())
        out.size += plain_size
        return written

    async def ingest(self, body: AsyncIterator[bytes] | AsyncIterator[bytes | bytearray], *,
                     max_bytes: int | None = None,
                     hashers: Iterable[Hasher] = (), sealer: PartSealer | None = None,
                     on_stored: Callable[[BlobLocation], None] | None = None, keep_small: bool = False) -> Ingested:
        """Consume ``body`` completely; EntityTooLarge as soon as it passes ``max_bytes``. With ``sealer`` the
        chunks are whole numbers of segments and stored sealed (``size`` stays the plaintext's).

        Two-stage pipeline: while a worker thread hashes and writes chunk N, the event loop keeps receiving
        chunk N+1 (chunks are still stored strictly in order: MD5 and the chunk list are sequential).
        ``on_stored``: told each newly written chunk of a body that filled at least one whole chunk, as soon as it
        is stored (a pool node starts copying it to its peers: engine/ports.py ``BlobPushPort``); a smaller body's
        bytes travel inside the write's ApplyEvents instead. ``keep_small``: a body of one small chunk keeps its
        stored bytes in ``kept`` (a pool node's write sends them inline: no read back from the volume).
        """
        out = Ingested()
        hashers = list(hashers)
        buf = bytearray()
        received = 0
        loop = asyncio.get_running_loop()
        storing: asyncio.Future[BlobLocation | None] | None = None
        chunk_bytes = self.chunk_bytes if sealer is None else sealer.chunk_bytes(self.chunk_bytes)

        def stored(loc: BlobLocation | None) -> None:
            if loc is not None and on_stored is not None:
                on_stored(loc)

        def done(fut: asyncio.Future[BlobLocation | None]) -> None:  # at once, not when the next chunk is full
            if not fut.cancelled() and fut.exception() is None:
                stored(fut.result())
        try:
            async for piece in body:
                if not received and timeline.enabled:
                    timeline.mark("ingest.first_byte")
                received += len(piece)
                if max_bytes is not None and received > max_bytes:
                    raise S3Error(ErrorCode.ENTITY_TOO_LARGE, ProposedSize=str(received),
                                  MaxSizeAllowed=str(max_bytes))
                buf += piece
                while len(buf) >= chunk_bytes:
                    chunk = bytes(memoryview(buf)[:chunk_bytes])
                    del buf[:chunk_bytes]
                    if storing is not None:
                        await storing
                    storing = loop.run_in_executor(None, self._store_chunk, out, chunk, hashers, sealer)
                    if on_stored is not None:
                        storing.add_done_callback(done)
            if timeline.enabled:
                timeline.mark("ingest.last_byte", str(received))
            if storing is not None:
                await storing
                storing = None
        finally:
            if storing is not None:  # the body failed mid-way: let the chunk in flight finish before returning
                await asyncio.gather(storing, return_exceptions=True)
        if buf:
            if len(buf) < 65536:  # small tails: hashing and one short pwrite cost less than a thread hop
                tail = self._store_chunk(out, bytes(buf), hashers, sealer, keep_small and not out.blobs)
            else:
                tail = await anyio.to_thread.run_sync(self._store_chunk, out, bytes(buf), hashers, sealer)
            if out.size > chunk_bytes:  # the tail of a body that filled whole chunks (pushed like them)
                stored(tail)
        if timeline.enabled:
            timeline.mark("ingest.end", str(out.size))
        return out

    async def ingest_bytes(self, data: bytes, **kwargs: Any) -> Ingested:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.ingest(one(), **kwargs)
