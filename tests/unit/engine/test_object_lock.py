"""Object Lock through the engine (issue 22): a locked version cannot be removed by anyone or anything (DeleteObject
with its version id, lifecycle, compaction, rename), COMPLIANCE retention can be neither shortened nor removed,
GOVERNANCE only with the bypass; every change is a journal event that replays to the same views. Before issue 22
S4 had no Object Lock: every removal below succeeded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
from helpers.engine_io import get, put
from helpers.views_compare import dump_views
from hypothesis import given
from hypothesis import strategies as st

from s4.engine import Engine, ErrorCode, S3Error, object_lock
from s4.engine.jobs.compaction import run_compaction
from s4.engine.jobs.lifecycle import run_lifecycle

pytestmark = pytest.mark.anyio
DAY_MS = object_lock.DAY_MS


def _later(days: float) -> int:
    return int((time.time() + days * 86400) * 1000)


async def _lock_bucket(engine: Engine, rule: dict[str, Any] | None = None) -> None:
    await engine.create_bucket("bkt", object_lock=True)
    if rule is not None:
        await engine.set_bucket_config("bkt", object_lock.CONFIG_KIND, {"enabled": True, "rule": rule})


async def _refused(call: Any, code: ErrorCode = ErrorCode.ACCESS_DENIED) -> S3Error:
    with pytest.raises(S3Error) as err:
        await call
    assert err.value.code is code
    return err.value


# -- pure rules ---------------------------------------------------------------------------------------------------
@given(st.sampled_from(object_lock.MODES), st.integers(1, 10**6), st.integers(-(10**6), 10**6), st.booleans())
def test_compliance_is_never_shortened_or_removed(mode: str, until: int, delta: int, bypass: bool) -> None:
    now = 0
    old = {"m": object_lock.COMPLIANCE, "u": until}
    new = {"m": mode, "u": until + delta}
    allowed = mode == object_lock.COMPLIANCE and delta >= 0
    try:
        object_lock.check_retention_change(old, new, now, bypass)
    except S3Error as exc:
        assert not allowed and exc.code is ErrorCode.ACCESS_DENIED
    else:
        assert allowed
    with pytest.raises(S3Error):
        object_lock.check_retention_change(old, None, now, bypass)


@given(st.integers(1, 10**6), st.integers(-(10**6), 10**6), st.booleans())
def test_governance_yields_only_to_the_bypass(until: int, delta: int, bypass: bool) -> None:
    old = {"m": object_lock.GOVERNANCE, "u": until}
    extends = delta >= 0
    for new in ({"m": object_lock.GOVERNANCE, "u": until + delta}, None):
        try:
            object_lock.check_retention_change(old, new, 0, bypass)
        except S3Error:
            assert not bypass and not (new is not None and extends)
    with pytest.raises(S3Error):
        object_lock.check_removable({"lk": old}, 0, False)
    object_lock.check_removable({"lk": old}, 0, True)
    object_lock.check_removable({"lk": old}, until, False)  # expired: removable


def test_legal_hold_yields_to_nothing() -> None:
    with pytest.raises(S3Error):
        object_lock.check_removable({"lh": True}, 0, True)
    object_lock.check_removable({"lh": False}, 0, False)


# -- through the engine -------------------------------------------------------------------------------------------
async def test_lock_bucket_is_versioned_for_good(engine: Engine) -> None:
    await _lock_bucket(engine)
    assert engine.get_bucket("bkt").versioning == "Enabled"
    await _refused(engine.set_bucket_config("bkt", "versioning", "Suspended"), ErrorCode.INVALID_BUCKET_STATE)
    await _refused(engine.set_bucket_config("bkt", object_lock.CONFIG_KIND, None), ErrorCode.MALFORMED_XML)
    await engine.create_bucket("plain")
    await _refused(engine.set_bucket_config("plain", object_lock.CONFIG_KIND, {"enabled": True}),
                   ErrorCode.INVALID_BUCKET_STATE)
    await _refused(put(engine, "plain", "k", b"x", lock={"lh": True}), ErrorCode.INVALID_REQUEST)


async def test_delete_with_version_id_refused_governance_bypass_allowed(engine: Engine) -> None:
    await _lock_bucket(engine)
    gov = await put(engine, "bkt", "gov", b"g", lock={"lk": {"m": "GOVERNANCE", "u": _later(1)}})
    comp = await put(engine, "bkt", "comp", b"c", lock={"lk": {"m": "COMPLIANCE", "u": _later(1)}})
    await _refused(engine.delete_object("bkt", "gov", gov.version_id))
    await _refused(engine.delete_object("bkt", "comp", comp.version_id, bypass_governance=True))
    marker = await engine.delete_object("bkt", "comp")  # without a version id: a delete marker, as S3
    assert marker["delete_marker"] is True
    assert await get(engine, "bkt", "comp", comp.version_id) == b"c"
    await engine.delete_object("bkt", "gov", gov.version_id, bypass_governance=True)
    with pytest.raises(S3Error):
        engine.head_object("bkt", "gov", gov.version_id)


async def test_retention_changes_follow_the_mode(engine: Engine) -> None:
    await _lock_bucket(engine)
    v = await put(engine, "bkt", "k", b"x")
    await engine.set_object_lock("bkt", "k", None, retention={"m": "COMPLIANCE", "u": _later(2)})
    await _refused(engine.set_object_lock("bkt", "k", v.version_id, retention={"m": "COMPLIANCE", "u": _later(1)},
                                          bypass_governance=True))
    await _refused(engine.set_object_lock("bkt", "k", None, retention=None, bypass_governance=True))
    await _refused(engine.set_object_lock("bkt", "k", None, retention={"m": "GOVERNANCE", "u": _later(3)},
                                          bypass_governance=True))
    await engine.set_object_lock("bkt", "k", None, retention={"m": "COMPLIANCE", "u": _later(3)})
    assert engine.head_object("bkt", "k").lock["lk"]["m"] == "COMPLIANCE"
    await _refused(engine.set_object_lock("bkt", "k", None, retention={"m": "COMPLIANCE", "u": _later(-1)}),
                   ErrorCode.ACCESS_DENIED)


async def test_legal_hold_blocks_removal_until_off(engine: Engine) -> None:
    await _lock_bucket(engine)
    v = await put(engine, "bkt", "k", b"x", lock={"lh": True})
    await _refused(engine.delete_object("bkt", "k", v.version_id, bypass_governance=True))
    await engine.set_object_lock("bkt", "k", v.version_id, legal_hold=False)
    assert engine.head_object("bkt", "k").lock["lh"] is False
    await engine.delete_object("bkt", "k", v.version_id)


async def test_default_retention_applies_to_new_versions(engine: Engine) -> None:
    await _lock_bucket(engine, {"mode": "GOVERNANCE", "days": 2})
    before = _later(2)
    v = await put(engine, "bkt", "k", b"x")
    lock = engine.head_object("bkt", "k", v.version_id).lock["lk"]
    assert lock["m"] == "GOVERNANCE" and before - 60_000 <= lock["u"] <= _later(2)
    asked = await put(engine, "bkt", "own", b"y", lock={"lk": {"m": "COMPLIANCE", "u": _later(9)}})
    assert engine.head_object("bkt", "own", asked.version_id).lock["lk"]["m"] == "COMPLIANCE"


async def test_retention_that_lifecycle_and_compaction_fail_to_remove(engine: Engine) -> None:
    """Lifecycle expires noncurrent versions through the same decider: the locked one is refused (reported, not
    removed), and compaction keeps its bytes readable, also after a restart that replays the journal."""
    await _lock_bucket(engine, {"mode": "COMPLIANCE", "days": 30})
    await engine.set_bucket_config("bkt", "lifecycle", {"rules": [{
        "id": "nc", "status": "Enabled", "legacy_prefix": False,
        "filter": {"prefix": "", "tags": {}, "gt": None, "lt": None, "and": False},
        "expiration": {"days": 1}, "noncurrent": {"days": 1, "newer": None}, "abort_days": None}]})
    old = await put(engine, "bkt", "k", b"old bytes" * 1000)
    await put(engine, "bkt", "k", b"new bytes" * 1000)
    report = await anyio.to_thread.run_sync(lambda: run_lifecycle(engine, clock=lambda: time.time() + 5 * 86400))
    assert any("AccessDenied" in e for e in report.errors), report.errors
    assert await get(engine, "bkt", "k", old.version_id) == b"old bytes" * 1000
    compacted = await anyio.to_thread.run_sync(lambda: run_compaction(engine, threshold=0.0))
    assert not compacted.errors
    assert await get(engine, "bkt", "k", old.version_id) == b"old bytes" * 1000


async def test_rename_refused_in_a_lock_bucket(engine: Engine) -> None:
    await _lock_bucket(engine)
    await put(engine, "bkt", "dir/k", b"x")
    await _refused(engine.rename("bkt", "dir/k", "dir/moved"), ErrorCode.INVALID_REQUEST)
    await _refused(engine.rename("bkt", "dir/", "other/"), ErrorCode.INVALID_REQUEST)


async def test_lock_events_replay_to_the_same_views(make_engine: Callable[..., Engine], tmp_path: Any) -> None:
    engine = make_engine()
    await _lock_bucket(engine)
    v = await put(engine, "bkt", "k", b"x", lock={"lk": {"m": "GOVERNANCE", "u": _later(1)}})
    await engine.set_object_lock("bkt", "k", v.version_id, legal_hold=True)
    await engine.set_object_lock("bkt", "k", v.version_id, retention={"m": "COMPLIANCE", "u": _later(2)},
                                 bypass_governance=True)
    live = dump_views(engine.views)["versions"]
    data_dir = engine.options.data_dir
    engine.close()
    files = list((data_dir / "views").glob("*"))
    assert files
    for path in files:  # rebuild every view from the journal alone
        path.unlink()
    again = make_engine(data_dir=data_dir)
    assert dump_views(again.views)["versions"] == live
    lock = again.head_object("bkt", "k").lock
    assert lock["lh"] is True and lock["lk"]["m"] == "COMPLIANCE"
    await _refused(again.delete_object("bkt", "k", v.version_id, bypass_governance=True))
