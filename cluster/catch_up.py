"""Catch-up: a node streams what it missed from each peer's journal, and serves its own journal to peers.

Server side (``EventsService.catch_up``, the events area of cluster/grpc_server.py): the node's journal after the
caller's ``after_seq``, in batches bounded in events and bytes, each event one ``encode_event`` envelope; node-local
event types (blob.*, volume.*: where bytes sit on *this* node's disks) are never sent. Disk reads run in a worker
thread; at most ``MAX_STREAMS`` streams are served at once, each holding at most one journal segment in memory.

Client side (``CatchUp``): per peer, a durable cursor (cluster/feed_store.py) says how far into that peer's journal
this node has applied. A pass asks the peer for everything after the cursor, hands each batch to the apply port
(which journals and fsyncs it), fetches blobs the apply says are missing, then moves the cursor (fsynced) and tells
``Liveness.applied`` so the lag metric is real. A loop per peer runs a pass at start-up, whenever the peer comes
back alive, and every ``sweep_s`` as a safety net; a failed pass is retried with backoff.

``ready`` is the write path's gate ("a node that returns streams what it missed before it counts toward quorums
again"): true once, since this process started, every peer was either caught up with to the head it reported, or
found unreachable. docs/architecture/replication.md, "Catch-up".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from s4.engine.replica import referenced_hashes
from s4.journal.codec import decode_event, encode_event
from s4.journal.events import REPLICATED, Event, EventType

from .claims import RangeSet, coalesce
from .feed_store import FeedStore
from .wake import cancel_and_wait, wait_event
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    BlobTransfer,
    CatchUpBatch,
    CatchUpFromReply,
    CatchUpFromRequest,
    CatchUpRequest,
    InlineBlob,
    JournalRange,
)

log = logging.getLogger("s4.cluster")

CATCH_UP = "/s4cluster.v1.S4Cluster/CatchUp"
IAM_FEED = "/s4cluster.v1.S4Cluster/IamFeed"
APPLY_EVENTS = "/s4cluster.v1.S4Cluster/ApplyEvents"

#: Streams again from the cursor when events are still held back at the end of a stream and the peer's head moved.
HELD_RESTREAMS = 3

#: CatchUp streams served at once (each holds at most one journal segment in memory while it reads).
MAX_STREAMS = 2
#: IamFeed streams served at once, apart from CatchUp's: a peer's long catch-up never stalls the other pools' IAM
#: rounds, nor do those rounds stall it.
MAX_IAM_STREAMS = 2
#: Blobs an ApplyEvents fetches from its caller at once (a large object's chunks).
FETCH_LANES = 4
#: A cursor moved by the peers' ApplyEvents is made durable this long after it moved (then again, if it moved on).
PUSH_PERSIST_S = 1.0
#: Journal ranges of a peer waiting for the ones before them (merged; beyond: the highest are dropped, catch-up
#: streams them instead).
MAX_WAITING_RANGES = 4096
#: Claimed ranges above the cursor a CatchUp request names for the server to skip (the lowest; a server takes at
#: most ``MAX_SKIP_SERVED``).
MAX_SKIP_RANGES = 256
MAX_SKIP_SERVED = 1024


def replicated(event: Event) -> bool:
    """A logical event, the same on every replica (not a node-local blob.* / volume.* one)."""
    return event.type in REPLICATED


IAM_EVENTS = frozenset({EventType.USER_CREATED, EventType.USER_UPDATED, EventType.USER_DELETED,
                        EventType.CREDENTIAL_CREATED, EventType.CREDENTIAL_DELETED})


def iam_event(event: Event) -> bool:
    """What IamFeed serves: users and credentials (docs/architecture/pools.md, "IAM across pools")."""
    return event.type in IAM_EVENTS


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """A CatchUp batch (and a hint delivery) holds at most ``events`` events and ``bytes`` of envelopes (one
    event always fits); ``scan`` bounds the journal events read for one batch, replicated or not, so a long run
    of node-local events still reports progress."""

    events: int = 512
    bytes: int = 4 * 1024 * 1024
    scan: int = 8192


# --- the ports ------------------------------------------------------------------------------------------------------


class ApplyResult(Protocol):
    """What the apply port did with a batch (the fields of ApplyEventsReply)."""

    @property
    def applied(self) -> int: ...

    @property
    def already_had(self) -> int: ...

    @property
    def missing_blobs(self) -> Sequence[bytes]: ...

    # Optionally ``seqs``: per event given, the seq this call journaled it at in this node's journal (0: already
    # held, not journaled); read with getattr (an applier without it gives no journal ranges).


class PeerEventsApplier(Protocol):
    """The engine's entry point for a peer's events: last-writer-wins projection, local re-sequencing, blob
    resolution. Returns once what it applied is journalled and fsynced; applying an event twice changes nothing.
    Nothing is applied when ``missing_blobs`` is non-empty."""

    async def apply_peer_events(self, events: list[Event]) -> ApplyResult: ...


class BlobFetcher(Protocol):
    """Fetch a blob this node lacks from the first of ``peers`` that has a verified copy (cluster/blob_client.py
    ``fetch_from_any``); raises when none can."""

    async def fetch(self, peers: Sequence[str], digest: bytes) -> object: ...


class InlineBlobStore(Protocol):
    """cluster/blob_server.py ``BlobService.store_inline``: verify and durably stage the blobs an ApplyEvents
    carries (``BLOB_TRANSFER_INLINE``); raises GRPCError (nothing stored) when one does not match its hash or size."""

    async def store_inline(self, caller: str, blobs: Sequence[InlineBlob]) -> int: ...


class JournalReader(Protocol):
    """The part of journal/writer.py ``Journal`` catch-up reads."""

    @property
    def last_seq(self) -> int: ...

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]: ...


class EventsTransport(Protocol):
    """The two events RPCs as the client side sees them (gRPC in a node, simulated in tests)."""

    def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]: ...

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply: ...


class AppliedReporter(Protocol):
    """cluster/liveness.py ``Liveness``: the per-peer applied seq (for the lag metric) and the peer states."""

    def applied(self, node_id: str, seq: int) -> None: ...

    def state(self, node_id: str) -> str: ...


# --- server side ----------------------------------------------------------------------------------------------------


async def journal_batches(journal: JournalReader, after_seq: int, limits: BatchLimits,
                          keep: Callable[[Event], bool] = replicated,
                          skip: Sequence[tuple[int, int]] = ()) -> AsyncIterator[CatchUpBatch]:
    """The journal after ``after_seq`` up to its head when called, as CatchUp batches.

    ``through_seq`` is the last journal seq the batch covers, node-local events skipped included (so the caller's
    cursor moves past them); ``head_seq`` the head this stream ends at. Nothing after ``after_seq``: one empty
    batch (through ``after_seq``), so the caller always learns the head (and sees a head below its cursor).
    ``keep``: which events are sent (IamFeed: the IAM events only; the others are skipped like node-local ones).
    ``skip``: ranges the caller holds already (claimed to it by ApplyEvents): their events are skipped likewise."""
    head = journal.last_seq
    if after_seq >= head:
        yield CatchUpBatch(events=[], through_seq=after_seq, head_seq=head)
        return
    source = journal.read(after_seq + 1, head)
    held = [(max(a, after_seq), min(t, head)) for a, t in coalesce(skip[:MAX_SKIP_SERVED]) if t > after_seq]
    held = [(a, t) for a, t in held if t > a]
    afters, throughs = [a for a, _ in held], [t for _, t in held]
    at = 0  # the first held range not wholly below the events read so far

    def next_batch() -> tuple[list[bytes], int | None]:
        nonlocal at
        envelopes: list[bytes] = []
        size, scanned, last = 0, 0, None
        for event in source:
            scanned, last = scanned + 1, event.seq
            while at < len(throughs) and throughs[at] < last:
                at += 1
            held_there = at < len(afters) and afters[at] < last  # in (after, through]: the caller has it
            if not held_there and keep(event):
                envelope = encode_event(event)
                envelopes.append(envelope)
                size += len(envelope)
            if len(envelopes) >= limits.events or size >= limits.bytes or scanned >= limits.scan:
                break
        return envelopes, last

    try:
        while True:
            envelopes, last = await asyncio.to_thread(next_batch)
            if last is None:
                return
            yield CatchUpBatch(events=envelopes, through_seq=last, head_seq=head)
            if last >= head:
                return
    finally:
        close = getattr(source, "close", None)  # a generator: release its segment now
        if close is not None:
            with contextlib.suppress(ValueError):  # a read still running in its thread (cancelled): the GC closes it
                await asyncio.to_thread(close)


class EventsService:
    """The events area of the gRPC server (cluster/grpc_server.py ``EventsHandler``).

    ``catch_up`` streams this node's journal. ``apply_events`` decodes a peer's envelopes and hands the logical
    ones to the apply port; with ``BLOB_TRANSFER_INLINE`` it first verifies and durably stages the inline blobs
    (``inline``; a mismatch refuses the call, nothing stored nor applied); with ``BLOB_TRANSFER_FETCH`` or
    ``INLINE`` it fetches the blobs still missing from the caller and applies again once."""

    def __init__(self, journal: JournalReader, applier: PeerEventsApplier | None = None,
                 fetcher: BlobFetcher | None = None, *, limits: BatchLimits | None = None,
                 status: Callable[[], tuple[int, int]] | None = None, puller: CatchUp | None = None,
                 inline: InlineBlobStore | None = None) -> None:
        self.journal, self.applier, self.fetcher = journal, applier, fetcher
        self.inline = inline
        self.puller = puller  # this node's catch-up client: CatchUpFrom runs one of its passes
        #: Told each caller's settled watermark (cluster/read_leases.py ``Unsettled.peer_watermark``).
        self.on_settled: Callable[[str, int], None] | None = None
        self.limits = limits or BatchLimits()
        self._status = status
        self._streams = asyncio.Semaphore(MAX_STREAMS)
        self._iam_streams = asyncio.Semaphore(MAX_IAM_STREAMS)

    async def catch_up(self, caller: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        limits = self.limits
        if request.batch_events:
            limits = BatchLimits(min(limits.events, request.batch_events), limits.bytes, limits.scan)
        skip = [(r.after, r.through) for r in request.skip]
        async with self._streams:
            async for batch in journal_batches(self.journal, request.after_seq, limits, skip=skip):
                yield batch

    async def iam_feed(self, caller: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        """CatchUp of the IAM events only: what another pool's node follows (cluster/iam_feed.py)."""
        limits = self.limits
        if request.batch_events:
            limits = BatchLimits(min(limits.events, request.batch_events), limits.bytes, limits.scan)
        async with self._iam_streams:
            async for batch in journal_batches(self.journal, request.after_seq, limits, keep=iam_event):
                yield batch

    async def catch_up_from(self, caller: str, request: CatchUpFromRequest) -> CatchUpFromReply:
        """Blocking read repair: pull ``caller``'s journal now, through at least ``request.through_seq``."""
        if self.puller is None or caller not in self.puller.peers:
            raise GRPCError(Status.UNIMPLEMENTED, "this node does not catch up from the caller")
        try:
            cursor = await self.puller.pass_once(caller)
        except CatchUpError as exc:
            raise GRPCError(Status.UNAVAILABLE, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - this node's own failure (apply, feed store): the pass failed
            raise GRPCError(Status.UNAVAILABLE, f"catch-up from {caller}: {_why(exc)}") from None
        if cursor < request.through_seq:
            raise GRPCError(Status.UNAVAILABLE, f"caught up through {cursor}, not {request.through_seq}")
        return CatchUpFromReply(cursor=cursor)

    async def apply_events(self, caller: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        if self.applier is None:
            raise GRPCError(Status.UNIMPLEMENTED, "this node does not apply peers' events yet")
        if self.puller is not None and self.puller.blocked(caller):  # docs/architecture/tombstones.md
            raise GRPCError(Status.FAILED_PRECONDITION, f"{caller}'s data must not rejoin: it was away longer than "
                                                        "S4_MAX_REJOIN_DOWNTIME_DAYS; bootstrap it")
        if self.on_settled is not None and request.settled_hlc:
            self.on_settled(caller, request.settled_hlc)
        try:
            events = [decode_event(bytes(e)) for e in request.events]
        except ValueError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"ApplyEvents: an event does not decode: {exc}") from None
        kept = [i for i, e in enumerate(events) if replicated(e)]
        if len(kept) < len(events):
            events = [events[i] for i in kept]
        if request.blobs == BlobTransfer.INLINE and request.inline_blobs and self.inline is not None:
            await self.inline.store_inline(caller, request.inline_blobs)
        result = await self.applier.apply_peer_events(events)
        if (result.missing_blobs and request.blobs in (BlobTransfer.FETCH, BlobTransfer.INLINE)
                and self.fetcher is not None):
            fetcher, lanes = self.fetcher, asyncio.Semaphore(FETCH_LANES)

            async def fetch(digest: bytes) -> None:
                async with lanes:
                    try:
                        await fetcher.fetch([caller], digest)
                    except Exception as exc:  # noqa: BLE001 - answered below as missing_blobs (nothing applied)
                        log.info("ApplyEvents from %s: blob %s could not be fetched from it: %s", caller,
                                 digest.hex(), exc)

            await asyncio.gather(*(fetch(bytes(d)) for d in result.missing_blobs))
            result = await self.applier.apply_peer_events(events)
        if not request.hinted_for and self.puller is not None:
            if not result.missing_blobs and request.journal_ranges:
                self.puller.pushed(caller, [(r.after, r.through) for r in request.journal_ranges])
            if request.peer_ranges:  # batches this node acknowledged earlier, in the other peers' journals
                claimed: dict[str, list[tuple[int, int]]] = {}
                for r in request.peer_ranges:
                    if r.node != caller:
                        claimed.setdefault(r.node, []).append((r.after, r.through))
                for node, held in claimed.items():
                    self.puller.pushed(node, held)
        hlc, seq = self._status() if self._status is not None else (0, self.journal.last_seq)
        ranges = [] if result.missing_blobs or request.hinted_for else \
            reply_ranges(request, kept, getattr(result, "seqs", ()))
        return ApplyEventsReply(applied=result.applied, already_had=result.already_had,
                                missing_blobs=[bytes(d) for d in result.missing_blobs], hlc=hlc, journal_seq=seq,
                                journal_ranges=ranges)


def reply_ranges(request: ApplyEventsRequest, kept: Sequence[int], seqs: Sequence[int]) -> list[JournalRange]:
    """Per part of ``request`` (each coalesced write; one when it names none), the range of this node's journal
    that holds exactly the events this call journaled for it, or ``(0, 0)``; none at all when no part has one.

    ``seqs``: per applied event (``kept``: their indexes in the request) its new seq, 0 when already held. A
    peer batch is sequenced as one run of consecutive seqs (engine/replica.py ``apply_peer_batch``), so a part's
    new events are normally consecutive; when they are not (an event moved behind the others), the part gets no
    range rather than one spanning another part's events."""
    n = len(request.events)
    parts = list(request.parts) or [n]
    if len(seqs) != len(kept) or sum(parts) != n or not any(seqs):
        return []
    per_event = [0] * n
    for index, seq in zip(kept, seqs, strict=True):
        per_event[index] = seq
    out, start, found = [], 0, False
    for count in parts:
        new = sorted(s for s in per_event[start:start + count] if s > 0)
        start += count
        if new and new[-1] - new[0] == len(new) - 1 and len(set(new)) == len(new):
            out.append(JournalRange(after=new[0] - 1, through=new[-1]))
            found = True
        else:
            out.append(JournalRange(after=0, through=0))
    return out if found else []


# --- client side ----------------------------------------------------------------------------------------------------


class CatchUpError(Exception):
    """A pass could not finish; ``unreachable`` when the peer did not answer (vs. a local apply failure)."""

    def __init__(self, peer: str, message: str, *, unreachable: bool) -> None:
        super().__init__(f"catch-up from {peer}: {message}")
        self.peer, self.unreachable = peer, unreachable


PENDING, CAUGHT_UP, UNREACHABLE = "pending", "caught_up", "unreachable"


@dataclass(frozen=True, slots=True)
class CatchUpSettings:
    batch_events: int = 512
    sweep_s: float = 30.0  # a pass per peer this often even without a liveness change (a cheap empty stream)
    backoff_s: float = 0.5  # first retry after a failed pass; doubles up to backoff_max_s
    backoff_max_s: float = 30.0
    enabled: bool = True  # S4_CATCH_UP=off: no pass ever runs (diagnostics only: proves anti-entropy alone)


class CatchUp:
    """The client side: one cursor and one loop per peer; ``ready`` once every peer was caught up or unreachable."""

    def __init__(self, peers: Sequence[str], transport: EventsTransport, applier: PeerEventsApplier,
                 store: FeedStore, reporter: AppliedReporter, fetcher: BlobFetcher | None = None,
                 settings: CatchUpSettings | None = None) -> None:
        self.peers = tuple(peers)
        self.transport, self.applier, self.store = transport, applier, store
        self.reporter, self.fetcher = reporter, fetcher
        self.settings = settings or CatchUpSettings()
        self.status = {peer: PENDING for peer in self.peers}
        self._ready = not self.peers
        self._wake = {peer: asyncio.Event() for peer in self.peers}
        self._tasks: list[asyncio.Task[None]] = []
        self._locks = {peer: asyncio.Lock() for peer in self.peers}
        self._held: dict[str, list[Event]] = {}  # per peer, during a pass: events waiting for what supersedes them
        # Per peer: how far its journal is applied here counting the ranges its own writes brought
        # (``pushed``), at least the durable cursor; ranges waiting for the ones before them; a pending persist.
        self._pushed = {peer: 0 for peer in self.peers}
        self._ranges: dict[str, RangeSet] = {peer: RangeSet() for peer in self.peers}
        #: Per peer, events received from its CatchUp streams and ranges it was asked to skip (since start).
        self.streamed = {peer: 0 for peer in self.peers}
        self.skipped = {peer: 0 for peer in self.peers}
        self._persisting: set[str] = set()
        # Tombstone GC (cluster/tombstone_gc.py): per peer, the wall time (ms) at which the last pass that reached
        # the head it reported started (this node holds everything that peer journalled before it); a peer whose
        # old data must not rejoin (``blocked``) is not pulled from.
        self.synced_ms: dict[str, int] = {}
        self.blocked: Callable[[str], bool] = lambda peer: False

    @property
    def ready(self) -> bool:
        """Caught up with every reachable peer since start (latched: a peer returning later is caught up with in
        the background and does not take a serving node out of the quorums)."""
        return self._ready

    async def start(self) -> None:
        if not self.settings.enabled:
            self._ready = True  # nothing will ever be caught up with: the write path must not wait for it
            log.warning("journal catch-up is off (S4_CATCH_UP=off, diagnostics only): a node that missed writes "
                        "converges only through hints and anti-entropy")
            return
        for peer in self.peers:
            cursor = await self.store.run(lambda p=peer: self.store.cursor(p))  # type: ignore[misc]
            self._pushed[peer] = max(self._pushed[peer], cursor)
            self.reporter.applied(peer, self._pushed[peer])
        self._tasks = [asyncio.get_running_loop().create_task(self._loop(peer), name=f"s4-catch-up-{peer}")
                       for peer in self.peers]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    def pushed(self, peer: str, ranges: Sequence[tuple[int, int]]) -> None:
        """Ranges ``(after, through]`` of ``peer``'s journal whose every replicated event this node holds durably:
        the peer's own writes applied here (its ApplyEvents' ``journal_ranges``: cluster/replicator.py
        ``_journal_range``), this node's writes the peer journaled (its replies' ranges, claimed by this node's
        replicator once the write is durable here), and writes both applied (``peer_ranges``, told by their
        coordinator). The cursor moves across the ranges that join it; ranges ahead of it wait (merged, bounded) and
        a pass asks the peer to skip them (``skip``), so it streams only the gaps. Persisted within
        ``PUSH_PERSIST_S``: a cursor lost in a crash is only streamed again."""
        if peer not in self._pushed:
            return
        waiting = self._ranges[peer]
        for after, through in ranges:
            waiting.add(after, through)
        self._advance(peer, self._pushed[peer])
        if len(waiting) > MAX_WAITING_RANGES:  # gaps that do not close: catch-up streams the rest
            waiting.trim(MAX_WAITING_RANGES)

    def _advance(self, peer: str, cursor: int) -> None:
        """``cursor`` (a pass's or a push's) applied: join the waiting ranges to it and report how far it got."""
        cursor = self._ranges[peer].join(cursor)
        if cursor > self._pushed[peer]:
            self._pushed[peer] = cursor
            self.reporter.applied(peer, cursor)
            if peer not in self._persisting:
                self._persisting.add(peer)
                asyncio.get_running_loop().create_task(self._persist(peer))

    async def _persist(self, peer: str) -> None:
        try:
            persisted = -1
            while self._pushed[peer] > persisted:
                await asyncio.sleep(PUSH_PERSIST_S)
                cursor = self._pushed[peer]
                await self.store.run(lambda c=cursor: self.store.advance(peer, c))  # type: ignore[misc]
                persisted = cursor
        except Exception as exc:  # noqa: BLE001 - the durable cursor stays behind: those events stream again
            log.info("keeping the catch-up cursor for %s failed: %s", peer, exc)
        finally:
            self._persisting.discard(peer)

    def peer_alive(self, peer: str) -> None:
        """Liveness saw ``peer`` come back: run a pass now."""
        wake = self._wake.get(peer)
        if wake is not None:
            wake.set()

    async def _loop(self, peer: str) -> None:
        settings = self.settings
        delay = settings.backoff_s
        while True:
            try:
                await self.pass_once(peer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, retried with backoff
                log.warning("%s; retrying in %.1fs", exc, delay)
                wait, delay = delay * random.uniform(0.8, 1.2), min(delay * 2, settings.backoff_max_s)
            else:
                wait, delay = settings.sweep_s, settings.backoff_s
            await wait_event(self._wake[peer], wait)  # not asyncio.wait_for: cluster/wake.py
            self._wake[peer].clear()

    async def pass_once(self, peer: str) -> int:
        """Stream and apply everything ``peer`` journalled after the cursor, to the head it reported when the
        stream started; the cursor after the pass. Raises CatchUpError."""
        if not self.settings.enabled:
            raise CatchUpError(peer, "catch-up is off (S4_CATCH_UP=off)", unreachable=False)
        async with self._locks[peer]:
            if self.blocked(peer):
                raise CatchUpError(peer, "not pulled from: its data must not rejoin (S4_MAX_REJOIN_DOWNTIME_DAYS)",
                                   unreachable=True)
            started = int(time.time() * 1000)
            streamed = self.streamed[peer]
            try:
                cursor = await self._pass(peer)
            except CatchUpError as exc:
                if exc.unreachable and self.status[peer] == PENDING:
                    self._mark(peer, UNREACHABLE)
                raise
            self._mark(peer, CAUGHT_UP)
            self.synced_ms[peer] = started
            if self.streamed[peer] > streamed:  # what claims did not cover (docs/performance.md counts these)
                log.info("catch-up from %s: %d events streamed through its seq %d (%d in all since start)", peer,
                         self.streamed[peer] - streamed, cursor, self.streamed[peer])
            return cursor

    def _mark(self, peer: str, status: str) -> None:
        if self.status[peer] != CAUGHT_UP:
            self.status[peer] = status
        if not self._ready and all(s != PENDING for s in self.status.values()):
            self._ready = True
            log.info("caught up with every reachable peer (%s)",
                     ", ".join(f"{p}: {s}" for p, s in self.status.items()))

    async def _pass(self, peer: str) -> int:
        """Streams from the cursor until nothing is held back. An event held back at the end of a stream may be
        superseded by an event the peer committed after the stream began (the stream ends at the head it had
        then): the peer released the blob because of it. So while the peer's head moves, stream again from the
        cursor, which stayed below the held event (bounded: ``HELD_RESTREAMS``)."""
        store = self.store
        cursor = max(await store.run(lambda: store.cursor(peer)), self._pushed[peer])
        head = -1
        held: list[Event] = []
        for _ in range(HELD_RESTREAMS + 1):
            self._held.pop(peer, None)  # a stream that failed before leaves nothing behind: it starts at the cursor
            cursor, reached = await self._stream(peer, cursor)
            held = self._held.pop(peer, [])
            if not held or reached <= head:
                break
            head = reached
            log.info("catch-up from %s: %d events held back at its head %d; streaming again from %d", peer,
                     len(held), reached, cursor)
        if held:
            raise CatchUpError(peer, f"{len(held)} events reference blobs no replica could give and nothing later "
                               "supersedes them", unreachable=False)
        return max(cursor, self._pushed[peer])

    async def _stream(self, peer: str, cursor: int) -> tuple[int, int]:
        """One CatchUp stream after ``cursor``: (the cursor after it, the head the peer reported)."""
        store = self.store
        head = cursor
        skip = self._ranges[peer].above(cursor, MAX_SKIP_RANGES)
        self.skipped[peer] += len(skip)
        request = CatchUpRequest(after_seq=cursor, batch_events=self.settings.batch_events,
                                 skip=[JournalRange(after=a, through=t) for a, t in skip])
        stream = self.transport.catch_up(peer, request)
        try:
            while True:
                try:
                    batch = await anext(stream, None)
                except (GRPCError, StreamTerminatedError, OSError, TimeoutError) as exc:
                    raise CatchUpError(peer, _why(exc), unreachable=True) from exc
                if batch is None:
                    return cursor, head
                head = batch.head_seq
                if batch.head_seq < cursor:
                    log.warning("peer %s reports journal head %d below this node's cursor %d for it (its data "
                                "directory was replaced?): catching up from its first event", peer, batch.head_seq,
                                cursor)
                    await store.run(lambda: store.reset(peer))
                    self._pushed[peer] = 0
                    self._ranges[peer].clear()
                    raise CatchUpError(peer, "cursor reset, starting over", unreachable=False)
                cursor = await self._apply(peer, cursor, batch)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _apply(self, peer: str, cursor: int, batch: CatchUpBatch) -> int:
        """Apply one batch, then move the cursor to its ``through_seq`` (durably) and report it."""
        try:
            events = [decode_event(bytes(e)) for e in batch.events]
        except ValueError as exc:
            raise CatchUpError(peer, f"an event does not decode: {exc}", unreachable=False) from exc
        last = cursor
        for event in events:
            if event.seq <= last:
                raise CatchUpError(peer, f"seq {event.seq} after {last}: not in order", unreachable=False)
            last = event.seq
        if batch.through_seq < last:
            raise CatchUpError(peer, f"batch through {batch.through_seq} holds seq {last}", unreachable=False)
        self.streamed[peer] += len(events)
        events = [e for e in events if replicated(e)] + self._held.pop(peer, [])
        if events:
            held = await self._apply_events(peer, events)
            if held:
                self._held[peer] = held
        target = batch.through_seq
        if peer in self._held:  # the cursor stays below an event not applied yet
            target = min(target, min(e.seq for e in self._held[peer]) - 1)
        if target <= cursor:
            return cursor
        store = self.store
        cursor = await store.run(lambda: store.advance(peer, target))
        self._advance(peer, cursor)
        return cursor

    async def _apply_events(self, peer: str, events: list[Event]) -> list[Event]:
        """Apply ``events``, fetching the blobs they lack; returns the events held back because a blob they
        reference could not be fetched from any replica (a version put, then deleted everywhere, whose removal
        comes later in the stream: applied with it, superseded, without the bytes: engine/replica.py)."""
        result = await self.applier.apply_peer_events(events)
        if not result.missing_blobs:
            return []
        unavailable = await self._fetch(peer, [bytes(d) for d in result.missing_blobs])
        held = [e for e in events if unavailable.intersection(referenced_hashes(e))]
        rest = [e for e in events if not unavailable.intersection(referenced_hashes(e))]
        result = await self.applier.apply_peer_events(rest) if rest else result
        if rest and result.missing_blobs:
            raise CatchUpError(peer, f"{len(result.missing_blobs)} blobs still missing after fetching them",
                               unreachable=False)
        return held

    async def _fetch(self, peer: str, digests: list[bytes]) -> set[bytes]:
        """Fetch ``digests`` from ``peer`` or another live replica; the ones none could give."""
        if self.fetcher is None:
            raise CatchUpError(peer, f"{len(digests)} referenced blobs are missing and no blob fetcher is set",
                               unreachable=False)
        others = [p for p in self.peers if p != peer and self.reporter.state(p) == "alive"]
        unavailable: set[bytes] = set()
        for digest in digests:
            try:
                await self.fetcher.fetch([peer, *others], digest)
            except Exception as exc:  # noqa: BLE001 - held back; the pass fails if nothing later supersedes it
                log.info("catch-up from %s: blob %s could not be fetched (%s); holding back its events", peer,
                         digest.hex(), exc)
                unavailable.add(digest)
        return unavailable


def _why(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return f"{exc.status.name}: {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- the gRPC transport ---------------------------------------------------------------------------------------------


class PeerChannels(Protocol):
    """cluster/peers.py ``PeerPool``: a peer's stub (whose ``channel`` makes raw calls)."""

    def stub(self, node_id: str) -> object: ...


class GrpcEventsTransport:
    """``EventsTransport`` over the pool's channels: CatchUp bounded per message (``idle_s``: no batch within it
    and the stream is reset), ApplyEvents by ``call_s``."""

    def __init__(self, pool: PeerChannels, *, idle_s: float = 30.0, call_s: float = 30.0,
                 method: str = CATCH_UP) -> None:
        """``method``: CatchUp, or IamFeed (cluster/iam_feed.py: the registry pool's IAM events)."""
        self.pool, self.idle_s, self.call_s, self.method = pool, idle_s, call_s, method

    async def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        channel = self.pool.stub(peer).channel  # type: ignore[attr-defined]
        async with channel.request(self.method, Cardinality.UNARY_STREAM, CatchUpRequest, CatchUpBatch) as stream:
            async with asyncio.timeout(self.idle_s):  # connecting included
                await stream.send_message(request, end=True)
            while True:
                async with asyncio.timeout(self.idle_s):
                    batch: CatchUpBatch | None = await stream.recv_message()
                    if batch is None:
                        await stream.recv_trailing_metadata()  # a status other than OK raises here
                        return
                yield batch

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        stub = self.pool.stub(peer)
        reply: ApplyEventsReply = await stub.apply_events(  # type: ignore[attr-defined]
            request, timeout=self.call_s if timeout is None else timeout)
        return reply


class PoolBlobFetcher:
    """``BlobFetcher`` over cluster/blob_client.py ``fetch_from_any`` into the node's blob service."""

    def __init__(self, pool: object, local: object) -> None:
        self.pool, self.local = pool, local

    async def fetch(self, peers: Sequence[str], digest: bytes) -> object:
        from .blob_client import fetch_from_any  # the blob transfer stack, only when a node wires it

        return await fetch_from_any(self.pool, peers, digest, self.local)  # type: ignore[arg-type]
