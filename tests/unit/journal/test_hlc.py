"""Hybrid logical clock: packing, monotonicity under a stalled or backwards wall clock, merging remote stamps."""

from __future__ import annotations

import threading

from s4.journal import HybridClock
from s4.journal.hlc import LOGICAL_MASK, pack, physical_ms, unpack


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_pack_unpack_round_trip_and_order() -> None:
    assert unpack(pack(1_700_000_000_123, 7)) == (1_700_000_000_123, 7)
    assert physical_ms(pack(42, LOGICAL_MASK)) == 42
    pairs = [(5, 0), (5, 1), (5, LOGICAL_MASK), (6, 0)]
    assert [pack(*p) for p in pairs] == sorted(pack(*p) for p in pairs)


def test_tick_follows_the_wall_clock_when_it_advances() -> None:
    wall = FakeWall(1000)
    clock = HybridClock(wall)
    assert clock.tick() == pack(1000, 0)
    wall.ms = 1005
    assert clock.tick() == pack(1005, 0)


def test_tick_counts_logically_within_one_millisecond() -> None:
    clock = HybridClock(FakeWall(1000))
    assert [unpack(clock.tick()) for _ in range(3)] == [(1000, 0), (1000, 1), (1000, 2)]


def test_tick_never_goes_backwards_when_the_wall_clock_does() -> None:
    wall = FakeWall(2000)
    clock = HybridClock(wall)
    first = clock.tick()
    wall.ms = 1500
    second = clock.tick()
    assert second > first and physical_ms(second) == 2000


def test_logical_overflow_borrows_the_next_millisecond() -> None:
    clock = HybridClock(FakeWall(10), last=pack(10, LOGICAL_MASK))
    assert unpack(clock.tick()) == (11, 0)


def test_observe_moves_the_clock_past_a_remote_stamp_but_never_back() -> None:
    clock = HybridClock(FakeWall(100))
    remote = pack(500, 3)
    assert clock.observe(remote) == remote
    assert clock.tick() == pack(500, 4)
    assert clock.observe(pack(200, 0)) == pack(500, 4)
    assert clock.last == pack(500, 4)


def test_ticks_from_many_threads_are_unique() -> None:
    clock = HybridClock(FakeWall(7))
    stamps: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [clock.tick() for _ in range(500)]
        with lock:
            stamps.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(stamps)) == 4000
