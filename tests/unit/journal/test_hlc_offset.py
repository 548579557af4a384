"""HLC across nodes: a peer stamp too far ahead is refused (clock unchanged); read-before-write stamps after what was
read; properties under a simulated wall clock that jumps, stalls and goes backwards."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.journal.hlc import DEFAULT_MAX_OFFSET_MS, ClockOffsetError, HybridClock, pack, physical_ms


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_default_max_offset_is_sixty_seconds() -> None:
    assert DEFAULT_MAX_OFFSET_MS == 60_000
    assert HybridClock(FakeWall(0)).max_offset_ms == 60_000


def test_peer_stamp_beyond_the_max_offset_is_refused_and_the_clock_does_not_move() -> None:
    wall = FakeWall(1_000_000)
    clock = HybridClock(wall, max_offset_ms=60_000)
    before = clock.tick()
    remote = pack(1_000_000 + 60_001, 0)
    with pytest.raises(ClockOffsetError) as info:
        clock.observe_peer(remote)
    assert clock.last == before
    assert info.value.ahead_ms == 60_001 and info.value.max_offset_ms == 60_000
    assert "S4_MAX_CLOCK_OFFSET" in str(info.value) and "60001 ms ahead" in str(info.value)
    assert physical_ms(clock.tick()) == 1_000_000  # later ticks are not dragged forward


def test_peer_stamp_exactly_at_the_max_offset_is_accepted() -> None:
    clock = HybridClock(FakeWall(1_000_000), max_offset_ms=60_000)
    remote = pack(1_060_000, 5)
    assert clock.observe_peer(remote) == remote
    assert clock.tick() == pack(1_060_000, 6)


def test_tick_after_refuses_a_seen_stamp_too_far_ahead() -> None:
    clock = HybridClock(FakeWall(500), max_offset_ms=10)
    with pytest.raises(ClockOffsetError):
        clock.tick_after(pack(511, 0))
    assert clock.last == 0


def test_tick_after_stamps_after_a_peer_version_written_by_a_fast_clock() -> None:
    """Read before write: the peer's version is 30 s ahead of our wall clock; our overwrite must still sort after it
    (a plain tick would stamp it 30 s earlier and the overwrite would lose)."""
    clock = HybridClock(FakeWall(1_000_000))
    seen = pack(1_030_000, 7)
    assert clock.tick_after(seen) == pack(1_030_000, 8)
    assert clock.tick_after(pack(10, 0)) == pack(1_030_000, 9)  # an old stamp: just the next local tick


def test_replay_of_the_own_journal_is_not_offset_checked() -> None:
    """The writer merges its own journal's last stamp through observe(); a wall clock set back must not stop
    start-up."""
    clock = HybridClock(FakeWall(0), max_offset_ms=1)
    assert clock.observe(pack(10_000_000, 0)) == pack(10_000_000, 0)


def test_negative_max_offset_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_offset_ms"):
        HybridClock(FakeWall(0), max_offset_ms=-1)


step = st.one_of(
    st.tuples(st.just("wall"), st.integers(-5_000, 5_000)),  # the wall clock jumps (backwards too) or stalls
    st.tuples(st.just("tick"), st.just(0)),
    st.tuples(st.just("peer"), st.integers(-100_000, 100_000)),  # a peer stamp this far from our wall clock
    st.tuples(st.just("after"), st.integers(-100_000, 100_000)),
)


@settings(max_examples=300)
@given(start=st.integers(0, 10**12), max_offset=st.integers(0, 70_000), steps=st.lists(step, max_size=60),
       logical=st.integers(0, 0xFFFF))
def test_hlc_properties_under_a_simulated_wall_clock(start: int, max_offset: int, steps: list[tuple[str, int]],
                                                     logical: int) -> None:
    """Stamps handed out are strictly increasing and after every accepted peer stamp; a refusal happens exactly when
    the peer is more than max_offset ahead and leaves the clock as it was; the clock never runs further ahead of
    the wall clock than the offset allows (plus logical overflow borrowing)."""
    wall = FakeWall(start)
    clock = HybridClock(wall, max_offset_ms=max_offset)
    issued: list[int] = []
    highest_wall = start
    for kind, arg in steps:
        before = clock.last
        if kind == "wall":
            wall.ms = max(0, wall.ms + arg)
            highest_wall = max(highest_wall, wall.ms)
            continue
        if kind == "tick":
            issued.append(clock.tick())
            assert issued[-1] > before
            continue
        remote = pack(max(0, wall.ms + arg), logical)
        too_far = physical_ms(remote) - wall.ms > max_offset
        try:
            got = clock.observe_peer(remote) if kind == "peer" else clock.tick_after(remote)
        except ClockOffsetError:
            assert too_far
            assert clock.last == before
            continue
        assert not too_far
        assert got >= remote and got >= before
        if kind == "after":
            assert got > remote and got > before
            issued.append(got)
    assert issued == sorted(set(issued))
    # Ticks borrow at most one ms per 65536 stamps; with <= 60 steps that is at most one ms beyond the bound.
    assert physical_ms(clock.last) <= highest_wall + max_offset + 1
