"""Views written in another key layout are rebuilt from the journal at start-up, never misread (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.engine_io import get, list_all, put

from s4.engine import Engine
from s4.engine.views import keys
from s4.engine.views.env import Views

pytestmark = pytest.mark.anyio


def _rewrite_meta(views_dir: Path, layout: int | None) -> None:
    """Make the views look like an older S4's: another (or no) layout stamp and a key the new layout never writes."""
    views = Views(views_dir)
    try:
        with views.env.begin(write=True) as txn:
            if layout is None:
                txn.delete(keys.META_LAYOUT, db=views.dbs["meta"])
            else:
                txn.put(keys.META_LAYOUT, keys.u64(layout), db=views.dbs["meta"])
            txn.put(b"old-bucket\0old-key\0" + bytes(48), b"", db=views.dbs["upload_keys"])
    finally:
        views.close()


@pytest.mark.parametrize("layout", [None, 1, 4, 5, keys.LAYOUT_VERSION + 1])  # 4, 5: before (per-field) lock_clocks
async def test_issue18_views_in_another_layout_are_rebuilt_from_the_journal(
        make_engine: Callable[..., Engine], tmp_path: Path, layout: int | None) -> None:
    engine = make_engine()
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "k" * 700, b"long")
    await engine.create_multipart_upload("bkt", "u" * 900)
    engine.close()
    _rewrite_meta(tmp_path / "data" / "views", layout)

    engine = make_engine()
    assert not engine.views.layout_stale()
    with engine.views.read() as txn:
        assert txn.get(keys.META_LAYOUT, db=engine.views.dbs["meta"]) == keys.u64(keys.LAYOUT_VERSION)
        assert all(len(k) == 16 + 40 for k, _ in txn.cursor(db=engine.views.dbs["upload_keys"]).iternext())
    assert await get(engine, "bkt", "k" * 700) == b"long"
    assert (await list_all(engine, "bkt"))[0] == ["k" * 700]
    assert [u.key for u in engine.list_multipart_uploads("bkt").uploads] == ["u" * 900]


def test_new_views_are_stamped_and_current(tmp_path: Path) -> None:
    views = Views(tmp_path / "views")
    try:
        assert not views.layout_stale()
        with views.read() as txn:
            assert txn.get(keys.META_LAYOUT, db=views.dbs["meta"]) == keys.u64(keys.LAYOUT_VERSION)
    finally:
        views.close()
