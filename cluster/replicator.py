"""The coordinator's half of a replicated write: send the events a command committed on this node to the pool's
other replicas and return once the write quorum holds them (the engine's ``ReplicationPort``, engine/ports.py).

This node committed the events first (journaled and fsynced, the single-node rule), so its copy counts: the call
returns after ``W - 1`` peers answered ``ApplyEvents`` (each one journals and fsyncs before it answers). A small
write's blobs (at most ``ReplicationSettings.inline_bytes`` referenced) travel inside the call
(``BLOB_TRANSFER_INLINE``, read through this node's verified reader: ``InlineSource``); a larger write's are
fetched by each peer from this node first (``BLOB_TRANSFER_FETCH``). Every peer is sent the events at once
(``call_quorum`` with ``stragglers="leave"``): the ones that answer after the quorum still get them, and a peer
that fails, before or after the quorum, gets a hint (cluster/hints.py). A peer the heartbeat holds ``dead`` is not
called; it is hinted at once. Fewer than ``W`` copies: ``QuorumNotReachedError`` (503 ``ServiceUnavailable``
with ``Retry-After``); the write's outcome is then unknown, never partial (docs/architecture/replication.md,
"The quorum write path").

Hints only speed convergence up for acknowledged writes: their durability never depends on them, because every
copy is in a journal that the other replicas' catch-up reads (cluster/catch_up.py). For a write answered 503 they
are what keeps this node honest: it holds that write's events, and a later write decided on them (a retried DELETE
that finds nothing left to delete emits no event) must not be acknowledged until W replicas hold them too. So a
node that hinted more than N - W peers delivers those hints before it acknowledges any other write
(``_settle_unconfirmed``); the hints are durable, so this holds across a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from s4.engine.errors import PoolUnavailableError
from s4.engine.model import BlobLocation
from s4.engine.replica import referenced_bytes, referenced_hashes
from s4.journal.codec import encode_event
from s4.journal.events import Event

from .catch_up import EventsTransport, replicated
from .claims import coalesce
from .hints import Hints
from .liveness import DEAD
from .quorum import QuorumError, call_quorum
from .read_leases import LeaseGrants, Unsettled
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    BlobTransfer,
    InlineBlob,
    JournalRange,
    PeerRange,
)

log = logging.getLogger("s4.cluster")


class QuorumNotReachedError(PoolUnavailableError):
    """Fewer than W replicas hold the write: 503 with Retry-After; the write may still appear (repair)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "Fewer replicas than the write quorum acknowledged the write; its outcome is "
                                 "unknown (retry it).")


class NotReadyError(PoolUnavailableError):
    """This node is still catching up with its peers and coordinates no write yet."""

    def __init__(self) -> None:
        super().__init__("catching up with the pool's other nodes",
                         "This node is catching up with its peers and takes no writes yet; retry later.")


class ReplicaMissingBlobs(Exception):
    """A peer answered without applying: it lacks blobs it could not fetch from this node."""


class InlineSource(Protocol):
    """cluster/blob_server.py ``BlobService.read_inline``: a local blob's bytes, read and checked as GetBlob reads
    them, or None when this node cannot give an intact copy (the peer then fetches it, and GetBlob reports it)."""

    async def read_inline(self, digest: bytes, at: BlobLocation | None = None) -> bytes | None: ...


class Pushes(Protocol):
    """cluster/blob_push.py ``BlobPusher``: chunks of large writes being copied to the peers during their upload."""

    async def settled(self, peer: str, digests: Iterable[bytes], timeout: float) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """How long a write waits for its quorum: ``base_s`` plus its blobs' bytes at ``min_rate`` (a peer fetches
    them from this node before it answers). Writes referencing at most ``inline_bytes`` of blobs send them inside
    ``ApplyEvents``."""

    base_s: float = 10.0
    min_rate: float = 4 * 1024 * 1024  # bytes per second: every replica fetches them from this node at once
    inline_bytes: int = 1024 * 1024

    def deadline_s(self, size: int) -> float:
        return self.base_s + size / self.min_rate


def _seen(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _journal_range(events: Sequence[Event]) -> list[JournalRange]:
    """One commit's events take consecutive seqs (engine/sequencer.py), so when they do, they are every replicated
    event of that range of this node's journal: a peer that applied them may move its catch-up cursor across it
    (cluster/catch_up.py ``CatchUp.pushed``) instead of streaming them again."""
    seqs = sorted(e.seq for e in events)
    if not seqs or seqs[0] <= 0 or seqs != list(range(seqs[0], seqs[-1] + 1)):
        return []
    return [JournalRange(after=seqs[0] - 1, through=seqs[-1])]


#: Ranges of this node's journal a peer applied whose claim waits for the next ApplyEvents to it (at most these many;
#: beyond, the oldest are dropped: the peer's catch-up streams those events again instead).
MAX_DUE_RANGES = 64
#: An early send nobody claimed (its command's caller went away before ``replicate``) is forgotten after this long.
EARLY_FORGET_S = 120.0
#: Small blobs offered by the supervisor with their commands (``offer_blobs``), kept at most this many; a command
#: whose write never reaches ``replicate`` (refused by its decider) leaves its entry to be pushed out by newer ones.
MAX_OFFERED = 256
#: Only blobs up to this size are taken from memory (ingest keeps a single chunk below 64 KiB: engine/ingest.py).
MAX_OFFERED_BYTES = 64 * 1024
#: Claims due to a peer ride on the next write to it; when none comes within this long (the end of a burst), they
#: go alone in an ApplyEvents without events (below the heartbeat's LAG_WAKE_S: no pass is woken for them).
FLUSH_S = 1.0


class _Claims:
    """One write's replies, for the catch-up claims they allow (docs/architecture/replication.md, "Catch-up"):

    - to each peer that applied it, this node's journal range of it (``own``), once the write is durable here;
    - to this node's own cursor into a peer's journal, the range that peer's reply names, once durable here;
    - to each peer that applied it, the ranges the OTHER peers' replies name (they hold exactly this write's
      events, which this peer acknowledged holding), whether or not it became durable here.

    ``durable`` is set by ``replicate`` (the command's batch is durable on this node); an early-sent batch cut
    from this node's journal never is, so none of the first two claims is ever made for it."""

    __slots__ = ("durable", "own", "replied")

    def __init__(self, durable: bool, own: list[JournalRange]) -> None:
        self.durable = durable
        self.own = own
        self.replied: dict[str, list[tuple[int, int]]] = {}  # peer -> its ranges of this write (maybe none)


class _Early:
    """One batch's events sent before this node's own fsync (``Replicator.send_early``): the per-peer calls, and
    whether the batch became durable here (only then may its journal range be claimed to the peers)."""

    def __init__(self, events: Sequence[Event], logical: list[Event]) -> None:
        self.events, self.logical = tuple(events), logical
        self.seq = max(e.seq for e in logical)
        self.at = time.monotonic()
        self.tasks: dict[str, asyncio.Future[ApplyEventsReply]] = {}
        self.started: asyncio.Future[None] | None = None
        self.abandoned = False
        self.claims = _Claims(False, [])


class Replicator:
    """``ReplicationPort`` for one node of a pool (every pool member holds a copy of every key in part 1)."""

    def __init__(self, peers: Sequence[str], write_quorum: int, transport: EventsTransport, hints: Hints | None,
                 *, ready: Callable[[], bool] = lambda: True, state: Callable[[str], str] = lambda _peer: "alive",
                 settings: ReplicationSettings | None = None, blobs: InlineSource | None = None,
                 grants: LeaseGrants | None = None, unsettled: Unsettled | None = None) -> None:
        if not 1 <= write_quorum <= len(peers) + 1:
            raise ValueError(f"write quorum {write_quorum} for a pool of {len(peers) + 1}")
        self.peers = tuple(peers)
        self.write_quorum = write_quorum
        self.transport, self.hints = transport, hints
        self._ready, self._state = ready, state
        self.settings = settings or ReplicationSettings()
        self.blobs = blobs  # where small writes' blobs are read to go inline (None: peers always fetch them)
        self.quorum_failures = 0  # writes answered 503 because fewer than W replicas held them (metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unconfirmed: list[list[Event]] = []  # hints off: writes answered 503 that W replicas may lack
        self.grants = grants  # read leases this node granted: a write waits for every holder (cluster/read_leases.py)
        self.unsettled = unsettled  # this node's writes in flight, for the read gate
        self._early: dict[int, _Early] = {}  # own event hlc -> its batch sent before the local fsync
        self._early_lock = threading.Lock()  # send_early runs on the sequencer's thread
        self._due: dict[str, list[JournalRange]] = {p: [] for p in self.peers}  # claims for the next call to a peer
        self._due_peer: dict[str, list[PeerRange]] = {p: [] for p in self.peers}  # other peers' ranges, likewise
        self._flushing: set[str] = set()  # peers with a flush of their due claims scheduled
        self.flushes = 0  # ApplyEvents sent only to carry claims (tests, metrics)
        #: This node's catch-up (``CatchUp.pushed``): its cursors into the peers' journals move over the ranges their
        #: replies name for this node's durable writes. None: nothing claimed (the peers' events stream as before).
        self.claim: Callable[[str, Sequence[tuple[int, int]]], None] | None = None
        self.early_sends = 0  # batches sent before their local fsync (tests, metrics)
        #: A large write's chunks pushed to the peers during its upload (cluster/blob_push.py); its ApplyEvents to a
        #: peer waits for those pushes first, so the peer finds the chunks staged instead of fetching them again.
        self.pushes: Pushes | None = None
        self._offered: dict[bytes, bytes] = {}  # sha256 -> a small blob's bytes as its HTTP worker wrote them

    async def start(self) -> None:
        """Bind to the node's event loop (``replicate_sync`` hands work to it)."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._loop = None
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pushes is not None:
            await self.pushes.stop()
        stop = getattr(self.transport, "stop", None)  # a coalescing transport's senders (cluster/coalesce.py)
        if stop is not None:
            await stop()

    # --- ReplicationPort ----------------------------------------------------------------------------------------
    def admit(self) -> None:
        if not self._ready():
            raise NotReadyError()

    async def replicate(self, events: Sequence[Event]) -> None:
        if not self.peers:
            return
        try:
            await self._replicate(events)
        finally:
            if self.unsettled is not None:  # acknowledged or refused: no longer in flight
                self.unsettled.own_done(events)
            if self._offered:
                for event in events:
                    for digest in referenced_hashes(event):
                        self._offered.pop(digest, None)

    def offer_blobs(self, blobs: Iterable[tuple[bytes, bytes]]) -> None:
        """On the loop, before a command is committed (engine/remote/service.py): ``(sha256, bytes)`` of small blobs
        its events will reference, as its HTTP worker wrote them to the volume. ``_request`` sends them inline from
        here (their hash checked) instead of reading them back through the verified reader; ``replicate`` forgets
        them. The peer checks the content hash as for any inline blob."""
        offered = self._offered
        for digest, data in blobs:
            if len(data) <= MAX_OFFERED_BYTES:
                offered[digest] = data
        while len(offered) > MAX_OFFERED:
            del offered[next(iter(offered))]  # the oldest: a command that never reached replicate()

    async def _replicate(self, events: Sequence[Event]) -> None:
        logical = [e for e in events if replicated(e)]
        early = self._claim_early(logical)  # its batch went to the peers while this node's fsync ran
        try:
            await self._settle_unconfirmed()
        except QuorumNotReachedError:
            if logical:  # refused before any peer got it: none keeps a lease on a promise that omits it
                for peer in self.peers:
                    self._lost(peer, max(e.seq for e in logical))
            raise
        if not logical:
            return
        size = sum(referenced_bytes(e) for e in logical)
        timeout = self.settings.deadline_s(size)
        seq = max(e.seq for e in logical)
        if early is not None and early.started is not None and not early.started.done():
            await asyncio.wait([early.started])  # its calls are started (or it sent nothing: sent below instead)
        if early is not None and early.tasks:
            self._durable(early)
            live = list(early.tasks)
            calls = early.tasks

            def call(peer: str) -> Awaitable[ApplyEventsReply]:  # a future: call_quorum waits on it as it is
                answer = calls[peer]  # (cancelling an ``_answered`` future leaves its call and bookkeeping alone)
                return answer if not isinstance(answer, asyncio.Task) else asyncio.shield(answer)
        else:
            request = await self._request(logical, size)
            ranges = _journal_range(events)
            live = [p for p in self.peers if self._state(p) != DEAD]
            pushed = {d for e in logical for d in referenced_hashes(e)} \
                if self.pushes is not None and request.blobs == BlobTransfer.FETCH else set()
            claims = _Claims(True, [])  # durable here: replicate runs after the commit (its range goes with it)

            def call(peer: str) -> Awaitable[ApplyEventsReply]:
                return self._send(peer, request, ranges, timeout, seq, pushed=pushed, claims=claims)
        for peer in self.peers:
            if peer not in live:
                self._lost(peer, seq)
                await self._hint(peer, logical)
        need = self.write_quorum - 1

        if need == 0:  # W=1: this node's copy is the quorum; the peers get theirs in the background
            copies = {peer: self._copy(peer, call, logical) for peer in live}
            if self.grants is not None:  # ... but a peer holding a read lease must have it first
                await self.grants.cover(seq, (), copies)
            return
        if len(live) < need:
            # No quorum is possible: answer at once. The write is committed here (its outcome is unknown): it is
            # kept for the peers (hints, before the answer) and the live ones are sent it in the background too.
            for peer in live:
                self._lost(peer, seq)
            await self._unconfirmed_write(live, logical)
            for peer in live:
                self._spawn(self._send_or_hint(peer, call, logical, hinted=True))
            raise QuorumNotReachedError(f"{len(live)} of {len(self.peers)} peers alive, {need} needed")
        try:
            result = await call_quorum(live, call, need, timeout=timeout, stragglers="leave")
        except QuorumError as exc:
            log.warning("write quorum not reached: %s", exc)
            await self._unconfirmed_write([p for p in live if p not in exc.successes], logical)
            raise QuorumNotReachedError(str(exc)) from exc
        for peer, task in result.running.items():
            task.add_done_callback(lambda done, p=peer: self._on_straggler(p, done, logical))  # type: ignore[misc]
        for peer in result.failures:
            await self._hint(peer, logical)
        if self.grants is not None:
            await self.grants.cover(seq, result.successes, result.running)

    def _for_peer(self, peer: str, request: ApplyEventsRequest, ranges: list[JournalRange]) -> ApplyEventsRequest:
        """``peer``'s copy of ``request``: with ``ranges``, the claims due to it (``_due``, ``_due_peer``, taken
        now) and this node's settled watermark."""
        due, self._due[peer] = self._due.get(peer, []), []
        due_peer, self._due_peer[peer] = self._due_peer.get(peer, []), []
        return ApplyEventsRequest(events=request.events, blobs=request.blobs, inline_blobs=request.inline_blobs,
                                  journal_ranges=[*ranges, *due], peer_ranges=due_peer,
                                  settled_hlc=self.unsettled.watermark() if self.unsettled is not None else 0)

    def _start(self, peer: str, mine: ApplyEventsRequest, timeout: float) -> asyncio.Future[ApplyEventsReply] | None:
        """``mine`` sent to ``peer`` now, from this task, when its transport can (cluster/coalesce.py ``start``):
        the future of the reply; None when it was not sent (``_send`` calls the transport then)."""
        start = getattr(self.transport, "start", None)
        if start is None:
            return None
        try:
            started: asyncio.Future[ApplyEventsReply] | None = start(peer, mine, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the call failed: _send sees it as the call's failure
            started = asyncio.get_running_loop().create_future()
            started.set_exception(exc)
        if started is not None:
            started.add_done_callback(_seen)  # its task may be cancelled before it awaits it (the node stopping)
        return started

    async def _send(self, peer: str, request: ApplyEventsRequest, ranges: list[JournalRange], timeout: float,
                    seq: int, *, pushed: Collection[bytes] = (), claims: _Claims | None = None,
                    sent: tuple[ApplyEventsRequest, asyncio.Future[ApplyEventsReply] | None] | None = None
                    ) -> ApplyEventsReply:
        """One peer's copy of a write: ``request`` with ``ranges`` and the claims due to it (``_for_peer``); a
        reply naming missing blobs is a failure. ``pushed``: chunks whose pushes to the peer (cluster/blob_push.py)
        still running are waited for first (within the write's deadline). ``claims``: the write's, told of the
        reply (``_replied``). ``sent``: the peer's copy built already, and the reply's future when ``_start`` sent
        it (None: sent here)."""
        try:
            if pushed and self.pushes is not None:
                await self.pushes.settled(peer, pushed, timeout / 2)
            mine, started = sent if sent is not None else (self._for_peer(peer, request, ranges), None)
            if started is not None:
                reply = await started
            else:
                reply = await self.transport.apply_events(peer, mine, timeout=timeout)
            if reply.missing_blobs:
                raise ReplicaMissingBlobs(f"{peer} lacks {len(reply.missing_blobs)} blobs it could not fetch")
        except BaseException:
            self._lost(peer, seq)  # at once: no lease may be granted to it on an older promise
            raise
        if claims is not None:
            self._replied(claims, peer, reply)
        return reply

    # --- catch-up claims ------------------------------------------------------------------------------------------
    def _replied(self, claims: _Claims, peer: str, reply: ApplyEventsReply) -> None:
        """``peer`` applied the write (durably, nothing missing): the claims its reply allows (``_Claims``)."""
        ranges = [(r.after, r.through) for r in reply.journal_ranges if r.through > r.after]
        claims.replied[peer] = ranges
        if claims.durable:
            self._claim_durable(peer, ranges, claims.own)
        for other, theirs in claims.replied.items():
            if other == peer:
                continue
            if theirs:  # the other peer's journal holds this write where it said: this peer holds it too
                self._due_to(peer, other, theirs)
            if ranges:
                self._due_to(other, peer, ranges)

    def _made_durable(self, claims: _Claims) -> None:
        """The write became durable here (an early send's ``replicate``): the claims waiting for that."""
        claims.durable = True
        for peer, ranges in claims.replied.items():
            self._claim_durable(peer, ranges, claims.own)

    def _claim_durable(self, peer: str, ranges: list[tuple[int, int]], own: list[JournalRange]) -> None:
        if ranges and self.claim is not None:
            self.claim(peer, ranges)
        if own:
            due = self._due.setdefault(peer, [])
            for r in own:
                if due and due[-1].through == r.after:  # consecutive writes: one range
                    due[-1] = JournalRange(after=due[-1].after, through=r.through)
                else:
                    due.append(r)
            del due[:-MAX_DUE_RANGES]
            self._flush_later(peer)

    def _due_to(self, peer: str, node: str, ranges: list[tuple[int, int]]) -> None:
        """Tell ``peer``, on its next ApplyEvents, that ``node``'s journal holds ``ranges`` of events it holds."""
        if peer not in self._due_peer:
            return
        due = self._due_peer[peer]
        for a, t in ranges:
            last = due[-1] if due else None
            if last is not None and last.node == node and last.through == a:  # consecutive writes: one range
                due[-1] = PeerRange(node=node, after=last.after, through=t)
            else:
                due.append(PeerRange(node=node, after=a, through=t))
        if len(due) > MAX_DUE_RANGES // 2:  # merge per node, then bound
            merged = [PeerRange(node=n, after=a, through=t)
                      for n in dict.fromkeys(r.node for r in due)
                      for a, t in coalesce((r.after, r.through) for r in due if r.node == n)]
            due[:] = merged[-MAX_DUE_RANGES:]
        self._flush_later(peer)

    def _flush_later(self, peer: str) -> None:
        if peer in self._flushing or self._loop is None:
            return
        self._flushing.add(peer)
        self._spawn(self._flush(peer))

    async def _flush(self, peer: str) -> None:
        """After ``FLUSH_S``, the claims still due to ``peer`` (no write to it took them) in a call of their own.
        Losing them costs only a pass streaming those events."""
        try:
            await asyncio.sleep(FLUSH_S)
        finally:
            self._flushing.discard(peer)
        due, due_peer = self._due.get(peer, []), self._due_peer.get(peer, [])
        self._due[peer], self._due_peer[peer] = [], []
        if not (due or due_peer) or self._state(peer) == DEAD:
            # Dropped, not kept for its return: a dead peer may come back with its data directory replaced (same
            # node id, an empty journal), and a claim then would name events it no longer holds.
            return
        self.flushes += 1
        try:
            await self.transport.apply_events(peer, ApplyEventsRequest(blobs=BlobTransfer.INLINE,
                                                                       journal_ranges=due, peer_ranges=due_peer),
                                              timeout=self.settings.base_s)
        except Exception as exc:  # noqa: BLE001 - the claims are dropped: catch-up streams those events instead
            log.debug("sending the catch-up claims due to %s failed: %s", peer, exc)

    # --- sending before the local fsync ---------------------------------------------------------------------------
    def send_early(self, events: Sequence[Event]) -> None:
        """The sequencer's ``before_durable`` (engine/sequencer.py), on its thread: a batch's recorded events are
        decided and about to be made durable here; start sending them to the peers now, so their journals and
        fsyncs run alongside this node's. Nothing is answered earlier: ``replicate`` is called only once the batch
        is durable here (this node's copy is one of the W), and waits for these calls. Their journal range is
        claimed to a peer only once the batch is durable here AND the peer applied it (``_durable``), on a later
        ApplyEvents: a batch cut from this journal after the send (a failed sync) leaves its seqs to the next batch,
        and a claim for them would move the peer's catch-up cursor over that batch. docs/architecture/replication.md,
        "Sending before the local fsync"."""
        loop = self._loop
        if loop is None or not self.peers:
            return
        try:
            logical = [e for e in events if replicated(e)]
            if not logical:
                return
            entry = _Early(events, logical)
            with self._early_lock:
                self._forget_early(entry.at)
                for event in logical:
                    self._early[event.hlc] = entry
            loop.call_soon_threadsafe(self._start_early, entry)
        except Exception:  # noqa: BLE001 - must not fail the batch: replicate() sends it after the fsync instead
            log.exception("sending a batch before its fsync failed; it is sent after")

    def not_durable(self, events: Sequence[Event]) -> None:
        """The sequencer's ``not_durable``: the batch failed after ``send_early``. Nobody is answered for it; peers
        that apply it hold an unacknowledged write (its outcome was unknown to the client), which catch-up spreads
        to the others and brings back here: never half-visible, never claimed in a journal range."""
        with self._early_lock:
            for event in events:
                entry = self._early.pop(event.hlc, None)
                if entry is not None:
                    entry.abandoned = True

    def _forget_early(self, now: float) -> None:
        while self._early:  # oldest first (insertion order): entries whose command went away before replicate()
            hlc, entry = next(iter(self._early.items()))
            if now - entry.at < EARLY_FORGET_S:
                return
            del self._early[hlc]

    def _claim_early(self, logical: list[Event]) -> _Early | None:
        """The early send of exactly these events' batch, if there is one (a command's events are part of one)."""
        if not logical:
            return None
        with self._early_lock:
            found = [self._early.pop(ev.hlc, None) for ev in logical]
        entry = found[0]
        if entry is None or entry.abandoned or any(f is not entry for f in found):
            return None
        if entry.started is None:  # not launched yet (cannot happen: its start was queued first): sent after instead
            entry.abandoned = True
            return None
        return entry

    def _start_early(self, entry: _Early) -> None:
        if entry.abandoned or self._loop is None:
            return
        entry.started = asyncio.get_running_loop().create_task(self._launch(entry))
        self._tasks.add(entry.started)
        entry.started.add_done_callback(self._tasks.discard)

    async def _launch(self, entry: _Early) -> None:
        """Build the batch's request and start one call per live peer (no journal range: not durable here yet)."""
        if self._unconfirmed or (self.hints is not None and self._hinted_beyond_quorum()):
            return  # earlier writes must reach the quorum first (_settle_unconfirmed): replicate() sends it after
        size = sum(referenced_bytes(e) for e in entry.logical)
        if self.blobs is None or size > self.settings.inline_bytes:
            return  # the peers would fetch the blobs with GetBlob, which finds them only once committed here
        request = await self._request(entry.logical, size)
        wanted = {d for e in entry.logical for d in referenced_hashes(e)}
        if entry.abandoned or len(request.inline_blobs) < len(wanted):
            return  # (a blob left out is fetched likewise: the batch is sent after its commit instead)
        timeout = self.settings.deadline_s(size)
        loop = asyncio.get_running_loop()
        for peer in self.peers:  # each peer's copy written here when its lane is idle, back to back
            if self._state(peer) != DEAD:
                mine = self._for_peer(peer, request, [])
                started = self._start(peer, mine, timeout)
                if started is not None:  # written: its reply is handled by a callback, no task per peer
                    entry.tasks[peer] = self._answered(peer, started, entry.seq, entry.claims)
                    continue
                task = loop.create_task(self._send(peer, request, [], timeout, entry.seq, claims=entry.claims,
                                                   sent=(mine, None)))
                self._tasks.add(task)  # type: ignore[arg-type]
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(_seen)  # a batch given up (or failing) leaves no one to read its failures
                entry.tasks[peer] = task
        self.early_sends += 1

    def _answered(self, peer: str, started: asyncio.Future[ApplyEventsReply], seq: int,
                  claims: _Claims) -> asyncio.Future[ApplyEventsReply]:
        """``_send`` for a copy ``_start`` wrote already, as a callback of its reply instead of a task awaiting it
        (a task and two loop iterations less per peer: its wake-up, and ``asyncio.shield`` around it in
        ``replicate``): the same outcome, a reply naming missing blobs a failure, the peer ``_lost`` at once on
        any failure, its claims told (``_replied``) on success. Returns the answer's own future: cancelling it
        (the write's caller gave up) leaves the call and that bookkeeping to run their course."""
        answer: asyncio.Future[ApplyEventsReply] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_seen)  # a batch given up (or failing) leaves no one to read its failures

        def done(call: asyncio.Future[ApplyEventsReply]) -> None:
            try:
                if call.cancelled():
                    raise asyncio.CancelledError()
                reply = call.result()
                if reply.missing_blobs:
                    raise ReplicaMissingBlobs(f"{peer} lacks {len(reply.missing_blobs)} blobs it could not fetch")
            except BaseException as exc:  # noqa: BLE001 - the copy failed: as _send's failure
                self._lost(peer, seq)  # at once: no lease may be granted to it on an older promise
                if not answer.done():
                    if isinstance(exc, asyncio.CancelledError):
                        answer.cancel()
                    else:
                        answer.set_exception(exc)
                return
            self._replied(claims, peer, reply)
            if not answer.done():
                answer.set_result(reply)

        started.add_done_callback(done)
        return answer

    def _durable(self, entry: _Early) -> None:
        """The early batch is durable here: each peer that applied it (now or when its call succeeds) may have this
        node's journal range claimed on the next ApplyEvents to it, and its reply's range claimed here."""
        if entry.claims.durable:
            return
        entry.claims.own = _journal_range(entry.events)
        self._made_durable(entry.claims)

    def _lost(self, peer: str, seq: int) -> None:
        if self.grants is not None:
            self.grants.lost(peer, seq)

    async def _request(self, events: list[Event], size: int) -> ApplyEventsRequest:
        """The ApplyEvents for ``events``: INLINE with their blobs when they reference at most ``inline_bytes``
        (a blob this node cannot read intact is left out: the peer fetches it), else FETCH."""
        envelopes = [encode_event(e) for e in events]
        if self.blobs is None or size > self.settings.inline_bytes:
            return ApplyEventsRequest(events=envelopes, blobs=BlobTransfer.FETCH)
        inline = []
        stored = {loc[0]: loc for e in events for loc in e.payload.get("blobs_at", ())}  # where the write put them
        for digest in dict.fromkeys(d for e in events for d in referenced_hashes(e)):
            data = self._offered.get(digest)
            if data is not None and hashlib.sha256(data).digest() == digest:  # as written: no read back
                inline.append(InlineBlob(content_hash=digest, size=len(data), data=data))
                continue
            at = stored.get(digest)
            try:
                data = await self.blobs.read_inline(digest, None if at is None else BlobLocation.from_record(at))
            except Exception:  # noqa: BLE001 - the write is committed here: the peer fetches this blob instead
                log.exception("reading blob %s to send it inline failed; the peers fetch it", digest.hex())
                data = None
            if data is not None:
                inline.append(InlineBlob(content_hash=digest, size=len(data), data=data))
        return ApplyEventsRequest(events=envelopes, blobs=BlobTransfer.INLINE, inline_blobs=inline)

    def replicate_sync(self, events: Sequence[Event]) -> None:
        loop = self._loop
        if loop is None:  # not started (start-up) or stopped: this node's copy spreads by catch-up
            return
        asyncio.run_coroutine_threadsafe(self.replicate(events), loop).result()

    # --- writes that did not reach the quorum ---------------------------------------------------------------------
    async def _unconfirmed_write(self, missing: Sequence[str], events: list[Event]) -> None:
        """A write committed here that fewer than W replicas hold: answered 503, but this node holds its events and
        may decide later writes on them (a retried DELETE finds nothing to delete and emits nothing). So the events
        are kept for every replica that lacks them before the answer, durably as hints (or in memory with hints
        off), and ``_settle_unconfirmed`` holds back every later write of this node until W replicas have them."""
        self.quorum_failures += 1
        if self.hints is None or not self.hints.enabled:
            self._unconfirmed.append(events)
            return
        for peer in missing:
            await self._hint(peer, events)

    async def _settle_unconfirmed(self) -> None:
        """Before a write: if this node holds events that fewer than W replicas may hold (hinted to more than
        N - W peers), deliver them now, or refuse the write (QuorumNotReachedError)."""
        if self._unconfirmed:
            await self._resend_unconfirmed()
        hints = self.hints
        if hints is None or not self._hinted_beyond_quorum():
            return
        for peer in self.peers:
            if hints.pending(peer) and self._state(peer) != DEAD:
                try:
                    await hints.deliver(peer)
                except Exception as exc:  # noqa: BLE001 - the check below decides
                    log.info("delivering %s its hints before a write failed: %s", peer, exc)
        if self._hinted_beyond_quorum():
            self.quorum_failures += 1
            raise QuorumNotReachedError("events of an earlier write are not yet on the write quorum's replicas")

    def _hinted_beyond_quorum(self) -> bool:
        assert self.hints is not None
        lacking = sum(1 for peer in self.peers if self.hints.pending(peer))
        return lacking > len(self.peers) + 1 - self.write_quorum

    async def _resend_unconfirmed(self) -> None:
        """Hints off: the unconfirmed writes kept in memory, sent again to the live peers."""
        need = self.write_quorum - 1
        while self._unconfirmed:
            events = self._unconfirmed[0]
            request = ApplyEventsRequest(events=[encode_event(e) for e in events], blobs=BlobTransfer.FETCH)
            live = [p for p in self.peers if self._state(p) != DEAD]
            timeout = self.settings.deadline_s(sum(referenced_bytes(e) for e in events))

            async def call(peer: str, request: ApplyEventsRequest = request, timeout: float = timeout) -> None:
                reply = await self.transport.apply_events(peer, request, timeout=timeout)
                if reply.missing_blobs:
                    raise ReplicaMissingBlobs(f"{peer} lacks {len(reply.missing_blobs)} blobs")

            try:
                if len(live) < need:
                    raise QuorumError(need, len(live), {}, {}, "too few peers alive")
                await call_quorum(live, call, need, timeout=timeout)
            except QuorumError as exc:
                self.quorum_failures += 1
                raise QuorumNotReachedError(f"events of an earlier write are not yet on W replicas: {exc}") from exc
            self._unconfirmed.pop(0)

    # --- failures ------------------------------------------------------------------------------------------------
    async def _send_or_hint(self, peer: str, call: Callable[[str], Awaitable[ApplyEventsReply]],
                            events: list[Event], *, hinted: bool = False) -> None:
        try:
            await call(peer)
        except Exception:  # noqa: BLE001 - the peer gets a hint instead (unless it has one already)
            if not hinted:
                await self._hint(peer, events)

    def _copy(self, peer: str, call: Callable[[str], Awaitable[ApplyEventsReply]],
              events: list[Event]) -> asyncio.Future[ApplyEventsReply]:
        """A background copy of a write to ``peer``, hinted when it fails."""
        task = asyncio.ensure_future(call(peer))
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: self._on_straggler(peer, done, events))
        return task

    def _on_straggler(self, peer: str, done: asyncio.Future[ApplyEventsReply], events: list[Event]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._spawn(self._hint(peer, events))

    async def _hint(self, peer: str, events: list[Event]) -> None:
        if self.hints is None:
            return
        try:
            await self.hints.hint(peer, events)
        except Exception:  # noqa: BLE001 - catch-up still brings the events to the peer
            log.exception("could not keep a hint for %s (catch-up will bring it the events)", peer)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
