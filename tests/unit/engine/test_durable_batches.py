"""How a batch becomes durable (sequencer.py step 3, tail_check.py): the journal's fsync overlaps the volumes',
a failed volume sync takes the batch back out of the journal, and start-up after a machine crash cuts a last
record whose bytes did not survive."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, ErrorCode, tail_check
from s4.engine.errors import S3Error
from s4.engine.views.unsynced import MARKER_NAME, current_boot_id
from s4.journal import EventType

pytestmark = pytest.mark.anyio


class Recorder:
    """Wraps the journal write and the volume sync of an engine, recording the order things happened in."""

    def __init__(self, engine: Engine, sync: Callable[[Iterable[str]], None] | None = None) -> None:
        self.steps: list[str] = []
        self.journal_started = threading.Event()
        assert engine.journal is not None
        write, real_sync = engine.journal.write_encoded, engine.volumes.sync

        def write_encoded(batch):  # type: ignore[no-untyped-def]
            self.steps.append("journal start")
            self.journal_started.set()
            offset = write(batch)
            self.steps.append("journal done")
            return offset

        def volume_sync(names: Iterable[str]) -> None:
            self.steps.append("sync start")
            (sync or real_sync)(names)
            self.steps.append("sync done")

        engine.journal.write_encoded = write_encoded  # type: ignore[method-assign]
        engine.volumes.sync = volume_sync  # type: ignore[method-assign]


async def test_the_volume_sync_runs_while_the_journal_is_written(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    seen: list[bool] = []
    recorder = Recorder(engine, sync=lambda names: seen.append(recorder.journal_started.wait(10)))
    await put(engine, "bkt", "k", b"hello")
    assert seen == [True]  # the sync was still running when the journal write began
    assert await get(engine, "bkt", "k") == b"hello"


async def test_batches_start_up_cannot_check_sync_volumes_before_the_journal(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.create_bucket("bkt")
    monkeypatch.setattr(tail_check, "UNCHECKABLE", frozenset({EventType.OBJECT_VERSION_PUT}))
    recorder = Recorder(engine)
    await put(engine, "bkt", "k", b"hello")
    assert recorder.steps == ["sync start", "sync done", "journal start", "journal done"]


async def test_a_failed_volume_sync_takes_the_batch_out_of_the_journal(make_engine: Callable[..., Engine],
                                                                      tmp_path: Path) -> None:
    engine = make_engine()
    await engine.create_bucket("bkt")
    assert engine.journal is not None
    before = engine.journal.last_seq

    disk_fails = True
    real_sync = engine.volumes.sync

    def failing(names: Iterable[str]) -> None:
        if disk_fails:
            raise OSError(errno.EIO, "simulated volume fsync failure")
        real_sync(names)

    Recorder(engine, sync=failing)
    with pytest.raises(S3Error) as refused:  # a storage fault is 503 (retry), never a 500
        await put(engine, "bkt", "lost", b"never acknowledged")
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert engine.journal.last_seq == before
    with pytest.raises(S3Error):
        engine.head_object("bkt", "lost")
    disk_fails = False  # the disk recovers: the next batch continues the log where the cut left it
    await put(engine, "bkt", "kept", b"acknowledged")
    engine.close()
    reopened = make_engine(tmp_path / "data")
    assert await get(reopened, "bkt", "kept") == b"acknowledged"
    with pytest.raises(S3Error):
        reopened.head_object("bkt", "lost")
    assert reopened.journal is not None
    after = [(e.type, e.payload.get("key")) for e in reopened.journal.read(before + 1)]
    # the put that was acknowledged, and the seal of the volume abandoned after its failed sync; never "lost"
    assert sorted(after, key=str) == sorted([(EventType.OBJECT_VERSION_PUT, "kept"), (EventType.VOLUME_SEALED, None)],
                                            key=str)


async def _three_objects_then_damage_the_last(make_engine: Callable[..., Engine], data: Path, *,
                                              marker: str, damage: bool) -> int:
    """Write k0..k2 (one batch each), close, then make it look like a crash: the views' marker says ``marker``
    and, with ``damage``, k2's bytes are zeros (pages lost with the machine). Returns the journal's last seq."""
    engine = make_engine(data)
    await engine.create_bucket("bkt")
    for i in range(3):
        await put(engine, "bkt", f"k{i}", f"object {i} ".encode() * 100)
    loc = engine.locate(engine.head_object("bkt", "k2"))[0]
    assert engine.journal is not None
    last_seq = engine.journal.last_seq
    engine.close()
    (data / "views" / MARKER_NAME).write_text(marker + "\n")
    if damage:
        fd = os.open(data / "volumes" / loc.volume, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(loc.size), loc.offset)
        finally:
            os.close(fd)
    return last_seq


@pytest.fixture
def boot_id() -> str:
    found = current_boot_id()
    if found is None:
        pytest.skip("no kernel boot id on this platform")
    return found


async def test_after_a_machine_crash_a_last_record_without_its_bytes_is_cut(
        make_engine: Callable[..., Engine], tmp_path: Path, boot_id: str) -> None:
    data = tmp_path / "data"
    last_seq = await _three_objects_then_damage_the_last(make_engine, data, marker="another-boot", damage=True)
    engine = make_engine(data)
    assert engine.journal is not None and engine.journal.last_seq == last_seq - 1
    for i in range(2):
        assert await get(engine, "bkt", f"k{i}") == f"object {i} ".encode() * 100
    with pytest.raises(S3Error):
        engine.head_object("bkt", "k2")


async def test_after_a_machine_crash_an_intact_last_record_is_kept(
        make_engine: Callable[..., Engine], tmp_path: Path, boot_id: str) -> None:
    data = tmp_path / "data"
    last_seq = await _three_objects_then_damage_the_last(make_engine, data, marker="another-boot", damage=False)
    engine = make_engine(data)
    assert engine.journal is not None and engine.journal.last_seq == last_seq
    for i in range(3):
        assert await get(engine, "bkt", f"k{i}") == f"object {i} ".encode() * 100


async def test_after_a_process_crash_the_last_record_is_not_second_guessed(
        make_engine: Callable[..., Engine], tmp_path: Path, boot_id: str) -> None:
    # Same boot: the page cache kept every written byte, so start-up only fsyncs the last record's volumes. (The
    # zeros planted here are what only a machine crash could do; they show that no verification ran.)
    data = tmp_path / "data"
    last_seq = await _three_objects_then_damage_the_last(make_engine, data, marker=boot_id, damage=True)
    engine = make_engine(data)
    assert engine.journal is not None and engine.journal.last_seq == last_seq


async def test_after_a_machine_crash_bit_rot_in_a_deduplicated_chunk_does_not_cut_the_last_record(
        make_engine: Callable[..., Engine], tmp_path: Path, boot_id: str) -> None:
    # The last record wrote nothing new: its only chunk was deduplicated onto bytes made durable by an earlier
    # record. Those bytes rotting is the scrubber's business (and every read refuses them); it must not cost the
    # acknowledged last write (before `written`, start-up verified every location the record named and cut it).
    data = tmp_path / "data"
    engine = make_engine(data)
    await engine.create_bucket("bkt")
    body = b"the same bytes twice " * 100
    await put(engine, "bkt", "first", body)
    await put(engine, "bkt", "again", body)  # deduplicated: written is empty
    loc = engine.locate(engine.head_object("bkt", "again"))[0]
    assert engine.journal is not None
    last_seq = engine.journal.last_seq
    engine.close()
    (data / "views" / MARKER_NAME).write_text("another-boot\n")
    fd = os.open(data / "volumes" / loc.volume, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(loc.size), loc.offset)
    finally:
        os.close(fd)
    engine = make_engine(data)
    assert engine.journal is not None and engine.journal.last_seq == last_seq  # kept
    with pytest.raises(S3Error) as damaged:
        await get(engine, "bkt", "again")  # the key exists; its bytes are refused, never served wrong
    assert damaged.value.code is ErrorCode.INTERNAL_ERROR
