"""kill -9 crash recovery of the Engine.

The randomized test runs a child process (tests/helpers/crash_child.py) that writes to an Engine and logs every
operation before the call (intent) and after it returned (ack, fsynced), SIGKILLs it at a random moment, reopens
the Engine on the same data directory and checks, round after round on accumulating state:

* every acknowledged operation is reflected: a key reads back byte-exact as its last acknowledged PUT wrote it,
  or stays deleted; an operation that was in flight may or may not have happened, and a key never holds bytes
  that were never written to it;
* the views equal a fresh rebuild of the journal (every database, key and value), blob refcounts equal the
  references, and every indexed blob's volume record is intact.

The deterministic tests simulate the one window a kill can hit inside the sequencer -- events durable in the
journal, LMDB transaction not committed -- without hooks in engine code: they write events to the journal
directly, or roll the views back to an older snapshot, and check that start-up replays what is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from helpers.crash_child import BUCKET, KEYS
from helpers.engine_io import get, list_all, list_all_versions, put
from helpers.views_compare import (
    check_engine_integrity,
    diff_dumps,
    dump_views,
)

from s4.engine import Engine, EngineOptions, ErrorCode, S3Error
from s4.engine.model import version_record
from s4.engine.volumes.store import VolumeStore
from s4.journal import CorruptJournalError, EventDraft, EventType, Journal
from s4.tools import journal_cli

pytestmark = pytest.mark.crash

CHILD = Path(__file__).resolve().parents[1] / "helpers" / "crash_child.py"
ROUNDS = 22
TIME_BUDGET_S = 55.0


def parse_log(path: Path) -> tuple[list[tuple[str, int, str, str]], int]:
    """Lines of the op log; a torn last line (the kill landed in a write) is dropped."""
    lines = []
    if not path.exists():
        return [], 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        parts = raw.split(" ")
        if len(parts) == 4 and parts[0] in ("I", "A") and parts[1].isdigit():
            lines.append((parts[0], int(parts[1]), parts[2], parts[3]))
    return lines, sum(1 for kind, *_ in lines if kind == "A")


def allowed_states(before: dict[str, str], lines: list[tuple[str, int, str, str]]) -> dict[str, set[str]]:
    """Per key, the states a correct engine may show after the kill ("deleted" for absent)."""
    allowed = {key: {before.get(key, "deleted")} for key in KEYS}
    pending: dict[int, tuple[str, str]] = {}
    for kind, op, key, state in lines:
        if kind == "I":
            pending[op] = (key, state)
        else:
            assert pending.pop(op) == (key, state), f"ack of op {op} does not match its intent"
            allowed[key] = {state}
    for key, state in pending.values():  # in flight when killed: either outcome is fine
        allowed[key].add(state)
    return allowed


async def observe(engine: Engine) -> dict[str, str]:
    state = {}
    for key in KEYS:
        try:
            body = await get(engine, BUCKET, key)
        except S3Error as exc:
            assert exc.code is ErrorCode.NO_SUCH_KEY, exc
            state[key] = "deleted"
        else:
            state[key] = hashlib.sha256(body).hexdigest()
    return state


def start_child(data_dir: Path, log: Path, seed: int, stderr: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(CHILD.parent.parent),
                                                                    os.environ.get("PYTHONPATH")])))
    with open(stderr, "wb") as err:
        return subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(log), str(seed)],
                                stdout=subprocess.PIPE, stderr=err, env=env)


def wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    return bool(readable) and proc.stdout.readline().strip() == b"ready"


def test_kill9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    state: dict[str, str] = {}
    acked_total = killed_during_startup = in_flight_total = changed_by_in_flight = 0
    started = time.monotonic()
    rounds = 0
    while rounds < ROUNDS or (rounds < ROUNDS * 2 and acked_total < 50):
        log, stderr = tmp_path / f"ops-{rounds}.log", tmp_path / f"child-{rounds}.err"
        proc = start_child(data_dir, log, rng.getrandbits(32), stderr)
        try:
            if rounds % 6 == 5:  # now and then, kill whenever: during imports, replay or the first writes
                time.sleep(rng.uniform(0.05, 0.9))
                killed_during_startup += 1
            else:
                assert wait_ready(proc, 30), f"child never got ready: {stderr.read_text()}"
                time.sleep(rng.uniform(0.05, 0.6))
            assert proc.poll() is None, f"child died on its own:\n{stderr.read_text()}"
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        lines, acked = parse_log(log)
        acked_total += acked
        allowed = allowed_states(state, lines)
        in_flight_total += sum(len(states) > 1 for states in allowed.values())

        engine = Engine(EngineOptions(data_dir))
        try:
            observed = asyncio.run(observe(engine))
            for key in KEYS:
                assert observed[key] in allowed[key], (
                    f"round {rounds}: {key} is {observed[key]}, allowed {sorted(allowed[key])}")
            check_engine_integrity(engine, tmp_path / f"rebuild-{rounds}")
        finally:
            engine.close()
        last_acked = allowed_states(state, [line for line in lines if line[0] == "A" or any(
            other[0] == "A" and other[1] == line[1] for other in lines)])
        changed_by_in_flight += sum(observed[k] not in last_acked[k] for k in KEYS)
        state = observed
        rounds += 1
        if time.monotonic() - started > TIME_BUDGET_S and rounds >= 20:
            break
    print(f"{rounds} rounds, {acked_total} acknowledged ops, {in_flight_total} in flight at a kill, "
          f"{changed_by_in_flight} in-flight ops found applied, {killed_during_startup} kills at any moment")
    assert rounds >= 20
    assert acked_total >= 50, f"only {acked_total} acknowledged operations in {rounds} rounds: nothing was tested"
    # Finally, a rebuild from scratch through the engine's start-up path equals the views the rounds left.
    engine = Engine(EngineOptions(data_dir))
    before = dump_views(engine.views)
    engine.close()
    shutil.rmtree(data_dir / "views")
    engine = Engine(EngineOptions(data_dir))
    try:
        assert not diff_dumps(before, dump_views(engine.views))
    finally:
        engine.close()


# -- deterministic: events in the journal that never reached LMDB --------------------------------------------------
def _engine(data_dir: Path) -> Engine:
    return Engine(EngineOptions(data_dir, chunk_bytes=1000, min_part_bytes=1))


def test_events_journaled_but_never_applied_are_replayed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = _engine(data_dir)
    asyncio.run(_seed_objects(engine))
    last_seq = engine.views.last_seq()
    engine.close()

    # What the sequencer does up to its commit point, by hand: bytes into a volume, fdatasync, journal the
    # events with one write + fdatasync -- and then "crash" before the LMDB transaction commits.
    body = os.urandom(2500)
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    volumes = VolumeStore(data_dir / "volumes")
    locations = [volumes.append(c, hashlib.sha256(c).digest()) for c in chunks]
    volumes.sync({loc.volume for loc in locations})
    volumes.close()
    origin = (data_dir / "node_id").read_text().strip()
    journal = Journal(data_dir / "journal", origin=origin)
    version = version_record("null", len(body), hashlib.md5(body).hexdigest(), content_type="application/x-test",
                             blobs=[[loc.hash, loc.size] for loc in locations])
    journal.write_batch([
        EventDraft(EventType.OBJECT_VERSION_PUT, {"bucket": "plain", "key": "late/arrival", "version": version,
                                                  "blobs_at": [loc.to_record() for loc in locations]}),
        EventDraft(EventType.OBJECT_VERSION_REMOVED, {"bucket": "plain", "key": "gone", "version_id": "null"}),
        EventDraft(EventType.BUCKET_CONFIG_SET, {"bucket": "plain", "kind": "versioning", "value": "Enabled"}),
    ])
    assert journal.last_seq == last_seq + 3
    journal.close()

    engine = _engine(data_dir)
    try:
        assert engine.views.last_seq() == last_seq + 3
        head = engine.head_object("plain", "late/arrival")
        assert head.content_type == "application/x-test"
        assert asyncio.run(get(engine, "plain", "late/arrival")) == body
        with pytest.raises(S3Error) as exc:
            engine.head_object("plain", "gone")
        assert exc.value.code is ErrorCode.NO_SUCH_KEY
        assert engine.get_bucket("plain").versioning == "Enabled"
        check_engine_integrity(engine, tmp_path / "rebuild")
        # The engine keeps going from there: new events continue the log.
        asyncio.run(put(engine, "plain", "after", b"x"))
        assert engine.views.last_seq() == engine.journal.last_seq == last_seq + 4
    finally:
        engine.close()


async def _seed_objects(engine: Engine) -> None:
    await engine.create_bucket("plain")
    await engine.create_bucket("ver")
    await engine.set_bucket_config("ver", "versioning", "Enabled")
    for i in range(5):
        await put(engine, "plain", f"p/{i}", os.urandom(1500 + i))
        await put(engine, "ver", "v", f"version {i}".encode())
    await put(engine, "plain", "gone", b"soon deleted")


async def _more_operations(engine: Engine) -> None:
    await put(engine, "plain", "p/0", b"overwritten")
    await engine.delete_object("plain", "p/1")
    await engine.delete_object("ver", "v")
    await engine.rename("plain", "p/", "q/")
    upload_id = await engine.create_multipart_upload("ver", "mp")
    etags = []
    for n in (1, 2):
        stored = await engine.ingestor.ingest_bytes(bytes([n]) * 1200)
        etags.append((n, await engine.upload_part("ver", "mp", upload_id, n, stored)))
    await engine.complete_multipart_upload("ver", "mp", upload_id, etags)
    await asyncio.gather(*(put(engine, "plain", f"many/{i}", os.urandom(300)) for i in range(40)))
    await engine.put_object_tags("ver", "mp", None, {"t": "1"})


def test_views_behind_the_journal_catch_up(tmp_path: Path) -> None:
    """LMDB rolled back to an older commit (what a kill before the commit leaves) is caught up by replay."""
    data_dir = tmp_path / "data"
    engine = _engine(data_dir)
    asyncio.run(_seed_objects(engine))
    engine.close()
    snapshot = tmp_path / "views-snapshot"
    shutil.copytree(data_dir / "views", snapshot)

    engine = _engine(data_dir)
    asyncio.run(_more_operations(engine))
    expected = dump_views(engine.views)
    listing = asyncio.run(list_all(engine, "plain"))[0]
    versions = asyncio.run(list_all_versions(engine, "ver"))[0]
    engine.close()

    shutil.rmtree(data_dir / "views")
    shutil.copytree(snapshot, data_dir / "views")
    engine = _engine(data_dir)
    try:
        diffs = diff_dumps(expected, dump_views(engine.views))
        assert not diffs, "\n".join(diffs)
        assert asyncio.run(list_all(engine, "plain"))[0] == listing
        assert asyncio.run(list_all_versions(engine, "ver"))[0] == versions
        assert asyncio.run(get(engine, "plain", "q/0")) == b"overwritten"
        check_engine_integrity(engine, tmp_path / "rebuild")
    finally:
        engine.close()


def test_issue18_views_ahead_of_the_journal_refuse_until_repaired(tmp_path: Path) -> None:
    """A journal that lost an acknowledged tail while LMDB kept it: start-up refuses (the views prove the event was
    committed); `s4-journal repair --yes` drops it on purpose and rebuilds the views from the log."""
    data_dir = tmp_path / "data"
    engine = _engine(data_dir)
    asyncio.run(_seed_objects(engine))
    engine.close()
    (segment,) = sorted((data_dir / "journal").iterdir())
    size_before = segment.stat().st_size
    engine = _engine(data_dir)
    asyncio.run(put(engine, "plain", "lost", b"this event is cut off below"))
    engine.close()
    with open(segment, "r+b") as fh:  # cut the last event in half
        fh.truncate(size_before + (segment.stat().st_size - size_before) // 2)
    with pytest.raises(CorruptJournalError, match=rf"segment {segment.name} at offset {size_before}: .*committed"):
        _engine(data_dir)
    assert journal_cli.main(["repair", "--data-dir", str(data_dir), "--yes"]) == 0
    engine = _engine(data_dir)
    try:
        assert engine.views.last_seq() == engine.journal.last_seq
        with pytest.raises(S3Error) as exc:
            engine.head_object("plain", "lost")
        assert exc.value.code is ErrorCode.NO_SUCH_KEY
        assert asyncio.run(list_all(engine, "plain"))[0] == ["gone"] + [f"p/{i}" for i in range(5)]
        check_engine_integrity(engine, tmp_path / "rebuild")
    finally:
        engine.close()


# -- deterministic: the LMDB commit fails after the journal write ----------------------------------------------
class _FailingCommit:
    """A write transaction whose first commit fails with MapFullError, as LMDB can when the map is full."""

    armed = False

    def __init__(self, txn: Any) -> None:
        self.txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def __enter__(self) -> Any:
        return self.txn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.txn.__exit__(*exc)

    def commit(self) -> None:
        if _FailingCommit.armed:
            _FailingCommit.armed = False
            self.txn.abort()
            raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL (simulated)")
        self.txn.commit()


class _Env:
    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def begin(self, db: Any = None, parent: Any = None, write: bool = False, buffers: bool = False) -> Any:
        """py-lmdb's signature (the sequencer calls it positionally)."""
        if isinstance(parent, _FailingCommit):
            parent = parent.txn
        txn = self.env.begin(db, parent, write, buffers)
        return _FailingCommit(txn) if write and parent is None else txn


class _Views:
    def __init__(self, views: Any) -> None:
        self.views = views
        self.env = _Env(views.env)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.views, name)


def test_commit_failure_after_the_journal_write_is_not_decided_twice(tmp_path: Path) -> None:
    """Events that reached the journal are facts: a failed LMDB commit must not re-run the batch's deciders."""
    data_dir = tmp_path / "data"
    engine = _engine(data_dir)
    try:
        asyncio.run(engine.create_bucket("ver"))
        asyncio.run(engine.set_bucket_config("ver", "versioning", "Enabled"))
        engine.sequencer.views = _Views(engine.views)  # type: ignore[assignment]
        _FailingCommit.armed = True
        version = asyncio.run(put(engine, "ver", "k", b"once"))
        assert not _FailingCommit.armed
        live = asyncio.run(list_all_versions(engine, "ver"))[0]
        assert live == [("k", version.version_id, False)]
        assert engine.views.last_seq() == engine.journal.last_seq
        check_engine_integrity(engine, tmp_path / "rebuild")  # the journal holds exactly what the views show
    finally:
        engine.close()
