"""Issue 19, small writes' blobs inside ApplyEvents (``BLOB_TRANSFER_INLINE``): the coordinator (cluster/replicator.py)
reads a small write's blobs through its verified reader (cluster/blob_server.py ``read_inline``) and sends them with
the events; the receiver (cluster/catch_up.py ``EventsService.apply_events`` over ``BlobService.store_inline``)
checks each against its hash and size, stores the ones it lacks (fsynced, staged) and applies the events: no GetBlob.
A blob that does not match is refused and nothing is stored nor applied; a blob the receiver holds is not written
again. Two real engines in tmp dirs, the call made in-process (no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.engine_io import get, put

from s4.cluster.blob_server import BlobService
from s4.cluster.catch_up import EventsService, replicated
from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest, BlobTransfer, InlineBlob
from s4.cluster.wiring import ReplicaApplier
from s4.engine import Engine, EngineOptions
from s4.engine.local_commit import LocalCommitPath
from s4.journal.events import Event, EventType


@dataclass
class Side:
    """One node: an engine over its own commit path, its blob service and its events area."""

    engine: Engine
    path: LocalCommitPath
    blobs: BlobService
    service: EventsService
    fetcher: NoFetch


@dataclass
class NoFetch:
    """The GetBlob side: records every fetch asked for and fails it (the tests expect none)."""

    asked: list[bytes] = field(default_factory=list)

    async def fetch(self, peers: Sequence[str], digest: bytes) -> object:
        self.asked.append(digest)
        raise LookupError("no GetBlob in this test")


def side(directory: Path) -> Side:
    path = LocalCommitPath()
    path.pooled = True  # a pool member's views: they take peer events (docs/architecture/views.md, "Flavour")
    engine = Engine(EngineOptions(directory), path)
    blobs = BlobService(engine.views, engine.volumes, space=engine.space)
    fetcher = NoFetch()
    assert engine.journal is not None
    service = EventsService(engine.journal, ReplicaApplier(path, blobs.staged), fetcher, inline=blobs)
    return Side(engine, path, blobs, service, fetcher)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    a, b = side(tmp_path / "a"), side(tmp_path / "b")
    yield a, b
    a.engine.close()
    b.engine.close()


@dataclass
class Direct:
    """An EventsTransport whose ApplyEvents is the receiver's handler, called in-process."""

    to: Side
    requests: list[ApplyEventsRequest] = field(default_factory=list)

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        self.requests.append(request)
        return await self.to.service.apply_events("node-a", request)

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("not used")


def logical_events(engine: Engine, after: int = 0) -> list[Event]:
    assert engine.journal is not None
    return [e for e in engine.journal.read(after + 1) if replicated(e)]


def volume_bytes(engine: Engine) -> int:
    return sum(os.path.getsize(engine.volumes.directory / n) for n in engine.volumes.volume_names())


def body(size: int, seed: int) -> bytes:
    return (hashlib.sha256(bytes([seed])).digest() * (size // 32 + 1))[:size]


def test_issue19_a_small_write_reaches_a_replica_with_its_blobs_inline_and_no_getblob(
        pair: tuple[Side, Side]) -> None:
    a, b = pair
    data = body(4096, 1)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        await put(a.engine, "bkt", "k", data)
        transport = Direct(b)
        replicator = Replicator(["node-b"], 2, transport, None, blobs=a.blobs)  # type: ignore[arg-type]
        await replicator.replicate(logical_events(a.engine))
        (request,) = transport.requests
        assert request.blobs == BlobTransfer.INLINE
        assert [(bytes(x.content_hash), x.size, bytes(x.data)) for x in request.inline_blobs] == [
            (hashlib.sha256(data).digest(), len(data), data)]
        assert await get(b.engine, "bkt", "k") == data

    asyncio.run(main())
    assert b.fetcher.asked == []  # no GetBlob back to the coordinator
    assert len(b.blobs.staged) == 0  # consumed by the apply: the blobs view owns the blob now


def test_issue19_a_write_above_the_inline_bound_keeps_fetch(pair: tuple[Side, Side]) -> None:
    a, b = pair
    data = body(5000, 2)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        await put(a.engine, "bkt", "k", data)
        transport = Direct(b)
        replicator = Replicator(["node-b"], 2, transport, None, blobs=a.blobs,  # type: ignore[arg-type]
                                settings=ReplicationSettings(inline_bytes=4999))
        with pytest.raises(QuorumNotReachedError):  # NoFetch: b could not fetch the blob
            await replicator.replicate(logical_events(a.engine))
        (request,) = transport.requests
        assert request.blobs == BlobTransfer.FETCH and not request.inline_blobs

    asyncio.run(main())
    assert b.fetcher.asked == [hashlib.sha256(data).digest()]


@pytest.mark.parametrize("damage", ["data", "size", "hash"])
def test_issue19_an_inline_blob_that_does_not_match_is_refused_and_nothing_is_stored(
        pair: tuple[Side, Side], damage: str) -> None:
    a, b = pair
    data = body(4096, 3)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        await put(a.engine, "bkt", "k", data)
        events = logical_events(a.engine)
        request = await Replicator(["node-b"], 2, Direct(b), None, blobs=a.blobs)._request(  # type: ignore[arg-type]
            events, len(data))
        (blob,) = request.inline_blobs
        if damage == "data":
            bad = InlineBlob(content_hash=blob.content_hash, size=blob.size, data=b"X" + bytes(blob.data)[1:])
        elif damage == "size":
            bad = InlineBlob(content_hash=blob.content_hash, size=blob.size + 1, data=blob.data)
        else:
            bad = InlineBlob(content_hash=bytes(blob.content_hash)[:16], size=blob.size, data=blob.data)
        request.inline_blobs = [bad]
        assert b.engine.journal is not None
        seq, size = b.engine.journal.last_seq, volume_bytes(b.engine)
        with pytest.raises(GRPCError) as refused:
            await b.service.apply_events("node-a", request)
        assert refused.value.status is (Status.DATA_LOSS if damage == "data" else Status.INVALID_ARGUMENT)
        assert b.engine.journal.last_seq == seq  # nothing applied
        assert volume_bytes(b.engine) == size  # nothing written
        assert len(b.blobs.staged) == 0 and b.blobs.holds(bytes(blob.content_hash)) is None

    asyncio.run(main())
    assert b.fetcher.asked == []


def test_issue19_an_inline_blob_the_replica_holds_is_not_written_again(pair: tuple[Side, Side]) -> None:
    a, b = pair
    data = body(4096, 4)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        await put(a.engine, "bkt", "k", data)
        await b.engine.create_bucket("other")
        await put(b.engine, "other", "same-bytes", data)  # b holds the blob already (dedup)
        size = volume_bytes(b.engine)
        transport = Direct(b)
        await Replicator(["node-b"], 2, transport, None, blobs=a.blobs).replicate(  # type: ignore[arg-type]
            logical_events(a.engine))
        assert transport.requests[0].inline_blobs  # it travelled ...
        assert volume_bytes(b.engine) == size  # ... but b wrote no second copy
        assert await get(b.engine, "bkt", "k") == data

    asyncio.run(main())
    assert b.fetcher.asked == []


def test_issue19_a_blob_the_coordinator_cannot_read_intact_is_left_for_the_peer_to_fetch(
        pair: tuple[Side, Side]) -> None:
    """read_inline answers None for a copy whose checks fail (no exception, the write goes on); the request stays
    INLINE without it and the receiver fetches it with GetBlob (whose path reports the damage)."""
    a, b = pair
    data = body(4096, 5)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        version = await put(a.engine, "bkt", "k", data)
        digest = hashlib.sha256(data).digest()
        loc = a.blobs.holds(digest)
        assert loc is not None and version.size == len(data)
        with open(a.engine.volumes.directory / loc.volume, "r+b") as f:  # flip one byte of the stored data
            f.seek(loc.offset + 10)
            byte = f.read(1)
            f.seek(loc.offset + 10)
            f.write(bytes([byte[0] ^ 0xFF]))
        assert await a.blobs.read_inline(digest) is None
        request = await Replicator(["node-b"], 2, Direct(b), None, blobs=a.blobs)._request(  # type: ignore[arg-type]
            logical_events(a.engine), len(data))
        assert request.blobs == BlobTransfer.INLINE and not request.inline_blobs
        reply = await b.service.apply_events("node-a", request)
        assert list(reply.missing_blobs) == [digest]

    asyncio.run(main())
    assert b.fetcher.asked == [hashlib.sha256(data).digest()]


def test_issue19_a_failing_inline_read_leaves_the_blob_for_the_peer_to_fetch_and_the_write_goes_on() -> None:
    """The write is committed on the coordinator when its blobs are read: a read that raises (an unexpected local
    error) must not fail it; the blob is left out and the peer fetches it."""

    class Broken:
        async def read_inline(self, digest: bytes, at: object = None) -> bytes | None:
            raise OSError("the views could not be read")

    event = Event(1, 1000, "a", EventType.OBJECT_VERSION_PUT,
                  {"bucket": "b", "key": "k", "version": {"v": "v1", "b": [[b"h" * 32, 10]]}})
    request = asyncio.run(Replicator(["b"], 2, Direct(None), None,  # type: ignore[arg-type]
                                     blobs=Broken())._request([event], 10))
    assert request.blobs == BlobTransfer.INLINE and not request.inline_blobs


def test_issue19_an_inline_blob_is_synced_with_the_batch_that_applies_it_before_the_peer_answers(
        pair: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver does not fsync inline blobs on their own (one fsync latency less per call): the batch that
    applies the events syncs the blob's volume together with its journal write, before the call is answered."""
    a, b = pair
    data = body(4096, 7)
    synced: list[set[str]] = []
    real_sync = b.engine.volumes.sync

    def sync(names: Any) -> None:
        synced.append(set(names))
        real_sync(names)

    monkeypatch.setattr(b.engine.volumes, "sync", sync)

    async def main() -> None:
        await a.engine.create_bucket("bkt")
        await put(a.engine, "bkt", "k", data)
        replicator = Replicator(["node-b"], 2, Direct(b), None, blobs=a.blobs)  # type: ignore[arg-type]
        await replicator.replicate(logical_events(a.engine))
        assert await get(b.engine, "bkt", "k") == data

    asyncio.run(main())
    record = b.engine._read(lambda tx: tx.blob(hashlib.sha256(data).digest()))
    assert record is not None
    assert any(record[0] in names for names in synced), f"volume {record[0]} never synced: {synced}"


class NoRead:
    """A blob source that must not be read: the bytes were offered with the command."""

    def __init__(self, data: bytes | None = None) -> None:
        self.reads: list[bytes] = []
        self.data = data

    async def read_inline(self, digest: bytes, at: object = None) -> bytes | None:
        self.reads.append(digest)
        return self.data


def put_event(digest: bytes, size: int) -> Event:
    return Event(1, 1000, "a", EventType.OBJECT_VERSION_PUT,
                 {"bucket": "b", "key": "k", "version": {"v": "v1", "b": [[digest, size]]}})


def test_coord19_offered_bytes_go_inline_without_a_read_back_and_replicate_forgets_them() -> None:
    """The supervisor offers a small write's bytes as its worker wrote them (``offer_blobs``): the request carries
    them and the verified reader is not asked; once replicated they are forgotten."""
    data = os.urandom(4096)
    digest = hashlib.sha256(data).digest()
    source = NoRead()
    replicator = Replicator(["b"], 2, Direct(None), None, blobs=source)  # type: ignore[arg-type]
    replicator.offer_blobs([(digest, data)])
    request = asyncio.run(replicator._request([put_event(digest, len(data))], len(data)))
    assert request.blobs == BlobTransfer.INLINE and source.reads == []
    assert [(b.content_hash, b.size, b.data) for b in request.inline_blobs] == [(digest, len(data), data)]

    async def sent(events: Sequence[Event]) -> None:  # the write's quorum, reached
        assert replicator._offered  # still there while the write is being replicated

    replicator._replicate = sent  # type: ignore[method-assign,assignment]
    asyncio.run(replicator.replicate([put_event(digest, len(data))]))
    assert replicator._offered == {}


def test_coord19_offered_bytes_that_do_not_match_their_hash_are_read_back_instead() -> None:
    data = os.urandom(4096)
    digest = hashlib.sha256(data).digest()
    source = NoRead(data)
    replicator = Replicator(["b"], 2, Direct(None), None, blobs=source)  # type: ignore[arg-type]
    replicator.offer_blobs([(digest, data[:-1] + bytes([data[-1] ^ 1]))])
    request = asyncio.run(replicator._request([put_event(digest, len(data))], len(data)))
    assert source.reads == [digest]  # the verified reader's copy, not the offered one
    assert [b.data for b in request.inline_blobs] == [data]


def test_coord19_offered_blobs_are_bounded_in_count_and_size() -> None:
    from s4.cluster.replicator import MAX_OFFERED, MAX_OFFERED_BYTES

    replicator = Replicator(["b"], 2, Direct(None), None, blobs=NoRead())  # type: ignore[arg-type]
    replicator.offer_blobs([(b"big", b"x" * (MAX_OFFERED_BYTES + 1))])
    assert replicator._offered == {}
    replicator.offer_blobs((i.to_bytes(4, "big"), b"d") for i in range(MAX_OFFERED + 10))
    assert len(replicator._offered) == MAX_OFFERED
    assert next(iter(replicator._offered)) == (10).to_bytes(4, "big")  # the oldest went first
