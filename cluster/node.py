"""One cluster node's life: its gRPC server, its client pool, membership, the heartbeat, and what it tells about
its pool.

``ClusterNode`` runs in the process that owns the journal (the single process, or the supervisor with
S4_WORKERS > 1; docs/architecture/processes.md), on that process's event loop:

* ``start()`` binds S4_NODE_GRPC_ADDR (``GrpcBindError`` naming the setting when it cannot), then starts SWIM
  membership and the heartbeat;
* SWIM (cluster/swim_node.py over cluster/swim.py) decides the peers' states, alive, suspect or dead, with their
  incarnations: its verdicts go into ``Liveness`` (cluster/liveness.py) as it announces them, and a peer coming
  back alive (or alive in a new life: a higher incarnation) wakes its catch-up and hint delivery;
* the heartbeat pings every peer every ``interval_s``, all peers at once, each Ping bounded by ``ping_timeout_s``
  (connection included), so one slow or unreachable peer never delays the others nor the loop's S3 requests; it
  carries what SWIM does not: HLCs, journal heads (catch-up lag), S3 addresses, read-lease requests (only while
  this node's reads want leases: ``ReadLeases.wanted``) and grants and settled watermarks; what a peer answers
  (and what a peer's own Ping says) goes into ``Liveness`` too;
* it is the ``LocalStatus`` that Ping answers from (this node's HLC and journal head) and the engine's
  ``ClusterStatus`` port (engine/ports.py) behind ``GET /api/admin/cluster/health`` and the peer metrics;
* ``stop()`` ends the heartbeat, closes the channels and the server, each step bounded in time, so shutdown never
  hangs on a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from grpclib.exceptions import GRPCError

from s4.engine.ports import PeerHealth
from s4.journal import Journal
from s4.journal.hlc import pack, wall_ms

from .anti_entropy import AntiEntropy
from .catch_up import (
    BlobFetcher,
    CatchUp,
    CatchUpSettings,
    EventsService,
    GrpcEventsTransport,
    InlineBlobStore,
    JournalReader,
    PeerEventsApplier,
)
from .config import ClusterConfig
from .drain import Drain
from .errors import RejoinRefused
from .feed_store import FeedStore
from .grpc_server import ClusterServer, Handlers
from .hints import Hints, HintSettings
from .iam_feed import IamFeed
from .key_reads import QuorumKeyReads
from .liveness import ALIVE, Liveness, LivenessSettings
from .peers import PeerPool
from .read_leases import ReadLeases, Unsettled
from .rejoin import Rejoin
from .replicator import Replicator
from .swim import Change, SwimSettings
from .swim_node import SwimMembership, swim_settings
from .tombstone_gc import TombstoneGC
from .wire.s4cluster.v1 import PingReply

log = logging.getLogger("s4.cluster")
STOP_TIMEOUT_S = 5.0
REJOIN_ASK_ROUNDS = 30  # away longer than the limit: Ping rounds to wait for a peer's verdict before serving
LAG_WAKE_S = 3.0  # a peer's journal ahead of what this node pulled for this long wakes catch-up


def _nothing() -> None:
    """A thread hop's no-op (``Node.start``)."""


def journal_head(journal: Journal, committed: Callable[[], int] | None = None) -> Callable[[], tuple[int, int]]:
    """(HLC now, highest journal seq) of the journal this process owns; reading the clock never advances it.
    ``committed`` (the views' last_seq): report the highest committed seq, the head CatchUp serves."""
    def status() -> tuple[int, int]:
        seq = journal.last_seq if committed is None else min(journal.last_seq, committed())
        return max(journal.clock.last, pack(wall_ms(), 0)), seq

    return status


class ClusterNode:
    def __init__(self, config: ClusterConfig, local_status: Callable[[], tuple[int, int]],
                 settings: LivenessSettings | None = None, handlers: Handlers | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 membership: SwimSettings | None = None) -> None:
        """``membership``: SWIM's parameters (default: ``swim_settings`` of the liveness settings)."""
        self.config = config
        self.settings = settings or LivenessSettings()
        self._local_status = local_status
        self._wall = wall
        self._clock = clock
        #: Per peer: since when its reported journal is ahead of what this node applied, and the head then.
        self._lagging_since: dict[str, tuple[float, int]] = {}
        self.liveness = Liveness([p.node_id for p in config.peers], self.settings, clock=clock, wall=wall)
        self.liveness.follow_membership()
        self.pool = PeerPool(config, timeout_s=self.settings.ping_timeout_s, clock=wall)
        self.membership = SwimMembership(config, lambda node_id: self.pool.stub(node_id),
                                         settings=membership or swim_settings(self.settings),
                                         send_timeout_s=self.settings.ping_timeout_s, clock=clock, wall=wall)
        self.membership.subscribe(self._member_changed)
        self.drain = Drain(self)  # drain and the graceful shutdown's hand-off (cluster/drain.py)
        handlers = handlers or Handlers()
        if handlers.swim is None:
            handlers = dataclasses.replace(handlers, swim=self.membership)
        if handlers.drain is None:
            handlers = dataclasses.replace(handlers, drain=self.drain)
        self.server = ClusterServer(config, self, handlers, clock=wall)
        self.listeners: list[Callable[[], None]] = []  # called after each heartbeat round (the metrics)
        self.closers: list[Callable[[], None]] = []  # called at the end of stop(), after the server closed
        self._states: dict[str, tuple[str, int | None]] = {p: ("", None) for p in self.liveness.peers}
        self._task: asyncio.Task[None] | None = None
        self.catch_up: CatchUp | None = None  # set by enable_feed
        self.hints: Hints | None = None
        self.replicator: Replicator | None = None  # set by cluster/wiring.py: the write path
        self.key_reads: QuorumKeyReads | None = None  # ... and the read path
        self.read_leases: ReadLeases | None = None  # ... whose local reads depend on these (cluster/read_leases.py)
        self.unsettled: Unsettled | None = None
        self.asking = False  # this heartbeat round asks the peers for read leases (its reads want them)
        self.anti_entropy: AntiEntropy | None = None  # set by cluster/wiring.py: Merkle anti-entropy
        self.rejoin: Rejoin | None = None  # ... and tombstone GC with the rejoin rule (docs/architecture/tombstones.md)
        self.tombstones: TombstoneGC | None = None
        self.on_refused: Callable[[], None] | None = None  # this node's data must not rejoin: stop the server
        self.iam_feed: IamFeed | None = None  # several pools, outside the registry pool: its IAM (cluster/wiring.py)

        self.cas_status: Callable[[], dict[str, Any]] | None = None  # the acceptor votes, or restores (cas_restore)

    def enable_feed(self, store: FeedStore, journal: JournalReader, applier: PeerEventsApplier,
                    fetcher: BlobFetcher | None = None, *, catch_up: CatchUpSettings | None = None,
                    hints: HintSettings | None = None, inline: InlineBlobStore | None = None) -> None:
        """Wire catch-up and hints (cluster/catch_up.py, cluster/hints.py) before ``start``: the events area of
        the server (unless one was given) and the two loops per peer, woken when a peer comes back alive."""
        peers = self.liveness.peers
        transport = GrpcEventsTransport(self.pool)
        self.catch_up = CatchUp(peers, transport, applier, store, self.liveness, fetcher, catch_up)
        self.hints = Hints(peers, store, transport, self.liveness, self.config.hint_ttl_hours, hints,
                           wall=self._wall)
        service = self.server.service
        if service.handlers.events is None:
            service.handlers = dataclasses.replace(service.handlers, events=EventsService(
                journal, applier, fetcher, status=self.status, puller=self.catch_up, inline=inline))

    @property
    def ready(self) -> bool:
        """Counts toward quorums: caught up with every reachable peer since start (always, without catch-up)."""
        return self.catch_up is None or self.catch_up.ready

    # -- LocalStatus (cluster/grpc_server.py): what Ping answers and learns -------------------------------------
    def status(self) -> tuple[int, int]:
        return self._local_status()

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        self.liveness.seen(node_id, hlc, journal_seq, http_addr)

    # -- lifetime -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the gRPC address (GrpcBindError when it cannot), then start membership and the heartbeat."""
        await self.server.start()
        # anyio loads its asyncio backend (~40 ms of CPU) on its first thread hop: now, not inside the first large
        # write's transfer (a blob pushed or received hops to threads; small writes never do)
        await anyio.to_thread.run_sync(_nothing)
        await self._check_rejoin()
        await self.membership.start()
        if self.catch_up is not None and self.hints is not None:
            await self.catch_up.start()
            await self.hints.start()
        if self.replicator is not None:
            await self.replicator.start()
        if self.anti_entropy is not None:
            await self.anti_entropy.start()
        if self.tombstones is not None:
            await self.tombstones.start()
        if self.iam_feed is not None:
            await self.iam_feed.start()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="s4-cluster-heartbeat")

    async def _check_rejoin(self) -> None:
        """Before anything serves: a refusal kept from an earlier life, or one Ping round's (or, when this node was
        away longer than S4_MAX_REJOIN_DOWNTIME_DAYS, until a peer answers, bounded) ends start-up with
        RejoinRefused (docs/architecture/tombstones.md, "Rejoining")."""
        rejoin = self.rejoin
        if rejoin is None:
            return
        rounds = REJOIN_ASK_ROUNDS if rejoin.away_too_long() else 1
        for _ in range(rounds):
            if rejoin.refused is not None:
                break
            await self.beat()
            if any(record.last_error == "" and record.last_seen_ms is not None
                   for record, _ in self.liveness.snapshot()):
                break
            await asyncio.sleep(self.settings.interval_s)
        if rejoin.refused is not None:
            await self.server.stop()
            raise RejoinRefused(rejoin.refused)

    async def shutdown(self) -> None:
        """Graceful stop (SIGTERM): hand off hints and read leases, announce the SWIM leave, then ``stop``."""
        await self.drain.shutdown()

    async def stop(self) -> None:
        await self.drain.stop()
        if self.tombstones is not None:
            await self.tombstones.stop()
        if self.iam_feed is not None:
            await self.iam_feed.stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.membership.stop()
        if self.anti_entropy is not None:
            await self.anti_entropy.stop()
        if self.replicator is not None:
            await self.replicator.stop()
        if self.catch_up is not None and self.hints is not None:
            await self.hints.stop()
            await self.catch_up.stop()
        self.pool.close()
        try:
            await asyncio.wait_for(self.server.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the gRPC server did not close within %.0fs; leaving its connections to the exit",
                        STOP_TIMEOUT_S)
        self.close_resources()

    def close_resources(self) -> None:
        """Close what was opened for the node's areas (its stores), once; ``stop`` calls it after the server
        closed, the server's ``finally`` for a node that never started."""
        closers, self.closers = self.closers, []
        for close in reversed(closers):
            close()

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.beat()
            await asyncio.sleep(max(0.0, self.settings.interval_s - (loop.time() - started)))

    async def beat(self) -> None:
        """One round: Ping every peer at once, each bounded; then log state changes and tell the listeners. Read
        leases are asked for in this round only while this node's reads want them (``ReadLeases.wanted``)."""
        hlc, seq = self.status()
        leases = self.read_leases
        self.asking = leases is not None and not self.drain.gives_back and leases.wanted(self._clock())
        await asyncio.gather(*(self._ping(peer, hlc, seq) for peer in self.liveness.peers))
        await self._rejoin_tick()
        self._log_changes()
        self._wake_catch_up()
        if self.unsettled is not None:
            self.unsettled.forget_stale()
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a metrics bug must not stop the heartbeat
                log.exception("heartbeat listener failed")

    async def _rejoin_tick(self) -> None:
        rejoin = self.rejoin
        if rejoin is None:
            return
        changed = rejoin.tick()
        if changed and self.catch_up is not None:
            store = self.catch_up.store
            try:
                await store.run(lambda: rejoin.write(changed))
            except Exception as exc:  # noqa: BLE001 - the feed store failed: logged by it; retried next round
                log.warning("keeping the rejoin records failed: %s", exc)
        if rejoin.refused is not None and self.on_refused is not None:
            on_refused, self.on_refused = self.on_refused, None
            on_refused()

    async def _ping(self, peer: str, hlc: int, seq: int) -> bool:
        """One Ping to ``peer``; whether it answered. It asks for a read lease only in a round that wants them
        (``asking``); a draining or stopping node asks for none and gives back the one it holds (cluster/drain.py)."""
        timeout = self.settings.ping_timeout_s
        give_back = self.drain.gives_back
        applied = self.liveness.applied_seq(peer) if self.asking and not give_back else None
        rejoin = self.rejoin
        settled = self.unsettled.watermark() if self.unsettled is not None else 0
        sent_at = self._clock()
        try:
            reply = await asyncio.wait_for(self.pool.ping(
                peer, hlc, seq, timeout_s=timeout, lease_applied=applied, settled_hlc=settled,
                applied_your_journal=self.liveness.applied_seq(peer),
                data_life=0 if rejoin is None else rejoin.life,
                release_lease=give_back and self.read_leases is not None, draining=self.drain.draining,
                hints_pending=self.drain.hints_pending()), timeout)
        except asyncio.CancelledError:
            raise
        except GRPCError as exc:
            self.liveness.missed(peer, f"{exc.status.name}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, timed out, answered as another node
            self.liveness.missed(peer, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        else:
            self.liveness.seen(peer, reply.hlc, reply.journal_seq, reply.http_addr)
            if rejoin is not None:
                rejoin.heard(peer, reply.data_life)
                if reply.rejoin_refused:
                    rejoin.told_refused(peer)
            self.drain.peer_answered(peer, reply.draining, reply.hints_pending)
            self._lease_answer(peer, sent_at, applied, reply)
            return True
        return False

    def _lease_answer(self, peer: str, sent_at: float, applied: int | None, reply: PingReply) -> None:
        if self.unsettled is not None:
            self.unsettled.peer_watermark(peer, reply.settled_hlc)
        if self.read_leases is None or applied is None:
            return
        self.read_leases.granted(peer, sent_at, reply.lease_ms / 1000)
        if not reply.lease_ms and reply.lease_need_seq > applied and self.catch_up is not None:
            self.catch_up.peer_alive(peer)  # refused: it acknowledged writes this node lacks; catch up now

    def _member_changed(self, change: Change) -> None:
        """SWIM changed a member's record: note it, then log and wake what waits for the peer, at once."""
        self.liveness.member(change.node_id, change.new, change.incarnation)
        self._log_changes()

    def _log_changes(self) -> None:
        """Log each peer's state change; a peer alive again, or alive in a new life (a higher incarnation: it
        restarted, or refuted a suspicion), may have missed events: wake its catch-up and hint delivery."""
        for record, state in self.liveness.snapshot():
            before, incarnation = self._states[record.node_id]
            if (state, record.incarnation) == (before, incarnation):
                continue
            self._states[record.node_id] = (state, record.incarnation)
            if state == ALIVE:
                if before == ALIVE:
                    log.info("peer %s is alive at a new incarnation %s", record.node_id, record.incarnation)
                else:
                    log.info("peer %s is alive (%s, incarnation %s)", record.node_id,
                             record.http_addr or "no S3 address yet", record.incarnation)
                for feed in (self.catch_up, self.hints):  # it may have missed events: catch up, deliver hints
                    if feed is not None:
                        feed.peer_alive(record.node_id)
            elif state == before:  # a verdict on a newer incarnation
                continue
            elif before:  # not on the first round: every peer starts unproven
                log.warning("peer %s is %s (incarnation %s; last Ping answer %s)%s", record.node_id, state,
                            record.incarnation, "never" if record.last_seen_ms is None else f"{record.last_seen_ms} ms",
                            f": {record.last_error}" if record.last_error else "")

    def _wake_catch_up(self) -> None:
        """A live peer that reported journal events this node has still not pulled ``LAG_WAKE_S`` later: run a
        catch-up pass now. The write path sends every write to every replica as it happens, and the replies and
        claims move the cursor over them (cluster/catch_up.py ``pushed``), so a lag whose head is covered meanwhile
        is writes in flight, even under a steady load that keeps some lag at every beat (pulling them too would
        fetch their blobs twice); a head still not covered is a write this node missed, which catch-up brings
        sooner than the ``sweep_s`` safety net."""
        if self.catch_up is None:
            return
        now = self._clock()
        for record, state in self.liveness.snapshot():
            if state != ALIVE or record.journal_lag <= 0:
                self._lagging_since.pop(record.node_id, None)
                continue
            since, head = self._lagging_since.setdefault(record.node_id, (now, record.journal_seq))
            if record.applied_seq >= head:  # what lagged then is covered: in flight; watch the head seen now
                self._lagging_since[record.node_id] = (now, record.journal_seq)
            elif now - since >= LAG_WAKE_S:
                self._lagging_since.pop(record.node_id, None)
                self.catch_up.peer_alive(record.node_id)

    # -- ClusterStatus (engine/ports.py): the health API and the metrics -----------------------------------------
    async def health(self) -> dict[str, Any]:
        return self.health_document()

    def health_document(self) -> dict[str, Any]:
        """GET /api/admin/cluster/health: every pool member with its SWIM state and incarnation (None: not heard of
        yet), this node included (alive, its own); ``membership``: SWIM's local health and counters since start."""
        config = self.config
        records = {record.node_id: (record, state) for record, state in self.liveness.snapshot()}
        nodes = []
        for member in config.pool:
            if member.node_id == config.node_id:
                nodes.append({"id": member.node_id, "pool": config.pool_name, "http_addr": config.http_addr,
                              "grpc_addr": str(member.grpc), "state": ALIVE, "last_seen": int(self._wall() * 1000),
                              "incarnation": self.membership.swim.incarnation, "draining": self.drain.draining,
                              "hints_pending": self.drain.hints_pending()})
                continue
            record, state = records[member.node_id]
            draining, hints = self.drain.peers.get(member.node_id, (None, None))  # as it last told (None: never)
            nodes.append({"id": member.node_id, "pool": config.pool_name, "http_addr": record.http_addr or None,
                          "grpc_addr": str(member.grpc), "state": state, "last_seen": record.last_seen_ms,
                          "incarnation": record.incarnation, "draining": draining, "hints_pending": hints})
        pools = [{"name": config.pool_name, "nodes": [n.node_id for n in config.pool],
                  "replication_factor": config.replication_factor, "write_quorum": config.write_quorum,
                  "read_quorum": config.read_quorum}]
        document = {"cluster": config.cluster_name, "node_id": config.node_id, "mode": "cluster", "nodes": nodes,
                    "pools": pools, "caught_up": self.ready, "draining": self.drain.draining,
                    "membership": {"protocol": "swim", "awareness": self.membership.swim.awareness,
                                   **self.membership.counters()}}
        if self.cas_status is not None:  # whether this node's register acceptor votes (a replaced node restores)
            document["cas"] = self.cas_status()
        if self.tombstones is not None:  # docs/architecture/tombstones.md
            document["tombstone_gc"] = self.tombstones.document()
        if self.read_leases is not None:  # whether reads are answered from this node's copy (read leases)
            remaining = self.read_leases.current_until - self._clock()
            document["read_lease"] = {"local_reads": remaining > 0, "remaining_s": round(max(0.0, remaining), 3),
                                      "unsettled_events": self.unsettled.in_flight if self.unsettled else 0,
                                      "asking": self.asking}
        if self.iam_feed is not None:  # several pools: how fresh this node's copy of the cluster's IAM is
            document["iam_feed"] = self.iam_feed.status()
        return document

    async def repair_status(self) -> dict[str, Any]:
        return self.repair_document()

    async def drain_node(self, node_id: str, on: bool) -> dict[str, Any]:
        """POST/DELETE /api/admin/cluster/nodes/{id}/drain (cluster/drain.py ``Drain.drain``)."""
        return await self.drain.drain(node_id, on)

    def is_draining(self) -> bool:
        return self.drain.draining

    def repair_document(self) -> dict[str, Any]:
        """GET /api/admin/cluster/repair-status: per peer, hints pending (and dropped, delivered) and the last
        anti-entropy exchange with what it found and repaired; the anti-entropy totals; ``scrub`` is filled by the
        engine (its scrubber's report, engine/ports.py ``ClusterStatus.repair_status``)."""
        hints, ae = self.hints, self.anti_entropy
        peers = {}
        for record, state in self.liveness.snapshot():
            peer = record.node_id
            peers[peer] = {"state": state,
                           "hints": {"pending": hints.pending(peer) if hints is not None else 0,
                                     "dropped": hints.dropped[peer] if hints is not None else 0,
                                     "delivered": hints.delivered[peer] if hints is not None else 0},
                           "anti_entropy": ae.stats[peer].document() if ae is not None else None}
        return {"node_id": self.config.node_id, "catch_up": self.config.anti_entropy.catch_up,
                "anti_entropy": ae.document() if ae is not None else None, "peers": peers}

    def membership_counters(self) -> dict[str, int]:
        """SWIM's counters since start and its local health score (``awareness``), for the metrics."""
        return {**self.membership.counters(), "awareness": self.membership.swim.awareness}

    def quorum_failures(self) -> int:
        return (0 if self.replicator is None else self.replicator.quorum_failures) + \
            (0 if self.key_reads is None else self.key_reads.failures)

    def peer_health(self) -> list[PeerHealth]:
        hints = self.hints
        return [PeerHealth(peer=record.node_id, up=state == ALIVE,
                           last_seen_s=None if record.last_seen_ms is None else record.last_seen_ms / 1000,
                           journal_lag=record.journal_lag,
                           hints_pending=hints.pending(record.node_id) if hints is not None else 0,
                           hints_dropped=hints.dropped[record.node_id] if hints is not None else 0,
                           hints_delivered=hints.delivered[record.node_id] if hints is not None else 0,
                           anti_entropy=self.anti_entropy.counters(record.node_id) if self.anti_entropy else {})
                for record, state in self.liveness.snapshot()]
