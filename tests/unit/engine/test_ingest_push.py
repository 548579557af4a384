"""engine/ingest.py ``on_stored``: a large body's chunks are named as soon as each is stored, so a pool node can
copy them to its peers while the upload still runs (engine/ports.py ``BlobPushPort``, cluster/blob_push.py). Before
this, nothing was told until the whole body was ingested and its write committed: the peers fetched every chunk
after the upload, in series with it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from s4.engine import Engine
from s4.engine.model import BlobLocation

pytestmark = pytest.mark.anyio
CHUNK = 64 * 1024


async def pieces(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


class Told:
    def __init__(self) -> None:
        self.locations: list[BlobLocation] = []

    def stored(self, location: BlobLocation) -> None:
        self.locations.append(location)


async def test_issue19_a_large_bodys_new_chunks_are_named_to_the_push_port_as_they_are_stored(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=CHUNK)
    told = Told()
    engine.blob_push = told
    body = os.urandom(2 * CHUNK + 1000)  # two whole chunks and a tail
    out = await engine.ingest(pieces(body))
    assert [loc.hash for loc in told.locations] == [bytes(d) for d, _ in out.blobs]
    assert [loc.to_record() for loc in told.locations] == out.blobs_at  # exactly where the event will say
    offset = 0
    for loc in told.locations:  # and each one's bytes are readable there already, in order
        assert engine.volumes.blob_reader(loc).read(0, loc.size) == body[offset:offset + loc.size]
        offset += loc.size
    assert offset == len(body)


async def test_issue19_small_bodies_and_chunks_already_held_are_not_named(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=CHUNK)
    told = Told()
    engine.blob_push = told
    await engine.ingest(pieces(os.urandom(CHUNK - 1)))  # under one chunk: its bytes travel inside ApplyEvents
    assert told.locations == []
    body = os.urandom(2 * CHUNK)
    await engine.create_bucket("bkt")
    await engine.put_object("bkt", "k", await engine.ingest(pieces(body)))
    assert len(told.locations) == 2
    await engine.ingest(pieces(body))  # the same chunks again: deduplicated, nothing new to copy
    assert len(told.locations) == 2


async def test_issue19_without_a_push_port_ingest_names_nothing(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(chunk_bytes=CHUNK)
    out = await engine.ingest(pieces(os.urandom(3 * CHUNK)))
    assert len(out.blobs) == 3


async def test_coord19_a_small_single_chunk_body_keeps_its_stored_bytes_only_when_asked(
        make_engine: Callable[..., Engine]) -> None:
    """``keep_small`` (a pool node's ingest): a body of one small chunk that was written keeps ``(sha256, bytes)``
    for its write's command, so the supervisor sends it inline without reading it back; nothing is kept for a body
    that filled a chunk, for one deduplicated onto a stored copy, or without ``keep_small`` (a single node)."""
    import hashlib

    engine = make_engine(chunk_bytes=CHUNK)
    small = os.urandom(4096)
    plain = await engine.ingestor.ingest(pieces(small))
    assert plain.kept == ()
    other = os.urandom(4096)
    kept = await engine.ingestor.ingest(pieces(other), keep_small=True)
    assert kept.kept == ((hashlib.sha256(other).digest(), other),)
    loc = BlobLocation.from_record(kept.blobs_at[0])
    assert engine.volumes.blob_reader(loc).read(0, loc.size) == other  # the bytes kept are the bytes stored
    await engine.create_bucket("bkt")
    await engine.put_object("bkt", "k", kept)  # (a single node's commit: the bytes kept are simply not used)
    again = await engine.ingestor.ingest(pieces(other), keep_small=True)
    assert again.kept == () and again.written == []  # deduplicated: nothing written, nothing to send from here
    large = await engine.ingestor.ingest(pieces(os.urandom(CHUNK + 100)), keep_small=True)
    assert large.kept == ()
