"""Background-job leases (cluster/job_lease.py over the CASPaxos register, engine/jobs/lease.py keeping them): the
change function's exact outcomes, and on a simulated pool (tests/helpers/simloop.py, simcluster.py) with skewed
wall clocks, lossy links, partitions, crashes, restarts and graceful stops, that the windows in which nodes may act
on a job never overlap (hypothesis picks the schedules), and that a live majority always ends up with a holder.
The oracle is shown to bite: a taker that ignores S4_MAX_CLOCK_OFFSET, with its clock ahead, overlaps a
partitioned holder that still acts until its deadline."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.simcluster import Faults, SimNetwork
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.caspaxos import Accepted, Ballot, Promise, Proposer, Reject
from s4.cluster.job_lease import (
    LEASE_CODEC,
    LeaseOutcome,
    LeaseRecord,
    RegisterLeases,
    claim,
    release,
)
from s4.engine.jobs.lease import JobLeases
from s4.engine.ports import LeaseGrant, SoleNodeLeases

NODES = ["n1", "n2", "n3"]
JOB = "lifecycle"
D_MS, OFFSET_MS = 10_000, 3_000
SIM_OFFSET_MS = 6_000  # the simulated pool's S4_MAX_CLOCK_OFFSET (its lease lasts 10 s: a 2.5 s margin)


# --- the change functions -------------------------------------------------------------------------------------


def test_claim_grants_a_free_lease_and_renews_only_its_own_life() -> None:
    first = claim("n1", "a", 1_000, D_MS, OFFSET_MS)(None)
    assert first.outcome.outcome is LeaseOutcome.GRANTED
    rec = first.value
    assert rec == LeaseRecord("n1", "a", 1, 1_000 + D_MS)
    renewed = claim("n1", "a", 5_000, D_MS, OFFSET_MS)(rec)
    assert renewed.outcome.outcome is LeaseOutcome.RENEWED and renewed.already_applied
    assert renewed.value == LeaseRecord("n1", "a", 1, 5_000 + D_MS)  # same term: the same holder life
    # A renewal whose wall clock stepped back never moves the expiry back.
    back = claim("n1", "a", 0, D_MS, OFFSET_MS)(renewed.value)
    assert back.value is not None and back.value.expires_ms == 5_000 + D_MS
    # The node restarted (a new token): its old life cannot act (the data directory's lock), so it takes over now.
    restarted = claim("n1", "b", 6_000, D_MS, OFFSET_MS)(renewed.value)
    assert restarted.outcome.outcome is LeaseOutcome.GRANTED
    assert restarted.value == LeaseRecord("n1", "b", 2, 6_000 + D_MS)


def test_claim_waits_for_expiry_plus_the_clock_offset_before_taking_over() -> None:
    held = LeaseRecord("n1", "a", 4, 20_000)
    for now in (0, 20_000, 20_000 + OFFSET_MS):  # before, at, and exactly offset past the expiry: still held
        refused = claim("n2", "x", now, D_MS, OFFSET_MS)(held)
        assert refused.outcome.outcome is LeaseOutcome.HELD and refused.value == held
        assert refused.outcome.record == held  # names the holder
    taken = claim("n2", "x", 20_001 + OFFSET_MS, D_MS, OFFSET_MS)(held)
    assert taken.outcome.outcome is LeaseOutcome.GRANTED
    assert taken.value == LeaseRecord("n2", "x", 5, 20_001 + OFFSET_MS + D_MS)


def test_release_frees_only_the_holders_lease_and_keeps_the_term() -> None:
    held = LeaseRecord("n1", "a", 3, 50_000)
    assert release("n2", "x")(held).outcome.outcome is LeaseOutcome.NOT_HOLDER
    assert release("n1", "old")(held).outcome.outcome is LeaseOutcome.NOT_HOLDER  # an earlier life of n1
    assert release("n2", "x")(None).outcome.outcome is LeaseOutcome.NOT_HOLDER
    freed = release("n1", "a")(held)
    assert freed.outcome.outcome is LeaseOutcome.RELEASED and freed.value == LeaseRecord("", "", 3, 0)
    again = claim("n2", "x", 0, D_MS, OFFSET_MS)(freed.value)  # free at once, whatever the clocks say
    assert again.outcome.outcome is LeaseOutcome.GRANTED and again.value is not None and again.value.term == 4


def test_lease_record_codec_round_trips_and_refuses_other_records() -> None:
    rec = LeaseRecord("node-1", "f00d", 7, 1_700_000_000_123)
    assert LEASE_CODEC.decode(LEASE_CODEC.encode(rec)) == rec
    from s4.cluster.cas_rpc import BUCKET_CODEC
    from s4.cluster.caspaxos import BucketRecord, BucketStatus

    with pytest.raises((ValueError, TypeError)):
        LEASE_CODEC.decode(BUCKET_CODEC.encode(BucketRecord(BucketStatus.LIVE, "o", 1, "t")))


def test_single_mode_always_grants() -> None:
    grant = run_sim(SoleNodeLeases("solo").acquire(JOB))
    assert grant.granted and grant.holder == "solo" and grant.deadline == math.inf


# --- a simulated pool ---------------------------------------------------------------------------------------------


class PartitionedTransport:
    """One node's view of the simulated network: a call across the cut fails at once (no answer)."""

    def __init__(self, net: SimNetwork, node: str, cut: set[str]) -> None:
        self.net, self.node, self.cut = net, node, cut

    def _across(self, peer: str) -> bool:
        return peer != self.node and (self.node in self.cut) != (peer in self.cut)

    async def prepare(self, peer: str, key: str, ballot: Ballot) -> Promise[Any] | Reject:
        if self._across(peer):
            raise ConnectionError(f"{self.node} cannot reach {peer}")
        return await self.net.prepare(peer, key, ballot)

    async def accept(self, peer: str, key: str, ballot: Ballot, value: Any,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject:
        if self._across(peer):
            raise ConnectionError(f"{self.node} cannot reach {peer}")
        return await self.net.accept(peer, key, ballot, value, lineage)


@dataclass
class Life:
    """One process life of a node: its lease port, the engine-side keeper, and the windows in which it may act."""

    node: str
    leases: JobLeases
    windows: list[list[float]] = field(default_factory=list)  # [granted at, deadline], cut at the life's end
    driver: asyncio.Task[None] | None = None
    ended: float | None = None


class RecordingPort:
    """The port between JobLeases and RegisterLeases: every grant opens a window [answered at, deadline)."""

    def __init__(self, port: RegisterLeases) -> None:
        self.port = port
        self.life: Life | None = None

    async def acquire(self, job: str) -> LeaseGrant:
        grant = await self.port.acquire(job)
        if grant.granted and self.life is not None and self.life.ended is None:
            self.life.windows.append([asyncio.get_running_loop().time(), grant.deadline])
        return grant

    async def release(self, job: str) -> None:
        await self.port.release(job)


class SimPool:
    """Three nodes on one simulated network; node i's wall clock reads loop time + ``skews_ms[i]``; monotonic time
    is loop time. Each live node asks for the lease every few seconds, as the job schedule does."""

    def __init__(self, rng: random.Random, faults: Faults, skews_ms: dict[str, int], *, duration_s: float = 10.0,
                 offset_s: float = 6.0, taker_offset_s: dict[str, float] | None = None) -> None:
        self.rng = rng
        self.net = SimNetwork(NODES, rng, faults)
        self.cut: set[str] = set()
        self.skews_ms = skews_ms
        self.duration_s, self.offset_s = duration_s, offset_s
        self.taker_offset_s = taker_offset_s or {}
        self.lives: list[Life] = []
        self.current: dict[str, Life | None] = dict.fromkeys(NODES)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def start(self, node: str) -> None:
        loop = asyncio.get_running_loop()
        proposer: Proposer[LeaseRecord] = Proposer(
            node, NODES, PartitionedTransport(self.net, node, self.cut), incarnation=self.rng.getrandbits(31),
            rng=random.Random(self.rng.random()), phase_timeout=1.0, max_attempts=6)
        skew = self.skews_ms[node] / 1000
        port = RegisterLeases(proposer, node, duration_s=self.duration_s,
                              max_offset_s=self.taker_offset_s.get(node, self.offset_s),
                              clock=lambda: 1_700_000_000.0 + loop.time() + skew, monotonic=loop.time,
                              token=f"{node}.{len(self.lives)}")
        recording = RecordingPort(port)
        life = Life(node, JobLeases(recording, loop.time))
        recording.life = life
        life.driver = loop.create_task(self._drive(life))
        self.lives.append(life)
        self.current[node] = life

    async def _drive(self, life: Life) -> None:
        while True:
            await life.leases.hold(JOB)
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))

    async def crash(self, node: str) -> None:
        """kill -9: the acceptor stops, the life ends where it stands (nothing released)."""
        life = self.current[node]
        self.net.crash(node)
        if life is not None:
            life.ended = self.now()
            tasks = [t for t in (life.driver, *life.leases._keepers.values()) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.current[node] = None

    async def stop(self, node: str) -> None:
        """A graceful stop: the runs end, then the lease is given back (engine/jobs/service.py ``Jobs.stop``)."""
        life = self.current[node]
        if life is None:
            return
        life.ended = self.now()
        assert life.driver is not None
        life.driver.cancel()
        await asyncio.gather(life.driver, return_exceptions=True)
        await life.leases.close()
        self.current[node] = None

    def restart(self, node: str) -> None:
        self.net.restart(node)
        if self.current[node] is None:
            self.start(node)

    def windows(self) -> list[tuple[float, float, str, int]]:
        out = []
        for index, life in enumerate(self.lives):
            for start, deadline in life.windows:
                end = deadline if life.ended is None else min(deadline, life.ended)
                if end > start:
                    out.append((start, end, life.node, index))
        return sorted(out)


def overlaps(windows: list[tuple[float, float, str, int]]) -> list[tuple[Any, Any]]:
    """Pairs of windows of different lives that share a moment."""
    found = []
    for i, a in enumerate(windows):
        for b in windows[i + 1:]:
            if b[0] >= a[1]:
                break
            if a[3] != b[3]:
                found.append((a, b))
    return found


async def run_schedule(seed: int, faults: Faults, skews_ms: dict[str, int], events: list[tuple[float, str, str]],
                       **pool_options: Any) -> SimPool:
    rng = random.Random(seed)
    pool = SimPool(rng, faults, skews_ms, **pool_options)
    for node in NODES:
        pool.start(node)
    for delay, action, node in events:
        await asyncio.sleep(delay)
        if action == "crash":
            await pool.crash(node)
        elif action == "stop":
            await pool.stop(node)
        elif action == "restart":
            pool.restart(node)
        elif action == "isolate":
            pool.cut.clear()
            pool.cut.add(node)
        else:
            assert action == "heal"
            pool.cut.clear()
    # Everyone back, the network healed: within a lease duration plus the offset, someone holds it again.
    pool.cut.clear()
    for node in NODES:
        pool.restart(node)
    settle = pool.duration_s + pool.offset_s + 10.0
    await asyncio.sleep(settle)
    end = pool.now()
    pool.holder_at_end = [w for w in pool.windows() if w[0] <= end < w[1]]  # type: ignore[attr-defined]
    for node in NODES:
        await pool.crash(node)  # freeze: windows are cut here
    return pool


events_strategy = st.lists(st.tuples(st.floats(0.0, 15.0), st.sampled_from(
    ["crash", "crash", "stop", "restart", "restart", "isolate", "heal"]), st.sampled_from(NODES)), max_size=8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), events=events_strategy,
       skews=st.tuples(*(st.integers(0, SIM_OFFSET_MS) for _ in NODES)),  # any two clocks within the offset
       drop=st.sampled_from([0.0, 0.05, 0.2]), max_delay=st.sampled_from([0.001, 0.05, 0.2]))
def test_issue19_at_most_one_node_may_act_on_a_job_at_any_moment(seed: int, events: list[tuple[float, str, str]],
                                                                 skews: tuple[int, ...], drop: float,
                                                                 max_delay: float) -> None:
    pool = run_sim(run_schedule(seed, Faults(max_delay=max_delay, drop=drop), dict(zip(NODES, skews, strict=True)),
                                events))
    windows = pool.windows()
    assert not overlaps(windows), overlaps(windows)[:3]
    if drop == 0.0:  # a healed pool with every node up makes progress
        holders = {w[3] for w in pool.holder_at_end}  # type: ignore[attr-defined]
        assert len(holders) == 1, (pool.holder_at_end, windows[-5:])  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), skews=st.tuples(*(st.integers(0, SIM_OFFSET_MS) for _ in NODES)),
       cut_at=st.floats(0.5, 20.0), heal_after=st.floats(0.0, 30.0), max_delay=st.sampled_from([0.001, 0.05]))
def test_issue19_a_cut_off_holder_and_its_successor_never_act_at_once(seed: int, skews: tuple[int, ...],
                                                                     cut_at: float, heal_after: float,
                                                                     max_delay: float) -> None:
    """The case the clock offset is for: the holder, cut off from the pool, cannot renew yet still acts until its
    deadline, while the others, clocks skewed either way, wait for the record's expiry plus the offset."""

    async def main() -> SimPool:
        pool = SimPool(random.Random(seed), Faults(max_delay=max_delay), dict(zip(NODES, skews, strict=True)))
        for node in NODES:
            pool.start(node)
        await asyncio.sleep(cut_at)
        holders = [w[2] for w in pool.windows() if w[0] <= pool.now() < w[1]]
        pool.cut.add(holders[0] if holders else NODES[0])
        await asyncio.sleep(heal_after)
        pool.cut.clear()
        await asyncio.sleep(20.0)
        for node in NODES:
            await pool.crash(node)
        return pool

    windows = run_sim(main()).windows()
    assert not overlaps(windows), overlaps(windows)[:3]


def test_a_crashed_holder_is_replaced_after_duration_plus_offset_and_a_stopped_one_at_once() -> None:
    async def main() -> tuple[list[tuple[float, float, str, int]], float, float]:
        pool = SimPool(random.Random(7), Faults(max_delay=0.001), dict.fromkeys(NODES, 0))
        pool.start("n1")
        await asyncio.sleep(1.0)
        assert pool.current["n1"] is not None and pool.current["n1"].leases.may_act(JOB)
        for node in ("n2", "n3"):
            pool.start(node)
        await asyncio.sleep(30.0)  # n1 keeps renewing: nobody else gets it meanwhile
        assert all(w[2] == "n1" for w in pool.windows())
        crashed = pool.now()
        await pool.crash("n1")
        await asyncio.sleep(pool.duration_s + pool.offset_s + 6.0)
        after_crash = [w for w in pool.windows() if w[2] != "n1"]
        assert after_crash
        taker = pool.current[after_crash[0][2]]
        assert taker is not None
        stopped = pool.now()
        await pool.stop(taker.node)
        await asyncio.sleep(5.0)
        for node in NODES:
            await pool.crash(node)
        return pool.windows(), crashed, stopped

    windows, crashed, stopped = run_sim(main())
    takeover = min(w[0] for w in windows if w[2] != "n1")
    # n1's last renewal set expires <= crashed + 10 s (its wall clock); the others wait past it plus 6 s.
    assert crashed + 6.0 < takeover <= crashed + 10.0 + 6.0 + 2.5
    after_stop = [w for w in windows if w[0] >= stopped]
    assert after_stop and after_stop[0][0] < stopped + 2.5  # a released lease is taken at the next ask
    assert not overlaps(windows)


def test_a_partitioned_holder_acts_until_its_deadline_and_an_offset_blind_taker_would_overlap_it() -> None:
    """n1 holds the lease and is cut off (its renewals fail): it may still act until its deadline. n2's clock runs
    7.9 s ahead, within the 8 s offset. Waiting for expiry + offset keeps n2 out until n1's window closed; a taker
    that ignored the offset (0 s) would take over while n1 still acts: the checker sees the overlap."""

    async def main(taker_offset: float) -> list[tuple[float, float, str, int]]:
        skews = {"n1": 0, "n2": 7_900, "n3": 0}
        pool = SimPool(random.Random(3), Faults(max_delay=0.001), skews, duration_s=10.0, offset_s=8.0,
                       taker_offset_s={"n2": taker_offset})
        pool.start("n1")
        await asyncio.sleep(0.5)
        pool.start("n2")
        await asyncio.sleep(8.0)  # n1 renewed by now
        pool.cut.add("n1")
        await asyncio.sleep(30.0)
        for node in NODES:
            await pool.crash(node)
        return pool.windows()

    safe = run_sim(main(8.0))
    assert not overlaps(safe) and any(w[2] == "n2" for w in safe)
    broken = run_sim(main(0.0))
    assert overlaps(broken), broken


# --- the setting --------------------------------------------------------------------------------------------------


def test_issue19_job_lease_setting_is_read_validated_and_cluster_only(tmp_path: Any) -> None:
    from test_config_cluster import quick_start

    from s4.tools.config import ConfigError, load_settings

    assert load_settings(quick_start()).cluster.job_lease_s == 60.0
    assert load_settings(quick_start(S4_JOB_LEASE_SECS="5")).cluster.job_lease_s == 5.0
    for bad in ("0.5", "90000", "nan"):
        with pytest.raises(ConfigError, match="^S4_JOB_LEASE_SECS"):
            load_settings(quick_start(S4_JOB_LEASE_SECS=bad))
    with pytest.raises(ConfigError, match="S4_JOB_LEASE_SECS"):  # a pool setting: refused on a single node
        load_settings({"S4_JOB_LEASE_SECS": "5"})
    config = tmp_path / "config.toml"
    config.write_text("[cluster]\njob_lease_secs = 7\n")
    assert load_settings(quick_start(), str(config)).cluster.job_lease_s == 7.0
