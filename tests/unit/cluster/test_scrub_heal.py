"""Issue 20, scrub healing (cluster/scrub_heal.py ``BlobHealer``): a bad or missing local copy of a blob is replaced
by a verified copy from a replica and the index repointed through the journal; reads that meet the bad copy are
served from the healed one (read failover); a replica's bad copy, a copy of the wrong size and a replica without
the blob are skipped; with no good copy anywhere the blob stays marked and reads fail as on a single node.

A real engine in a tmp dir; the replicas are simulated (``SimSource``): each "peer" writes what it is scripted to
give (the right bytes, wrong bytes under the right name, bytes of another size, nothing, or a full disk) into this
node's volumes the way the blob service stores a fetched blob (``VolumeStore(worker=1000)``, fsynced)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib.const import Status
from helpers.engine_io import put, read
from helpers.views_compare import check_live_vs_rebuild, dump_views, refcount_problems
from prometheus_client import CollectorRegistry, generate_latest

from s4.api.scrub_metrics import ScrubCollector, ScrubMetrics
from s4.cluster.blob_client import BlobTransferError
from s4.cluster.scrub_heal import BlobHealer, replica_order, verify_copy
from s4.cluster.wiring import CLUSTER_VOLUMES_WORKER
from s4.engine import Engine, EngineOptions
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.jobs.scrub_progress import ScrubProgress
from s4.engine.jobs.service import for_engine
from s4.engine.model import BlobLocation, ObjectVersion
from s4.engine.views.blobs import damaged_locations, is_damaged
from s4.engine.views.env import unpack
from s4.engine.volumes.record import BLOCK_BYTES
from s4.engine.volumes.store import VolumeStore

BODY = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB blocks in one chunk


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make() -> Engine:
        engines.append(Engine(EngineOptions(tmp_path / "data")))
        return engines[-1]

    yield make
    for engine in engines:
        with contextlib.suppress(Exception):  # closed by the test already
            engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@dataclass
class SimSource:
    """Scripted replicas: ``peers[name]`` is what that replica gives (good, bad, short, none, down, full)."""

    engine: Engine
    data: bytes
    peers: dict[str, str]
    asked: list[str] = field(default_factory=list)
    discarded: list[BlobLocation] = field(default_factory=list)
    adopted_: list[bytes] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, fetches wait for it (concurrency tests)

    def __post_init__(self) -> None:
        self.volumes = VolumeStore(self.engine.volumes.directory, worker=CLUSTER_VOLUMES_WORKER)

    async def fetch(self, peer: str, digest: bytes) -> BlobLocation:
        self.asked.append(peer)
        if self.gate is not None:
            await self.gate.wait()
        kind = self.peers[peer]
        if kind == "none":
            raise BlobTransferError(peer, "NOT_FOUND: no such blob", Status.NOT_FOUND)
        if kind == "down":
            raise BlobTransferError(peer, "no progress before the deadline", Status.DEADLINE_EXCEEDED)
        if kind == "full":
            raise BlobTransferError(peer, "RESOURCE_EXHAUSTED: disk full", Status.RESOURCE_EXHAUSTED)
        payload = {"good": self.data, "bad": bytes([self.data[0] ^ 1]) + self.data[1:],
                   "short": self.data[:-1]}[kind]
        loc = self.volumes.append(payload, digest)  # a record named after the digest, whatever its bytes
        self.volumes.sync((loc.volume,))
        return loc

    def discard(self, location: BlobLocation) -> None:
        self.discarded.append(location)

    def adopted(self, digest: bytes) -> None:
        self.adopted_.append(digest)

    def close(self) -> None:
        self.volumes.close()


def flip(engine: Engine, loc: BlobLocation, at: int) -> None:
    path = Path(engine.volumes.directory) / loc.volume
    with open(path, "r+b") as f:
        f.seek(loc.offset + at)
        byte = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([byte[0] ^ 0x5A]))


def blob_rec(engine: Engine, digest: bytes) -> list:
    return unpack(dump_views(engine.views)["blobs"][digest])  # type: ignore[no-any-return]


def healer(engine: Engine, source: SimSource, order: list[str] | None = None) -> BlobHealer:
    progress = for_engine(engine).scrub
    return BlobHealer(engine.views, engine.volumes, engine.sequencer.submit, source,
                      lambda: list(order if order is not None else source.peers), progress)


def check_views(engine: Engine, tmp_path: Path) -> None:
    assert engine.journal is not None
    check_live_vs_rebuild(engine.views, engine.journal, tmp_path / "rebuilt")
    assert refcount_problems(engine.views) == []


def bad_blobs(engine: Engine) -> int:
    return sum(s.get("bad_blobs", 0) for s in
               (unpack(v) for v in dump_views(engine.views)["volumes"].values()))


async def stored(engine: Engine, key: str = "k") -> tuple[ObjectVersion, BlobLocation]:
    await engine.create_bucket("bkt")
    version = await put(engine, "bkt", key, BODY)
    return version, engine.locate(version)[0]


def test_issue20_heal_replaces_a_flipped_blob_with_a_replica_copy_and_survives_restart(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine()
    source = SimSource(engine, BODY, {"node-2": "good"})

    async def main() -> tuple[ObjectVersion, BlobLocation]:
        version, loc = await stored(engine)
        flip(engine, loc, 2 * BLOCK_BYTES + 5)
        assert await healer(engine, source).repair(loc, "block checksum mismatch", "scrub") is True
        return version, loc

    version, bad = asyncio.run(main())
    source.close()
    rec = blob_rec(engine, bad.hash)
    assert [rec[0], rec[1]] != [bad.volume, bad.offset] and rec[0].startswith("w1000-")
    assert not is_damaged(rec) and damaged_locations(rec) == [[bad.volume, bad.offset]]
    assert bad_blobs(engine) == 0
    assert engine.read_small(version, 0, version.size) == BODY
    assert source.adopted_ == [bad.hash] and source.discarded == []
    totals = for_engine(engine).scrub.snapshot()["totals"]
    assert (totals["blobs_healed"], totals["bytes_healed"], totals["heal_failures"]) == (1, len(BODY), 0)
    check_views(engine, tmp_path)
    engine.close()
    again = make_engine()  # the heal is a journalled event: a restart (replay) keeps it
    assert not is_damaged(blob_rec(again, bad.hash))
    assert asyncio.run(read(again, version)) == BODY


def test_issue20_a_replica_bad_copy_is_skipped_and_the_next_replica_heals(engine: Engine, tmp_path: Path) -> None:
    source = SimSource(engine, BODY, {"node-2": "bad", "node-3": "good"})

    async def main() -> tuple[ObjectVersion, BlobLocation]:
        version, loc = await stored(engine)
        flip(engine, loc, 9)
        assert await healer(engine, source).repair(loc, "x", "scrub") is True
        return version, loc

    version, bad = asyncio.run(main())
    assert source.asked == ["node-2", "node-3"]
    assert len(source.discarded) == 1  # the wrong bytes under the blob's name: CRCs pass, the SHA-256 does not
    assert verify_copy(engine.volumes, source.discarded[0]) is not None
    assert asyncio.run(read(engine, version)) == BODY
    check_views(engine, tmp_path)
    source.close()


def test_issue20_a_copy_of_another_size_is_refused(engine: Engine, tmp_path: Path) -> None:
    source = SimSource(engine, BODY, {"node-2": "short", "node-3": "good"})

    async def main() -> tuple[bool, bool, ObjectVersion, BlobLocation]:
        version, loc = await stored(engine)
        flip(engine, loc, 9)
        alone = await healer(engine, source, ["node-2"]).repair(loc, "x", "scrub")
        both = await healer(engine, source).repair(loc, "x", "scrub")
        return alone, both, version, loc

    alone, both, version, bad = asyncio.run(main())
    assert alone is False and both is True
    assert [d.size for d in source.discarded] == [len(BODY) - 1, len(BODY) - 1]
    assert asyncio.run(read(engine, version)) == BODY
    check_views(engine, tmp_path)
    source.close()


def test_issue20_no_replica_with_a_good_copy_leaves_the_blob_marked_and_reads_failing(
        engine: Engine, tmp_path: Path) -> None:
    source = SimSource(engine, BODY, {"node-2": "none", "node-3": "down", "node-4": "bad"})

    async def main() -> tuple[ObjectVersion, BlobLocation]:
        version, loc = await stored(engine)
        flip(engine, loc, 3 * BLOCK_BYTES)
        engine.blob_repair = healer(engine, source)
        assert await engine.blob_repair.repair(loc, "x", "scrub") is False
        with pytest.raises(S3Error) as err:  # read failover tries again, finds nothing, fails as on a single node
            await read(engine, version)
        assert err.value.code is ErrorCode.INTERNAL_ERROR
        return version, loc

    version, bad = asyncio.run(main())
    rec = blob_rec(engine, bad.hash)
    assert [rec[0], rec[1]] == [bad.volume, bad.offset] and is_damaged(rec)
    assert bad_blobs(engine) == 1
    snap = for_engine(engine).scrub.snapshot()
    assert snap["totals"]["heal_failures"] == 2 and snap["totals"]["blobs_healed"] == 0
    assert "node-2" in snap["last_heal_failure"]["error"] and "node-3" in snap["last_heal_failure"]["error"]
    check_views(engine, tmp_path)
    source.close()


def test_issue20_a_full_local_disk_stops_at_once(engine: Engine) -> None:
    source = SimSource(engine, BODY, {"node-2": "full", "node-3": "good"})

    async def main() -> bool:
        _, loc = await stored(engine)
        flip(engine, loc, 1)
        return await healer(engine, source).repair(loc, "x", "scrub")

    assert asyncio.run(main()) is False
    assert source.asked == ["node-2"]  # no replica can help with this node's disk
    source.close()


def test_issue20_read_failover_serves_get_range_and_copy_from_the_healed_copy(engine: Engine,
                                                                             tmp_path: Path) -> None:
    source = SimSource(engine, BODY, {"node-2": "good"})

    async def main() -> None:
        version, loc = await stored(engine)
        engine.blob_repair = healer(engine, source)
        flip(engine, loc, BLOCK_BYTES + 3)
        with pytest.raises(S3Error):  # the inline small read does not heal (sync); the API falls back ...
            engine.read_small(version, 0, version.size)
        assert await engine.read_failover(version, 0, version.size) == BODY  # ... to this, which does
        assert await read(engine, version, BLOCK_BYTES, 100) == BODY[BLOCK_BYTES:BLOCK_BYTES + 100]
        totals = for_engine(engine).scrub.snapshot()["totals"]
        assert totals["read_failovers"] == 1 and totals["blobs_healed"] == 1

        # a copy source (CopyObject, UploadPartCopy) meeting a bad chunk heals it and shares the healed copy
        other = await put(engine, "bkt", "k2", BODY[::-1])
        loc2 = engine.locate(other)[0]
        flip(engine, loc2, 7)
        source.data = BODY[::-1]
        copy = await engine.copy_object(other, "bkt", "copy", replace_metadata=False)
        assert engine.locate(copy)[0] != loc2
        assert await read(engine, copy) == BODY[::-1]
        assert await read(engine, other) == BODY[::-1]
        assert source.asked == ["node-2", "node-2"]

    asyncio.run(main())
    check_views(engine, tmp_path)
    source.close()


def test_issue20_concurrent_reads_of_one_bad_blob_fetch_it_once(engine: Engine) -> None:
    source = SimSource(engine, BODY, {"node-2": "good"})

    async def main() -> None:
        version, loc = await stored(engine)
        engine.blob_repair = healer(engine, source)
        flip(engine, loc, 100)
        source.gate = asyncio.Event()
        reads = [asyncio.ensure_future(read(engine, version)) for _ in range(5)]
        for _ in range(100):  # bounded: until the one fetch is waiting at the gate
            await asyncio.sleep(0)
            if source.asked:
                break
        source.gate.set()
        assert await asyncio.gather(*reads) == [BODY] * 5

    asyncio.run(main())
    assert source.asked == ["node-2"]
    source.close()


def test_issue20_repair_of_a_freed_or_already_healed_blob_fetches_nothing(engine: Engine) -> None:
    source = SimSource(engine, BODY, {"node-2": "good"})

    async def main() -> None:
        version, loc = await stored(engine)
        flip(engine, loc, 100)
        heal = healer(engine, source)
        assert await heal.repair(loc, "x", "scrub") is True
        assert await heal.repair(loc, "x", "read") is True  # the stale place: the index names a good copy now
        await engine.delete_object("bkt", "k")
        assert await heal.repair(loc, "x", "scrub") is False  # freed: nothing to heal

    asyncio.run(main())
    assert source.asked == ["node-2"]
    source.close()


def test_issue20_scrubber_heals_a_flipped_and_a_missing_blob_and_counts_its_pass(engine: Engine,
                                                                                tmp_path: Path) -> None:
    other = bytes(reversed(BODY))
    digests = {hashlib.sha256(BODY).digest(): BODY, hashlib.sha256(other).digest(): other}

    class PerBlob(SimSource):
        async def fetch(self, peer: str, digest: bytes) -> BlobLocation:
            self.data = digests[digest]
            return await super().fetch(peer, digest)

    source = PerBlob(engine, BODY, {"node-2": "good"})

    async def main() -> dict:
        v1, loc1 = await stored(engine)
        v2 = await put(engine, "bkt", "k2", other)
        loc2 = engine.locate(v2)[0]
        flip(engine, loc1, 77)
        with open(Path(engine.volumes.directory) / loc2.volume, "r+b") as f:  # the record's bytes gone
            f.truncate(loc2.offset + 10)
        engine.blob_repair = healer(engine, source)
        report = await for_engine(engine).scrubber()
        assert report["done"]["bad_blobs"] == 2 and report["done"]["healed"] == 2, report
        assert all(d["healed"] for d in report["details"])
        assert await read(engine, v1) == BODY and await read(engine, v2) == other
        again = await for_engine(engine).scrubber()  # the next pass finds nothing bad
        assert again["done"].get("bad_blobs", 0) == 0, again
        return await for_engine(engine).scrub_status()

    status = asyncio.run(main())
    assert status["healing"] is True and status["running"] is False
    assert status["pass"]["blobs_scanned"] == 2 and status["pass"]["bytes_scanned"] == 2 * len(BODY)
    assert status["pass"]["bytes_total"] == 2 * len(BODY)
    assert status["last_full_pass_ms"] is not None
    assert status["totals"]["passes_completed"] == 2 and status["totals"]["bad_blobs_found"] == 2
    assert status["totals"]["blobs_healed"] == 2 and status["totals"]["read_failovers"] == 0
    assert bad_blobs(engine) == 0
    check_views(engine, tmp_path)
    source.close()


def test_issue20_single_mode_scrubber_marks_and_reports_without_healing(engine: Engine) -> None:
    async def main() -> dict:
        _, loc = await stored(engine)
        flip(engine, loc, 77)
        report = await for_engine(engine).scrubber()
        assert report["done"]["bad_blobs"] == 1 and "healed" not in report["done"]
        assert report["done"]["marked_damaged"] == 1
        return await for_engine(engine).scrub_status()

    status = asyncio.run(main())
    assert status["healing"] is False and status["totals"]["bad_blobs_found"] == 1


def test_issue20_an_interrupted_pass_is_not_a_full_pass() -> None:
    progress = ScrubProgress(clock=lambda: 1000.0)
    progress.begin_pass(10, throttled=True)
    progress.scanned(4)
    progress.end_pass(complete=False)
    snap = progress.snapshot()
    assert snap["last_full_pass_ms"] is None and snap["pass"]["bytes_scanned"] == 4
    progress.begin_pass(10, throttled=True)
    progress.end_pass(complete=True)
    assert progress.snapshot()["last_full_pass_ms"] == 1_000_000


def test_issue20_replicas_are_asked_alive_first_and_dead_ones_never() -> None:
    states = {"a": "dead", "b": "suspect", "c": "alive", "d": "alive"}
    assert replica_order(list(states), states.__getitem__) == ["c", "d", "b"]


def test_issue20_scrub_numbers_on_metrics_in_one_process_and_published_for_several(engine: Engine) -> None:
    source = SimSource(engine, BODY, {"node-2": "good"})

    async def main() -> None:
        version, loc = await stored(engine)
        engine.blob_repair = healer(engine, source)
        flip(engine, loc, 5)
        assert await read(engine, version) == BODY

    progress = for_engine(engine).scrub
    published = CollectorRegistry()
    progress.listeners.append(ScrubMetrics(progress, published).update)
    asyncio.run(main())
    source.close()
    for registry in (published, _registry(ScrubCollector(engine))):
        text = generate_latest(registry).decode()
        assert "s4_cluster_scrub_blobs_healed_total 1.0" in text, text
        assert "s4_cluster_scrub_read_failovers_total 1.0" in text
        assert "s4_cluster_scrub_heal_failures_total 0.0" in text
        assert "s4_scrub_last_full_pass_timestamp_seconds 0.0" in text


def _registry(collector: ScrubCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
