"""Issue 19, catch-up server side and the server's lifetime: ``ClusterServer.stop()`` ends connections already
open (grpclib's ``close`` alone kept serving them), ``PeerPool.forget`` drops one peer's channel, and
``journal_batches`` streams a real journal after a seq in bounded batches of logical events only, with
``through_seq`` covering skipped node-local events and ``head_seq`` the head when the stream started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from grpclib.exceptions import GRPCError, StreamTerminatedError
from helpers.cluster_pool import pool_configs

from s4.cluster.catch_up import BatchLimits, EventsService, journal_batches
from s4.cluster.config import ClusterConfig
from s4.cluster.grpc_server import ClusterServer, Handlers, _ClosingServer
from s4.cluster.peers import PeerPool
from s4.cluster.wire.s4cluster.v1 import CatchUpBatch, CatchUpRequest
from s4.journal import Journal
from s4.journal.codec import decode_event
from s4.journal.events import EventDraft, EventType

HOSTS = ("127.0.0.1", "127.0.0.2")



def configs() -> list[ClusterConfig]:
    return pool_configs(HOSTS, replication_factor=2, write_quorum=1, read_quorum=1)


class Local:
    def status(self) -> tuple[int, int]:
        return 1, 7

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


def test_issue19_server_stop_closes_connections_already_open() -> None:
    """Before the fix a channel connected before stop() still got Ping answers from the stopped node."""
    one, two = configs()

    async def main() -> None:
        server = ClusterServer(two, Local())
        await server.start()
        async with PeerPool(one, timeout_s=2.0) as pool:
            assert (await pool.ping("node-2", 1, 0)).journal_seq == 7  # the channel is connected now
            await asyncio.wait_for(server.stop(), 5)
            with pytest.raises((OSError, GRPCError, StreamTerminatedError, asyncio.TimeoutError)):
                await pool.ping("node-2", 1, 0)
            # and a fresh channel cannot reach it either
            pool.forget("node-2")
            with pytest.raises((OSError, GRPCError, StreamTerminatedError, asyncio.TimeoutError)):
                await pool.ping("node-2", 1, 0)

    asyncio.run(main())


def test_issue19_closing_server_still_makes_its_protocols_in_one_place() -> None:
    """_ClosingServer overrides grpclib's private _protocol_factory: fail loudly when grpclib renames it."""
    assert callable(getattr(_ClosingServer.__mro__[1], "_protocol_factory", None))


def test_issue19_peer_pool_forget_drops_one_channel() -> None:
    one, _ = configs()

    async def main() -> None:
        async with PeerPool(one) as pool:
            first = pool.stub("node-2")
            assert pool.stub("node-2") is first
            pool.forget("node-2")
            assert pool.stub("node-2") is not first
            pool.forget("node-9")  # unknown: nothing to do

    asyncio.run(main())


def journal_with(tmp_path: Path, types: list[EventType]) -> Journal:
    journal = Journal(tmp_path / "journal", origin="node-2")
    journal.write_batch([EventDraft(t, {"bucket": f"b{i}", "pad": "x" * 100}) for i, t in enumerate(types)])
    return journal


async def collect(journal: Journal, after: int, limits: BatchLimits) -> list[CatchUpBatch]:
    return [b async for b in journal_batches(journal, after, limits)]


def test_issue19_catch_up_streams_logical_events_in_bounded_batches(tmp_path: Path) -> None:
    types = [EventType.BUCKET_CREATED, EventType.BLOB_MOVED, EventType.OBJECT_VERSION_PUT,
             EventType.VOLUME_SEALED, EventType.OBJECT_TAGS_SET] * 20  # seqs 1..100, 60 logical
    journal = journal_with(tmp_path, types)
    try:
        batches = asyncio.run(collect(journal, 0, BatchLimits(events=7, bytes=1 << 20, scan=1000)))
        seqs = [decode_event(bytes(e)).seq for b in batches for e in b.events]
        logical = [i + 1 for i, t in enumerate(types) if not str(t).startswith(("blob.", "volume."))]
        assert seqs == logical  # every logical event once, in order; no blob.* / volume.*
        assert all(len(b.events) <= 7 for b in batches)
        assert all(b.head_seq == 100 for b in batches) and batches[-1].through_seq == 100
        throughs = [b.through_seq for b in batches]
        assert throughs == sorted(set(throughs))
        # bytes bound: one envelope is ~130 bytes, so 300 bytes holds two
        small = asyncio.run(collect(journal, 40, BatchLimits(events=100, bytes=300, scan=1000)))
        assert all(1 <= len(b.events) <= 3 for b in small[:-1])
        assert [decode_event(bytes(e)).seq for b in small for e in b.events] == [s for s in logical if s > 40]
        # scan bound: a run of node-local events still reports progress (empty batches, through_seq moving)
        scan = asyncio.run(collect(journal, 0, BatchLimits(events=100, bytes=1 << 20, scan=2)))
        assert [b.through_seq for b in scan] == list(range(2, 101, 2))
        # nothing after the head: one empty batch saying where the head is
        (tail,) = asyncio.run(collect(journal, 100, BatchLimits()))
        assert (list(tail.events), tail.through_seq, tail.head_seq) == ([], 100, 100)
        (ahead,) = asyncio.run(collect(journal, 500, BatchLimits()))
        assert (ahead.through_seq, ahead.head_seq) == (500, 100)
    finally:
        journal.close()


def test_issue19_catch_up_over_the_wire_honours_the_callers_batch_size(tmp_path: Path) -> None:
    one, two = configs()
    journal = journal_with(tmp_path, [EventType.BUCKET_CREATED] * 30)

    async def main() -> list[Any]:
        server = ClusterServer(two, Local(), Handlers(events=EventsService(journal)))
        await server.start()
        try:
            async with PeerPool(one, timeout_s=5.0) as pool:
                return [b async for b in pool.stub("node-2").catch_up(CatchUpRequest(after_seq=4, batch_events=8))]
        finally:
            await server.stop()

    try:
        batches = asyncio.run(main())
    finally:
        journal.close()
    assert [len(b.events) for b in batches] == [8, 8, 8, 2]
    assert [decode_event(bytes(e)).seq for b in batches for e in b.events] == list(range(5, 31))
