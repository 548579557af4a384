"""Issue 19, read leases only for the nodes that read (cluster/read_leases.py ``ReadLeases.wanted``, engine/
read_gate.py ``wanted_at``, cluster/node.py's heartbeat), on simulated time.

A node asks its peers for read leases only while its reads consult the read gate (within ``idle_s``); a grantor's
writes wait for the copies of the nodes holding or asking for its leases only, so a pool whose clients read through
one node acknowledges that node's writes with W - 1 peers. The promise must survive nodes that start and stop
asking: a hypothesis model (one grantor, a holder reading in bursts with pauses longer and shorter than ``idle_s``,
copies that succeed, fail, hang or come late, writes acknowledged while the holder asks and while it does not)
checks at every moment that a holder counting itself current holds every acknowledged write, through the real gate,
ReadLeases, LeaseService and Replicator. The same model with the rule broken on purpose (a grantor that stops
waiting for a holder as soon as it stops asking; one that forgets copies still on their way to a peer that was not
asking) must find a violation: the model can fail. Then the pieces: the gate's stamp across processes, ``wanted``,
and the heartbeat asking only when it should.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.lease_model import ModelTransport
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.config import build_cluster_config
from s4.cluster.liveness import LivenessSettings
from s4.cluster.node import ClusterNode
from s4.cluster.read_leases import LeaseGrants, LeaseService, LeaseSettings, ReadLeases
from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.cluster.wire.s4cluster.v1 import PingReply, PingRequest
from s4.engine.read_gate import NOTE_EVERY_S, ReadGate
from s4.journal.events import Event, EventType

IDLE_S = 2.0  # short against the model's pauses, so the holder starts and stops asking many times
LEASES = LeaseSettings(lease_s=3.0, margin_s=0.3, revoke_after_s=1.0, idle_s=IDLE_S)


def put(seq: int) -> Event:
    return Event(seq, 1000 + seq, "p", EventType.OBJECT_VERSION_PUT,
                 {"bucket": "b", "key": "k", "version": {"v": f"v{seq}", "b": []}})


class _NoUnsettled:
    def peer_watermark(self, peer: str, hlc: int) -> None:
        pass

    def watermark(self) -> int:
        return 0


@dataclass
class Holder:
    """The reading node "a": what it applied of the grantor's journal, its catch-up cursor."""

    applied: set[int] = field(default_factory=set)
    cursor: int = 0


@dataclass
class Outcome:
    violations: list[str] = field(default_factory=list)
    local_reads: int = 0
    asks: int = 0
    silent_rounds: int = 0  # heartbeats that asked for nothing
    acked_without_holder: int = 0  # writes acknowledged before the holder's copy came


def run_model(seed: int, fates: list[str], gate_dir: Path) -> Outcome:
    rng = random.Random(seed)
    holder = Holder()
    out = Outcome()
    acked: dict[int, float] = {}  # seq -> when the grantor acknowledged it
    committed: list[int] = []  # the grantor's journal

    def check(now: float, what: str) -> None:
        if leases.current_until > now:
            missing = sorted(s for s, at in acked.items() if at <= now and s not in holder.applied)
            if missing:
                out.violations.append(f"{what} at {now:.2f}: current, lacks acknowledged {missing}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a", "b"], 0, LEASES, clock=loop.time)
        service = LeaseService(grants, _NoUnsettled())  # type: ignore[arg-type]
        transport = ModelTransport(holder, rng, list(fates))
        replicator = Replicator(["a", "b"], 2, transport, None,  # type: ignore[arg-type]
                                settings=ReplicationSettings(base_s=4.0), grants=grants)
        await replicator.start()
        stop = loop.time() + 40.0

        async def writes() -> None:
            seq = 0
            while loop.time() < stop - 5:
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                seq += 1
                committed.append(seq)

                async def one(s: int) -> None:
                    try:
                        await replicator.replicate([put(s)])
                    except QuorumNotReachedError:
                        return
                    acked[s] = loop.time()
                    if s not in holder.applied:
                        out.acked_without_holder += 1

                loop.create_task(one(seq))

        async def heartbeats() -> None:  # ClusterNode.beat/_ping/_lease_answer for the holder's Ping to "p"
            while loop.time() < stop:
                sent_at = loop.time()
                asking = leases.wanted(sent_at)
                applied = holder.cursor if asking else None
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the request on its way
                lease_ms, _, _ = service.on_ping("a", PingRequest(node_id="a", want_lease=asking,
                                                                  lease_applied=applied or 0))
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the answer on its way
                if applied is not None:
                    out.asks += 1
                    leases.granted("p", sent_at, lease_ms / 1000)
                    check(loop.time(), "lease answer")
                else:
                    out.silent_rounds += 1
                await asyncio.sleep(max(0.0, 1.0 - (loop.time() - sent_at)))

        async def catch_up() -> None:
            while loop.time() < stop:
                await asyncio.sleep(rng.uniform(0.5, 3.0))
                head = max(committed, default=0)  # the committed journal, in flight writes included
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                holder.applied.update(range(1, head + 1))
                holder.cursor = max(holder.cursor, head)

        async def reads() -> None:  # bursts of client reads through the holder, and pauses
            await asyncio.sleep(rng.uniform(0.1, 3.0))
            while loop.time() < stop:
                burst_end = loop.time() + rng.uniform(0.0, 6.0)
                while loop.time() < min(burst_end, stop):
                    if gate.key_local("b", "k"):  # the engine's check (Engine.settle_key)
                        out.local_reads += 1
                        check(loop.time(), "local read")
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                await asyncio.sleep(rng.choice([rng.uniform(0.0, IDLE_S), rng.uniform(IDLE_S, 3 * IDLE_S)]))

        async def watch() -> None:  # the promise at every moment, read or not
            while loop.time() < stop:
                await asyncio.sleep(rng.uniform(0.0, 0.1))
                check(loop.time(), "watch")

        await asyncio.gather(writes(), heartbeats(), catch_up(), reads(), watch())
        await replicator.stop()

    # The gate on the simulated clock: created with a clock that reads the loop run_sim makes.
    clock: list[Any] = [lambda: 0.0]
    gate = ReadGate.create(gate_dir / f"gate-{seed}", clock=lambda: clock[0]())
    leases = ReadLeases(["p"], gate, LEASES)

    async def bound() -> None:
        clock[0] = asyncio.get_running_loop().time
        await main()

    try:
        run_sim(bound())
    finally:
        gate.close()
    return out


FATES = st.lists(st.sampled_from(["ok", "ok", "ok", "late", "fail", "hang"]), max_size=30)


@pytest.fixture(scope="module")
def gate_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lease-model-") as d:
        yield Path(d)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), FATES)
def test_a_node_that_starts_and_stops_asking_never_counts_on_a_missing_write(gate_dir: Path, seed: int,
                                                                            fates: list[str]) -> None:
    out = run_model(seed, fates, gate_dir)
    assert not out.violations, out.violations[:5]


def test_the_model_exercises_asking_stopping_and_writes_acknowledged_without_the_holder(gate_dir: Path) -> None:
    """What the property above relies on happening: local reads, rounds asking and rounds not, and writes
    acknowledged before the holder had them (W - 1 = 1 peer while it did not ask)."""
    total = Outcome()
    for seed in range(8):
        out = run_model(seed, ["ok"] * 5 + ["late", "ok", "hang", "ok", "fail"] * 4, gate_dir)
        assert not out.violations, out.violations[:5]
        total.local_reads += out.local_reads
        total.asks += out.asks
        total.silent_rounds += out.silent_rounds
        total.acked_without_holder += out.acked_without_holder
    assert total.local_reads > 50 and total.asks > 20 and total.silent_rounds > 20
    assert total.acked_without_holder > 5


def _release_when_not_asking(service: LeaseService, caller: str, request: PingRequest) -> tuple[int, int, int]:
    """The rule broken: a Ping that asks for no lease drops the caller's hold at once (as a release would),
    although leases granted to it before still run."""
    if not request.want_lease:
        service.grants.release(caller)
    return _ORIGINAL_ON_PING(service, caller, request)


_ORIGINAL_ON_PING = LeaseService.on_ping


@pytest.mark.parametrize("mutant", ["release_when_not_asking", "forget_outstanding"])
def test_the_model_fails_when_the_rule_is_broken(mutant: str, gate_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative checks: the property test above can fail. ``release_when_not_asking``: a grantor that stops
    waiting for a holder when it stops asking (its grants still run: it may still read locally, and reads again
    before the next heartbeat asks). ``forget_outstanding``: a grantor that does not track the copies still on
    their way to a peer that was not asking when it acknowledged (granted on asking anew, before they land)."""
    if mutant == "release_when_not_asking":
        monkeypatch.setattr(LeaseService, "on_ping", _release_when_not_asking)
    else:
        monkeypatch.setattr(LeaseGrants, "_outstanding_copy", lambda self, peer, seq, copy: None)
    fates = ["late", "ok", "late", "hang", "ok", "late"] * 5
    found = next((seed for seed in range(40) if run_model(seed, fates, gate_dir).violations), None)
    assert found is not None, f"{mutant}: no seed of 40 found a violation"


# -- the pieces -----------------------------------------------------------------------------------------------------
def test_a_workers_reads_stamp_the_gate_and_its_counts_stay_read_only(tmp_path: Path) -> None:
    now = [100.0]
    gate = ReadGate.create(tmp_path / "gate", clock=lambda: now[0])  # the supervisor's
    worker = ReadGate.attach(tmp_path / "gate", clock=lambda: now[0])  # an HTTP worker's
    assert gate.wanted_at == 0.0 and worker.wanted_at == 0.0  # no read yet
    assert not worker.key_local("b", "k")  # no lease: the quorum path, but the read wants leases
    assert gate.wanted_at == 100.0
    now[0] += NOTE_EVERY_S / 2
    worker.listing_local()
    assert gate.wanted_at == 100.0  # stamped at most every NOTE_EVERY_S per process
    now[0] += NOTE_EVERY_S
    worker.bucket_local("b")
    assert gate.wanted_at == now[0]
    now[0] += NOTE_EVERY_S
    gate.upload_local("b", "u")  # the supervisor's own reads (S4_WORKERS=1) stamp the same word
    assert worker.wanted_at == now[0]
    with pytest.raises(TypeError):  # the worker cannot touch the counts or the deadline
        worker._map[0:8] = bytes(8)
    gate.set_current_until(now[0] + 5)
    assert worker.key_local("b", "k")
    worker.close()
    gate.close()


def test_a_node_wants_leases_from_its_first_read_until_idle_s_after_its_last(tmp_path: Path) -> None:
    now = [100.0]
    gate = ReadGate.create(tmp_path / "gate", clock=lambda: now[0])
    leases = ReadLeases(["p"], gate, LeaseSettings(idle_s=30.0))
    assert not leases.wanted(now[0])  # a node that never read asks for nothing
    gate.key_local("b", "k")
    assert leases.wanted(now[0])
    now[0] += 29.9
    assert leases.wanted(now[0])
    now[0] += 0.2
    assert not leases.wanted(now[0])
    leases.granted("p", now[0], 3.0)  # an answer to a request sent while it asked still counts
    assert leases.current_until > now[0]
    gate.key_local("b", "k")
    assert leases.wanted(now[0])
    leases.release()  # draining: never, reads or not
    assert not leases.wanted(now[0])
    assert ReadLeases(["p"], None).wanted(now[0])  # without a gate (no engine): always, as before
    gate.close()


def node_config() -> Any:
    return build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id="a", node_grpc_addr="127.0.0.1:7001",
        node_http_addr="127.0.0.1:9001", pool_name="p1",
        pool_nodes="a:127.0.0.1:7001,b:127.0.0.2:7002,c:127.0.0.3:7003",
        replication_factor=3, write_quorum=2, read_quorum=2, cluster_secret="a-long-shared-secret"))


class LeasePool:
    """Stands in for PeerPool: every peer answers and grants a 3 s lease to whoever asks."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int | None]] = []

    async def ping(self, node_id: str, hlc: int, journal_seq: int, *, timeout_s: float | None = None,
                   lease_applied: int | None = None, **_rest: Any) -> PingReply:
        self.asked.append((node_id, lease_applied))
        return PingReply(node_id=node_id, hlc=1, journal_seq=0, lease_ms=3000 if lease_applied is not None else 0)

    def close(self) -> None:
        pass


def test_the_heartbeat_asks_for_leases_only_while_reads_want_them(tmp_path: Path) -> None:
    now = [1000.0]
    node = ClusterNode(node_config(), lambda: (77, 5), LivenessSettings(), clock=lambda: now[0],
                       wall=lambda: 1_700_000_000.0)
    pool = LeasePool()
    node.pool = pool  # type: ignore[assignment]
    gate = ReadGate.create(tmp_path / "gate", clock=lambda: now[0])
    node.read_leases = ReadLeases(["b", "c"], gate, LeaseSettings(idle_s=30.0))

    def beat() -> list[tuple[str, int | None]]:
        pool.asked.clear()
        asyncio.run(node.beat())
        return sorted(pool.asked)

    assert beat() == [("b", None), ("c", None)]  # no read yet: Pings, no lease asked
    assert node.health_document()["read_lease"]["asking"] is False
    assert not gate.key_local("b", "k")  # the first read takes the quorum path and wants leases
    assert beat() == [("b", 0), ("c", 0)] and node.asking
    assert gate.key_local("b", "k")  # granted at the next heartbeat: local
    now[0] += 31.0  # no read for idle_s: the heartbeat stops asking
    assert beat() == [("b", None), ("c", None)] and not node.asking
    assert not gate.key_local("b", "k")  # the leases ran out meanwhile (nothing renews them): quorum path
    assert beat() == [("b", 0), ("c", 0)]
    node.drain.draining = True  # draining: gives back, asks for none, reads or not
    gate.key_local("b", "k")
    assert beat() == [("b", None), ("c", None)]
    gate.close()
