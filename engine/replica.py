"""Applying events decided by another node (docs/architecture/replication.md, "Applying a peer's events").

A ``PeerBatch`` enters the sequencer's queue beside commands, so a peer's events are journaled, fsynced and
projected by the one writer, in the same group commit and LMDB transaction as local decisions. For each batch, in a
nested transaction (``apply_peer_batch``):

  1. every event must be a logical one (``journal.REPLICATED``): a peer's ``blob.*``/``volume.*`` event names that
     peer's volumes and is refused;
  2. the clock observes the batch's newest hlc; one too far ahead (``S4_MAX_CLOCK_OFFSET``) refuses the batch with
     the HLC's ``ClockOffsetError``;
  3. events this node holds already (``event_ids``: same ``(hlc, origin)``) are answered ``ALREADY_HAD`` and not
     journaled again;
  4. every content hash the new events reference is resolved to a location on this node: the blob index first,
     then the caller's ``resolve`` (blobs it just stored); an event with a hash unresolved is applied last, and
     only if it takes no reference by then (superseded: ``projector.takes_references``); otherwise the batch is
     refused with ``MissingBlobsError`` listing the hashes;
  5. each new event gets a local ``seq`` (original hlc, origin, type, actor), its payload's ``blobs_at`` replaced by
     this node's locations, and is projected by the same projector as local decisions (last writer wins).

A refusal leaves nothing: the nested transaction is aborted and no event of the batch is journaled.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s4.journal import REPLICATED, Event, EventType, Journal

from . import projector
from .errors import MissingBlobsError, PeerEventRefused
from .model import BlobLocation
from .views.blobs import is_damaged
from .views.records import Tx

BlobResolver = Callable[[bytes], BlobLocation | None]
"""sha256 -> where this node holds those bytes (e.g. cluster/blobs.py's staged blobs), or None."""

#: Events whose projection stores new data: refused below the disk reserve, like the commands that emit them.
GROWTH_EVENTS = frozenset({EventType.OBJECT_VERSION_PUT, EventType.DELETE_MARKER_PUT, EventType.PART_STORED,
                           EventType.MULTIPART_CREATED, EventType.MULTIPART_COMPLETED, EventType.BUCKET_CREATED})


def no_blobs(_digest: bytes) -> BlobLocation | None:
    """A resolver for callers that stored nothing: only blobs already in the index resolve."""
    return None


class Applied(enum.Enum):
    APPLIED = "applied"  # journaled and projected now (its projection may still lose to a newer write)
    ALREADY_HAD = "already_had"  # this node held the event already: nothing written


@dataclass(frozen=True, slots=True)
class PeerBatch:
    """Events decided by other nodes, to commit here; ``resolve`` finds the bytes they reference, ``volumes`` are
    volumes the caller wrote those bytes to (fsynced with the batch, like a command's)."""

    events: tuple[Event, ...]
    resolve: BlobResolver = no_blobs
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerBatchResult:
    """Per event of the batch, in order: applied or already held, and its seq in this node's journal."""

    outcomes: tuple[Applied, ...]
    seqs: tuple[int, ...]


@dataclass(slots=True)
class _Applied:
    result: PeerBatchResult
    events: list[Event] = field(default_factory=list)
    volumes: set[str] = field(default_factory=set)


def referenced_hashes(event: Event) -> list[bytes]:
    """The content hashes an event's projection takes references on, in payload order."""
    return [c[0] for c in _chunks(event)]


def referenced_bytes(event: Event) -> int:
    """The bytes of the blobs an event references (a replica may have to fetch that much to apply it)."""
    return sum(int(c[1]) for c in _chunks(event))


def _chunks(event: Event) -> Sequence[Any]:
    p = event.payload
    if event.type in (EventType.OBJECT_VERSION_PUT, EventType.MULTIPART_COMPLETED):
        return p["version"].get("b", ())  # type: ignore[no-any-return]
    if event.type is EventType.PART_STORED:
        return p["part"].get("b", ())  # type: ignore[no-any-return]
    return ()


def check_types(events: Sequence[Event]) -> None:
    for event in events:
        if event.type not in REPLICATED:
            raise PeerEventRefused(f"event {event.type!r} of {event.origin} at hlc {event.hlc} is node-local (or "
                                   "unknown): it is never taken from a peer")


def apply_peer_batch(tx: Tx, journal: Journal, seq: int, batch: PeerBatch) -> _Applied:
    """Steps 1-5 of the module docstring inside the caller's (nested) transaction; raises to refuse the batch."""
    check_types(batch.events)
    if batch.events:
        journal.clock.observe_peer(max(e.hlc for e in batch.events))  # ClockOffsetError: too far ahead
    fresh: list[Event] = []
    seen: dict[tuple[int, str], int] = {}
    for event in batch.events:
        if (event.hlc, event.origin) not in seen and tx.event_seq(event.origin, event.hlc) is None:
            seen[(event.hlc, event.origin)] = -1
            fresh.append(event)
    locations, volumes, written, lacking = _resolve(tx, fresh, batch.resolve)
    volumes.update(batch.volumes)
    out = _Applied(PeerBatchResult((), ()), volumes=volumes)
    # Events whose blobs this node lacks go last: applied without them only when superseded by then (step 4).
    missing: list[bytes] = []
    for event in [e for e in fresh if id(e) not in lacking] + [e for e in fresh if id(e) in lacking]:
        if id(event) in lacking and projector.takes_references(tx, event):
            missing.extend(lacking[id(event)])
            continue
        seq += 1
        local = journal.adopt(_localized(event, locations, written), seq)
        try:
            projector.apply(tx, local)
        except projector.UnknownBucketError as exc:
            raise PeerEventRefused(str(exc), behind=True) from exc
        seen[(event.hlc, event.origin)] = seq
        out.events.append(local)
    if missing:
        raise MissingBlobsError(list(dict.fromkeys(missing)))
    outcomes, seqs = [], []
    reported: set[tuple[int, str]] = set()
    for event in batch.events:
        ident = (event.hlc, event.origin)
        if ident in seen and ident not in reported:
            reported.add(ident)
            outcomes.append(Applied.APPLIED)
            seqs.append(seen[ident])
        else:
            outcomes.append(Applied.ALREADY_HAD)
            seqs.append(tx.event_seq(event.origin, event.hlc) or 0)
    out.result = PeerBatchResult(tuple(outcomes), tuple(seqs))
    return out


def _resolve(tx: Tx, events: list[Event], resolve: BlobResolver
             ) -> tuple[dict[bytes, list[Any]], set[str], set[bytes], dict[int, list[bytes]]]:
    """Every referenced hash this node holds -> ``[sha256, volume, offset, size]``, and per event (by ``id``) the
    hashes it references that this node lacks.

    Such an event is not necessarily refused: one that takes no reference when it is applied (superseded here, or
    by an event earlier in the applying order: ``projector.takes_references``) needs no bytes, which may be gone on
    every node (a version put and deleted while this node was away). ``apply_peer_batch`` applies those after the
    rest of the batch, so they are journaled (and replayed) after what supersedes them."""
    locations: dict[bytes, list[Any]] = {}
    volumes: set[str] = set()
    written: set[bytes] = set()  # stored for this batch (not yet behind an event): the start-up check's to verify
    lacking: dict[int, list[bytes]] = {}
    absent: set[bytes] = set()
    for event in events:
        for digest in referenced_hashes(event):
            if digest in locations:
                continue
            if digest not in absent:
                rec = tx.blob(digest)
                if rec is not None and not is_damaged(rec):
                    locations[digest] = [digest, rec[0], rec[1], rec[2]]
                    continue
                found = resolve(digest)
                if found is not None:
                    locations[digest] = found.to_record()
                    volumes.add(found.volume)
                    written.add(digest)
                    continue
                absent.add(digest)
            lacking.setdefault(id(event), []).append(digest)
    return locations, volumes, written, lacking


def _localized(event: Event, locations: dict[bytes, list[Any]], written: set[bytes]) -> Event:
    """The event with ``blobs_at`` naming this node's locations and ``written`` the chunks stored here for it (a
    peer's locations and writes mean nothing here)."""
    hashes = referenced_hashes(event)
    if not hashes and "blobs_at" not in event.payload:
        return event
    payload = dict(event.payload)
    payload.pop("blobs_at", None)
    payload.pop("written", None)
    if hashes:  # a superseded event applied without its bytes names only the ones this node holds
        payload["blobs_at"] = [locations[h] for h in dict.fromkeys(hashes) if h in locations]
        payload["written"] = [h for h in dict.fromkeys(hashes) if h in written]
    return Event(event.seq, event.hlc, event.origin, event.type, payload, event.actor)
