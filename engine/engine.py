"""The Engine: the S3 storage semantics the HTTP layer calls. Async; never blocks the event loop for long.

Writes: stream bytes into volumes (ingest.py), then submit a command naming those volumes to the sequencer, which
validates it atomically, journals its events while it fsyncs the volumes (tail_check.py) and updates the views
before the call returns. Reads: LMDB lookups (short, lock-free, microseconds) and ``pread`` of
volume bytes on worker threads.

Data directory layout: ``journal/`` (segments), ``views/`` (LMDB), ``volumes/`` (``w<worker>-<n>.vol``),
``node_id``. See docs/architecture/overview.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from s4.journal import Journal

from . import bucket_names, commands, listing, reads
from .accounts import DEFAULT_ACCOUNT, Account
from .conditions import DeleteConditions, Preconditions
from .crypto import CustomerKey, MasterKeys, ObjectKeys, PartSealer, load_or_create_master_key, open_object_keys
from .crypto import reads as crypto_reads
from .errors import ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError, StoredDataDamagedError
from .iam_ops import IamOps
from .ingest import CHUNK_BYTES, Hasher, Ingested, Ingestor
from .kms_ops import KmsOps
from .local_commit import LocalCommitPath
from .model import (
    BlobLocation,
    Bucket,
    ListPage,
    ObjectVersion,
    PartListPage,
    Upload,
    UploadListPage,
    VersionListPage,
    version_record,
)
from .names import check_bucket_name, check_key
from .ports import (
    BlobPushPort,
    BlobRepairPort,
    BucketNamesPort,
    ClusterStatus,
    CommitPath,
    CommitPort,
    IamFeedPort,
    KeyReadPort,
    ListingPort,
    NameClaim,
)
from .read_gate import ReadGate
from .sequencer import Command
from .space import SpaceGuard
from .views.env import Views, unpack
from .views.keys import bucket_cfg_key, bucket_key, bucket_prefix
from .views.records import Tx
from .volumes.reads import BlobReader
from .volumes.record import DamagedBlob
from .volumes.store import DEFAULT_VOLUME_BYTES, VolumeStore

_Page = TypeVar("_Page", ListPage, VersionListPage, UploadListPage)
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
    disk_reserve_bytes: int | None = None  # None: 1% of the filesystem, at most 256 MiB (engine/space.py)
    node_id: str | None = None  # S4_NODE_ID: the id of a fresh data directory; must match a stored one
    #: A Fernet key every node of a pool shares (cluster/auth.py ``iam_key``): S3 secrets are encrypted with it, so
    #: credentials created on one node work on every node. None: the node's own ``iam.key`` (single mode).
    shared_iam_key: bytes | None = None
    #: The SSE master key every node of a pool shares (cluster/auth.py ``sse_key``); None: the node's own
    #: ``sse.key`` (engine/crypto/keys.py).
    shared_sse_key: bytes | None = None


class Engine(IamOps, KmsOps):
    """One node's storage: journal + views + volumes behind S3 operations."""

    cluster: ClusterStatus | None = None  # the node's pool and its liveness, set by tools/server.py (engine/ports.py)
    names: BucketNamesPort | None = None  # a pool's bucket-name register (S4_MODE=cluster), set by tools/server.py
    #: Several pools, a node outside the registry pool: the registry pool's IAM, followed (cluster/iam_feed.py);
    #: asked before an unknown access key is refused. Set by tools/server.py.
    iam_feed: IamFeedPort | None = None
    #: Volumes compaction must leave alone for now, beyond the active ones: a cluster node's volumes holding blobs
    #: received from a peer that no event references yet (cluster/blobs.py's staged table). Set by tools/server.py.
    pinned_volumes: Callable[[], set[str]] = staticmethod(set)
    #: A replicated pool's quorum reads (engine/ports.py ``KeyReadPort``), set by tools/server.py; None: this node's
    #: views are the truth (single mode).
    key_reads: KeyReadPort | None = None
    listings: ListingPort | None = None  # ... and its listings merged from R replicas
    #: ... both skipped while this node holds read leases from every peer and the thing read is settled
    #: (engine/read_gate.py; set by tools/server.py).
    read_gate: ReadGate | None = None
    #: A pool's healing of bad or missing blobs from replicas (engine/ports.py ``BlobRepairPort``), set by
    #: tools/server.py: reads that meet such a chunk are served from the healed copy instead of failing (read
    #: failover), and the scrubber heals what it finds. None: single mode (the read fails, the blob stays marked).
    blob_repair: BlobRepairPort | None = None
    blob_push: BlobPushPort | None = None  # a pool node: a large body's chunks go to the peers during the upload

    def __init__(self, options: EngineOptions, commit_path: CommitPath | None = None) -> None:
        """The node's engine, committing through ``commit_path`` (engine/ports.py), which the composition root
        chooses (tools/server.py); by default ``LocalCommitPath``: this process owns the data directory's journal.
        The engine never asks which kind it has."""
        self.options = options
        self._commit_path = commit_path if commit_path is not None else LocalCommitPath()
        # The path takes the data directory (the journal's owner locks it) before anything in it is touched.
        self.node_id = self._commit_path.claim(options)
        try:
            self._open(Path(options.data_dir))
        except BaseException:
            self._commit_path.close()
            raise

    def _open(self, data_dir: Path) -> None:
        options = self.options
        self.volumes = VolumeStore(data_dir / "volumes", worker=options.worker,
                                   volume_size_bytes=options.volume_size_bytes, on_seal=self._on_seal)
        self.space = SpaceGuard(self.volumes.directory, options.disk_reserve_bytes)
        opened = self._commit_path.open(self.volumes, self.space)
        self.views: Views = opened.views
        self.journal: Journal | None = opened.journal
        self.sequencer: CommitPort = opened.port
        self._background_jobs = opened.jobs  # None: created here on first use (engine/jobs/service.py, for_engine)
        self.ingestor = Ingestor(self.views, self.volumes, options.chunk_bytes, self.space)
        self._reported: set[tuple[bytes, str, int]] = set()  # damage marks submitted and not failed
        self._init_iam(data_dir, opened.login_throttle, options.shared_iam_key)
        own_sse = load_or_create_master_key(data_dir)
        self.sse_keys = MasterKeys(options.shared_sse_key, own_sse) if options.shared_sse_key else MasterKeys(own_sse)

    def _on_seal(self, volume: str, size: int) -> None:
        self.sequencer.submit(Command("seal_volume", {"volume": volume, "size": size}))

    def close(self) -> None:
        """The port first (it drains what was submitted), then the volumes, then what the path opened."""
        self.sequencer.close()
        self.volumes.close()
        self._commit_path.close()

    async def _run(self, name: str, args: dict[str, Any], actor: str, volumes: set[str] | None = None,
                   blobs: tuple[tuple[bytes, bytes], ...] = ()) -> Any:
        """Submit a command; the sequencer fsyncs ``volumes`` (where this process wrote the command's bytes)
        alongside the journal before it answers. When the node cannot commit, bytes written for the command may
        sit in a volume whose sync failed: this process writes its next records to a new volume (volumes/store.py).
        ``blobs``: small blobs the command's events reference, as written (``Command.blobs``)."""
        try:
            return await self.sequencer.execute(Command(name, args, actor, tuple(volumes or ()), blobs))
        except PoolUnavailableError:  # the pool refused or lacks the quorum: this node's syncs did not fail
            raise
        except ServiceUnavailableError:
            if volumes:
                self.volumes.abandon(volumes)
            raise

    async def settle_key(self, bucket: str, key: str) -> None:
        """Before reading or deciding on ``key``: in a pool, bring this node's views up to the newest state R
        replicas hold (a quorum read with blocking repair); nothing to do on a single node."""
        if self.key_reads is not None and not (self.read_gate is not None and self.read_gate.key_local(bucket, key)):
            await self.key_reads.settle_key(bucket, key)

    async def require_bucket(self, name: str) -> None:
        """NoSuchBucket unless the bucket exists (``check_bucket``); in a pool, a bucket this node does not hold yet
        (created through another node moments ago) is looked for on R replicas before NoSuchBucket is answered."""
        try:
            self.check_bucket(name)
            return
        except S3Error as exc:
            if self.key_reads is None or exc.code is not ErrorCode.NO_SUCH_BUCKET or self._bucket_local(name):
                raise
        await self.key_reads.settle_bucket(name)
        self.check_bucket(name)

    async def settle_bucket(self, name: str) -> None:
        """Before answering from a bucket's configuration: in a pool, the newest state R replicas hold."""
        if self.key_reads is not None and not self._bucket_local(name):
            await self.key_reads.settle_bucket(name)

    async def settle_missing_bucket(self, name: str) -> None:
        """In a pool: a bucket this node does not hold yet is looked for on R replicas (before a request's own
        checks answer NoSuchBucket). Nothing on a single node, or for a bucket held here."""
        if self.key_reads is not None and not self._bucket_local(name) and \
                self._read(lambda tx: tx.bucket(name)) is None:
            await self.key_reads.settle_bucket(name)

    async def settle_upload(self, bucket: str, upload_id: str) -> None:
        """Before answering from an upload's parts (ListParts): in a pool, the newest state R replicas hold, so
        a part acknowledged through another node is listed even when this node holds the upload but not yet the
        part (a write is on W replicas, not on all). Nothing on a single node."""
        if self.key_reads is not None:
            await self.key_reads.settle_upload(bucket, upload_id)

    async def settle_missing_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """In a pool: an upload this node does not hold yet is looked for on R replicas first."""
        if self.key_reads is not None and not self._upload_local(bucket, upload_id):
            try:
                self.get_upload(bucket, key, upload_id)
            except S3Error:
                await self.key_reads.settle_upload(bucket, upload_id)

    async def require_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        """``get_upload``, looked for on R replicas first in a pool when this node does not hold it yet."""
        try:
            return self.get_upload(bucket, key, upload_id)
        except S3Error as exc:
            if self.key_reads is None or exc.code is not ErrorCode.NO_SUCH_UPLOAD or \
                    self._upload_local(bucket, upload_id):
                raise
        await self.key_reads.settle_upload(bucket, upload_id)
        return self.get_upload(bucket, key, upload_id)

    def _bucket_local(self, name: str) -> bool:
        return self.read_gate is not None and self.read_gate.bucket_local(name)

    def _upload_local(self, bucket: str, upload_id: str) -> bool:
        return self.read_gate is not None and self.read_gate.upload_local(bucket, upload_id)

    def _listing_local(self) -> bool:
        return self.read_gate is not None and self.read_gate.listing_local()

    def _read(self, fn: Callable[[Tx], Any]) -> Any:
        with self.views.read() as txn:
            return fn(Tx(txn, self.views.dbs))

    # -- buckets --------------------------------------------------------------------------------------------------
    async def create_bucket(self, name: str, region: str = "us-east-1", actor: str = "",
                            object_lock: bool = False, account: Account = DEFAULT_ACCOUNT) -> None:
        """``object_lock``: created with Object Lock on (and versioning with it), in the create's own batch.
        ``account``: the bucket's owner (the creator's account; engine/accounts.py)."""
        check_bucket_name(name)
        owner = {"account": account.id, "account_name": account.name}

        async def run(command: str, args: dict[str, Any], who: str, volumes: set[str] | None = None) -> Any:
            return await self._run(command, dict(args, object_lock=True) if object_lock else args, who, volumes)

        if self.names is not None:  # a pool: the name register decides first (engine/bucket_names.py)
            await bucket_names.create_bucket(self.names, run, name, region, actor, owner, self._name_holder)
            return
        await run("create_bucket", {"bucket": name, "region": region, **owner}, actor)

    async def delete_bucket(self, name: str, actor: str = "") -> None:
        if self.names is not None:
            await bucket_names.delete_bucket(self.names, self._run, self._bucket_here, name, actor)
            return
        await self._run("delete_bucket", {"bucket": name}, actor)

    def _name_holder(self, name: str, claim: NameClaim) -> str:
        """The account holding a bucket name the pool's register has: the bucket's here, else the account of the
        access key that created it (the register's ``owner``; no user holds it: the legacy root keys, the
        default account)."""
        bucket = self._bucket_here(name)
        if bucket is not None:
            return bucket.account or DEFAULT_ACCOUNT.id
        return self.account_of_key(claim.owner) or DEFAULT_ACCOUNT.id

    def _bucket_here(self, name: str) -> Bucket | None:
        return self._read(lambda tx: tx.bucket(name))  # type: ignore[no-any-return]

    def holds_bucket(self, name: str) -> bool:
        """Whether this node's views hold the bucket (several pools: then it is this pool's, api/pool_router.py)."""
        return self._bucket_here(name) is not None

    def get_bucket(self, name: str) -> Bucket:
        return self._read(lambda tx: reads.require_bucket(tx, name))  # type: ignore[no-any-return]

    def check_bucket(self, name: str) -> None:
        """NoSuchBucket unless the bucket exists, as ``get_bucket`` decides it (a record under its key), from one
        views get and without decoding the record: what a request checks before its body (api/s3/call.py)."""
        if not self.views.get("buckets", bucket_key(name)):
            raise S3Error(ErrorCode.NO_SUCH_BUCKET, resource=name, BucketName=name)

    def list_buckets(self) -> list[Bucket]:
        return self._read(lambda tx: tx.buckets())  # type: ignore[no-any-return]

    async def set_bucket_config(self, name: str, kind: str, value: Any, actor: str = "") -> None:
        await self._run("set_bucket_config", {"bucket": name, "kind": kind, "value": value}, actor)

    def get_bucket_config(self, name: str, kind: str) -> Any:
        def read(tx: Tx) -> Any:
            reads.require_bucket(tx, name)
            return tx.bucket_config(name, kind)

        return self._read(read)

    def bucket_account(self, name: str) -> str | None:
        """The id of the account owning the bucket, or None (no such bucket). One get, for access control."""
        raw = self.views.get("buckets", bucket_key(name))
        return None if raw is None else _record_account(raw)

    def bucket_guard(self, name: str, kind: str) -> tuple[str | None, Any]:
        """(the owning account's id or None when there is no bucket, the bucket's ``kind`` config or None): what
        access control reads on every request, in one read transaction."""
        raw, cfg = self.views.get_pair(("buckets", bucket_key(name)), ("bucket_cfg", bucket_cfg_key(name, kind)))
        if raw is None:
            return None, None
        return _record_account(raw), None if cfg is None else unpack(cfg)

    def bucket_reads(self, name: str, kinds: tuple[str, ...]) -> tuple[str | None, dict[str, Any]]:
        """(the owning account's id or None when there is no bucket, {kind: that config or None}) from one read
        transaction: ``bucket_guard`` for several configs at once (what a request asks about its own bucket before
        its body: api/s3/bucket_reads.py). py-lmdb called directly: every PutObject reads this, and the generic
        ``Views.get_many`` (its keys built and checked one call at a time) cost twice the transaction itself."""
        key = bucket_key(name)
        configs: dict[str, Any] = {}
        if not 0 < len(key) <= _SHORT_BUCKET_KEY:  # a name no bucket has (or too long for its configs' keys to fit)
            wanted = [("buckets", key), *(("bucket_cfg", bucket_cfg_key(name, kind)) for kind in kinds)]
            found = self.views.get_many(wanted)
            raw = found[0]
            for kind, cfg in zip(kinds, found[1:], strict=True):
                configs[kind] = None if cfg is None else unpack(cfg)
        else:
            dbs = self.views.dbs
            cfg_db, prefix = dbs["bucket_cfg"], key + b"\0"  # bucket_cfg_key's layout
            txn = self.views.env.begin()
            try:
                raw = txn.get(key, None, dbs["buckets"])
                for kind in kinds:
                    cfg = txn.get(prefix + kind.encode(), None, cfg_db)
                    configs[kind] = None if cfg is None else unpack(cfg)
            finally:
                txn.abort()
        return None if raw is None else _record_account(raw), configs

    def bucket_guard_and(self, name: str, kind: str, other: str) -> tuple[str | None, Any, Any]:
        """``bucket_guard`` plus a second config of the bucket, in the same read transaction (an object read's
        access control also needs the bucket's object ownership)."""
        raw, cfg, more = self.views.get_three(("buckets", bucket_key(name)), ("bucket_cfg", bucket_cfg_key(name, kind)),
                                              ("bucket_cfg", bucket_cfg_key(name, other)))
        if raw is None:
            return None, None, None
        return _record_account(raw), None if cfg is None else unpack(cfg), None if more is None else unpack(more)

    def bucket_config_if_any(self, name: str, kind: str) -> Any:
        """The bucket's config of that kind, or None: no such config or no such bucket (a bucket's configs are
        written only while it exists and dropped with it, ``Tx.drop_bucket_records``). One get and no bucket
        record, fresh from the views like every read: access control asks for the policy on every request."""
        raw = self.views.get("bucket_cfg", bucket_cfg_key(name, kind))
        return None if raw is None else unpack(raw)

    # -- objects --------------------------------------------------------------------------------------------------
    async def ingest(self, body: AsyncIterator[bytes] | AsyncIterator[bytes | bytearray], *,
                     max_bytes: int | None = None,
                     hashers: list[Hasher] | None = None, sealer: PartSealer | None = None) -> Ingested:
        push = self.blob_push
        return await self.ingestor.ingest(body, max_bytes=max_bytes, hashers=hashers or (), sealer=sealer,
                                          on_stored=push.stored if push is not None else None,
                                          keep_small=self.key_reads is not None)  # a pool: sent inline to peers

    async def put_object(self, bucket: str, key: str, stored: Ingested, *, content_type: str = "",
                         metadata: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                         checksums: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                         if_match: str | None = None, if_none_match: str | None = None,
                         etag: str | None = None, part_sizes: list[int] | None = None,
                         actor: str = "", lock: dict[str, Any] | None = None,
                         acl: list[Any] | None = None, encryption: dict[str, Any] | None = None,
                         imported: dict[str, Any] | None = None, s3op: str = "") -> ObjectVersion:
        """Record a new version made of already-ingested chunks (see ``ingest``). ``lock``: the object lock the
        request asks for (``lk``/``lh``, engine/object_lock.py); without one the bucket's default applies.
        ``acl``: its own ACL. ``encryption`` is the ``se`` record of sealed chunks (engine/crypto/objects.py).
        ``imported``: an import stamp (engine/imports.py), for a version copied from another server.
        ``s3op``: ``CopyObject`` or ``PostObject`` when the version comes from one, kept in the event for the
        notifications' event name (engine/notify/messages.py); "" for PutObject."""
        check_key(key)
        if self.key_reads is not None:  # a pool decides (conditions, versions, clock) on a quorum's state
            await self.settle_key(bucket, key)
        version = version_record(None, stored.size, etag or stored.etag,
                                 content_type=content_type or "binary/octet-stream", blobs=stored.blobs,
                                 metadata=metadata, headers=headers, checksums=checksums, tags=tags,
                                 part_sizes=part_sizes, acl=acl, encryption=encryption, imported=imported)
        rec = await self._run("put_object", {"bucket": bucket, "key": key, "version": version,
                                             "blobs_at": stored.blobs_at, "written": stored.written,
                                             "if_match": if_match, "lock": lock,
                                             "if_none_match": if_none_match, "s3op": s3op}, actor, stored.volumes,
                            stored.kept)
        return ObjectVersion.from_record(key, rec)

    def head_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion:
        """The version a GET/HEAD serves, with S3's errors for missing keys, versions and delete markers."""
        return self._read(lambda tx: reads.version_for_read(  # type: ignore[no-any-return]
            tx, reads.require_bucket(tx, bucket), key, version_id))

    def open_version(self, bucket: str, key: str, version_id: str | None = None) -> OpenVersion:
        """Everything a GET/HEAD needs, from one read transaction: the version, the bucket's versioning state
        and lifecycle rules (for response headers) and where each chunk lives."""
        def read(tx: Tx) -> OpenVersion:
            b = reads.require_bucket(tx, bucket)
            version = reads.version_for_read(tx, b, key, version_id)
            return OpenVersion(version, b.versioning, tx.bucket_config(bucket, "lifecycle"),
                               reads.locations(tx, version))

        return self._read(read)  # type: ignore[no-any-return]

    def open_version_guarded(self, bucket: str, key: str, version_id: str | None,
                             kinds: tuple[str, ...]) -> GuardedOpen:
        """``bucket_reads`` and ``open_version`` from one read transaction: what a GET/HEAD's access control reads
        (the owning account, the ``kinds`` configs) and what its handler serves, one snapshot instead of two (one
        transaction and one get of the bucket record fewer). The version's error (NoSuchBucket, NoSuchKey, ...)
        is kept, not raised: access control decides first (api/s3/bucket_reads.py ``ObjectReads``). Only where
        ``settle_key`` settles nothing (a single node): in a pool the handler reads after its quorum read."""
        def read(tx: Tx) -> GuardedOpen:
            b = tx.bucket(bucket)
            if b is None:
                return GuardedOpen(None, dict.fromkeys(kinds), S3Error(ErrorCode.NO_SUCH_BUCKET, resource=bucket,
                                                                        BucketName=bucket))
            # the configs as ``Tx.bucket_config`` reads them, their keys from one prefix (the bucket exists, so
            # its name is valid and every key fits)
            prefix, get, cfg_db = bucket_prefix(bucket), tx.txn.get, tx.dbs["bucket_cfg"]
            configs: dict[str, Any] = {}
            for kind in kinds:
                raw = get(prefix + kind.encode(), None, cfg_db)
                configs[kind] = None if raw is None else unpack(raw)
            opened: OpenVersion | S3Error
            try:
                version = reads.version_for_read(tx, b, key, version_id)
                lifecycle = get(prefix + b"lifecycle", None, cfg_db)
                opened = OpenVersion(version, b.versioning, None if lifecycle is None else unpack(lifecycle),
                                     reads.locations(tx, version))
            except S3Error as exc:
                opened = exc
            return GuardedOpen(b.account or DEFAULT_ACCOUNT.id, configs, opened)

        return self._read(read)  # type: ignore[no-any-return]

    def locate(self, version: ObjectVersion) -> list[BlobLocation]:
        """Where each chunk of a version lives right now."""
        return self._read(lambda tx: reads.locations(tx, version))  # type: ignore[no-any-return]

    def object_keys(self, version: ObjectVersion, customer: CustomerKey | None = None,
                    wrong_key: ErrorCode = ErrorCode.ACCESS_DENIED) -> ObjectKeys | None:
        """The cipher of an encrypted version (None: plaintext). SSE-S3 opens with the master key; SSE-C needs the
        request's ``customer`` key (engine/crypto/objects.py for the errors)."""
        return self.object_keys_of(version.encryption, customer, wrong_key)

    def object_keys_of(self, encryption: dict[str, Any], customer: CustomerKey | None = None,
                       wrong_key: ErrorCode = ErrorCode.ACCESS_DENIED) -> ObjectKeys | None:
        """``object_keys`` of an ``se`` record (a version's or a multipart upload's)."""
        if not encryption:
            if customer is not None:
                raise S3Error(ErrorCode.INVALID_REQUEST, "The encryption parameters are not applicable to this "
                              "object.")
            return None
        return open_object_keys(encryption, self.sse_keys, customer, wrong_key,
                                lambda key_id, version: self.kms_material(key_id, version)[1])

    def read_small(self, version: ObjectVersion, start: int, length: int,
                   locations: list[BlobLocation] | None = None, keys: ObjectKeys | None = None) -> bytes:
        """``[start, start+length)`` inline, for small bodies (no thread hop, no stream): one ``pread`` per chunk,
        every byte checked against its record's checksums (a damaged chunk: InternalError, nothing returned).
        Plaintext always: an encrypted version is opened with ``keys`` (or the master key: ``object_keys``)."""
        if version.encryption:
            return crypto_reads.read_small(self, version, keys or self._keys(version), start, length, locations)
        locations = locations if locations is not None else self.locate(version)
        end = start + length
        if len(locations) == 1:  # one chunk (most small objects): no list to gather and join
            loc = locations[0]
            hi = min(end, loc.size)
            return self._read_chunk(version, 0, loc, start, hi - start) if start < hi else b""
        out, pos = [], 0
        for index, loc in enumerate(locations):
            lo, hi = max(start, pos) - pos, min(end, pos + loc.size) - pos
            pos += loc.size
            if lo < hi:
                out.append(self._read_chunk(version, index, loc, lo, hi - lo))
        return b"".join(out)

    def _read_chunk(self, version: ObjectVersion, index: int, loc: BlobLocation, lo: int, n: int) -> bytes:
        """``n`` verified bytes at ``lo`` of chunk ``index`` of ``version`` (``read_small``), re-located once if
        the read at ``loc`` failed."""
        try:
            return self.volumes.read_blob(loc, lo, n)
        except (FileNotFoundError, DamagedBlob) as exc:  # moved, retired or re-stored meanwhile? else damaged
            loc = self._relocate(version, index, loc, exc)
            try:
                return self.volumes.read_blob(loc, lo, n)
            except DamagedBlob as again:
                raise self.damaged(version, loc, again) from None

    def _keys(self, version: ObjectVersion) -> ObjectKeys:
        keys = self.object_keys(version)
        assert keys is not None
        return keys

    async def read_object(self, version: ObjectVersion, start: int = 0, length: int | None = None,
                          locations: list[BlobLocation] | None = None,
                          keys: ObjectKeys | None = None) -> AsyncIterator[bytes | bytearray]:
        """The bytes ``[start, start+length)`` of a version, in pieces of at most 1 MiB, each verified before it
        is yielded (a damaged chunk raises InternalError instead: see ``damaged``). Plaintext always: an
        encrypted version is opened with ``keys`` (or the master key), segment by segment."""
        if version.encryption:
            async for piece in crypto_reads.read_object(self, version, keys or self._keys(version), start, length,
                                                        locations):
                yield piece
            return
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
            reader = self.volumes.blob_reader(loc)
            while lo < hi:
                n = min(READ_PIECE_BYTES - lo % READ_PIECE_BYTES, hi - lo)  # pieces on block boundaries
                try:
                    data = await self._read_piece(reader, lo, n)
                except (FileNotFoundError, DamagedBlob) as exc:
                    loc = await self._recover(version, index, loc, exc)
                    reader = self.volumes.blob_reader(loc)
                    try:
                        data = await self._read_piece(reader, lo, n)
                    except DamagedBlob as again:
                        raise self.damaged(version, loc, again) from None
                yield data
                lo += n

    async def _read_piece(self, reader: BlobReader, lo: int, n: int) -> bytes | bytearray:
        if n <= 65536:
            return reader.read(lo, n)
        data = reader.read_cached(lo, n)  # all in the page cache: read and checked here, no thread round trip
        if data is not None:
            await asyncio.sleep(0)  # a hot 64 MiB body still lets the loop's other requests in between pieces
            return data
        return await anyio.to_thread.run_sync(reader.read, lo, n)

    async def read_failover(self, version: ObjectVersion, start: int, length: int,
                            keys: ObjectKeys | None = None) -> bytes:
        """``read_small`` again after it met a bad or missing chunk, through ``read_object``, which in a pool heals
        the chunk from a replica first (``_recover``). The API calls it only when ``blob_repair`` is set."""
        return b"".join([piece async for piece in self.read_object(version, start, length, keys=keys)])

    async def _recover(self, version: ObjectVersion, index: int, loc: BlobLocation, exc: Exception) -> BlobLocation:
        """``_relocate``, and in a pool (``blob_repair``) a chunk still at the failing place is first replaced by a
        verified copy from a replica (marked, fetched by its SHA-256, the index repointed: cluster/scrub_heal.py),
        then read where it lives now. No replica with a good copy: the read fails as on a single node."""
        repair = self.blob_repair
        if repair is None:
            return self._relocate(version, index, loc, exc)
        now = self.locate(version)[index]
        if now != loc:
            return now
        problem = exc.problem if isinstance(exc, DamagedBlob) else "volume file missing"
        log.error("blob %s of %s (%s at %d, %d bytes) failed its checks: %s; fetching a copy from a replica",
                  loc.hash.hex(), version.key, loc.volume, loc.offset, loc.size, problem)
        if await repair.repair(loc, problem, "read"):
            now = self.locate(version)[index]
            if now != loc:
                return now
        if isinstance(exc, DamagedBlob):
            raise self.damaged(version, loc, exc) from None
        raise exc

    def _relocate(self, version: ObjectVersion, index: int, loc: BlobLocation, exc: Exception) -> BlobLocation:
        """Where chunk ``index`` lives now, after a read at ``loc`` failed with ``exc``: compaction may have moved
        it (its old volume retired) or a re-upload repointed it from a damaged copy. Still at ``loc`` and
        damaged: the damage is recorded and InternalError raised."""
        now = self.locate(version)[index]
        if now == loc:
            if isinstance(exc, DamagedBlob):
                raise self.damaged(version, loc, exc) from None
            raise exc
        return now

    def damaged(self, version: ObjectVersion, loc: BlobLocation, exc: DamagedBlob) -> S3Error:
        """Log a blob that failed its checks, have it marked damaged in the blob index (``blob.damaged``: no
        write will deduplicate onto it again) and return the client's error. Never waits for the mark."""
        log.error("blob %s of %s (%s at %d, %d bytes) failed its checksum: %s", loc.hash.hex(), version.key,
                  loc.volume, loc.offset, loc.size, exc.problem)
        self.report_damage(loc, exc.problem)
        return StoredDataDamagedError()

    def report_damage(self, loc: BlobLocation, problem: str) -> None:
        """Submit ``mark_blob_damaged`` (from any thread, any process) without waiting; failures are logged."""
        key = (loc.hash, loc.volume, loc.offset)
        if key in self._reported:
            return
        self._reported.add(key)
        try:
            fut = self.sequencer.submit(Command("mark_blob_damaged", {
                "hash": loc.hash, "volume": loc.volume, "offset": loc.offset, "problem": problem}, "system:verify"))
        except Exception:  # noqa: BLE001 - the read already fails; the scrubber marks it later
            log.exception("could not submit the damage mark of blob %s", loc.hash.hex())
            self._reported.discard(key)
            return
        fut.add_done_callback(lambda f: self._reported.discard(key) if f.exception() is not None else None)

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None,
                            actor: str = "", conditions: DeleteConditions | None = None,
                            bypass_governance: bool = False,
                            imported: dict[str, Any] | None = None) -> dict[str, Any]:
        """``bypass_governance``: the caller asked for and holds s3:BypassGovernanceRetention (checked by the API).
        ``imported``: an import stamp (engine/imports.py) for the delete marker this adds."""
        if self.key_reads is not None:  # a pool (a single node settles nothing: no coroutine per DELETE)
            await self.settle_key(bucket, key)
        args: dict[str, Any] = {"bucket": bucket, "key": key, "version_id": version_id,
                                "bypass": bypass_governance}
        if imported:
            args["import"] = imported
        if conditions:
            args["cond"] = conditions.to_record()
        return await self._run("delete_object", args, actor)  # type: ignore[no-any-return]

    async def reference(self, source: ObjectVersion) -> Ingested:
        """The source's chunks as if just ingested: copies share blobs instead of rewriting bytes.

        Every shared chunk is read and checked first (a copy must never spread a damaged blob: the damage is
        marked and the copy fails with InternalError); a chunk healed meanwhile by a re-upload is used where it
        lives now."""
        locations = self.locate(source)
        for index, loc in enumerate(locations):
            problem = await anyio.to_thread.run_sync(self.volumes.verify_blob, loc)
            if problem is None:
                continue
            now = self.locate(source)[index]
            if now != loc and await anyio.to_thread.run_sync(self.volumes.verify_blob, now) is None:
                locations[index] = now
                continue
            if self.blob_repair is not None:  # a pool: heal the chunk from a replica, then share the healed copy
                if now != loc:
                    loc, problem = now, await anyio.to_thread.run_sync(self.volumes.verify_blob, now) or problem
                if await self.blob_repair.repair(loc, problem, "read"):
                    now = self.locate(source)[index]
                    if now != loc and await anyio.to_thread.run_sync(self.volumes.verify_blob, now) is None:
                        locations[index] = now
                        continue
            raise self.damaged(source, loc, DamagedBlob(problem))
        return Ingested(size=source.size, blobs=[[b.hash, b.size] for b in source.blobs],
                        blobs_at=[loc.to_record() for loc in locations], etag_override=source.etag)

    async def copy_object(self, source: ObjectVersion, bucket: str, key: str, *, replace_metadata: bool,
                          content_type: str = "", metadata: dict[str, str] | None = None,
                          headers: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                          if_match: str | None = None, if_none_match: str | None = None,
                          actor: str = "", lock: dict[str, Any] | None = None,
                          acl: list[Any] | None = None, rewritten: Ingested | None = None,
                          encryption: dict[str, Any] | None = None) -> ObjectVersion:
        """A new version that references the source's chunks: the bytes are checked, none is written. The copy's
        lock is the request's or the destination bucket's default, never the source's; its ACL is the request's
        (``acl``), never the source's (as S3). A copy whose bytes had to be rewritten (an encrypted source or
        destination: api/s3/sse.py) passes them as ``rewritten``, one part, with the ``encryption`` of the new
        bytes and its own ETag."""
        if not replace_metadata:
            content_type, metadata, headers = source.content_type, source.metadata, source.headers
        if rewritten is not None:
            return await self.put_object(bucket, key, rewritten, content_type=content_type, metadata=metadata,
                                         headers=headers, checksums=source.checksums,
                                         tags=source.tags if tags is None else tags, encryption=encryption,
                                         if_match=if_match, if_none_match=if_none_match, actor=actor, lock=lock,
                                         acl=acl, s3op="CopyObject")
        stored = await self.reference(source)
        return await self.put_object(bucket, key, stored, content_type=content_type, metadata=metadata,
                                     headers=headers, checksums=source.checksums,
                                     tags=source.tags if tags is None else tags, etag=source.etag,
                                     part_sizes=source.part_sizes, encryption=source.encryption,
                                     if_match=if_match, if_none_match=if_none_match, actor=actor, lock=lock, acl=acl,
                                     s3op="CopyObject")

    def _empty_page(self, bucket: str, page: _Page) -> _Page:
        """The answer to max-keys=0 (in a pool too): NoSuchBucket if the bucket is missing, else an empty page that
        is not truncated, as S3 answers (a truncated page would need a resume point it cannot have)."""
        self._read(lambda tx: reads.require_bucket(tx, bucket))
        return page

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "", start_after: str = "",
                           max_keys: int = 1000) -> ListPage:
        if max_keys <= 0:  # S3: an empty page that is not truncated (there is no resume point to hand back)
            return self._empty_page(bucket, ListPage())
        if self.listings is not None and not self._listing_local():
            return await self.listings.list_objects(bucket, prefix, delimiter, start_after, max_keys)

        def read() -> ListPage:
            return self._read(lambda tx: listing.list_objects(tx, reads.require_bucket(tx, bucket), prefix,  # type: ignore[no-any-return]
                                                              delimiter, start_after, max_keys))

        return await anyio.to_thread.run_sync(read)

    async def list_object_versions(self, bucket: str, prefix: str = "", delimiter: str = "",
                                   key_marker: str = "", version_id_marker: str = "",
                                   max_keys: int = 1000) -> VersionListPage:
        if max_keys <= 0:
            return self._empty_page(bucket, VersionListPage())
        if self.listings is not None and not self._listing_local():
            return await self.listings.list_versions(bucket, prefix, delimiter, key_marker, version_id_marker,
                                                     max_keys)

        def read() -> VersionListPage:
            return self._read(lambda tx: listing.list_versions(  # type: ignore[no-any-return]
                tx, reads.require_bucket(tx, bucket), prefix, delimiter, key_marker, version_id_marker,
                max_keys))

        return await anyio.to_thread.run_sync(read)

    async def put_object_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str],
                              actor: str = "") -> str:
        await self.settle_key(bucket, key)
        return await self._run("set_object_tags", {"bucket": bucket, "key": key, "version_id": version_id,  # type: ignore[no-any-return]
                                                   "tags": tags}, actor)

    async def set_object_lock(self, bucket: str, key: str, version_id: str | None, *, actor: str = "",
                              bypass_governance: bool = False, **change: Any) -> str:
        """PutObjectRetention (``retention={"m", "u"}`` or None) or PutObjectLegalHold (``legal_hold=bool``);
        returns the version id it applied to."""
        await self.settle_key(bucket, key)
        args = {"bucket": bucket, "key": key, "version_id": version_id, "bypass": bypass_governance, **change}
        return await self._run("set_object_lock", args, actor)  # type: ignore[no-any-return]

    async def put_object_acl(self, bucket: str, key: str, version_id: str | None, acl: list[Any] | None,
                             actor: str = "") -> str:
        """PutObjectAcl (``acl`` None: back to the bucket owner's private ACL); the version id it set."""
        await self.settle_key(bucket, key)
        return await self._run("set_object_acl", {"bucket": bucket, "key": key, "version_id": version_id,  # type: ignore[no-any-return]
                                                  "acl": acl}, actor)

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
                                      tags: dict[str, str] | None = None, actor: str = "",
                                      checksum_type: str = "", lock: dict[str, Any] | None = None,
                                      acl: list[Any] | None = None,
                                      encryption: dict[str, Any] | None = None) -> str:
        check_key(key)
        upload = Upload("", bucket, key, 0, content_type or "binary/octet-stream", metadata or {}, headers or {},
                        checksum_algorithm, tags or {}, "", checksum_type, lock or {}, acl=acl,
                        encryption=encryption or {})
        return await self._run("create_multipart", {"bucket": bucket, "upload": upload.to_record()}, actor)  # type: ignore[no-any-return]

    def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        def read(tx: Tx) -> Upload:
            reads.require_bucket(tx, bucket)
            return reads.require_upload(tx, bucket, key, upload_id)

        return self._read(read)  # type: ignore[no-any-return]

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, stored: Ingested,
                          checksums: dict[str, str] | None = None, encryption: dict[str, Any] | None = None,
                          etag: str | None = None, actor: str = "") -> str:
        """Record a stored part; ``encryption`` (``{"n": nonce prefix}``) for a part of an encrypted upload."""
        etag = etag or stored.etag
        part: dict[str, Any] = {"n": part_number, "e": etag, "s": stored.size, "b": stored.blobs}
        if checksums:
            part["ck"] = checksums
        if encryption:
            part["se"] = encryption
        await self._run("store_part", {"bucket": bucket, "key": key, "upload_id": upload_id, "part": part,
                                       "blobs_at": stored.blobs_at, "written": stored.written}, actor,
                                      stored.volumes)
        return etag

    async def complete_multipart_upload(self, bucket: str, key: str, upload_id: str,
                                        parts: list[tuple[int, str]], *, checksums: dict[str, str] | None = None,
                                        if_match: str | None = None, if_none_match: str | None = None,
                                        actor: str = "", part_checksums: list[dict[str, str]] | None = None,
                                        checksum_type: str = "",
                                        imported: dict[str, Any] | None = None) -> ObjectVersion:
        """Assemble the object. ``checksums``: whole-object values the client claims; ``part_checksums``: what its
        part list names for each part; ``checksum_type``: its x-amz-checksum-type (engine/checksums.py checks all).
        ``imported``: an import stamp (engine/imports.py) for the version it makes."""
        if self.key_reads is not None:  # parts may have been uploaded through other nodes
            if not self._upload_local(bucket, upload_id):
                await self.key_reads.settle_upload(bucket, upload_id)
            await self.settle_key(bucket, key)
        rec = await self._run("complete_multipart", {
            "bucket": bucket, "key": key, "upload_id": upload_id, "parts": [list(p) for p in parts],
            "checksums": checksums, "part_claims": part_checksums, "checksum_type": checksum_type,
            "if_match": if_match, "if_none_match": if_none_match,
            "min_part_bytes": self.options.min_part_bytes, "import": imported or {}}, actor)
        rec.pop("part_checksums", None)
        return ObjectVersion.from_record(key, rec)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str, actor: str = "") -> None:
        await self._run("abort_multipart", {"bucket": bucket, "key": key, "upload_id": upload_id}, actor)

    def list_parts(self, bucket: str, key: str, upload_id: str, part_number_marker: int = 0,
                   max_parts: int = 1000) -> tuple[Upload, PartListPage]:
        def read(tx: Tx) -> tuple[Upload, PartListPage]:
            reads.require_bucket(tx, bucket)
            upload = reads.require_upload(tx, bucket, key, upload_id)
            return upload, listing.list_parts(tx, upload, part_number_marker, max_parts)

        return self._read(read)  # type: ignore[no-any-return]

    async def list_uploads(self, bucket: str, prefix: str = "", delimiter: str = "", key_marker: str = "",
                           upload_id_marker: str = "", max_uploads: int = 1000) -> UploadListPage:
        """ListMultipartUploads: merged from R replicas in a pool, this node's views otherwise."""
        if max_uploads <= 0:
            return self._empty_page(bucket, UploadListPage())
        if self.listings is not None and not self._listing_local():
            return await self.listings.list_uploads(bucket, prefix, delimiter, key_marker, upload_id_marker,
                                                    max_uploads)
        return self.list_multipart_uploads(bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads)

    def list_multipart_uploads(self, bucket: str, prefix: str = "", delimiter: str = "", key_marker: str = "",
                               upload_id_marker: str = "", max_uploads: int = 1000) -> UploadListPage:
        return self._read(lambda tx: listing.list_uploads(  # type: ignore[no-any-return]
            tx, reads.require_bucket(tx, bucket), prefix, delimiter, key_marker, upload_id_marker,
            max_uploads))


@dataclass(slots=True)
class OpenVersion:
    """What a GET/HEAD serves (``Engine.open_version``). Not frozen (nothing assigns to it): a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, three times the cost, on every GET and HEAD."""

    version: ObjectVersion
    versioning: str  # the bucket's: "", "Enabled" or "Suspended"
    lifecycle: Any  # the bucket's lifecycle configuration record, or None
    locations: list[BlobLocation]


@dataclass(slots=True)
class GuardedOpen:
    """``Engine.open_version_guarded``'s snapshot: the bucket's owning account (None: no bucket), its configs of
    the asked kinds (None: none), and the version opened or the error reading it gave."""

    account: str | None
    configs: dict[str, Any]
    opened: OpenVersion | S3Error


#: A bucket key this long or shorter leaves room for any configuration kind's key (``bucket\0kind``) within LMDB's
#: key limit (views/keys.py MAX_KEY_BYTES, 511); bucket names are at most 63 characters.
_SHORT_BUCKET_KEY = 255
_ACCOUNT_FIELD = b"\xa1a"  # the msgpack key "a" of a bucket record (model.Bucket.to_record)


def _record_account(raw: bytes) -> str:
    """The owning account of a packed bucket record. Only a non-default account's bucket has an "a" field, so a
    record without those bytes anywhere is the default account's and is not unpacked (a microsecond per request);
    a false match (the bytes inside a value) only costs the unpack."""
    if _ACCOUNT_FIELD not in raw:
        return DEFAULT_ACCOUNT.id
    return unpack(raw).get("a") or DEFAULT_ACCOUNT.id
