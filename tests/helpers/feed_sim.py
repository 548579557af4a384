"""A simulated pool for catch-up and hint tests: peers' journals in memory, a transport that can be down or cut a
stream after some batches, an apply port that remembers what it applied, and a settable wall clock."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from s4.cluster.catch_up import BatchLimits, journal_batches
from s4.cluster.feed_store import FeedStore
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest, CatchUpBatch, CatchUpRequest
from s4.engine.replica import referenced_hashes
from s4.journal.codec import decode_event
from s4.journal.events import Event, EventType

LOGICAL = (EventType.BUCKET_CREATED, EventType.OBJECT_VERSION_PUT, EventType.OBJECT_TAGS_SET)
LOCAL = (EventType.BLOB_MOVED, EventType.VOLUME_SEALED)


@dataclass
class MemJournal:
    """A peer's journal: what ``journal_batches`` reads."""

    origin: str
    events: list[Event] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def append(self, etype: EventType, blob: bytes | None = None) -> Event:
        payload: dict[str, object] = {"bucket": f"b{len(self.events)}"}
        if blob:  # a version put referencing one blob, as engine/replica.py ``referenced_hashes`` reads it
            etype, payload["version"] = EventType.OBJECT_VERSION_PUT, {"v": "null", "b": [[blob, 1]]}
        elif etype in (EventType.OBJECT_VERSION_PUT, EventType.MULTIPART_COMPLETED):
            payload["version"] = {"v": "null"}
        elif etype is EventType.PART_STORED:
            payload["part"] = {"n": 1}
        event = Event(len(self.events) + 1, 1000 + len(self.events), self.origin, etype, payload)
        self.events.append(event)
        return event

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]:
        yield from self.events[from_seq - 1: to_seq]


@dataclass
class Result:
    applied: int = 0
    already_had: int = 0
    missing_blobs: Sequence[bytes] = ()


@dataclass
class Applier:
    """The apply port: events by (origin, seq); an event whose payload names a blob needs it first."""

    held: set[tuple[str, int]] = field(default_factory=set)
    blobs: set[bytes] = field(default_factory=set)
    calls: int = 0
    fail: bool = False

    async def apply_peer_events(self, events: list[Event]) -> Result:
        self.calls += 1
        if self.fail:
            raise RuntimeError("apply failed")
        missing = sorted({d for e in events for d in referenced_hashes(e)} - self.blobs)
        if missing:
            return Result(missing_blobs=missing)
        new = {(e.origin, e.seq) for e in events} - self.held
        self.held |= new
        return Result(applied=len(new), already_had=len(events) - len(new))


@dataclass
class Fetcher:
    applier: Applier
    available: set[bytes] = field(default_factory=set)
    asked: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)

    async def fetch(self, peers: Sequence[str], digest: bytes) -> object:
        self.asked.append((tuple(peers), digest))
        if digest not in self.available:
            raise LookupError(f"nobody has {digest!r}")
        self.applier.blobs.add(digest)
        return digest


@dataclass
class Reporter:
    applied_seq: dict[str, int] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)

    def applied(self, node_id: str, seq: int) -> None:
        self.applied_seq[node_id] = max(self.applied_seq.get(node_id, 0), seq)

    def state(self, node_id: str) -> str:
        return self.states.get(node_id, "alive")


class Down(ConnectionRefusedError):
    pass


@dataclass
class Transport:
    """Peers' journals behind a switch: ``up[peer]`` False refuses; ``cut_after[peer] = k`` ends the next stream
    with an error after k batches. ``received[peer]`` collects ApplyEvents envelopes (hint deliveries)."""

    journals: dict[str, MemJournal]
    limits: BatchLimits = BatchLimits(events=3, bytes=1 << 20, scan=5)
    up: dict[str, bool] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    received: dict[str, list[Event]] = field(default_factory=dict)
    lose_reply: dict[str, bool] = field(default_factory=dict)  # applied, but the caller sees an error
    missing: dict[str, list[bytes]] = field(default_factory=dict)  # ApplyEvents answers these blobs missing
    skips: dict[str, list[list[tuple[int, int]]]] = field(default_factory=dict)  # per CatchUp: the ranges it skipped

    async def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        if not self.up.get(peer, True):
            raise Down(f"{peer} is down")
        cut = self.cut_after.pop(peer, None)
        limits = BatchLimits(min(self.limits.events, request.batch_events or self.limits.events), self.limits.bytes,
                             self.limits.scan)
        n = 0
        skip = [(r.after, r.through) for r in request.skip]
        self.skips.setdefault(peer, []).append(skip)
        async for batch in journal_batches(self.journals[peer], request.after_seq, limits, skip=skip):
            if cut is not None and n >= cut:
                raise Down(f"{peer} went away mid-stream")
            n += 1
            yield batch

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        if not self.up.get(peer, True):
            raise Down(f"{peer} is down")
        if self.missing.get(peer):
            return ApplyEventsReply(missing_blobs=self.missing[peer])
        self.received.setdefault(peer, []).extend(decode_event(bytes(e)) for e in request.events)
        assert request.hinted_for == peer
        if self.lose_reply.get(peer):
            raise TimeoutError("the reply was lost")
        return ApplyEventsReply(applied=len(request.events))


class Wall:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def new_store(directory: Path | None = None) -> FeedStore:
    path = Path(directory or tempfile.mkdtemp(prefix="s4-feed-")) / "cluster" / "feed.lmdb"
    return FeedStore(path, sync=lambda: None, map_size=1 << 22)
