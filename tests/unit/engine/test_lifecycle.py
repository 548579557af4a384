"""Lifecycle rules with a moved clock: pure evaluation, then the job acting through the engine."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.jobs.lifecycle import run_lifecycle
from s4.engine.lifecycle import DAY_MS, after_days, evaluate_key, expiration_header

pytestmark = pytest.mark.anyio


def rule(rule_id: str = "r", prefix: str = "", **parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": rule_id, "status": "Enabled", "legacy_prefix": False,
                            "filter": {"prefix": prefix, "tags": parts.pop("tags", {}), "gt": parts.pop("gt", None),
                                       "lt": parts.pop("lt", None), "and": False},
                            "expiration": None, "noncurrent": None, "abort_days": None}
    base.update(parts)
    return base


def clock_after(days: float) -> Any:
    return lambda: time.time() + days * 86400


# -- pure evaluation ----------------------------------------------------------------------------------------------
def test_after_days_rounds_up_to_midnight() -> None:
    start = 10 * DAY_MS + 5000
    assert after_days(start, 1) == 12 * DAY_MS
    assert after_days(10 * DAY_MS, 1) == 12 * DAY_MS


def test_current_and_size_filters() -> None:
    r = rule(prefix="logs/", expiration={"days": 30}, gt=10, lt=100)
    v = [{"v": "null", "t": 0, "s": 50}]
    assert evaluate_key("b", "logs/a", v, [r], after_days(0, 30) - 1) == []
    assert [a.kind for a in evaluate_key("b", "logs/a", v, [r], after_days(0, 30))] == ["expire_current"]
    assert evaluate_key("b", "other", v, [r], 10**15) == []
    assert evaluate_key("b", "logs/a", [{"v": "null", "t": 0, "s": 5}], [r], 10**15) == []


def test_noncurrent_days_and_count() -> None:
    versions = [{"v": f"v{i}", "t": (10 - i) * DAY_MS, "s": 1} for i in range(5)]  # v0 newest
    by_days = rule(noncurrent={"days": 3, "newer": None})
    now = after_days(9 * DAY_MS, 3)  # v2 became noncurrent at day 9, when v1 was written
    got = {a.version_id for a in evaluate_key("b", "k", versions, [by_days], now)}
    assert got == {"v2", "v3", "v4"}
    keep_two = rule(noncurrent={"days": 1, "newer": 2})
    got = {a.version_id for a in evaluate_key("b", "k", versions, [keep_two], 10**15)}
    assert got == {"v3", "v4"}


def test_expiration_header_picks_earliest() -> None:
    config = {"rules": [rule("late", expiration={"days": 10}), rule("soon", expiration={"days": 2})]}
    assert expiration_header(config, "k", 1, {}, 0) == (after_days(0, 2), "soon")
    assert expiration_header({"rules": [rule(tags={"a": "b"}, expiration={"days": 1})]}, "k", 1, {}, 0) is None


# -- the job through the engine ----------------------------------------------------------------------------------
async def setup(engine: Engine, rules: list[dict[str, Any]], versioning: str = "") -> None:
    await engine.create_bucket("bkt")
    if versioning:
        await engine.set_bucket_config("bkt", "versioning", versioning)
    await engine.set_bucket_config("bkt", "lifecycle", {"rules": rules})


async def run(engine: Engine, days: float, dry_run: bool = False) -> dict[str, Any]:
    import anyio.to_thread

    report = await anyio.to_thread.run_sync(lambda: run_lifecycle(engine, dry_run=dry_run,
                                                                  clock=clock_after(days)))
    return report.to_dict()


async def test_current_expiry_by_prefix_and_tag(engine: Engine) -> None:
    await setup(engine, [rule("logs", "logs/", expiration={"days": 30}),
                         rule("tmp", tags={"tmp": "1"}, expiration={"days": 1})])
    await put(engine, "bkt", "logs/a", b"a")
    await put(engine, "bkt", "data/keep", b"k")
    await put(engine, "bkt", "data/tagged", b"t", tags={"tmp": "1"})
    report = await run(engine, 10)
    assert report["done"] == {"expire_current": 1}
    with pytest.raises(S3Error) as exc:
        engine.head_object("bkt", "data/tagged")
    assert exc.value.code is ErrorCode.NO_SUCH_KEY
    await run(engine, 31)
    with pytest.raises(S3Error):
        engine.head_object("bkt", "logs/a")
    assert await get(engine, "bkt", "data/keep") == b"k"


async def test_dry_run_changes_nothing(engine: Engine) -> None:
    await setup(engine, [rule(expiration={"days": 1})])
    await put(engine, "bkt", "a", b"a")
    seq = engine.journal.last_seq
    report = await run(engine, 5, dry_run=True)
    assert report["done"] == {"would_expire_current": 1} and report["details"][0]["key"] == "a"
    assert engine.journal.last_seq == seq
    assert await get(engine, "bkt", "a") == b"a"


async def test_versioned_expiry_noncurrent_and_markers(engine: Engine) -> None:
    await setup(engine, [rule("cur", expiration={"days": 1}), rule("nc", noncurrent={"days": 2, "newer": None})],
                versioning="Enabled")
    await put(engine, "bkt", "k", b"v1")
    await put(engine, "bkt", "k", b"v2")
    # Days count to the next midnight UTC (after_days): two days on, "1 day" is due at any time of day and
    # "2 days noncurrent" is not yet (1.5 would depend on the hour the test runs)
    await run(engine, 2)  # current expires: a delete marker on top; v1 noncurrent for < 2 days
    versions = (await engine.list_object_versions("bkt")).versions
    assert [v.is_delete_marker for v in versions] == [True, False, False]
    await run(engine, 3.5)  # v1 and v2 are noncurrent past 2 days: removed
    versions = (await engine.list_object_versions("bkt")).versions
    assert [v.is_delete_marker for v in versions] == [True]
    await run(engine, 10)  # only the marker left and the Days rule is due: expired marker cleaned up
    assert (await engine.list_object_versions("bkt")).versions == []


async def test_newer_noncurrent_versions_kept(engine: Engine) -> None:
    await setup(engine, [rule(noncurrent={"days": 1, "newer": 2})], versioning="Enabled")
    for i in range(5):
        await put(engine, "bkt", "k", f"v{i}".encode())
    report = await run(engine, 5)
    assert report["done"] == {"expire_noncurrent": 2}
    versions = (await engine.list_object_versions("bkt")).versions
    assert len(versions) == 3


async def test_expired_object_delete_marker(engine: Engine) -> None:
    await setup(engine, [rule(expiration={"edm": True})], versioning="Enabled")
    await put(engine, "bkt", "k", b"x")
    version = engine.head_object("bkt", "k")
    await engine.delete_object("bkt", "k")
    await engine.delete_object("bkt", "k", version.version_id)
    assert len((await engine.list_object_versions("bkt")).versions) == 1
    report = await run(engine, 0)
    assert report["done"] == {"remove_marker": 1}
    assert (await engine.list_object_versions("bkt")).versions == []


async def test_abort_incomplete_uploads(engine: Engine) -> None:
    await setup(engine, [rule(prefix="up/", abort_days=3)])
    upload = await engine.create_multipart_upload("bkt", "up/x")
    other = await engine.create_multipart_upload("bkt", "keep/x")
    assert (await run(engine, 1))["done"] == {}
    assert (await run(engine, 4))["done"] == {"abort_upload": 1}
    with pytest.raises(S3Error):
        engine.get_upload("bkt", "up/x", upload)
    assert engine.get_upload("bkt", "keep/x", other).upload_id == other


async def test_rewritten_key_is_not_expired(engine: Engine) -> None:
    """The decider re-checks: a version written after the job planned is never expired by that plan."""
    from s4.engine.sequencer import Command

    await setup(engine, [rule(expiration={"days": 1})])
    old = await put(engine, "bkt", "k", b"old")
    await put(engine, "bkt", "k", b"new")
    result = await engine.sequencer.execute(Command("lifecycle_expire", {
        "bucket": "bkt", "key": "k", "version_id": old.version_id + "x", "kind": "expire_current"}))
    assert result is None
    assert await get(engine, "bkt", "k") == b"new"
