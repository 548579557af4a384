"""volumes/group_sync.py: concurrent writers share fdatasyncs, and none returns before a sync that started after
its write has finished."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterable

import pytest

from s4.engine.volumes.group_sync import GroupSync

pytestmark = pytest.mark.anyio


class FakeDisk:
    """Counts writes; a sync covers every write counted when it *starts* (what fdatasync guarantees)."""

    def __init__(self, fail_first: int = 0, max_delay_s: float = 0.005) -> None:
        self.max_delay_s = max_delay_s
        self.written: dict[str, int] = {}
        self.durable: dict[str, int] = {}
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def write(self, name: str) -> int:
        with self.lock:
            self.written[name] = self.written.get(name, 0) + 1
            return self.written[name]

    def sync(self, names: Iterable[str]) -> None:
        for name in names:
            with self.lock:
                covered = self.written.get(name, 0)
                if self.fail_first:
                    self.fail_first -= 1
                    raise OSError(5, "Input/output error")
            if self.max_delay_s:
                time.sleep(random.uniform(0.001, self.max_delay_s))
            with self.lock:
                self.durable[name] = max(self.durable.get(name, 0), covered)


@pytest.mark.parametrize("max_delay_s", [0.005, 0.0])
async def test_every_caller_returns_only_after_its_write_is_durable_and_syncs_are_shared(max_delay_s: float) -> None:
    disk = FakeDisk(max_delay_s=max_delay_s)  # 0: syncs finish before their waiters resume
    group = GroupSync(disk.sync)

    async def writer(name: str) -> None:
        for _ in range(20):
            mine = disk.write(name)
            await group.durable([name])
            assert disk.durable[name] >= mine  # never acknowledged before its bytes are on disk
            await asyncio.sleep(random.uniform(0, 0.002))

    await asyncio.gather(*(writer(f"w0{i % 2}-000001.vol") for i in range(32)))
    assert sum(disk.written.values()) == 32 * 20
    if max_delay_s:
        assert group.syncs < 32 * 20 / 3  # 16 writers per volume: most share a sync


async def test_a_failed_sync_fails_its_waiters_and_the_next_call_syncs_again() -> None:
    disk = FakeDisk(fail_first=1)
    group = GroupSync(disk.sync)
    disk.write("v")
    results = await asyncio.gather(*(group.durable(["v"]) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)  # all of them waited on the failed sync
    assert "v" not in disk.durable
    await group.durable(["v"])
    assert disk.durable["v"] == 1
