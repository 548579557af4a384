"""The Engine: the S3 storage semantics the HTTP layer calls. Async; never blocks the event loop for long.

Writes: stream bytes into volumes (ingest.py), then submit a command naming those volumes to the sequencer, which
validates it atomically, journals its events while it fsyncs the volumes (tail_check.py) and updates the views
before the call returns. Reads: LMDB lookups (short, lock-free, microseconds) and ``pread`` of
volume bytes on worker threads.

Data directory layout: ``journal/`` (segments), ``views/`` (LMDB), ``volumes/`` (``w<worker>-<n>.vol``),
``node_id``. See docs/architecture/overview.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from s4.journal import Journal

from . import commands, listing
from .conditions import Preconditions
from .errors import ErrorCode, S3Error
from .iam_ops import IamOps
from .ingest import CHUNK_BYTES, Hasher, Ingested, Ingestor
from .model import (
    NULL_VERSION,
    BlobLocation,
    Bucket,
    ListPage,
    ObjectVersion,
    PartListPage,
    Upload,
    UploadListPage,
    VersionListPage,
)
from .names import check_bucket_name, check_key
from .remote import LoopChannel, RemoteIam, RemoteSequencer, RemoteWorkers
from .sequencer import Command, Sequencer, replay
from .tail_check import settle_tail
from .views.env import Views
from .views.records import Tx
from .views.unsynced import UnsyncedMarker, current_boot_id
from .volumes.store import DEFAULT_VOLUME_BYTES, VolumeStore

log = logging.getLogger(__name__)
READ_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineOptions:
    data_dir: Path
    volume_size_bytes: int = DEFAULT_VOLUME_BYTES
    segment_size_bytes: int = 64 * 1024 * 1024
    worker: int = 0
    chunk_bytes: int = CHUNK_BYTES
    min_part_bytes: int = commands.MIN_PART_BYTES


def _node_id(data_dir: Path) -> str:
    path = data_dir / "node_id"
    if path.exists():
        return path.read_text().strip()
    node = f"node-{uuid.uuid4().hex[:12]}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node)
    os.replace(tmp, path)
    return node


class Engine(IamOps):
    """One node's storage: journal + views + volumes behind S3 operations."""

    def __init__(self, options: EngineOptions, sequencer_channel: LoopChannel | None = None) -> None:
        """The node's engine; with ``sequencer_channel`` a worker process's engine (see engine/remote).

        A worker writes its own volumes and reads the views directly, but owns neither the journal nor the
        LMDB writer: its commands go to the sequencer process, which has already replayed the journal.
        """
        self.options = options
        data_dir = Path(options.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = _node_id(data_dir)
        self.journal: Journal | None = None
        self._unsynced: UnsyncedMarker | None = None
        self.volumes = VolumeStore(data_dir / "volumes", worker=options.worker,
                                   volume_size_bytes=options.volume_size_bytes, on_seal=self._on_seal)
        if sequencer_channel is None:
            self.journal = Journal(data_dir / "journal", origin=self.node_id,
                                   segment_size_bytes=options.segment_size_bytes)
            self.views = self._open_views(data_dir / "views", self.journal, self.volumes)
            replayed = replay(self.journal, self.views)
            if replayed:
                log.info("replayed %d journal events into the views", replayed)
        else:
            self.views = Views(data_dir / "views")
        self.sequencer: Sequencer | RemoteSequencer
        if sequencer_channel is None:
            self.sequencer = Sequencer(self.journal, self.views, self.volumes, commands.DECIDERS)  # type: ignore[arg-type]
        else:
            self.sequencer = RemoteSequencer(sequencer_channel)
            self._background_workers = RemoteWorkers(sequencer_channel)
        self.ingestor = Ingestor(self.views, self.volumes, options.chunk_bytes)
        self._init_iam(data_dir, RemoteIam(sequencer_channel) if sequencer_channel is not None else None)

    def _open_views(self, path: Path, journal: Journal, volumes: VolumeStore) -> Views:
        """The node's views, without per-commit fsync where a boot id can tell a process crash from a machine
        crash (views/unsynced.py); discarded and rebuilt from the journal when they cannot be trusted. First the
        journal's last record is settled against the volumes (tail_check.py): verified after a machine crash."""
        boot_id = current_boot_id()
        self._unsynced = UnsyncedMarker(path, boot_id)
        machine_crashed = self._unsynced.views_untrusted()
        settle_tail(journal, volumes, verify=machine_crashed or boot_id is None)
        if machine_crashed:
            log.warning("the views were not synced before the machine restarted: rebuilding them from the journal")
            shutil.rmtree(path)
        views = Views(path, sync=boot_id is None)
        if views.layout_stale():
            log.warning("the views were written in an older key layout: rebuilding them from the journal")
        elif views.last_seq() > journal.last_seq:
            log.warning("views (seq %d) are ahead of the journal (seq %d): rebuilding them from the journal",
                        views.last_seq(), journal.last_seq)
        if views.layout_stale() or views.last_seq() > journal.last_seq:
            views.close()
            shutil.rmtree(path)
            views = Views(path, sync=boot_id is None)
        if boot_id is not None:
            self._unsynced.mark()
        return views

    def _on_seal(self, volume: str, size: int) -> None:
        self.sequencer.submit(Command("seal_volume", {"volume": volume, "size": size}))

    def close(self) -> None:
        self.sequencer.close()
        if self.journal is not None:
            self.journal.close()
        self.volumes.close()
        if self._unsynced is not None:
            self.views.env.sync(True)
            self._unsynced.clear()
        self.views.close()

    async def _run(self, name: str, args: dict[str, Any], actor: str, volumes: set[str] | None = None) -> Any:
        """Submit a command; the sequencer fsyncs ``volumes`` (where this process wrote the command's bytes)
        alongside the journal before it answers."""
        return await self.sequencer.execute(Command(name, args, actor, tuple(volumes or ())))

    def _read(self, fn: Callable[[Tx], Any]) -> Any:
        with self.views.read() as txn:
            return fn(Tx(txn, self.views.dbs))

    # -- buckets --------------------------------------------------------------------------------------------------
    async def create_bucket(self, name: str, region: str = "us-east-1", actor: str = "") -> None:
        check_bucket_name(name)
        await self._run("create_bucket", {"bucket": name, "region": region}, actor)

    async def delete_bucket(self, name: str, actor: str = "") -> None:
        await self._run("delete_bucket", {"bucket": name}, actor)

    def get_bucket(self, name: str) -> Bucket:
        return self._read(lambda tx: commands.require_bucket(tx, name))  # type: ignore[no-any-return]

    def list_buckets(self) -> list[Bucket]:
        return self._read(lambda tx: tx.buckets())  # type: ignore[no-any-return]

    async def set_bucket_config(self, name: str, kind: str, value: Any, actor: str = "") -> None:
        await self._run("set_bucket_config", {"bucket": name, "kind": kind, "value": value}, actor)

    def get_bucket_config(self, name: str, kind: str) -> Any:
        def read(tx: Tx) -> Any:
            commands.require_bucket(tx, name)
            return tx.bucket_config(name, kind)

        return self._read(read)

    # -- objects --------------------------------------------------------------------------------------------------
    async def ingest(self, body: AsyncIterator[bytes], *, max_bytes: int | None = None,
                     hashers: list[Hasher] | None = None) -> Ingested:
        return await self.ingestor.ingest(body, max_bytes=max_bytes, hashers=hashers or ())

    async def put_object(self, bucket: str, key: str, stored: Ingested, *, content_type: str = "",
                         metadata: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                         checksums: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                         if_match: str | None = None, if_none_match: str | None = None,
                         etag: str | None = None, part_sizes: list[int] | None = None,
                         actor: str = "") -> ObjectVersion:
        """Record a new version made of already-ingested chunks (see ``ingest``)."""
        check_key(key)
        version: dict[str, Any] = {"s": stored.size, "e": etag or stored.etag,
                                   "ct": content_type or "binary/octet-stream", "b": stored.blobs}
        for short, value in (("m", metadata), ("hd", headers), ("ck", checksums), ("tg", tags),
                             ("ps", part_sizes)):
            if value:
                version[short] = value
        rec = await self._run("put_object", {"bucket": bucket, "key": key, "version": version,
                                             "blobs_at": stored.blobs_at, "if_match": if_match,
                                             "if_none_match": if_none_match}, actor, stored.volumes)
        return ObjectVersion.from_record(key, rec)

    def head_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion:
        """The version a GET/HEAD serves, with S3's errors for missing keys, versions and delete markers."""
        return self._read(lambda tx: _version_for_read(  # type: ignore[no-any-return]
            tx, commands.require_bucket(tx, bucket), key, version_id))

    def open_version(self, bucket: str, key: str, version_id: str | None = None) -> OpenVersion:
        """Everything a GET/HEAD needs, from one read transaction: the version, the bucket's versioning state
        and lifecycle rules (for response headers) and where each chunk lives."""
        def read(tx: Tx) -> OpenVersion:
            b = commands.require_bucket(tx, bucket)
            version = _version_for_read(tx, b, key, version_id)
            return OpenVersion(version, b.versioning, tx.bucket_config(bucket, "lifecycle"),
                               _locations(tx, version))

        return self._read(read)  # type: ignore[no-any-return]

    def locate(self, version: ObjectVersion) -> list[BlobLocation]:
        """Where each chunk of a version lives right now."""
        return self._read(lambda tx: _locations(tx, version))  # type: ignore[no-any-return]

    def read_small(self, version: ObjectVersion, start: int, length: int,
                   locations: list[BlobLocation] | None = None) -> bytes:
        """``[start, start+length)`` inline, for small bodies (no thread hop, no stream): one ``pread`` per chunk."""
        locations = locations if locations is not None else self.locate(version)
        out, pos, end = [], 0, start + length
        for index, loc in enumerate(locations):
            lo, hi = max(start, pos) - pos, min(end, pos + loc.size) - pos
            pos += loc.size
            if lo >= hi:
                continue
            try:
                out.append(self.volumes.read(loc.volume, loc.offset + lo, hi - lo))
            except FileNotFoundError:  # compaction moved the blob and retired its volume meanwhile
                loc = self.locate(version)[index]
                out.append(self.volumes.read(loc.volume, loc.offset + lo, hi - lo))
        return b"".join(out)

    async def read_object(self, version: ObjectVersion, start: int = 0, length: int | None = None,
                          locations: list[BlobLocation] | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[start, start+length)`` of a version, in pieces of at most 1 MiB."""
        end = version.size if length is None else min(version.size, start + length)
        locations = locations if locations is not None else self.locate(version)
        pos = 0
        for index, loc in enumerate(locations):
            chunk_start, chunk_end = pos, pos + loc.size
            pos = chunk_end
            if chunk_end <= start:
                continue
            if chunk_start >= end:
                break
            lo = max(start, chunk_start) - chunk_start
            hi = min(end, chunk_end) - chunk_start
            while lo < hi:
                n = min(READ_PIECE_BYTES, hi - lo)
                try:
                    data = await self._read_piece(loc, lo, n)
                except FileNotFoundError:  # compaction moved the blob and retired its volume meanwhile
                    loc = self.locate(version)[index]
                    data = await self._read_piece(loc, lo, n)
                yield data
                lo += n

    async def _read_piece(self, loc: BlobLocation, lo: int, n: int) -> bytes:
        if n <= 65536:
            return self.volumes.read(loc.volume, loc.offset + lo, n)
        return await anyio.to_thread.run_sync(self.volumes.read, loc.volume, loc.offset + lo, n)  # type: ignore[no-any-return]

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None,
                            actor: str = "") -> dict[str, Any]:
        return await self._run("delete_object", {"bucket": bucket, "key": key, "version_id": version_id},  # type: ignore[no-any-return]
                               actor)

    def reference(self, source: ObjectVersion) -> Ingested:
        """The source's chunks as if just ingested: copies share blobs instead of rewriting bytes."""
        locations = self.locate(source)
        return Ingested(size=source.size, blobs=[[b.hash, b.size] for b in source.blobs],
                        blobs_at=[loc.to_record() for loc in locations], etag_override=source.etag)

    async def copy_object(self, source: ObjectVersion, bucket: str, key: str, *, replace_metadata: bool,
                          content_type: str = "", metadata: dict[str, str] | None = None,
                          headers: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                          if_match: str | None = None, if_none_match: str | None = None,
                          actor: str = "") -> ObjectVersion:
        """A new version that references the source's chunks: no byte is read or written."""
        stored = self.reference(source)
        if not replace_metadata:
            content_type, metadata, headers = source.content_type, source.metadata, source.headers
        return await self.put_object(bucket, key, stored, content_type=content_type, metadata=metadata,
                                     headers=headers, checksums=source.checksums,
                                     tags=source.tags if tags is None else tags, etag=source.etag,
                                     part_sizes=source.part_sizes, if_match=if_match,
                                     if_none_match=if_none_match, actor=actor)

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "", start_after: str = "",
                           max_keys: int = 1000) -> ListPage:
        def read() -> ListPage:
            return self._read(lambda tx: listing.list_objects(tx, commands.require_bucket(tx, bucket), prefix,  # type: ignore[no-any-return]
                                                              delimiter, start_after, max_keys))

        return await anyio.to_thread.run_sync(read)

    async def list_object_versions(self, bucket: str, prefix: str = "", delimiter: str = "",
                                   key_marker: str = "", version_id_marker: str = "",
                                   max_keys: int = 1000) -> VersionListPage:
        def read() -> VersionListPage:
            return self._read(lambda tx: listing.list_versions(  # type: ignore[no-any-return]
                tx, commands.require_bucket(tx, bucket), prefix, delimiter, key_marker, version_id_marker,
                max_keys))

        return await anyio.to_thread.run_sync(read)

    async def put_object_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str],
                              actor: str = "") -> str:
        return await self._run("set_object_tags", {"bucket": bucket, "key": key, "version_id": version_id,  # type: ignore[no-any-return]
                                                   "tags": tags}, actor)

    async def rename(self, bucket: str, src: str, dst: str, *, merge: bool = False,
                     src_cond: Preconditions | None = None, dst_cond: Preconditions | None = None,
                     client_token: str | None = None, actor: str = "") -> None:
        """RenameObject for a key or (both names ending in '/') a whole prefix: one event, O(1) in keys moved."""
        check_key(dst)
        await self._run("rename", {"bucket": bucket, "src": src, "dst": dst, "merge": merge,
                                   "src_cond": (src_cond or Preconditions()).to_record(),
                                   "dst_cond": (dst_cond or Preconditions()).to_record(),
                                   "client_token": client_token}, actor)

    # -- multipart ------------------------------------------------------------------------------------------------
    async def create_multipart_upload(self, bucket: str, key: str, *, content_type: str = "",
                                      metadata: dict[str, str] | None = None,
                                      headers: dict[str, str] | None = None, checksum_algorithm: str = "",
                                      tags: dict[str, str] | None = None, actor: str = "") -> str:
        check_key(key)
        upload = Upload("", bucket, key, 0, content_type or "binary/octet-stream", metadata or {}, headers or {},
                        checksum_algorithm, tags or {})
        return await self._run("create_multipart", {"bucket": bucket, "upload": upload.to_record()}, actor)  # type: ignore[no-any-return]

    def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        def read(tx: Tx) -> Upload:
            commands.require_bucket(tx, bucket)
            return commands.require_upload(tx, bucket, key, upload_id)  # type: ignore[no-any-return]

        return self._read(read)  # type: ignore[no-any-return]

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, stored: Ingested,
                          checksums: dict[str, str] | None = None, actor: str = "") -> str:
        part = {"n": part_number, "e": stored.etag, "s": stored.size, "b": stored.blobs}
        if checksums:
            part["ck"] = checksums
        await self._run("store_part", {"bucket": bucket, "key": key, "upload_id": upload_id, "part": part,
                                       "blobs_at": stored.blobs_at}, actor, stored.volumes)
        return stored.etag

    async def complete_multipart_upload(self, bucket: str, key: str, upload_id: str,
                                        parts: list[tuple[int, str]], *, checksums: dict[str, str] | None = None,
                                        if_match: str | None = None, if_none_match: str | None = None,
                                        actor: str = "") -> ObjectVersion:
        rec = await self._run("complete_multipart", {
            "bucket": bucket, "key": key, "upload_id": upload_id, "parts": [list(p) for p in parts],
            "checksums": checksums, "if_match": if_match, "if_none_match": if_none_match,
            "min_part_bytes": self.options.min_part_bytes}, actor)
        rec.pop("part_checksums", None)
        return ObjectVersion.from_record(key, rec)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str, actor: str = "") -> None:
        await self._run("abort_multipart", {"bucket": bucket, "key": key, "upload_id": upload_id}, actor)

    def list_parts(self, bucket: str, key: str, upload_id: str, part_number_marker: int = 0,
                   max_parts: int = 1000) -> tuple[Upload, PartListPage]:
        def read(tx: Tx) -> tuple[Upload, PartListPage]:
            commands.require_bucket(tx, bucket)
            upload = commands.require_upload(tx, bucket, key, upload_id)
            return upload, listing.list_parts(tx, upload, part_number_marker, max_parts)

        return self._read(read)  # type: ignore[no-any-return]

    def list_multipart_uploads(self, bucket: str, prefix: str = "", delimiter: str = "", key_marker: str = "",
                               upload_id_marker: str = "", max_uploads: int = 1000) -> UploadListPage:
        return self._read(lambda tx: listing.list_uploads(  # type: ignore[no-any-return]
            tx, commands.require_bucket(tx, bucket), prefix, delimiter, key_marker, upload_id_marker,
            max_uploads))


@dataclass(frozen=True, slots=True)
class OpenVersion:
    version: ObjectVersion
    versioning: str  # the bucket's: "", "Enabled" or "Suspended"
    lifecycle: Any  # the bucket's lifecycle configuration record, or None
    locations: list[BlobLocation]


def _version_for_read(tx: Tx, b: Bucket, key: str, version_id: str | None) -> ObjectVersion:
    oid = commands.object_id(tx, b, key)
    if version_id is None:
        rec = tx.latest(oid) if oid is not None else None
        if rec is None:
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key)
        if rec.get("dm"):
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key, headers={
                "x-amz-delete-marker": "true", "x-amz-version-id": rec["v"]})
        latest = rec
    else:
        rec = tx.version(oid, version_id) if oid is not None else None
        if rec is None:
            code = ErrorCode.NO_SUCH_VERSION if oid is not None else ErrorCode.NO_SUCH_KEY
            if version_id != NULL_VERSION and not _looks_like_version_id(version_id):
                raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid version id specified",
                              ArgumentName="versionId", ArgumentValue=version_id)
            raise S3Error(code, resource=key, Key=key, VersionId=version_id)
        if rec.get("dm"):
            raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={
                "x-amz-delete-marker": "true", "x-amz-version-id": rec["v"], "allow": "DELETE"})
        latest = tx.latest(oid) if oid is not None else None
    version = ObjectVersion.from_record(key, rec)
    version.is_latest = latest is not None and latest["v"] == rec["v"]
    return version


def _locations(tx: Tx, version: ObjectVersion) -> list[BlobLocation]:
    out = []
    for ref in version.blobs:
        rec = tx.blob(ref.hash)
        if rec is None:
            raise S3Error(ErrorCode.INTERNAL_ERROR, f"blob {ref.hash.hex()} of {version.key} is missing")
        out.append(BlobLocation(ref.hash, rec[0], rec[1], rec[2]))
    return out


def _looks_like_version_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
