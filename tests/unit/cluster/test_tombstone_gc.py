"""Tombstone GC's horizon and the rejoin rule (cluster/tombstone_gc.py, cluster/rejoin.py;
docs/architecture/tombstones.md): an unknown peer holds every tombstone back, a peer silent longer than the limit
is waived (and refused until it comes back with a new data life), a restart never waives anyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.cluster.feed_store import FeedStore
from s4.cluster.rejoin import Rejoin
from s4.cluster.tombstone_gc import TombstoneGC
from s4.cluster.wire.s4cluster.v1 import PingRequest
from s4.engine.tombstones import Horizon

PEERS = ("node-2", "node-3")
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> FeedStore:
    feed = FeedStore(tmp_path / "feed.lmdb")
    yield feed  # type: ignore[misc]
    feed.close()


def gc_for(rejoin: Rejoin, synced: dict[str, int], wall: Clock, grace_s: float = 10.0) -> TombstoneGC:
    return TombstoneGC(PEERS, None, None, grace_s, rejoin, synced.get, wall=wall)  # type: ignore[arg-type]


def ping(gc: TombstoneGC, peer: str, applied: int, life: int = 7) -> tuple[bool, int]:
    return gc.on_ping(peer, PingRequest(node_id=peer, applied_your_journal=applied, data_life=life))


def test_an_unknown_peer_holds_every_tombstone_back(store: FeedStore) -> None:
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 3 * DAY, clock=clock, wall=clock)
    synced: dict[str, int] = {}
    gc = gc_for(rejoin, synced, clock)
    assert gc.horizon() is None and gc.stats.blocked_by == ["node-2", "node-3"]
    ping(gc, "node-2", 40)
    synced["node-2"] = 900_000
    assert gc.horizon() is None and gc.stats.blocked_by == ["node-3"]  # node-3 never told, never pulled from
    ping(gc, "node-3", 25)
    assert gc.horizon() is None and gc.stats.blocked_by == ["node-3"]  # told, but no pass with it completed yet
    synced["node-3"] = 950_000
    # the lowest cursor, and the grace before the earliest pass start (and now)
    assert gc.horizon() == Horizon(before_ms=900_000 - 10_000, max_seq=25)
    clock.t = 800.0
    assert gc.horizon() == Horizon(before_ms=800_000 - 10_000, max_seq=25)


def test_a_peer_silent_longer_than_the_limit_is_waived_then_refused_until_bootstrapped(store: FeedStore) -> None:
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    gc = gc_for(rejoin, {"node-2": 1, "node-3": 1}, clock)
    assert ping(gc, "node-2", 5, life=11) == (False, rejoin.life)
    ping(gc, "node-3", 5, life=22)
    for _ in range(10):  # node-2 answers every 10 s, node-3 falls silent
        rejoin.write(rejoin.tick())
        clock.t += 10
        ping(gc, "node-2", 6, life=11)
    rejoin.write(rejoin.tick())
    assert rejoin.waived == {}  # node-3 silent for exactly the limit
    assert gc.horizon() == Horizon(before_ms=1 - 10_000, max_seq=5)
    clock.t += 5
    ping(gc, "node-2", 6, life=11)
    rejoin.write(rejoin.tick())
    assert rejoin.waived == {"node-3": 22} and rejoin.blocked("node-3") and not rejoin.blocked("node-2")
    assert gc.horizon() == Horizon(before_ms=1 - 10_000, max_seq=6)  # node-3 no longer holds GC back
    # the waiver is durable; its old life is refused and its reports ignored
    again = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    assert again.waived == {"node-3": 22} and again.life == rejoin.life
    assert ping(gc, "node-3", 1, life=22) == (True, rejoin.life) and gc.holds["node-3"] == 5
    # bootstrapped: a new life is taken again (and holds GC back like any peer)
    assert ping(gc, "node-3", 0, life=33) == (False, rejoin.life)
    assert not rejoin.blocked("node-3") and not rejoin.waived_peer("node-3")
    rejoin.write(rejoin.tick())
    assert Rejoin(PEERS, store, 100.0, clock=clock, wall=clock).waived == {}


def test_a_restart_counts_as_hearing_so_a_pool_powered_off_together_waives_nobody(store: FeedStore) -> None:
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    gc = gc_for(rejoin, {}, clock)
    ping(gc, "node-2", 1, life=11)
    ping(gc, "node-3", 1, life=22)
    clock.t += 10
    rejoin.write(rejoin.tick())
    clock.t += 10_000  # everything off for a long time, then this node starts again
    restarted = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    assert restarted.away_too_long()  # it will ask its peers before serving
    restarted.write(restarted.tick())
    assert restarted.waived == {}


def test_a_peer_never_heard_from_is_not_waived(store: FeedStore) -> None:
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    clock.t += 1000
    rejoin.write(rejoin.tick())
    assert rejoin.waived == {}


def test_a_refusal_is_kept_until_the_store_is_removed(store: FeedStore, tmp_path: Path) -> None:
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 3 * DAY, clock=clock, wall=clock)
    rejoin.told_refused("node-2")
    assert rejoin.refused is not None and "S4_MAX_REJOIN_DOWNTIME_DAYS=3 days" in rejoin.refused
    assert "s4-admin cluster bootstrap" in rejoin.refused
    rejoin.write(rejoin.tick())
    assert Rejoin(PEERS, store, 3 * DAY, clock=clock, wall=clock).refused == rejoin.refused


def test_a_node_cut_off_alone_waives_nobody(store: FeedStore) -> None:
    """Only a majority side moves on: node-1 alone, hearing neither peer past the limit, must not refuse them (it
    would stop the majority that deleted while it was away)."""
    clock = Clock()
    rejoin = Rejoin(PEERS, store, 100.0, clock=clock, wall=clock)
    rejoin.heard("node-2", 11)
    rejoin.heard("node-3", 22)
    rejoin.write(rejoin.tick())
    for _ in range(50):
        clock.t += 10
        rejoin.write(rejoin.tick())
    assert rejoin.waived == {}
    rejoin.heard("node-2", 11)  # back: with node-2 it is a majority of three, but node-2 was not silent long
    rejoin.write(rejoin.tick())  # enough to be given up on, and node-3 is: only once node-2 and this node
    assert rejoin.waived == {}  # stayed together longer than the limit
    for _ in range(11):
        clock.t += 10
        rejoin.heard("node-2", 11)
        rejoin.write(rejoin.tick())
    assert rejoin.waived == {"node-3": 22}
