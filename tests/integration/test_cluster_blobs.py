"""Issue 19, blob transfer over real sockets: two nodes' grpclib ClusterServers in this process on 127.0.0.1 and
127.0.0.2 (distinct free ports, each with its own data directory, engine and volumes) move blobs both ways with
PutBlob (send_blob) and GetBlob (fetch_blob), byte-exact; a flipped byte in the sender's volume never travels; a
transfer killed mid-stream leaves nothing staged; fetch_from_any skips a replica that cannot deliver."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.cluster_pool import pool_configs

from s4.cluster.blob_client import BlobTransferError, BlobUnavailable, fetch_blob, fetch_from_any, send_blob
from s4.cluster.blob_server import BlobService
from s4.cluster.blobs import PIECE_BYTES
from s4.cluster.config import ClusterConfig
from s4.cluster.grpc_server import ClusterServer, Handlers
from s4.cluster.peers import PeerPool
from s4.cluster.wire.s4cluster.v1 import BlobHeader, GetBlobChunk, GetBlobRequest, PutBlobReply
from s4.engine import Engine, EngineOptions
from s4.engine.model import BlobLocation
from s4.engine.space import SpaceGuard
from s4.engine.volumes.record import DamagedBlob
from s4.engine.volumes.scanner import walk_volume

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # node-3 is in the pool but never started
MiB = 1024 * 1024



def configs() -> list[ClusterConfig]:
    return pool_configs(HOSTS)


class Status_:
    def status(self) -> tuple[int, int]:
        return 1, 0

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


@dataclass
class Handler:
    """The blob half of a ReplicationHandler, with a tap on what PutBlob received and when it finished."""

    service: BlobService
    received: list[bytes] = field(default_factory=list)
    finished: list[BaseException | None] = field(default_factory=list)

    async def put_blob(self, caller: str, header: BlobHeader, data: AsyncIterator[bytes]) -> PutBlobReply:
        async def tap() -> AsyncIterator[bytes]:
            async for piece in data:
                self.received.append(piece)
                yield piece

        try:
            reply = await self.service.put_blob(caller, header, tap())
        except BaseException as exc:
            self.finished.append(exc)
            raise
        self.finished.append(None)
        return reply

    def get_blob(self, caller: str, request: GetBlobRequest) -> AsyncIterator[GetBlobChunk]:
        return self.service.get_blob(caller, request)

    def __getattr__(self, name: str) -> Any:
        raise GRPCError(Status.UNIMPLEMENTED, name)


@dataclass
class Node:
    engine: Engine
    service: BlobService
    handler: Handler
    pool: PeerPool

    def intact_records(self) -> int:
        directory = self.engine.volumes.directory
        return sum(walk_volume(directory / n).records for n in self.engine.volumes.volume_names())

    async def seed(self, data: bytes) -> BlobLocation:
        """Store a blob locally (any size: a 64 MiB blob cannot come from a PUT, whose chunks are 4 MiB)."""
        digest = hashlib.sha256(data).digest()

        async def pieces() -> AsyncIterator[bytes]:
            for lo in range(0, len(data), 4 * MiB):
                yield data[lo:lo + 4 * MiB]

        assert (await self.service.put_blob("test", BlobHeader(content_hash=digest, size=len(data)), pieces())).stored
        loc = self.service.staged.get(digest)
        assert loc is not None
        return loc

    def sha256_of(self, digest: bytes) -> tuple[int, str]:
        """(size, sha256) of the local copy, read back piece by piece through the verified reader."""
        loc = self.service.holds(digest)
        assert loc is not None, "no local copy"
        reader, h = self.engine.volumes.blob_reader(loc), hashlib.sha256()
        for lo in range(0, loc.size, PIECE_BYTES):
            h.update(reader.read(lo, min(PIECE_BYTES, loc.size - lo)))
        return loc.size, h.hexdigest()


def run_two_nodes(tmp_path: Path, body: Callable[[Node, Node], Awaitable[None]]) -> None:
    cfgs = configs()

    async def main() -> None:
        nodes: list[Node] = []
        servers: list[ClusterServer] = []
        try:
            for i in (0, 1):
                engine = Engine(EngineOptions(tmp_path / f"node-{i + 1}"))
                service = BlobService(engine.views, engine.volumes, space=engine.space,
                                      on_damage=engine.report_damage)
                handler = Handler(service)
                nodes.append(Node(engine, service, handler, PeerPool(cfgs[i], timeout_s=5.0)))
                server = ClusterServer(cfgs[i], Status_(), Handlers(blobs=handler))
                await server.start()
                servers.append(server)
            await asyncio.wait_for(body(nodes[0], nodes[1]), timeout=120)
        finally:
            for node in nodes:
                node.pool.close()
            for server in servers:
                await server.stop()
            for node in nodes:
                node.engine.close()

    asyncio.run(main())


def blob(size: int, seed: int) -> bytes:
    """Incompressible-looking bytes, fast to make: a 1 MiB random block repeated with a per-MiB counter."""
    base = os.urandom(min(size, MiB) or 1)
    out = bytearray()
    n = 0
    while len(out) < size:
        out += (n.to_bytes(4, "little") + bytes([seed])) + base
        n += 1
    return bytes(out[:size])


@pytest.mark.parametrize("size", [0, 4096, 5 * MiB, 64 * MiB])
def test_issue19_blobs_move_both_ways_byte_exact(tmp_path: Path, size: int) -> None:
    async def body(one: Node, two: Node) -> None:
        a, b = blob(size, 1), blob(size, 2)
        a_digest, b_digest = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
        loc_a = await one.seed(a)
        # 1 -> 2 by PutBlob: node-1 streams its copy through its verified reader
        reply = await send_blob(one.pool, "node-2", a_digest, size, one.engine.volumes.blob_reader(loc_a))
        assert reply.stored and not reply.already_had
        assert two.sha256_of(a_digest) == (size, hashlib.sha256(a).hexdigest())
        assert b"".join(two.handler.received) == a  # exactly the bytes, nothing more
        # 2 -> 1 by GetBlob: node-1 forgets its copy (unstaged: orphaned bytes) and fetches node-2's
        one.service.staged.release([a_digest])
        fetched = await fetch_blob(one.pool, "node-2", a_digest, one.service)
        assert fetched.size == size and fetched != loc_a and one.service.staged.get(a_digest) == fetched
        assert one.sha256_of(a_digest) == (size, hashlib.sha256(a).hexdigest())
        # 2 -> 1 by PutBlob (an empty b is a: node-1 holds it already)
        loc_b = two.service.holds(b_digest) or await two.seed(b)
        reply = await send_blob(two.pool, "node-1", b_digest, size, two.engine.volumes.blob_reader(loc_b))
        assert (reply.stored, reply.already_had) == ((False, True) if size == 0 else (True, False))
        assert one.sha256_of(b_digest) == (size, hashlib.sha256(b).hexdigest())
        # sent again: answered already_had, even while the sender is still streaming a large blob
        again = await send_blob(two.pool, "node-1", b_digest, size, two.engine.volumes.blob_reader(loc_b))
        assert again.already_had and not again.stored

    run_two_nodes(tmp_path, body)


def flip(node: Node, loc: BlobLocation, at: int) -> None:
    with open(node.engine.volumes.directory / loc.volume, "r+b") as f:
        f.seek(loc.offset + at)
        byte = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([byte[0] ^ 0x01]))


def test_issue19_flipped_byte_in_the_senders_volume_never_travels(tmp_path: Path) -> None:
    async def body(one: Node, two: Node) -> None:
        data = blob(3 * MiB, 3)
        digest = hashlib.sha256(data).digest()
        loc = await one.seed(data)
        flip(one, loc, 2 * MiB + 100)  # in the third piece
        before = two.intact_records()
        with pytest.raises(DamagedBlob):  # PutBlob: the sender's own read refuses the piece
            await send_blob(one.pool, "node-2", digest, len(data), one.engine.volumes.blob_reader(loc))
        with pytest.raises(BlobTransferError) as err:  # GetBlob: the server's read refuses it
            await fetch_blob(two.pool, "node-1", digest, two.service)
        assert err.value.status is Status.DATA_LOSS
        sent = b"".join(two.handler.received)
        assert data.startswith(sent) and len(sent) <= 2 * MiB  # a prefix of the true bytes, never a wrong one
        await _until(lambda: len(two.handler.finished) == 1)
        assert two.service.holds(digest) is None and len(two.service.staged) == 0
        assert two.intact_records() == before

    run_two_nodes(tmp_path, body)


async def _until(ok: Callable[[], bool]) -> None:
    """Poll (bounded) for something the other side of a socket does."""
    for _ in range(1000):
        if ok():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_issue19_transfer_killed_mid_stream_leaves_nothing_staged(tmp_path: Path) -> None:
    async def body(one: Node, two: Node) -> None:
        data = blob(8 * MiB, 4)
        digest = hashlib.sha256(data).digest()
        loc = await one.seed(data)
        real = one.engine.volumes.blob_reader(loc)
        gate = asyncio.Event()
        release = threading.Event()
        loop = asyncio.get_running_loop()

        class Stalling:
            """Reads the first 2 MiB, then stalls (in the reader's thread, the stream left open, so the pieces
            already sent arrive): the transfer is mid-stream when it is killed."""

            def read(self, lo: int, n: int) -> bytes:
                if lo >= 2 * MiB:
                    loop.call_soon_threadsafe(gate.set)
                    release.wait(60)  # bounded; released once the sender is cancelled
                    raise _Stall()
                return real.read(lo, n)

        sender = asyncio.ensure_future(send_blob(one.pool, "node-2", digest, len(data), Stalling()))
        sender.add_done_callback(lambda _: gate.set())
        await gate.wait()
        await _until(lambda: len(two.handler.received) >= 2)
        sender.cancel()
        release.set()
        with contextlib.suppress(asyncio.CancelledError, _Stall):
            await sender
        await _until(lambda: len(two.handler.finished) == 1)
        assert two.handler.finished[0] is not None  # the handler saw the stream die
        assert two.service.holds(digest) is None and len(two.service.staged) == 0 and two.intact_records() == 0
        # and the same blob goes through afterwards
        assert (await send_blob(one.pool, "node-2", digest, len(data), one.engine.volumes.blob_reader(loc))).stored
        assert two.sha256_of(digest) == (len(data), hashlib.sha256(data).hexdigest())

    run_two_nodes(tmp_path, body)


class _Stall(Exception):
    pass


def test_issue19_fetch_from_any_tries_replicas_in_turn(tmp_path: Path) -> None:
    async def body(one: Node, two: Node) -> None:
        data = blob(MiB + 7, 5)
        digest = hashlib.sha256(data).digest()
        with pytest.raises(BlobUnavailable) as err:  # node-3 is down, node-2 lacks it
            await fetch_from_any(one.pool, ["node-3", "node-2"], digest, one.service)
        failures = err.value.failures
        assert set(failures) == {"node-3", "node-2"}
        assert isinstance(failures["node-2"], BlobTransferError) and failures["node-2"].status is Status.NOT_FOUND
        await two.seed(data)
        loc = await fetch_from_any(one.pool, ["node-3", "node-2"], digest, one.service)
        assert one.sha256_of(digest) == (len(data), hashlib.sha256(data).hexdigest()) and loc.size == len(data)
        assert await fetch_from_any(one.pool, ["node-3"], digest, one.service) == loc  # held: no call at all
        # this node's own disk is full: a clear error at once, not "unavailable from every replica"
        other = blob(1000, 6)
        await two.seed(other)
        real = os.statvfs(tmp_path)
        one.service.space = SpaceGuard(tmp_path, 4 * MiB, statvfs=lambda _: os.statvfs_result(
            [*real[:4], MiB // real.f_frsize, *real[5:]]))
        with pytest.raises(BlobTransferError) as full:
            await fetch_from_any(one.pool, ["node-2", "node-3"], hashlib.sha256(other).digest(), one.service)
        assert full.value.status is Status.RESOURCE_EXHAUSTED and "reserve" in str(full.value)

    run_two_nodes(tmp_path, body)
