"""kill -9 during lifecycle runs.

One data directory holds an unversioned bucket (keys to expire by prefix, keys to keep), a versioned bucket (keys
with noncurrent versions, keys whose only version is a delete marker) and abandoned multipart uploads, under rules
that expire all of it; the work takes three lifecycle passes (current versions, then the versions that became
noncurrent, then the markers left alone). Round after round, a child process runs passes with a clock ten days
ahead, printing a line after each action the sequencer acknowledged, and is SIGKILLed right after a random number
of them (so the kill lands inside the next action: deciding, syncing, journalling or committing). After each kill:

* every acknowledged action happened, and at most the one in flight besides (lifecycle events in the journal);
* the views equal a rebuild from the journal, blob refcounts equal the references, every indexed blob is intact;
* every key is either fully expired or intact: each version still listed reads back byte-exact, none appears
  that was never written (only delete markers are new), keys outside the rules are untouched;
* each upload is either aborted or intact with its part.

The next child's passes continue the job; at the end, passes in the test process must reach the end state of a
run that was never killed, and find nothing more to do.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engine_io import get, list_all_versions, put
from helpers.views_compare import check_engine_integrity

from s4.engine import Engine, EngineOptions, ErrorCode, S3Error
from s4.engine.jobs.lifecycle import ACTOR, run_lifecycle

pytestmark = pytest.mark.crash
ROUNDS = 10
AHEAD_S = 10 * 86400  # the lifecycle clock: ten days from now, so every rule below is due
EXPIRE, KEEP, VERSIONED, MARKERS, UPLOADS = 120, 20, 30, 15, 6
# pass 1: expire 120 plain keys, remove 15 lone markers, 30 markers on top, 60 older versions, abort 6 uploads;
# pass 2: the 30 versions the markers made noncurrent; pass 3: the 30 markers now alone
TOTAL_ACTIONS = EXPIRE + MARKERS + VERSIONED + 2 * VERSIONED + UPLOADS + VERSIONED + VERSIONED

CHILD = f"""
import sys, time
from s4.engine import Engine, EngineOptions
from s4.engine.jobs.lifecycle import run_lifecycle
engine = Engine(EngineOptions(sys.argv[1]))
execute = engine.sequencer.execute_sync

def traced(command):
    result = execute(command)
    print("did", flush=True)  # acknowledged: journalled and applied
    return result

engine.sequencer.execute_sync = traced
print("ready", flush=True)
while True:
    if not run_lifecycle(engine, clock=lambda: time.time() + {AHEAD_S}).done:
        print("idle", flush=True)
        time.sleep(0.05)
"""


def rule(rule_id: str, prefix: str, **parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": rule_id, "status": "Enabled", "legacy_prefix": False,
                            "filter": {"prefix": prefix, "tags": {}, "gt": None, "lt": None, "and": False},
                            "expiration": None, "noncurrent": None, "abort_days": None}
    return base | parts


def body(name: str, version: int = 0) -> bytes:
    return random.Random(f"{name}#{version}").randbytes(random.Random(name).randint(0, 3000))


async def gather_in_chunks(calls: list[Any], size: int = 64) -> list[Any]:
    out = []
    for start in range(0, len(calls), size):
        out += await asyncio.gather(*calls[start:start + size])  # concurrent: one group commit per chunk
    return out


async def prepare(data_dir: Path) -> dict[str, Any]:
    """The template; returns what was written: plain bodies, versioned bodies by version id, upload ids."""
    engine = Engine(EngineOptions(data_dir))
    try:
        await engine.create_bucket("plain")
        await engine.set_bucket_config("plain", "lifecycle", {"rules": [rule("tmp", "exp/",
                                                                             expiration={"days": 1})]})
        plain = {f"exp/{i:03d}": body(f"exp/{i:03d}") for i in range(EXPIRE)}
        plain |= {f"keep/{i:03d}": body(f"keep/{i:03d}") for i in range(KEEP)}
        await gather_in_chunks([put(engine, "plain", k, b) for k, b in plain.items()])

        await engine.create_bucket("ver")
        await engine.set_bucket_config("ver", "versioning", "Enabled")
        await engine.set_bucket_config("ver", "lifecycle", {"rules": [
            rule("old", "v/", expiration={"days": 1}, noncurrent={"days": 1, "newer": None}, abort_days=1),
            rule("markers", "gone/", expiration={"edm": True})]})
        versions: dict[tuple[str, str], bytes] = {}
        for generation in range(3):
            keys = [f"v/{i:03d}" for i in range(VERSIONED)]
            done = await gather_in_chunks([put(engine, "ver", k, body(k, generation)) for k in keys])
            versions |= {(k, v.version_id): body(k, generation) for k, v in zip(keys, done, strict=True)}
        await gather_in_chunks([engine.delete_object("ver", f"gone/{i:03d}") for i in range(MARKERS)])
        uploads = {}
        for i in range(UPLOADS):
            key = f"v/mp-{i:02d}"
            upload_id = await engine.create_multipart_upload("ver", key)
            stored = await engine.ingestor.ingest_bytes(body(key))
            await engine.upload_part("ver", key, upload_id, 1, stored)
            uploads[upload_id] = key
        return {"plain": plain, "versions": versions, "uploads": uploads}
    finally:
        engine.close()


def lifecycle_until_idle(engine: Engine, limit: int = 8) -> int:
    """Lifecycle passes until one does nothing; returns how many did something."""
    for passes in range(limit):
        report = run_lifecycle(engine, clock=lambda: time.time() + AHEAD_S)
        assert not report.errors, report.errors
        if not report.done:
            return passes
    raise AssertionError(f"lifecycle still acting after {limit} passes")


async def observe(engine: Engine, written: dict[str, Any]) -> dict[str, int]:
    """Checks that every key is expired or intact; returns counts of what is left."""
    left = {"plain_expired": 0, "versions": 0, "markers": 0, "uploads": 0}
    for key, data in written["plain"].items():
        try:
            got = await get(engine, "plain", key)
        except S3Error as exc:  # only an expired key may be missing, and only cleanly
            assert key.startswith("exp/") and exc.code is ErrorCode.NO_SUCH_KEY, (key, exc)
            left["plain_expired"] += 1
            continue
        assert got == data, f"{key} is not byte-exact"
    listed, _ = await list_all_versions(engine, "ver", page_size=97)
    for key, version_id, is_marker in listed:
        if is_marker:
            left["markers"] += 1
            continue
        assert (key, version_id) in written["versions"], f"{key} {version_id} was never written"
        assert await get(engine, "ver", key, version_id) == written["versions"][(key, version_id)]
        left["versions"] += 1
    for upload_id, key in written["uploads"].items():
        try:
            _, page = engine.list_parts("ver", key, upload_id)
        except S3Error as exc:
            assert exc.code is ErrorCode.NO_SUCH_UPLOAD, exc
            continue
        assert [p.part_number for p in page.parts] == [1]
        left["uploads"] += 1
    return left


def final_state(engine: Engine, written: dict[str, Any]) -> None:
    state = asyncio.run(observe(engine, written))
    assert state == {"plain_expired": EXPIRE, "versions": 0, "markers": 0, "uploads": 0}, state


def run_child(data_dir: Path, kill_after: int, stderr: Path) -> tuple[int, bool]:
    """Start the child and SIGKILL it just after its ``kill_after``-th acknowledged action (or once it is idle);
    returns (actions it acknowledged, whether it had run out of work)."""
    with open(stderr, "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE, stderr=err)
    lines: list[bytes] = []
    with child:  # closes the stdout pipe on every way out
        assert child.stdout is not None
        try:
            deadline = time.monotonic() + 120
            while sum(line == b"did" for line in lines) < kill_after and b"idle" not in lines:
                readable, _, _ = select.select([child.stdout], [], [], max(deadline - time.monotonic(), 0))
                assert readable, f"child stalled:\n{stderr.read_text()}"
                line = child.stdout.readline()
                assert line, f"child died on its own:\n{stderr.read_text()}"
                lines.append(line.strip())
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        lines += child.stdout.read().split()  # acknowledged after we decided to kill, before the signal landed
    return sum(line == b"did" for line in lines), b"idle" in lines


def lifecycle_events(engine: Engine) -> int:
    return sum(event.actor == ACTOR for event in engine.journal.read(1))


def test_kill_during_lifecycle_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    written = asyncio.run(prepare(data_dir))
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acked_total = mid_run = 0
    for round_no in range(ROUNDS):
        acked, idle = run_child(data_dir, rng.randint(0, 2 * TOTAL_ACTIONS // ROUNDS),
                                tmp_path / f"child-{round_no}.err")
        acked_total += acked
        mid_run += int(acked > 0 and not idle)
        engine = Engine(EngineOptions(data_dir))
        try:
            applied = lifecycle_events(engine)  # one event per action, none for a skipped one
            assert acked_total <= applied <= acked_total + 1, (acked_total, applied)
            acked_total = applied  # the one in flight, if it landed, counts from now on
            check_engine_integrity(engine, tmp_path / f"rebuild-{round_no}")
            left = asyncio.run(observe(engine, written))
        finally:
            engine.close()
        print(f"round {round_no}: {acked} acknowledged, {applied} applied in all, left {left}")
        if idle:
            break
    assert mid_run >= min(ROUNDS, 3), f"only {mid_run} kills landed inside a lifecycle pass"
    engine = Engine(EngineOptions(data_dir))
    try:
        lifecycle_until_idle(engine)  # later passes finish whatever the kills interrupted
        final_state(engine, written)
        assert lifecycle_events(engine) == TOTAL_ACTIONS  # nothing done twice, nothing left out
        check_engine_integrity(engine, tmp_path / "rebuild-final")
    finally:
        engine.close()
