"""Issue 19, read leases (cluster/read_leases.py, engine/read_gate.py) on simulated time.

The promise under test: a node that believes it holds read leases from every peer holds every write those peers
acknowledged, so it may answer from its own copy. A hypothesis model drives one grantor's Replicator with leases
(writes whose copies to the holder succeed, fail, hang or come late; the holder's lease requests and catch-up passes
at random times, with random network delays) and checks at every moment the holder counts itself current that it
has applied every acknowledged write. Then the pieces directly: grants refused until the peer caught up, a write
waiting for a leaseholder's copy or for its lease to run out, the joining hold, a restarted grantor's grace, the
settled watermarks and the gate's slots.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.lease_model import ModelTransport
from helpers.simloop import run_sim
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.read_leases import LeaseGrants, LeaseSettings, ReadLeases, Unsettled
from s4.cluster.replicator import QuorumNotReachedError, ReplicationSettings, Replicator
from s4.engine.read_gate import WIDE, ReadGate, bucket_slot, key_slot, slots_of, upload_slot
from s4.journal.events import Event, EventType

LEASES = LeaseSettings(lease_s=3.0, margin_s=0.3, revoke_after_s=1.0)


def put(seq: int, origin: str = "p", key: str = "k", hlc: int | None = None) -> Event:
    return Event(seq, hlc if hlc is not None else 1000 + seq, origin, EventType.OBJECT_VERSION_PUT,
                 {"bucket": "b", "key": key, "version": {"v": f"v{seq}", "b": []}})


# -- the model ------------------------------------------------------------------------------------------------------
@dataclass
class Holder:
    """The node reading from its own copy: what it applied of the grantor's journal, its leases, its cursor."""

    applied: set[int] = field(default_factory=set)
    cursor: int = 0
    leases: ReadLeases = field(default_factory=lambda: ReadLeases(["p"], None, LEASES))


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(["ok", "ok", "ok", "late", "fail", "hang"]), max_size=25))
def test_a_node_counting_itself_current_holds_every_acknowledged_write(seed: int, fates: list[str]) -> None:
    rng = random.Random(seed)
    holder = Holder()
    acked: dict[int, float] = {}  # seq -> when the grantor acknowledged it
    committed: list[int] = []  # the grantor's journal
    violations: list[str] = []

    def check(now: float, what: str) -> None:
        if holder.leases.current_until > now:
            missing = sorted(s for s, at in acked.items() if at <= now and s not in holder.applied)
            if missing:
                violations.append(f"{what} at {now:.2f}: current, lacks acknowledged {missing}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a", "b"], 0, LEASES, clock=loop.time)
        transport = ModelTransport(holder, rng, list(fates))
        replicator = Replicator(["a", "b"], 2, transport, None,  # type: ignore[arg-type]
                                settings=ReplicationSettings(base_s=4.0), grants=grants)
        await replicator.start()
        stop = loop.time() + 30.0

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

                loop.create_task(one(seq))

        async def heartbeats() -> None:
            while loop.time() < stop:
                sent_at, applied = loop.time(), holder.cursor
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the request on its way
                lease_s = grants.grant("a", applied)
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the answer on its way
                holder.leases.granted("p", sent_at, lease_s)
                check(loop.time(), "lease answer")
                await asyncio.sleep(max(0.0, 1.0 - (loop.time() - sent_at)))

        async def catch_up() -> None:
            while loop.time() < stop:
                await asyncio.sleep(rng.uniform(0.5, 3.0))
                head = max(committed, default=0)  # the committed journal, in flight writes included
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                holder.applied.update(range(1, head + 1))
                holder.cursor = max(holder.cursor, head)

        async def reads() -> None:
            while loop.time() < stop:
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                check(loop.time(), "read")

        await asyncio.gather(writes(), heartbeats(), catch_up(), reads())
        await replicator.stop()

    run_sim(main())
    assert not violations, violations[:5]


# -- the pieces -----------------------------------------------------------------------------------------------------
def test_a_lease_is_refused_until_the_peer_applied_what_was_acknowledged_without_it() -> None:
    now = [100.0]
    grants = LeaseGrants(["a"], 7, LEASES, clock=lambda: now[0])  # started with 7 events in its journal
    assert grants.grant("a", 6) == 0.0 and grants.missed("a") == 7
    assert grants.grant("a", 7) == LEASES.lease_s
    assert grants.lost("a", 12) == pytest.approx(100.0 + LEASES.lease_s)  # its copy of write 12 failed
    assert grants.grant("a", 11) == 0.0 and grants.grant("a", 12) == LEASES.lease_s
    assert grants.grant("stranger", 100) == 0.0


def test_a_write_waits_for_a_leaseholders_copy_and_not_for_a_peer_without_a_lease() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a", "b"], 0, LEASES, clock=loop.time)
        await asyncio.sleep(LEASES.lease_s + 1)  # the start-up grace is over
        assert grants.grant("a", 0) > 0
        slow_a = loop.create_task(asyncio.sleep(0.5))
        slow_b = loop.create_task(asyncio.sleep(5.0))
        start = loop.time()
        await grants.cover(1, [], {"a": slow_a, "b": slow_b})
        waited = loop.time() - start
        assert grants.missed("a") == 0  # it acknowledged: it keeps its lease
        assert grants.grant("b", 0) == 0.0  # b's copy is still on its way: b is held, not granted
        await slow_b
        return waited, loop.time()

    waited, _ = run_sim(main())
    assert waited == pytest.approx(0.5)


def test_a_failed_copy_revokes_the_lease_and_the_write_waits_for_the_grant_to_run_out() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a"], 0, LEASES, clock=loop.time)
        await asyncio.sleep(LEASES.lease_s + 1)
        grants.grant("a", 0)
        expires = loop.time() + LEASES.lease_s

        async def failing() -> None:
            await asyncio.sleep(0.1)
            raise ConnectionError("refused")

        copy = loop.create_task(failing())
        await asyncio.sleep(1.0)
        assert grants.grant("a", 0) > 0  # renewed while the copy runs: the wait must cover this grant too
        expires = loop.time() + LEASES.lease_s
        await grants.cover(5, [], {"a": copy})
        assert loop.time() >= expires  # never before the holder's lease ran out
        assert grants.grant("a", 4) == 0.0 and grants.grant("a", 5) > 0

    run_sim(main())


def test_a_silent_leaseholder_is_revoked_after_revoke_after_s() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a"], 0, LEASES, clock=loop.time)
        await asyncio.sleep(LEASES.lease_s + 1)
        grants.grant("a", 0)
        granted_until = loop.time() + LEASES.lease_s
        copy = loop.create_task(asyncio.sleep(60.0))
        await grants.cover(3, [], {"a": copy})
        assert loop.time() >= granted_until and grants.missed("a") == 3
        copy.cancel()

    run_sim(main())


def test_a_restarted_grantor_waits_for_every_peer_during_its_first_lease_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        grants = LeaseGrants(["a"], 0, LEASES, clock=loop.time)  # grants of its previous life may hold
        await grants.cover(1, [], {})  # a's copy never sent (a is dead)
        assert loop.time() >= LEASES.lease_s

    run_sim(main())


def test_the_holder_counts_a_lease_from_its_request_less_the_margin() -> None:
    leases = ReadLeases(["p", "q"], None, LEASES)
    assert leases.current_until == 0.0
    leases.granted("p", 10.0, 3.0)
    assert leases.current_until == 0.0  # q has granted nothing
    leases.granted("q", 11.0, 3.0)
    assert leases.current_until == pytest.approx(10.0 + 3.0 - LEASES.margin_s)
    leases.granted("p", 12.0, 0.0)  # refused: the earlier grant still holds until it runs out
    assert leases.current_until == pytest.approx(12.7)


# -- settled watermarks and the gate --------------------------------------------------------------------------------
def test_keys_of_writes_in_flight_stay_on_the_quorum_path_until_settled(tmp_path: Path) -> None:
    gate = ReadGate.create(tmp_path / "gate")
    reader = ReadGate.attach(tmp_path / "gate")  # a worker's view of the same file
    gate.set_current_until(float("inf"))
    unsettled = Unsettled("me", gate, settled_hlc=500)
    unsettled.tracking_own = True
    assert unsettled.watermark() == 501
    assert reader.key_local("b", "k") and reader.listing_local()

    peer_write = put(1, origin="p", key="k", hlc=2000)
    unsettled.before_visible([peer_write])
    assert not reader.key_local("b", "k") and reader.key_local("b", "other") and not reader.listing_local()
    unsettled.peer_watermark("p", 2000)  # p's writes below 2000 settled: not this one
    assert not reader.key_local("b", "k")
    unsettled.peer_watermark("p", 2001)
    assert reader.key_local("b", "k") and reader.unsettled == 0

    own = put(9, origin="me", key="j", hlc=3000)
    unsettled.before_visible([own])
    assert not reader.key_local("b", "j") and unsettled.watermark() == 3000
    unsettled.own_done([own])
    assert reader.key_local("b", "j") and unsettled.watermark() == 3001

    old = put(2, origin="p", key="k", hlc=1500)  # below p's watermark: settled already (catch-up of old events)
    unsettled.before_visible([old])
    assert reader.key_local("b", "k")
    gate.set_current_until(0.0)
    assert not reader.key_local("b", "k")  # no lease: never local
    reader.close()
    gate.close()


def test_iam_events_followed_from_the_registry_pool_do_not_keep_reads_off_the_local_path(tmp_path: Path) -> None:
    """A node outside the registry pool applies its IAM events (cluster/iam_feed.py): their coordinator is not in
    this pool and never sends a watermark here, so counted as in flight they kept every read (IAM events are wide)
    on the quorum path for good. They are settled on arrival; this pool's own events still count."""
    gate = ReadGate.create(tmp_path / "gate")
    gate.set_current_until(float("inf"))
    unsettled = Unsettled("me", gate, settled_hlc=500, members=["me", "p"])
    unsettled.before_visible([Event(1, 2000, "registry-node", EventType.USER_CREATED, {"user_id": "u"}),
                              Event(2, 2001, "registry-node", EventType.CREDENTIAL_CREATED, {"user_id": "u"})])
    assert gate.key_local("b", "k") and gate.listing_local() and unsettled.in_flight == 0
    unsettled.before_visible([put(3, origin="p", key="k", hlc=2002)])
    assert not gate.key_local("b", "k") and unsettled.in_flight == 1
    gate.close()


def test_every_event_type_maps_to_the_slots_a_read_checks() -> None:
    assert slots_of(put(1)) == (key_slot("b", "k"),)
    assert slots_of(Event(1, 1, "p", EventType.BUCKET_CONFIG_SET, {"bucket": "b", "kind": "versioning"})) == \
        (bucket_slot("b"),)
    part = Event(1, 1, "p", EventType.PART_STORED, {"bucket": "b", "key": "k", "upload_id": "u1", "part": {}})
    assert slots_of(part) == (key_slot("b", "k"), upload_slot("b", "u1"))
    created = Event(1, 1, "p", EventType.MULTIPART_CREATED, {"bucket": "b", "key": "k", "upload": {"u": "u2"}})
    assert upload_slot("b", "u2") in slots_of(created)
    assert slots_of(Event(1, 1, "p", EventType.PREFIX_RENAMED, {"bucket": "b", "src": "a/", "dst": "c/"})) == (WIDE,)
    assert slots_of(Event(1, 1, "p", EventType.USER_CREATED, {"user_id": "u"})) == (WIDE,)


def test_read_lease_given_back_stops_writes_waiting_for_its_holder() -> None:
    """Drain and shutdown (cluster/drain.py): the holder stops counting on its leases (local reads off, later grants
    ignored) and says so in its Ping (release_lease); the grantor then stops waiting for its copy of a write at once:
    a write whose copy to it never comes returns, where before it waited until the grant ran out."""
    from s4.cluster.read_leases import LeaseService
    from s4.cluster.wire.s4cluster.v1 import PingRequest
    now = [100.0]
    grants = LeaseGrants(["b"], 0, clock=lambda: now[0])
    now[0] += 10.0  # past the start-up window where every peer counts as holding one
    assert grants.grant("b", 0) == 3.0
    assert grants.lost("b", 0) > now[0]  # held: a write missing b's copy waits until then
    holder = ReadLeases(["a"], None)
    holder.granted("a", now[0], 3.0)
    assert holder.current_until > now[0]
    holder.release()
    holder.granted("a", now[0], 3.0)  # an answer to an earlier request: not counted any more
    assert holder.current_until == 0.0
    service = LeaseService(grants, _NoUnsettled())  # type: ignore[arg-type]
    service.on_ping("b", PingRequest(node_id="b", release_lease=True))
    assert grants.lost("b", 1) <= now[0]
    asyncio.run(asyncio.wait_for(grants.cover(1, [], {}), 5))  # returns at once: b holds nothing any more
    assert grants.grant("b", 1) == 3.0  # asking anew (drain cancelled) gets a lease again
    holder.resume()
    holder.granted("a", now[0], 3.0)
    assert holder.current_until > now[0]


class _NoUnsettled:
    def peer_watermark(self, peer: str, hlc: int) -> None:
        pass

    def watermark(self) -> int:
        return 0


def test_issue20_a_commit_after_the_gate_closed_at_shutdown_is_not_refused(tmp_path: Path) -> None:
    """Shutdown closes the read gate with the cluster node while a commit can still be in flight (a peer's stream,
    a job ending): its events must still become visible. The gate raised ValueError (mmap closed), the commit's
    batch failed and the stopping node hung (seen in the rolling-restart test)."""
    gate = ReadGate.create(tmp_path / "read-gate")
    gate.add([bucket_slot("b"), key_slot("b", "k")], 1)
    gate.close()
    gate.add([bucket_slot("b"), key_slot("b", "k")], -1)  # no error: nobody reads a closed gate
    gate.set_current_until(123.0)
