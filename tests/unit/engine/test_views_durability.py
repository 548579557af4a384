"""Views without per-commit fsync (engine/views/unsynced.py): trusted after a process crash, rebuilt from the
journal after a machine crash (another boot id), synced and unmarked on a clean close."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.engine_io import get

from s4.engine import Engine, local_commit
from s4.engine.views.unsynced import MARKER_NAME, current_boot_id

pytestmark = pytest.mark.anyio
CANARY = b"canary-not-from-the-journal"

# A node that writes 40 objects, plants a key no journal event made (so a rebuild is visible), and dies without
# closing anything: what kill -9 leaves behind.
CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from s4.engine import Engine, EngineOptions

    async def main() -> None:
        engine = Engine(EngineOptions(Path(sys.argv[1])))
        await engine.create_bucket("bkt")
        for i in range(40):
            stored = await engine.ingestor.ingest_bytes(f"object {i} ".encode() * (i + 1))
            await engine.put_object("bkt", f"k{i}", stored)
        with engine.views.env.begin(write=True) as txn:
            txn.put(b"canary", b"1", db=engine.views.dbs["meta"])
        os._exit(0)

    asyncio.run(main())
""")


def crash_a_node(data_dir: Path) -> None:
    subprocess.run([sys.executable, "-c", CHILD, str(data_dir)], check=True, timeout=120)


def canary(engine: Engine) -> bytes | None:
    with engine.views.read() as txn:
        return txn.get(b"canary", db=engine.views.dbs["meta"])


async def all_objects_intact(engine: Engine) -> None:
    for i in range(40):
        assert await get(engine, "bkt", f"k{i}") == f"object {i} ".encode() * (i + 1)


@pytest.fixture(autouse=True)
def needs_boot_id() -> None:
    if current_boot_id() is None:
        pytest.skip("no kernel boot id on this platform: the views sync on every commit")


async def test_views_skip_fsync_and_a_clean_close_syncs_and_unmarks(make_engine: Callable[..., Engine],
                                                                    tmp_path: Path) -> None:
    engine = make_engine()
    marker = tmp_path / "data" / "views" / MARKER_NAME
    assert marker.read_text().strip() == current_boot_id()
    assert engine.views.env.flags()["sync"] is False
    await engine.create_bucket("bkt")
    engine.close()
    assert not marker.exists()


async def test_after_a_process_crash_the_views_are_kept_and_the_tail_replayed(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    data = tmp_path / "data"
    crash_a_node(data)
    assert (data / "views" / MARKER_NAME).exists()
    engine = make_engine(data)
    assert canary(engine) == b"1"  # same boot: the page cache kept every LMDB commit, nothing was rebuilt
    await all_objects_intact(engine)


async def test_after_a_machine_crash_the_views_are_rebuilt_from_the_journal(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    data = tmp_path / "data"
    crash_a_node(data)
    (data / "views" / MARKER_NAME).write_text("another-boot\n")  # what a power cut and a reboot look like
    engine = make_engine(data)
    assert canary(engine) is None  # the old views were discarded ...
    await all_objects_intact(engine)  # ... and every acknowledged write came back from the journal
    assert (data / "views" / MARKER_NAME).read_text().strip() == current_boot_id()


async def test_without_a_boot_id_the_views_sync_every_commit(make_engine: Callable[..., Engine], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_commit, "current_boot_id", lambda: None)
    engine = make_engine()
    assert engine.views.env.flags()["sync"] is True
    assert not (tmp_path / "data" / "views" / MARKER_NAME).exists()
    await engine.create_bucket("bkt")
