"""kill -9 during compaction: every object reads back byte-exact after each kill, and a later pass reclaims
the space (nothing orphaned: crashed copies are garbage that counts as dead, retired files get deleted)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, EngineOptions
from s4.engine.jobs.compaction import run_compaction

pytestmark = pytest.mark.crash
VOLUME = 256 * 1024
CHUNK = 16 * 1024
ROUNDS = 8

CHILD = f"""
import sys
from s4.engine import Engine, EngineOptions
from s4.engine.jobs import compaction
compaction.BATCH_BYTES = 20_000  # many small move batches: many places to be killed
engine = Engine(EngineOptions(sys.argv[1], volume_size_bytes={VOLUME}, chunk_bytes={CHUNK}))
print("ready", flush=True)
while True:
    compaction.run_compaction(engine, threshold=0.05)
"""


def open_engine(data_dir: Path) -> Engine:
    return Engine(EngineOptions(data_dir, volume_size_bytes=VOLUME, chunk_bytes=CHUNK))


def volume_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "volumes").iterdir())


async def prepare(data_dir: Path) -> dict[str, bytes]:
    engine = open_engine(data_dir)
    rng = random.Random(7)
    await engine.create_bucket("bkt")
    bodies = {f"k{i:03d}": rng.randbytes(rng.randint(1, 60_000)) for i in range(150)}
    for key, body in bodies.items():
        await put(engine, "bkt", key, body)
    for key in list(bodies)[::4] + list(bodies)[1::4] + list(bodies)[2::4]:
        await engine.delete_object("bkt", key)
        del bodies[key]
    engine.close()
    return bodies


async def check(data_dir: Path, bodies: dict[str, bytes]) -> None:
    engine = open_engine(data_dir)
    try:
        for key, body in bodies.items():
            assert await get(engine, "bkt", key) == body, key
        for loc_key in bodies:
            for loc in engine.locate(engine.head_object("bkt", loc_key)):
                assert engine.volumes.verify_blob(loc) is None
    finally:
        engine.close()


def test_kill_during_compaction(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bodies = asyncio.run(prepare(data_dir))
    live = sum(len(b) for b in bodies.values())
    rng = random.Random(11)
    for _ in range(ROUNDS):
        with subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == b"ready"
                time.sleep(rng.uniform(0.0, 0.25))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
        asyncio.run(check(data_dir, bodies))
    engine = open_engine(data_dir)
    try:
        for _ in range(3):  # a later pass reclaims whatever the kills left behind
            report = run_compaction(engine, threshold=0.05)
            assert not report.errors
    finally:
        engine.close()
    asyncio.run(check(data_dir, bodies))
    assert volume_bytes(data_dir) < 2 * live + 3 * VOLUME
