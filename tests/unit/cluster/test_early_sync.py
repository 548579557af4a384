"""Issue 19, a replica's inline blob synced early (cluster/early_sync.py): ``store_inline`` starts the blob's volume
fdatasync on a helper thread as soon as it is written; the batch applying the events still syncs the volume, through
the blob service's store (``VolumeStore.delegates``), so a failed early sync fails the batch instead of being hidden
by a second fdatasync on another descriptor (Linux reports a write-back error once). Two real engines in tmp dirs,
the peer's store a separate ``w1000`` store as cluster/wiring.py opens it; calls made in-process."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.engine_io import get, put

from s4.cluster.blob_server import BlobService
from s4.cluster.catch_up import EventsService, replicated
from s4.cluster.early_sync import EarlySync
from s4.cluster.replicator import Replicator
from s4.cluster.wiring import CLUSTER_VOLUMES_WORKER, ReplicaApplier
from s4.engine import Engine, EngineOptions, ErrorCode, S3Error
from s4.engine.local_commit import LocalCommitPath
from s4.engine.volumes.store import VolumeStore, VolumeSyncError
from s4.journal.events import Event

_real_fdatasync = os.fdatasync


@dataclass
class Peer:
    engine: Engine
    volumes: VolumeStore  # the blob service's (w1000), as wire_node opens it
    early: EarlySync
    blobs: BlobService
    service: EventsService


def peer(directory: Path, early_sync: bool = True) -> Peer:
    path = LocalCommitPath()
    path.pooled = True
    engine = Engine(EngineOptions(directory), path)
    assert path.sequencer is not None and engine.journal is not None
    volumes = VolumeStore(path.sequencer.volumes.directory, worker=CLUSTER_VOLUMES_WORKER)
    path.sequencer.volumes.delegates[CLUSTER_VOLUMES_WORKER] = volumes
    early = EarlySync(volumes)
    blobs = BlobService(engine.views, volumes, space=engine.space, early_sync=early if early_sync else None)
    service = EventsService(engine.journal, ReplicaApplier(path, blobs.staged), None, inline=blobs)
    return Peer(engine, volumes, early, blobs, service)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Engine, BlobService, Peer]]:
    path = LocalCommitPath()
    path.pooled = True
    a = Engine(EngineOptions(tmp_path / "a"), path)
    b = peer(tmp_path / "b")
    yield a, BlobService(a.views, a.volumes, space=a.space), b
    b.early.close()
    b.engine.close()
    b.volumes.close()
    a.close()


def logical_events(engine: Engine) -> list[Event]:
    assert engine.journal is not None
    return [e for e in engine.journal.read(1) if replicated(e)]


def _w1000(fd: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f"w{CLUSTER_VOLUMES_WORKER}-")
    except OSError:
        return False


def test_issue19_an_inline_blob_s_volume_sync_starts_when_it_is_written_and_the_batch_syncs_it_again(
        pair: tuple[Engine, BlobService, Peer], monkeypatch: pytest.MonkeyPatch) -> None:
    a, a_blobs, b = pair
    data = os.urandom(4096)
    threads: list[str] = []

    def fdatasync(fd: int) -> None:
        if _w1000(fd):
            threads.append(threading.current_thread().name)
        _real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def main() -> None:
        await a.create_bucket("bkt")
        await put(a, "bkt", "k", data)
        request = await Replicator(["node-b"], 2, None, None, blobs=a_blobs)._request(  # type: ignore[arg-type]
            logical_events(a), len(data))
        reply = await b.service.apply_events("node-a", request)
        assert reply.applied == len(request.events)
        assert await get(b.engine, "bkt", "k") == data

    asyncio.run(main())
    b.early.close()
    assert b.early.synced == 1 and "s4-early-sync" in threads
    assert any(name != "s4-early-sync" for name in threads), f"the batch did not sync the volume itself: {threads}"
    (loc,) = [b.blobs.holds(hashlib.sha256(data).digest())]
    assert loc is not None and loc.volume.startswith(f"w{CLUSTER_VOLUMES_WORKER}-")


def test_issue19_a_failed_early_sync_fails_the_batch_naming_its_blob(
        pair: tuple[Engine, BlobService, Peer], monkeypatch: pytest.MonkeyPatch) -> None:
    """The early sync meets a write-back error (EIO) and the kernel would answer the batch's own fdatasync, on
    another descriptor, with success: the batch must fail all the same, nothing of it journaled or visible."""
    a, a_blobs, b = pair
    data = os.urandom(4096)
    early_failed = threading.Event()

    def fdatasync(fd: int) -> None:
        if _w1000(fd):
            if threading.current_thread().name == "s4-early-sync" and not early_failed.is_set():
                early_failed.set()
                raise OSError(errno.EIO, "Input/output error")
            early_failed.wait(5)  # the batch's sync after the early one (the order this test is about)
        _real_fdatasync(fd)

    async def main() -> None:
        await a.create_bucket("bkt")
        await put(a, "bkt", "k", data)
        request = await Replicator(["node-b"], 2, None, None, blobs=a_blobs)._request(  # type: ignore[arg-type]
            logical_events(a), len(data))
        assert b.engine.journal is not None
        seq = b.engine.journal.last_seq
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        with pytest.raises(S3Error) as refused:
            await b.service.apply_events("node-a", request)
        assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
        assert early_failed.is_set()
        assert b.engine.journal.last_seq == seq  # cut back out of the journal
        with pytest.raises(S3Error) as missing:
            b.engine.head_object("bkt", "k")
        assert missing.value.code is ErrorCode.NO_SUCH_BUCKET

    asyncio.run(main())


def test_issue19_a_delegated_volume_is_synced_through_the_store_that_appends_it(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    engine_store = VolumeStore(tmp_path / "volumes")
    owner = VolumeStore(tmp_path / "volumes", worker=CLUSTER_VOLUMES_WORKER)
    engine_store.delegates[CLUSTER_VOLUMES_WORKER] = owner
    name = owner.append(b"a peer's blob", b"\x01" * 32).volume
    fails = {"left": 1}

    def fdatasync(fd: int) -> None:
        if fails["left"] and _w1000(fd):
            fails["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        _real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(VolumeSyncError):
        owner.sync([name])
    with pytest.raises(VolumeSyncError):  # the engine's store, on its own descriptor, would have been told success
        engine_store.sync([name])
    engine_store.close()
    owner.close()


def test_issue19_two_syncs_of_one_volume_never_run_at_once_and_the_second_sees_the_first_s_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first sync fails after waiting for a second one to enter fdatasync beside it (it never may): the second
    raises the recorded failure without an fdatasync of its own."""
    store = VolumeStore(tmp_path / "volumes")
    name = store.append(b"bytes", b"\x01" * 32).volume
    lock = threading.Lock()
    inside, most, calls = [0], [0], [0]
    first_in, second_in = threading.Event(), threading.Event()

    def fdatasync(fd: int) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            calls[0] += 1
            first = calls[0] == 1
        try:
            if first:
                first_in.set()
                second_in.wait(0.5)
                raise OSError(errno.EIO, "Input/output error")
            second_in.set()
            _real_fdatasync(fd)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            store.sync([name])
        except VolumeSyncError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(2)]
    threads[0].start()
    assert first_in.wait(5)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert len(errors) == 2 and most[0] == 1 and calls[0] == 1
    store.close()
