"""The import stamp at the engine's command level (engine/imports.py): PUT and delete marker share it, replay
derives the same records, a resent source version writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.engine_io import put
from helpers.views_compare import check_live_vs_rebuild, refcount_problems

from s4.engine import Engine
from s4.engine.imports import stamp

pytestmark = pytest.mark.anyio
T1, T2 = 1_600_000_000_123, 1_600_000_100_456


async def test_import_stamp_sets_last_modified_and_survives_replay(engine: Engine, tmp_path: Path) -> None:
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "versioning", "Enabled")
    first = await put(engine, "bkt", "k", b"one", imported=stamp(T1, "s1"))
    marker = await engine.delete_object("bkt", "k", imported=stamp(T2, "s2"))
    assert first.last_modified_ms == T1
    assert engine.head_object("bkt", "k", first.version_id).last_modified_ms == T1
    page = await engine.list_object_versions("bkt", "", "", "", "", 100)
    assert [(v.version_id, v.is_delete_marker, v.last_modified_ms) for v in page.versions] == [
        (marker["version_id"], True, T2), (first.version_id, False, T1)]  # newest first, as written
    check_live_vs_rebuild(engine.views, engine.journal, tmp_path / "rebuilt")


async def test_import_resent_source_version_emits_nothing(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "versioning", "Enabled")
    first = await put(engine, "bkt", "k", b"same", imported=stamp(T1, "s1"))
    seq = engine.journal.last_seq
    again = await put(engine, "bkt", "k", b"same", imported=stamp(T1, "s1"))
    assert again.version_id == first.version_id and again.last_modified_ms == T1
    assert engine.journal.last_seq == seq  # no event: the version is not stored twice
    m1 = await engine.delete_object("bkt", "k", imported=stamp(T2, "m1"))
    seq = engine.journal.last_seq
    m2 = await engine.delete_object("bkt", "k", imported=stamp(T2, "m1"))
    assert m2 == m1 and engine.journal.last_seq == seq
    assert not refcount_problems(engine.views)
