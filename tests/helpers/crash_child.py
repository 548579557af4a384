"""Child process of tests/crash/test_engine_crash.py: random writes to an Engine until it is SIGKILLed.

Usage: ``python crash_child.py DATA_DIR OP_LOG SEED``

Opens an Engine on DATA_DIR (replaying whatever the previous, killed, run left), makes sure bucket ``crash``
exists, prints ``ready`` and then runs batches of 1-4 concurrent operations on distinct keys forever: PUTs of
0 to ~300 KiB (new random contents, contents reused from a small pool so chunks dedup, overwrites) and DELETEs.
Each operation appends to OP_LOG (space-separated)::

    I <op id> <key> <sha256 hex | deleted>   before the engine call (flushed): from here it may be in flight
    A <op id> <key> <sha256 hex | deleted>   after the engine call returned, then flushed and fsynced

so every ``A`` line is an acknowledged write whose effect must survive the kill.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from pathlib import Path
from typing import IO

from s4.engine import Engine, EngineOptions, ErrorCode, S3Error

BUCKET = "crash"
KEYS = [f"k{i:02d}" for i in range(24)] + [f"dir/{i}/obj" for i in range(8)] + ["a", "a/", "a.txt", "a0"]
CHUNK_BYTES = 64 * 1024
MAX_BYTES = 300 * 1024


def content(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def pick_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.05:
        return 0
    if roll < 0.5:
        return rng.randint(1, 4096)
    return rng.randint(4097, MAX_BYTES)


class OpLog:
    def __init__(self, path: Path) -> None:
        self.fh: IO[str] = open(path, "a", encoding="utf-8")  # open for the life of the process

    def intent(self, op: int, key: str, state: str) -> None:
        self.fh.write(f"I {op} {key} {state}\n")
        self.fh.flush()

    def ack(self, op: int, key: str, state: str) -> None:
        self.fh.write(f"A {op} {key} {state}\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


async def main(data_dir: Path, log_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    pool = [(rng.getrandbits(64), pick_size(rng)) for _ in range(6)]
    engine = Engine(EngineOptions(data_dir, chunk_bytes=CHUNK_BYTES))
    try:
        await engine.create_bucket(BUCKET)
    except S3Error as exc:
        if exc.code is not ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU:
            raise
    log = OpLog(log_path)
    print("ready", flush=True)
    op = 0

    async def put(op: int, key: str, body: bytes) -> None:
        state = hashlib.sha256(body).hexdigest()
        log.intent(op, key, state)
        stored = await engine.ingestor.ingest_bytes(body)
        await engine.put_object(BUCKET, key, stored)
        log.ack(op, key, state)

    async def delete(op: int, key: str) -> None:
        log.intent(op, key, "deleted")
        await engine.delete_object(BUCKET, key)
        log.ack(op, key, "deleted")

    while True:
        batch = []
        for key in rng.sample(KEYS, rng.randint(1, 4)):
            op += 1
            if rng.random() < 0.2:
                batch.append(delete(op, key))
            else:
                seed_, size = rng.choice(pool) if rng.random() < 0.3 else (rng.getrandbits(64), pick_size(rng))
                batch.append(put(op, key, content(seed_, size)))
        await asyncio.gather(*batch)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
