"""Issue 19, blob transfer, server side by direct calls (cluster/blob_server.py): PutBlob stores only bytes whose size
and sha256 match the header, in the local record format, fsynced and staged; refuses the rest leaving nothing
staged nor any intact record; answers already_had from the blobs view or the staged table; a full disk is
RESOURCE_EXHAUSTED. GetBlob serves verified pieces, DATA_LOSS (and a damage report) for a flipped byte, NOT_FOUND
and OUT_OF_RANGE. Plus the staged table's bounds."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.engine_io import put

from s4.cluster.blob_server import BlobService
from s4.cluster.blobs import PIECE_BYTES, StagedBlobs
from s4.cluster.wire.s4cluster.v1 import BlobHeader, GetBlobChunk, GetBlobRequest
from s4.engine import Engine, EngineOptions
from s4.engine.model import BlobLocation
from s4.engine.space import SpaceGuard
from s4.engine.views.blobs import is_damaged
from s4.engine.views.records import Tx
from s4.engine.volumes import pending as pending_module
from s4.engine.volumes.record import HEADER_BYTES, encode_record, record_bytes
from s4.engine.volumes.scanner import walk_volume

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(EngineOptions(tmp_path / "data"))
    yield eng
    eng.close()


@pytest.fixture
def service(engine: Engine) -> BlobService:
    return BlobService(engine.views, engine.volumes, space=engine.space, on_damage=engine.report_damage)


def body(size: int, seed: int = 1) -> bytes:
    out, block = bytearray(), hashlib.sha256(bytes([seed])).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


async def stream(data: bytes, piece: int = 100_003, consumed: list[int] | None = None) -> AsyncIterator[bytes]:
    for lo in range(0, len(data), piece):
        if consumed is not None:
            consumed.append(lo)
        yield data[lo:lo + piece]


def header(data: bytes, *, digest: bytes | None = None, size: int | None = None) -> BlobHeader:
    return BlobHeader(content_hash=digest or hashlib.sha256(data).digest(), size=len(data) if size is None else size)


def volume_bytes(engine: Engine) -> int:
    return sum(os.path.getsize(engine.volumes.directory / n) for n in engine.volumes.volume_names())


def intact_records(engine: Engine) -> int:
    return sum(walk_volume(engine.volumes.directory / n).records for n in engine.volumes.volume_names())


async def get_all(service: BlobService, digest: bytes, offset: int = 0, length: int = 0) -> list[GetBlobChunk]:
    request = GetBlobRequest(content_hash=digest, offset=offset, length=length)
    return [chunk async for chunk in service.get_blob("node-2", request)]


def flip(engine: Engine, loc: BlobLocation, at: int) -> None:
    with open(engine.volumes.directory / loc.volume, "r+b") as f:
        f.seek(loc.offset + at)
        byte = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([byte[0] ^ 0x5A]))


def blob_rec(engine: Engine, digest: bytes) -> list[Any] | None:
    with engine.views.read() as txn:
        return Tx(txn, engine.views.dbs).blob(digest)


# -- PutBlob --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 65_536, 300_000, 1_500_000])
async def test_put_blob_stores_the_local_record_format_fsynced_and_staged(engine: Engine, service: BlobService,
                                                                          size: int) -> None:
    data = body(size)
    digest = hashlib.sha256(data).digest()
    synced: list[tuple[str, ...]] = []
    real_sync = engine.volumes.sync
    engine.volumes.sync = lambda names: (synced.append(tuple(names)), real_sync(names))[1]  # type: ignore[method-assign]
    reply = await service.put_blob("node-2", header(data), stream(data))
    assert reply.stored and not reply.already_had
    loc = service.staged.get(digest)
    assert loc is not None and loc.size == size and synced == [(loc.volume,)]
    assert engine.volumes.verify_blob(loc) is None
    assert engine.volumes.read_blob(loc, 0, size) == data
    head, table = encode_record(data, digest)  # byte for byte what a local PUT's append writes
    assert engine.volumes.read(loc.volume, loc.offset - HEADER_BYTES, record_bytes(size)) == head + data + table
    assert intact_records(engine) == 1


async def test_put_blob_hash_mismatch_is_refused_and_nothing_staged(engine: Engine, service: BlobService) -> None:
    data = body(300_000)
    wrong = hashlib.sha256(b"other bytes").digest()
    with pytest.raises(GRPCError) as err:
        await service.put_blob("node-2", header(data, digest=wrong), stream(data))
    assert err.value.status is Status.DATA_LOSS and wrong.hex() in err.value.message
    assert len(service.staged) == 0 and service.staged.get(wrong) is None
    assert intact_records(engine) == 0  # the range holds no header claiming the wrong hash: garbage, never a record
    with pytest.raises(GRPCError) as err:
        await get_all(service, wrong)
    assert err.value.status is Status.NOT_FOUND


@pytest.mark.parametrize("claimed", [299_999, 300_001, 0])
async def test_put_blob_size_mismatch_is_refused_and_nothing_staged(engine: Engine, service: BlobService,
                                                                    claimed: int) -> None:
    data = body(300_000)
    with pytest.raises(GRPCError) as err:
        await service.put_blob("node-2", header(data, size=claimed), stream(data))
    assert err.value.status is Status.INVALID_ARGUMENT
    assert len(service.staged) == 0 and intact_records(engine) == 0


async def test_put_blob_refuses_a_bad_header(service: BlobService) -> None:
    for bad in (BlobHeader(content_hash=b"short", size=1),
                BlobHeader(content_hash=hashlib.sha256(b"x").digest(), size=1, offset=5),
                BlobHeader(content_hash=hashlib.sha256(b"x").digest(), size=service.max_blob_bytes + 1)):
        with pytest.raises(GRPCError) as err:
            await service.put_blob("node-2", bad, stream(b"x"))
        assert err.value.status is Status.INVALID_ARGUMENT


async def test_put_blob_answers_already_had_for_an_indexed_blob_without_reading(engine: Engine,
                                                                                 service: BlobService) -> None:
    data = body(200_000)
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "k", data)
    before, consumed = volume_bytes(engine), []
    reply = await service.put_blob("node-2", header(data), stream(data, consumed=consumed))
    assert reply.already_had and not reply.stored
    assert consumed == [] and volume_bytes(engine) == before and len(service.staged) == 0
    with pytest.raises(GRPCError) as err:  # the hash names a 200,000-byte blob: a header saying otherwise is wrong
        await service.put_blob("node-2", header(data, size=5), stream(data))
    assert err.value.status is Status.INVALID_ARGUMENT


async def test_put_blob_answers_already_had_for_a_staged_blob(engine: Engine, service: BlobService) -> None:
    data = body(70_000)
    assert (await service.put_blob("node-2", header(data), stream(data))).stored
    before = volume_bytes(engine)
    reply = await service.put_blob("node-3", header(data), stream(data))
    assert reply.already_had and volume_bytes(engine) == before


async def test_put_blob_stores_afresh_over_a_copy_marked_damaged(engine: Engine, service: BlobService) -> None:
    data = body(200_000)
    await engine.create_bucket("bkt")
    version = await put(engine, "bkt", "k", data)
    loc = engine.locate(version)[0]
    flip(engine, loc, 10)
    with pytest.raises(GRPCError) as err:
        await get_all(service, loc.hash)
    assert err.value.status is Status.DATA_LOSS
    wait_marked(engine, loc.hash)
    reply = await service.put_blob("node-2", header(data), stream(data))
    assert reply.stored
    fresh = service.staged.get(loc.hash)
    assert fresh is not None and fresh != loc and engine.volumes.read_blob(fresh, 0, len(data)) == data


async def test_put_blob_below_the_disk_reserve_is_resource_exhausted(engine: Engine, tmp_path: Path) -> None:
    real = os.statvfs(tmp_path)

    def tiny(path: str) -> Any:  # a filesystem with 1 MiB free and a 4 MiB reserve
        fields = list(real)
        fields[4] = (1 << 20) // real.f_frsize  # f_bavail
        return os.statvfs_result(fields)

    service = BlobService(engine.views, engine.volumes, space=SpaceGuard(tmp_path, 4 << 20, statvfs=tiny))
    data = body(100_000)
    before, consumed = volume_bytes(engine), []
    with pytest.raises(GRPCError) as err:
        await service.put_blob("node-2", header(data), stream(data, consumed=consumed))
    assert err.value.status is Status.RESOURCE_EXHAUSTED and "reserve" in err.value.message
    assert consumed == [] and volume_bytes(engine) == before and len(service.staged) == 0


async def test_put_blob_enospc_mid_write_is_resource_exhausted(engine: Engine, service: BlobService,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite, calls = os.pwrite, []

    def failing(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(pending_module.os, "pwrite", failing)
    data = body(300_000)
    with pytest.raises(GRPCError) as err:
        await service.put_blob("node-2", header(data), stream(data))
    assert err.value.status is Status.RESOURCE_EXHAUSTED
    monkeypatch.undo()
    assert len(service.staged) == 0 and intact_records(engine) == 0
    assert (await service.put_blob("node-2", header(data), stream(data))).stored  # the node goes on serving


async def test_put_blob_stream_cut_mid_transfer_keeps_nothing(engine: Engine, service: BlobService) -> None:
    data = body(500_000)

    async def cut() -> AsyncIterator[bytes]:
        yield data[:200_000]
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await service.put_blob("node-2", header(data), cut())
    assert len(service.staged) == 0 and intact_records(engine) == 0


# -- GetBlob --------------------------------------------------------------------------------------------------------
async def test_get_blob_streams_header_then_verified_pieces(engine: Engine, service: BlobService) -> None:
    data = body(2 * PIECE_BYTES + 12_345)
    digest = hashlib.sha256(data).digest()
    await service.put_blob("node-2", header(data), stream(data))
    chunks = await get_all(service, digest)
    assert chunks[0].header == BlobHeader(content_hash=digest, size=len(data), offset=0)
    pieces = [c.data for c in chunks[1:]]
    assert all(p is not None and 0 < len(p) <= PIECE_BYTES for p in pieces) and len(pieces) == 3
    assert b"".join(p for p in pieces if p) == data
    ranged = await get_all(service, digest, offset=PIECE_BYTES - 10, length=30)
    assert ranged[0].header is not None and ranged[0].header.offset == PIECE_BYTES - 10
    assert b"".join(c.data for c in ranged[1:] if c.data) == data[PIECE_BYTES - 10:PIECE_BYTES + 20]
    tail = await get_all(service, digest, offset=len(data))
    assert len(tail) == 1 and tail[0].header is not None
    with pytest.raises(GRPCError) as err:
        await get_all(service, digest, offset=len(data) + 1)
    assert err.value.status is Status.OUT_OF_RANGE


async def test_get_blob_of_an_absent_blob_is_not_found(service: BlobService) -> None:
    with pytest.raises(GRPCError) as err:
        await get_all(service, hashlib.sha256(b"nothing").digest())
    assert err.value.status is Status.NOT_FOUND
    with pytest.raises(GRPCError) as err:
        await get_all(service, b"not a hash")
    assert err.value.status is Status.INVALID_ARGUMENT


def wait_marked(engine: Engine, digest: bytes) -> list[Any]:
    """The damage is reported without waiting: poll (bounded) until the sequencer applied the mark."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = blob_rec(engine, digest)
        if rec is not None and is_damaged(rec):
            return rec
        time.sleep(0.01)
    raise AssertionError(f"blob {digest.hex()} was never marked damaged")


async def test_get_blob_of_a_flipped_byte_is_data_loss_and_marks_the_blob(engine: Engine,
                                                                          service: BlobService) -> None:
    data = body(3 * PIECE_BYTES)
    await engine.create_bucket("bkt")
    # a 3 MiB object is one 4 MiB-max chunk: one blob, three pieces
    version = await put(engine, "bkt", "k", data)
    loc = engine.locate(version)[0]
    flip(engine, loc, PIECE_BYTES + 5)  # in the second piece: the first is sent, then the call fails
    received: list[GetBlobChunk] = []
    with pytest.raises(GRPCError) as err:
        async for chunk in service.get_blob("node-2", GetBlobRequest(content_hash=loc.hash)):
            received.append(chunk)
    assert err.value.status is Status.DATA_LOSS and "checksum" in err.value.message
    assert b"".join(c.data for c in received if c.data) == data[:PIECE_BYTES]  # never a wrong byte
    rec = wait_marked(engine, loc.hash)
    assert [rec[0], rec[1]] == [loc.volume, loc.offset]
    with pytest.raises(GRPCError) as err:  # now marked: refused before any byte
        await get_all(service, loc.hash)
    assert err.value.status is Status.DATA_LOSS and "marked damaged" in err.value.message


async def test_get_blob_of_a_damaged_small_blob_fails_before_the_header(engine: Engine,
                                                                        service: BlobService) -> None:
    data = body(5000)
    await service.put_blob("node-2", header(data), stream(data))
    loc = service.staged.get(hashlib.sha256(data).digest())
    assert loc is not None
    flip(engine, loc, 4999)
    received: list[GetBlobChunk] = []
    with pytest.raises(GRPCError) as err:
        async for chunk in service.get_blob("node-2", GetBlobRequest(content_hash=loc.hash)):
            received.append(chunk)
    assert err.value.status is Status.DATA_LOSS and received == []
    assert service.staged.get(loc.hash) is None  # a damaged staged copy is no longer offered


async def test_get_blob_reads_on_where_the_blob_lives_now_when_its_copy_fails_mid_stream(
        engine: Engine, service: BlobService) -> None:
    data = body(3 * PIECE_BYTES)
    digest = hashlib.sha256(data).digest()
    await service.put_blob("node-2", header(data), stream(data))
    staged = service.staged.get(digest)
    assert staged is not None
    chunks = service.get_blob("node-2", GetBlobRequest(content_hash=digest))
    first = [await anext(chunks), await anext(chunks)]
    flip(engine, staged, PIECE_BYTES + 5)  # the staged copy goes bad under the reader ...
    await engine.create_bucket("bkt")
    version = await put(engine, "bkt", "k", data)  # ... while a local write indexes a good copy elsewhere
    assert engine.locate(version)[0] != staged
    rest = [chunk async for chunk in chunks]
    assert b"".join(c.data for c in first + rest if c.data) == data
    assert service.staged.get(digest) is None


# -- the staged table -----------------------------------------------------------------------------------------------
def loc(n: int, size: int = 10) -> BlobLocation:
    return BlobLocation(hashlib.sha256(bytes([n])).digest(), "w00-00000001.vol", 52 + 100 * n, size)


def test_staged_blobs_bounded_by_entries_bytes_and_age() -> None:
    now = [0.0]
    staged = StagedBlobs(max_entries=3, max_bytes=100, max_age_s=60, clock=lambda: now[0])
    for n in range(4):
        staged.add(loc(n))
    assert len(staged) == 3 and staged.get(loc(0).hash) is None and staged.get(loc(3).hash) == loc(3)
    assert staged.dropped == 1
    staged.add(loc(9, size=80))  # 10 + 10 + 80 = 100: fits; one more byte would not
    assert staged.total_bytes == 100 and len(staged) == 3
    staged.add(loc(8, size=1))
    assert staged.get(loc(1).hash) is None and staged.total_bytes <= 100
    now[0] = 30.0
    staged.add(loc(7))
    now[0] = 61.0  # everything but loc(7) is older than a minute
    assert [staged.get(loc(n).hash) for n in (2, 3, 8, 9)] == [None] * 4 and staged.get(loc(7).hash) == loc(7)
    assert staged.volumes() == {loc(7).volume}
    staged.release([loc(7).hash])
    assert len(staged) == 0 and staged.total_bytes == 0


def test_staged_blobs_keep_one_blob_larger_than_the_byte_bound() -> None:
    staged = StagedBlobs(max_entries=10, max_bytes=5)
    staged.add(loc(1, size=50))
    assert staged.get(loc(1).hash) == loc(1, size=50)  # the newest entry is never evicted by its own size

