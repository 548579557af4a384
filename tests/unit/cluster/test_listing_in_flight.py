"""robust19: listings over writes in flight (cluster/listings.py ``QuorumListings`` settled by cluster/key_reads.py
``QuorumKeyReads.settle_listing``), without processes: the three replicas of tests/unit/cluster/test_key_reads.py
(real journals and views, ``ListRange`` and ``ReadKeys`` answered by the real ``ReadsService``, catch-up passes and
``CatchUpFrom`` that apply the events a replica holds).

A listing merged from R replicas used to be answered as merged: a key from a write in flight (on fewer than W
replicas) shown by a listing through n1 could be missing from a later listing or GET through another node (a read
going backwards). Proved here: the replicas a listing found stale are repaired before the answer, a write in flight
here is covered (a leaseholder that lacks it gets it, or loses its lease), and a listing over agreeing replicas with
nothing in flight calls nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from test_key_reads import IDS, Pool, Stub

from s4.cluster.key_reads import QuorumKeyReads
from s4.cluster.listings import QuorumListings
from s4.cluster.liveness import DEAD
from s4.cluster.read_leases import LeaseGrants, LeaseSettings
from s4.cluster.reads import LocalReads, ReadsService
from s4.cluster.wire.s4cluster.v1 import ListRangeReply, ListRangeRequest


class ListStub(Stub):
    """``Stub`` with the peer's ``ListRange`` (real ReadsService); a peer in ``pool.read_fails`` refuses it."""

    async def list_range(self, message: ListRangeRequest, *, timeout: float | None = None) -> ListRangeReply:
        if self.peer in self.pool.read_fails:
            raise GRPCError(Status.UNAVAILABLE, f"{self.peer} is away")
        return await LocalReads(ReadsService(self.pool.nodes[self.peer].views), self.peer).list_range(message)


class Gate:
    """The read gate as the listing and the key reads ask it: events unsettled here, and whether a slot's are."""

    def __init__(self, in_flight: bool) -> None:
        self.answer = in_flight
        self.asked = 0  # slot questions
        self.counted = 0  # reads of the unsettled count

    @property
    def unsettled(self) -> int:
        self.counted += 1
        return 1 if self.answer else 0

    def in_flight(self, bucket: str, slot: int) -> bool:
        self.asked += 1
        return self.answer


class Spy:
    """Counts the listing's calls into the repair port, then passes them on."""

    def __init__(self, port: QuorumKeyReads) -> None:
        self.port, self.calls = port, 0

    async def settle_listing(self, *args: Any) -> None:
        self.calls += 1
        await self.port.settle_listing(*args)


def listings(pool: Pool, node_id: str, *, gate: Any = None, grants: LeaseGrants | None = None,
             settled: bool = True) -> tuple[QuorumListings, Spy]:
    port = pool.reads(node_id, gate=gate, grants=grants)
    spy = Spy(port)
    peers = [p for p in IDS if p != node_id]
    return QuorumListings(node_id, peers, 2, pool.nodes[node_id].views, lambda peer: ListStub(pool, node_id, peer),
                          state=lambda peer: pool.states.get(peer, "alive"), settle=spy if settled else None,
                          gate=gate), spy


def listed(through: QuorumListings) -> list[str]:
    page = asyncio.run(through.list_objects("b", "", "", "", 1000))
    return [entry.key for entry in page.entries]


@pytest.mark.parametrize("settled", [True, pytest.param(False, marks=pytest.mark.xfail(strict=True, reason=(
    "without the settle step: the later listing goes backwards (the history this test guards)")))])
def test_robust19_a_listing_showing_a_write_on_fewer_than_w_replicas_repairs_them_first(pool: Pool,
                                                                                      settled: bool) -> None:
    """W of key "k" is on n1 only (its coordinator, the copies on their way). A listing through n1 merges n1 and n2
    and shows "k"; a later listing through n3 merging n3 and n2 (n1 away) must show it too."""
    w = pool.put("k", 2)
    pool.give(w, ["n1"])
    first, _ = listings(pool, "n1", settled=settled)
    assert listed(first) == ["a", "k"]
    pool.states = {"n1": DEAD}
    later, _ = listings(pool, "n3")
    assert listed(later) == ["a", "k"]
    assert set(w) <= pool.held["n2"]


def test_robust19_a_listing_through_a_stale_node_catches_it_up_from_the_answering_peer(pool: Pool) -> None:
    """W of key "k" is on n2 only (another coordinator's write, on its way to n1 and n3). A listing through n1 shows
    it from n2; n1 catches up from n2 before answering, so a listing through n3 merging n3 and n1 shows it too."""
    w = pool.put("k", 2)
    pool.give(w, ["n2"])
    first, _ = listings(pool, "n1")
    assert listed(first) == ["a", "k"]
    assert ("n1", "n2") in pool.passes and set(w) <= pool.held["n1"]
    pool.states = {"n2": DEAD}
    later, _ = listings(pool, "n3")
    assert listed(later) == ["a", "k"]


@pytest.mark.parametrize("settled", [True, pytest.param(False, marks=pytest.mark.xfail(strict=True, reason=(
    "without the cover: n2 reads locally under its lease and lacks W")))])
def test_robust19_a_listing_answering_a_write_in_flight_first_brings_it_to_a_leaseholder(pool: Pool,
                                                                                        settled: bool) -> None:
    """W of key "k" applied on n1 and n3, on its way to n2, which holds a lease of n1 (its reads and listings are
    local). A listing through n1 (merging n1 and n3: n2 does not answer ListRange) shows "k": before the answer n2
    holds W, or a local listing or GET through n2 would not show it."""
    pool.give(pool.put("k", 1), IDS)
    w = pool.put("k2", 2)
    pool.give(w, ["n1", "n3"])
    pool.read_fails = {"n2"}
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0, revoke_after_s=5.0))
    assert grants.grant("n2", 0) > 0
    through, spy = listings(pool, "n1", gate=Gate(True), grants=grants, settled=settled)
    assert listed(through) == ["a", "k", "k2"]
    assert set(w) <= pool.held["n2"]
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and spy.port.covered == 1


def test_robust19_a_listing_over_agreeing_replicas_with_nothing_in_flight_calls_nothing(pool: Pool) -> None:
    pool.give(pool.put("k", 2), IDS)
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0))
    assert grants.grant("n2", 0) > 0
    gate = Gate(False)
    through, spy = listings(pool, "n1", gate=gate, grants=grants)
    assert listed(through) == ["a", "k"]
    # the listing read the gate's count (one memory read) and asked nothing more of anyone
    assert gate.counted >= 1 and gate.asked == 0
    assert spy.calls == 0 and pool.repair_calls == [] and pool.passes == []
