"""The replication areas of a running node, wired over its engine (tools/server.py calls ``wire_node``).

What a cluster node serves and runs besides Ping and the heartbeat (docs/architecture/replication.md, "Node life"):

* blobs: ``BlobService`` over the node's views and a ``VolumeStore`` of its own (``CLUSTER_VOLUMES_WORKER``: no
  other process of the node appends to those volumes), its staged table consumed by the apply port below;
* reads: ``ReadsService`` over the views;
* cas: the CASPaxos acceptor (``CasNode``, its store under ``<data>/cluster``), and over it the background-job
  leases (cluster/job_lease.py ``RegisterLeases``, the engine's ``JobLeasePort``);
* events: ``EventsService`` serving ``CatchUp`` from ``CommittedJournal`` and ``ApplyEvents`` through
  ``ReplicaApplier`` (the engine's ``apply_peer_events``), and the catch-up and hint loops (``enable_feed``) with
  a ``PoolBlobFetcher`` into the blob service;
* the write path: a ``Replicator`` (cluster/replicator.py), the engine's ``ReplicationPort``, which the caller
  attaches to the replicated commit path (engine/replicated_commit.py);
* the read path: ``QuorumKeyReads`` (cluster/key_reads.py), the engine's ``KeyReadPort``, and ``QuorumListings``
  (cluster/listings.py), its ``ListingPort``.

The engine never imports this module; it only sees its ports (engine/ports.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from s4.engine.errors import MissingBlobsError
from s4.engine.ports import ReplicaPort
from s4.engine.read_gate import ReadGate, gate_path
from s4.engine.replica import Applied, PeerBatchResult, referenced_hashes
from s4.engine.sequencer import Sequencer
from s4.engine.space import SpaceGuard
from s4.engine.views.env import Views
from s4.engine.volumes.store import VolumeStore
from s4.journal.events import Event

from .anti_entropy import AntiEntropy, AntiEntropySettings, GrpcAntiEntropyTransport
from .blob_push import BlobPusher, pool_sender
from .blob_server import BlobService, DamageReporter
from .blobs import StagedBlobs
from .buckets_register import CasNode
from .catch_up import IAM_FEED, CatchUpSettings, EventsService, GrpcEventsTransport, JournalReader, PoolBlobFetcher
from .coalesce import CoalescingTransport
from .event_stream import StreamedEventsTransport
from .feed_store import FeedStore, store_path
from .iam_feed import IamFeed, PrefixedCursors, wanted
from .job_lease import RegisterLeases, open_leases
from .key_reads import QuorumKeyReads
from .listings import QuorumListings
from .merkle_service import MerkleService
from .node import ClusterNode
from .read_leases import LeaseGrants, LeaseService, LeaseSettings, ReadLeases, Unsettled
from .reads import ReadsService
from .rejoin import Rejoin
from .replicator import Replicator
from .tombstone_gc import TombstoneGC

log = logging.getLogger("s4.cluster")

#: The worker number of the volumes a node's blob service writes peers' blobs to (``w1000-*.vol``). The journal
#: owner appends as worker 0 and HTTP workers as 1..S4_WORKERS, so S4_WORKERS must stay below it.
CLUSTER_VOLUMES_WORKER = 1000
#: One pass of the registry's IAM feed from one registry node takes at most this long (cluster/iam_feed.py).
IAM_CALL_S = 5.0
_T = TypeVar("_T")


class CommittedJournal:
    """The journal as CatchUp serves it: only committed events.

    ``last_seq`` is the views' committed ``last_seq`` (LMDB), never the journal writer's: the writer's head moves
    when a batch is written, before its volumes are known synced, and a batch whose sync fails is cut from the
    journal again (journal/writer.py ``cut_tail``, engine/sequencer.py ``_make_durable``) and its seqs reused by
    the next batch. A peer that streamed such a seq would hold an event this node never acknowledged, and its
    cursor would skip the event that later took that seq."""

    def __init__(self, journal: JournalReader, committed: Callable[[], int]) -> None:
        self._journal = journal
        self._committed = committed

    @property
    def last_seq(self) -> int:
        return min(self._journal.last_seq, self._committed())

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]:
        head = self.last_seq
        return self._journal.read(from_seq, head if to_seq is None else min(to_seq, head))


def on_loop(future: concurrent.futures.Future[_T]) -> asyncio.Future[_T]:
    """``asyncio.wrap_future`` for a future completed on another thread (the sequencer's), with one hand-off: that
    thread reads the outcome and schedules it on the loop with one ``call_soon_threadsafe``; ``wrap_future`` copies
    it there instead (four more locked reads of the future, and a check-cancel callback). Cancelling the returned
    future (its waiter gave up) does not cancel the commit, whose outcome stands either way."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[_T] = loop.create_future()

    def settle(done: concurrent.futures.Future[_T]) -> None:  # on the thread that completed ``done``
        if loop.is_closed():
            return
        try:
            result = done.result()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, whatever it is
            loop.call_soon_threadsafe(_fail, waiter, exc)
        else:
            loop.call_soon_threadsafe(_succeed, waiter, result)

    future.add_done_callback(settle)
    return waiter


def _succeed(waiter: asyncio.Future[_T], result: _T) -> None:
    if not waiter.done():
        waiter.set_result(result)


def _fail(waiter: asyncio.Future[Any], error: BaseException) -> None:
    if not waiter.done():
        if isinstance(error, concurrent.futures.CancelledError):
            waiter.cancel()
        else:
            waiter.set_exception(error)


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """catch_up.ApplyResult: what one batch did."""

    applied: int
    already_had: int
    missing_blobs: tuple[bytes, ...] = ()
    seqs: tuple[int, ...] = ()  # per event: the seq it was journaled at by this call, 0 when already held


class ReplicaApplier:
    """catch_up.PeerEventsApplier over the engine's ReplicaPort (LocalCommitPath.apply_peer_events).

    Blobs resolve from the blob service's staged table (blobs received by PutBlob or fetched by GetBlob, fsynced,
    not yet referenced); once the batch is committed the blobs view owns them and their entries are released. A
    batch referencing a blob this node lacks is answered with the missing hashes (nothing applied): the caller
    fetches them and applies again."""

    def __init__(self, port: ReplicaPort, staged: StagedBlobs) -> None:
        self.port = port
        self.staged = staged

    async def apply_peer_events(self, events: list[Event]) -> ApplyOutcome:
        if not events:
            return ApplyOutcome(0, 0)
        try:
            result: PeerBatchResult = await on_loop(self.port.apply_peer_events(events, self.staged.get))
        except MissingBlobsError as exc:
            return ApplyOutcome(0, 0, tuple(exc.hashes))
        self.staged.release({digest for event in events for digest in referenced_hashes(event)})
        seqs = tuple(seq if outcome is Applied.APPLIED else 0
                     for outcome, seq in zip(result.outcomes, result.seqs, strict=True))
        applied = sum(1 for seq in seqs if seq)
        return ApplyOutcome(applied, len(seqs) - applied, (), seqs)


@dataclass
class EngineParts:
    """What the wiring needs of the journal-owning engine (kept narrow: tests build it without a server)."""

    data_dir: Path
    views: Views
    journal: JournalReader
    replica: ReplicaPort
    space: SpaceGuard | None = None
    on_damage: DamageReporter | None = None
    volume_size_bytes: int | None = None
    on_seal: Callable[[str, int], None] | None = None  # the engine's: journals a sealed volume's size
    sequencer: Sequencer | None = None  # the journal's writer: the read gate counts what becomes visible


@dataclass
class Wired:
    """The parts ``wire_node`` opened; ``close`` after the node's gRPC server stopped (``ClusterNode.stop``)."""

    blobs: BlobService
    volumes: VolumeStore
    cas: CasNode
    feed: FeedStore
    replicator: Replicator
    key_reads: QuorumKeyReads
    listings: QuorumListings
    leases: RegisterLeases
    read_gate: ReadGate | None = None
    pusher: BlobPusher | None = None  # the engine's BlobPushPort: large bodies' chunks to the peers during upload

    def close(self) -> None:
        closers = [self.feed.close, self.cas.close, self.volumes.close]
        if self.read_gate is not None:
            closers.append(self.read_gate.close)
        for closer in closers:
            try:
                closer()
            except Exception:  # noqa: BLE001 - close the rest; the process is exiting
                log.exception("closing %s failed", closer)


def _read_leases(node: ClusterNode, parts: EngineParts,
                 head: int) -> tuple[ReadGate | None, LeaseGrants | None, Unsettled | None]:
    """Read leases (cluster/read_leases.py) and the gate that publishes them to the node's processes; none
    without the sequencer (tests wiring a node without an engine) or with R=1 (every read is local anyway)."""
    if parts.sequencer is None or node.config.read_quorum <= 1:
        gate_path(parts.data_dir).unlink(missing_ok=True)  # one left by an earlier start must not be attached
        return None, None, None
    gate = ReadGate.create(gate_path(parts.data_dir))
    peers = node.liveness.peers
    grants = LeaseGrants(peers, head)
    unsettled = Unsettled(node.config.node_id, gate, node.status()[0],
                          members=[n.node_id for n in node.config.pool])
    unsettled.tracking_own = True
    parts.sequencer.before_visible = unsettled.before_visible
    node.read_leases = ReadLeases(peers, gate, LeaseSettings(idle_s=node.config.read_lease_idle_s))
    node.unsettled = unsettled
    service = node.server.service
    service.handlers = dataclasses.replace(service.handlers, leases=LeaseService(grants, unsettled))
    events = service.handlers.events
    if isinstance(events, EventsService):
        events.on_settled = unsettled.peer_watermark
    return gate, grants, unsettled


def _tombstones(node: ClusterNode, parts: EngineParts, feed: FeedStore) -> None:
    """Tombstone GC and the rejoin rule (docs/architecture/tombstones.md): a peer whose data must not rejoin is dead
    to every caller and not pulled from; the GC job runs where the journal's writer is."""
    assert node.catch_up is not None
    config = node.config
    rejoin = Rejoin(node.liveness.peers, feed, config.max_rejoin_downtime_days * 86400)
    node.rejoin = rejoin
    node.liveness.blocked = node.catch_up.blocked = rejoin.blocked
    gc = TombstoneGC(node.liveness.peers, parts.views, parts.sequencer or _NoWriter(), config.gc_grace_days * 86400,
                     rejoin, node.catch_up.synced_ms.get)
    if parts.sequencer is not None:
        node.tombstones = gc
    service = node.server.service
    service.handlers = dataclasses.replace(service.handlers, tombstones=gc)


class _NoWriter:
    """Without the journal's writer (tests wiring a node without an engine) nothing is collected."""

    def submit(self, command: Any) -> Any:
        raise RuntimeError("no journal writer: tombstone GC does not run")


def wire_node(node: ClusterNode, parts: EngineParts) -> Wired:
    """Plug the blobs, reads, cas and events areas into ``node`` and enable its catch-up and hint loops; call
    before ``node.start()``. ``node.stop()`` closes what this opened (``Wired.close``), after its server."""
    volumes = VolumeStore(parts.data_dir / "volumes", worker=CLUSTER_VOLUMES_WORKER, on_seal=parts.on_seal,
                          **({} if parts.volume_size_bytes is None else {"volume_size_bytes": parts.volume_size_bytes}))
    opened: list[Callable[[], None]] = [volumes.close]
    try:
        blobs = BlobService(parts.views, volumes, space=parts.space, on_damage=parts.on_damage)
        cas = CasNode.open(node.config, parts.data_dir, node.pool)
        opened.append(cas.close)
        feed = FeedStore(store_path(parts.data_dir))
    except BaseException:
        for closer in reversed(opened):
            closer()
        raise
    service = node.server.service
    service.handlers = dataclasses.replace(service.handlers, blobs=blobs, reads=ReadsService(parts.views),
                                           cas=cas.service)
    journal = CommittedJournal(parts.journal, parts.views.last_seq)
    applier, fetcher = ReplicaApplier(parts.replica, blobs.staged), PoolBlobFetcher(node.pool, blobs)
    ae_config = node.config.anti_entropy
    node.enable_feed(feed, journal, applier, fetcher, inline=blobs,
                     catch_up=CatchUpSettings(enabled=ae_config.catch_up))
    service.handlers = dataclasses.replace(service.handlers, anti_entropy=MerkleService(parts.views, journal))
    node.anti_entropy = AntiEntropy(
        node.config.node_id, node.liveness.peers, parts.views, journal, applier, GrpcAntiEntropyTransport(node.pool),
        fetcher=fetcher, state=node.liveness.state,
        settings=AntiEntropySettings(interval_s=ae_config.interval_s, keys_per_s=ae_config.keys_per_s,
                                     bytes_per_s=ae_config.bytes_per_s, gc_grace_days=ae_config.gc_grace_days))
    assert node.hints is not None and node.catch_up is not None
    node.hints.holds = blobs.holds
    _tombstones(node, parts, feed)
    gate, grants, unsettled = _read_leases(node, parts, journal.last_seq)
    unary = GrpcEventsTransport(node.pool)
    replicator = Replicator(node.liveness.peers, node.config.write_quorum,
                            CoalescingTransport(StreamedEventsTransport(node.pool, unary)), node.hints,
                            ready=lambda: node.ready, state=node.liveness.state, blobs=blobs, grants=grants,
                            unsettled=unsettled)
    replicator.claim = node.catch_up.pushed  # the peers' replies move this node's cursors into their journals
    node.replicator = replicator
    pusher = BlobPusher(node.liveness.peers, pool_sender(node.pool, volumes), state=node.liveness.state)
    replicator.pushes = pusher
    assert node.catch_up is not None
    key_reads = QuorumKeyReads(node.config.node_id, node.liveness.peers, node.config.read_quorum, parts.views,
                               node.pool.stub, node.catch_up, lambda: journal.last_seq, state=node.liveness.state,
                               grants=grants, gate=gate)
    node.key_reads = key_reads
    listings = QuorumListings(node.config.node_id, node.liveness.peers, node.config.read_quorum, parts.views,
                              node.pool.stub, state=node.liveness.state)
    leases = open_leases(node.config, cas.acceptor, node.pool, cas.register.proposer.incarnation)
    if cas.registry_peers is not None:  # outside the registry pool: follow its IAM (docs/architecture/pools.md)
        node.iam_feed = IamFeed([n.node_id for n in node.config.registry_pool.nodes],
                                GrpcEventsTransport(cas.registry_peers, idle_s=IAM_CALL_S, method=IAM_FEED),
                                applier, PrefixedCursors(feed), interval_s=node.config.iam_sync_s, call_s=IAM_CALL_S)
    elif wanted(node.config):  # in it: an unknown key settles against the pool's peers first
        node.iam_feed = IamFeed(node.liveness.peers, None, None, None, call_s=IAM_CALL_S, on_demand=node.catch_up)

    if cas.restore is not None:  # a replaced node: restore the acceptor's state, retried each heartbeat round
        node.listeners.append(cas.restore.kick)
        node.cas_status = cas.restore.document
    wired = Wired(blobs, volumes, cas, feed, replicator, key_reads, listings, leases, gate, pusher)
    node.closers.append(wired.close)
    return wired
