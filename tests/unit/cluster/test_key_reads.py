"""Issue 19, quorum reads of one key with blocking read repair (cluster/key_reads.py ``QuorumKeyReads``), without
processes: three replicas with real journals and views (tests/helpers/replicas.py), their ``ReadKeys`` answered by
the real ``ReadsService`` over their views (``LocalReads``), a puller whose pass applies the events a peer holds
that this node lacks (what a catch-up pass does), and ``CatchUpFrom`` stubs that make a peer take the caller's
events. Events keep their identities, so applying one twice changes nothing.

Proved: agreeing replicas cost no repair; a stale coordinator catches up from exactly the answering peers before
answering, and refuses (503 with Retry-After, counted) when it is still stale; a stale peer is asked to catch up
through the coordinator's committed seq, and its failure is a 503; too few live peers is a 503 without a call;
dead peers are never asked; R=1 asks nobody. And over random histories of one key dealt to random replicas
(hypothesis, N=3, R=2): after ``settle_key`` the coordinator's views hold the merged state of the replicas that
answered, and successive reads through different coordinators never go backwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.read_history import HASHES, Wall, deliver
from helpers.replicas import Node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster import reads
from s4.cluster.catch_up import CatchUpError
from s4.cluster.key_merge import merge_key_states
from s4.cluster.key_reads import KeyReadSettings, QuorumKeyReads, ReadQuorumError
from s4.cluster.liveness import DEAD
from s4.cluster.read_leases import LeaseGrants, LeaseSettings
from s4.cluster.reads import LocalReads, ReadsService
from s4.cluster.wire.s4cluster.v1 import CatchUpFromReply, CatchUpFromRequest, ReadKeysReply, ReadKeysRequest
from s4.engine.errors import RETRY_AFTER_S, ErrorCode, PoolUnavailableError, S3Error
from s4.engine.model import version_record
from s4.engine.remote.wire import decode_error, encode_error
from s4.journal import Event

IDS = ("n1", "n2", "n3")
KEY = "k"
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def key_state(node: Node, key: str = KEY) -> dict[str, Any]:
    return reads.read_states(node.views, reads.OBJECT, "b", [key])[0]


class Pool:
    """Three replicas of bucket ``b`` (versioned) and a writer node that makes the events the replicas get."""

    def __init__(self, root: Path, wall: Wall | None = None) -> None:
        self.wall = wall or Wall()
        self.writer = Node(root / "writer", "writer", self.wall)
        self.nodes = {i: Node(root / i, i, self.wall) for i in IDS}
        self.events: list[Event] = []  # every logical event, by index
        self.held: dict[str, set[int]] = {i: set() for i in IDS}
        self.answering: set[str] = set(IDS)  # peers whose ReadKeys answers; the others never do (cancelled)
        self.asked: list[str] = []  # ReadKeys calls, by peer
        self.read_fails: set[str] = set()  # peers whose ReadKeys raises
        self.passes: list[tuple[str, str]] = []  # (node, peer) of every pass_once
        self.pull_broken: set[str] = set()  # nodes whose passes apply nothing
        self.pull_raises: set[str] = set()  # nodes whose passes raise CatchUpError
        self.repair_calls: list[tuple[str, str, int]] = []  # (caller, peer, through_seq) of every CatchUpFrom
        self.repair_fails: set[str] = set()  # peers whose CatchUpFrom fails
        self.states: dict[str, str] = {}  # liveness state by peer (default alive)
        self.timeouts: list[tuple[str, float | None]] = []  # (rpc, timeout) of every call
        self.pull_hangs: set[str] = set()  # nodes whose passes never finish
        assert self.writer.run("create_bucket", bucket="b", region="us-east-1") is None
        assert self.writer.run("set_bucket_config", bucket="b", kind="versioning", value="Enabled") is None
        self.give(self._new_events(), IDS)

    def close(self) -> None:
        for node in [self.writer, *self.nodes.values()]:
            node.close()

    # -- events ------------------------------------------------------------------------------------------------
    def _new_events(self) -> list[int]:
        known = {(e.origin, e.seq) for e in self.events}
        fresh = [e for e in self.writer.own_events() if (e.origin, e.seq) not in known]
        start = len(self.events)
        self.events.extend(fresh)
        return list(range(start, len(self.events)))

    def write(self, name: str, *, may_refuse: bool = False, **args: Any) -> list[int]:
        """One command on the writer; the indexes of the events it made (none when it was refused: an S3 error,
        allowed with ``may_refuse``, e.g. tagging a delete marker)."""
        self.wall.ms += 1
        result = self.writer.run(name, bucket="b", **args)
        if isinstance(result, S3Error) and may_refuse:
            return []
        assert not isinstance(result, BaseException), result
        return self._new_events()

    def put(self, key: str = KEY, content: int = 0) -> list[int]:
        h, size = HASHES[content], content + 1
        return self.write("put_object", key=key, blobs_at=[[h, "vol-w", 0, size]], version=version_record(
            None, size, hashlib.md5(bytes([content]) * size).hexdigest(), blobs=[[h, size]]))

    def give(self, indexes: Sequence[int], to: Sequence[str]) -> None:
        for node_id in to:
            deliver(self.nodes[node_id], [self.events[i] for i in indexes])
            self.held[node_id].update(indexes)

    def sync(self, source: str, target: str) -> int:
        """``target`` takes every event ``source`` holds (the events it already has change nothing)."""
        held = sorted(self.held[source])
        deliver(self.nodes[target], [self.events[i] for i in held])
        new = len(set(held) - self.held[target])
        self.held[target].update(held)
        return new

    # -- the ports of one node's QuorumKeyReads -------------------------------------------------------------------
    def reads(self, node_id: str, read_quorum: int = 2, settings: KeyReadSettings | None = None,
              **leases: Any) -> QuorumKeyReads:
        node = self.nodes[node_id]
        peers = [p for p in IDS if p != node_id]
        return QuorumKeyReads(node_id, peers, read_quorum, node.views, lambda peer: Stub(self, node_id, peer),
                              Puller(self, node_id), lambda: node.journal.last_seq,
                              state=lambda peer: self.states.get(peer, "alive"),
                              settings=settings or KeyReadSettings(read_s=30.0, repair_s=40.0), **leases)


class Stub:
    """``coordinator``'s stub of ``peer``: ReadKeys by the real ReadsService over the peer's views; CatchUpFrom makes
    the peer take the coordinator's events."""

    def __init__(self, pool: Pool, coordinator: str, peer: str) -> None:
        self.pool, self.coordinator, self.peer = pool, coordinator, peer

    async def read_keys(self, message: ReadKeysRequest, *, timeout: float | None = None) -> ReadKeysReply:
        self.pool.asked.append(self.peer)
        self.pool.timeouts.append(("ReadKeys", timeout))
        if self.peer in self.pool.read_fails:
            raise GRPCError(Status.UNAVAILABLE, f"{self.peer} is away")
        if self.peer not in self.pool.answering:
            await asyncio.Event().wait()  # never answers: call_quorum cancels it once the quorum is met
        service = ReadsService(self.pool.nodes[self.peer].views)
        return await LocalReads(service, self.peer).read_keys(message, timeout=timeout)

    async def catch_up_from(self, message: CatchUpFromRequest, *, timeout: float | None = None) -> CatchUpFromReply:
        self.pool.repair_calls.append((self.coordinator, self.peer, message.through_seq))
        self.pool.timeouts.append(("CatchUpFrom", timeout))
        if self.peer in self.pool.repair_fails:
            raise GRPCError(Status.UNAVAILABLE, "catch-up from the caller failed")
        self.pool.sync(self.coordinator, self.peer)
        return CatchUpFromReply(cursor=message.through_seq)


class Puller:
    """One node's catch-up client: a pass from ``peer`` applies what the peer holds."""

    def __init__(self, pool: Pool, node_id: str) -> None:
        self.pool, self.node_id = pool, node_id

    async def pass_once(self, peer: str) -> int:
        self.pool.passes.append((self.node_id, peer))
        if self.node_id in self.pool.pull_raises:
            raise CatchUpError(peer, "stream cut", unreachable=True)
        if self.node_id in self.pool.pull_broken:
            return 0
        if self.node_id in self.pool.pull_hangs:
            await asyncio.Event().wait()
        self.pool.sync(peer, self.node_id)
        return self.pool.nodes[peer].journal.last_seq


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    pool = Pool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def settle(reads_port: QuorumKeyReads, key: str = KEY) -> None:
    asyncio.run(reads_port.settle_key("b", key))


def refused(reads_port: QuorumKeyReads, key: str = KEY) -> ReadQuorumError:
    with pytest.raises(ReadQuorumError) as err:
        settle(reads_port, key)
    exc = err.value
    assert isinstance(exc, PoolUnavailableError) and exc.code is ErrorCode.SERVICE_UNAVAILABLE
    assert exc.status == 503 and exc.headers == {"Retry-After": str(RETRY_AFTER_S)}
    return exc


def test_agreeing_replicas_are_read_without_any_repair(pool: Pool) -> None:
    pool.give(pool.put(), IDS)
    port = pool.reads("n1")
    settle(port)
    assert pool.asked and set(pool.asked) <= {"n2", "n3"}
    assert pool.passes == [] and pool.repair_calls == []
    assert (port.repairs, port.failures) == (0, 0)


def test_a_stale_coordinator_catches_up_from_the_answering_peer_before_answering(pool: Pool) -> None:
    pool.give(pool.put(), ["n2", "n3"])
    pool.answering = {"n2"}
    before = merge_key_states({p: key_state(pool.nodes[p]) for p in ("n1", "n2")})
    assert "n1" in before.stale
    port = pool.reads("n1")
    settle(port)
    assert pool.passes == [("n1", "n2")]  # the peer that answered, not the silent one
    assert key_state(pool.nodes["n1"]) == before.state
    assert pool.repair_calls == []
    assert (port.repairs, port.failures) == (1, 0)


def test_with_r3_a_stale_coordinator_catches_up_from_every_answering_peer(pool: Pool) -> None:
    first, second = pool.put(content=1), pool.put(content=2)
    pool.give(first, ["n2"])
    pool.give(first + second, ["n3"])
    port = pool.reads("n1", read_quorum=3)
    settle(port)
    assert sorted(pool.passes) == [("n1", "n2"), ("n1", "n3")]
    assert key_state(pool.nodes["n1"]) == key_state(pool.nodes["n3"])
    # n2 lacked the second put too: it was made to catch up from n1, through n1's head after n1's own catch-up
    assert pool.repair_calls == [("n1", "n2", pool.nodes["n1"].journal.last_seq)]
    assert key_state(pool.nodes["n2"]) == key_state(pool.nodes["n1"])


@pytest.mark.parametrize("how", ["applies nothing", "raises"])
def test_a_coordinator_still_stale_after_catching_up_refuses_with_503(pool: Pool, how: str) -> None:
    pool.give(pool.put(), ["n2", "n3"])
    pool.answering = {"n2"}
    (pool.pull_broken if how == "applies nothing" else pool.pull_raises).add("n1")
    port = pool.reads("n1")
    exc = refused(port)
    assert "still lacks" in exc.reason
    assert pool.passes == [("n1", "n2")] and pool.repair_calls == []
    assert (port.repairs, port.failures) == (1, 1)
    assert key_state(pool.nodes["n1"])["vs"] == []


def test_a_stale_peer_catches_up_from_the_coordinator_through_its_committed_seq(pool: Pool) -> None:
    put = pool.put()
    pool.give(put, ["n1", "n3"])
    pool.answering = {"n2"}
    port = pool.reads("n1")
    settle(port)
    assert pool.passes == []
    assert pool.repair_calls == [("n1", "n2", pool.nodes["n1"].journal.last_seq)]
    assert key_state(pool.nodes["n2"]) == key_state(pool.nodes["n1"])
    assert (port.repairs, port.failures) == (1, 0)
    assert sorted(set(pool.timeouts)) == [("CatchUpFrom", 40.0), ("ReadKeys", 30.0)]  # bounded: repair_s, read_s


def test_a_catch_up_that_outlasts_repair_s_is_a_503(pool: Pool) -> None:
    pool.give(pool.put(), ["n2", "n3"])
    pool.answering = {"n2"}
    pool.pull_hangs = {"n1"}
    port = pool.reads("n1", settings=KeyReadSettings(read_s=30.0, repair_s=0.05))
    exc = refused(port)
    assert "took longer than" in exc.reason
    assert pool.passes == [("n1", "n2")] and (port.repairs, port.failures) == (1, 1)


def test_a_stale_peer_whose_catch_up_fails_makes_the_read_a_503(pool: Pool) -> None:
    pool.give(pool.put(), ["n1"])
    pool.answering = {"n2"}
    pool.repair_fails = {"n2"}
    port = pool.reads("n1")
    exc = refused(port)
    assert "n2" in exc.reason
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")]
    assert (port.repairs, port.failures) == (1, 1)


def test_fewer_live_peers_than_r_minus_1_is_a_503_without_a_call(pool: Pool) -> None:
    pool.states = {"n3": DEAD}
    port = pool.reads("n1", read_quorum=3)
    exc = refused(port)
    assert "1 of 2 peers alive, 2 needed" in exc.reason
    assert pool.asked == [] and pool.passes == [] and pool.repair_calls == []
    assert port.failures == 1


def test_dead_peers_are_never_asked(pool: Pool) -> None:
    pool.give(pool.put(), ["n2"])  # only the dead peer lacks it... and n1
    pool.states = {"n3": DEAD}
    port = pool.reads("n1")
    settle(port)
    assert set(pool.asked) == {"n2"}
    assert ("n1", "n3") not in pool.passes and all(p != "n3" for _, p, _ in pool.repair_calls)


def test_suspect_peers_are_asked(pool: Pool) -> None:
    pool.states = {"n2": "suspect", "n3": DEAD}
    settle(pool.reads("n1"))
    assert pool.asked == ["n2"]


def test_too_few_answers_is_a_503_counted(pool: Pool) -> None:
    pool.read_fails = {"n2", "n3"}
    port = pool.reads("n1")
    exc = refused(port)
    assert "quorum not reached" in exc.reason
    assert sorted(pool.asked) == ["n2", "n3"] and pool.passes == [] and pool.repair_calls == []
    assert (port.repairs, port.failures) == (0, 1)


def test_the_read_quorum_refusal_crosses_the_worker_channel_as_the_pools_503() -> None:
    """A worker's settle is run by the supervisor (op "settle"): its ReadQuorumError must arrive as a 503 with
    Retry-After (PoolUnavailableError), not as an InternalError."""
    crossed = decode_error(encode_error(ReadQuorumError("1 of 2 peers alive, 2 needed")))
    assert isinstance(crossed, PoolUnavailableError) and crossed.status == 503
    assert crossed.headers == {"Retry-After": str(RETRY_AFTER_S)}
    assert "read quorum" in crossed.message


def test_r1_asks_nobody_even_when_the_coordinator_is_stale(pool: Pool) -> None:
    pool.give(pool.put(), ["n2", "n3"])
    port = pool.reads("n1", read_quorum=1)
    settle(port)
    assert pool.asked == [] and pool.passes == [] and pool.repair_calls == []
    assert key_state(pool.nodes["n1"])["vs"] == []


# -- hypothesis: random histories of one key, dealt to random replicas ----------------------------------------------
def decide(data: st.DataObject, pool: Pool) -> list[int]:
    """One random decision on the writer about KEY (puts, deletes, delete markers, version deletes, tags)."""
    vids = [r["v"] for r in key_state(pool.writer)["vs"]]
    op = data.draw(st.sampled_from(["put", "put", "delete", "delete_version", "tags", "versioning"]), label="op")
    if op == "put":
        return pool.put(content=data.draw(st.integers(0, len(HASHES) - 1), label="content"))
    if op == "delete":  # a delete marker when versioning is on, the null version's removal when suspended
        return pool.write("delete_object", key=KEY, version_id=None)
    if op == "versioning":
        return pool.write("set_bucket_config", kind="versioning",
                          value=data.draw(st.sampled_from(["Enabled", "Suspended"]), label="versioning"))
    if not vids:
        return []
    vid = data.draw(st.sampled_from(vids), label="version")
    if op == "delete_version":
        return pool.write("delete_object", may_refuse=True, key=KEY, version_id=vid)
    tags = {"t": data.draw(st.sampled_from("ab"), label="tag")} if data.draw(st.booleans(), label="tagged") else {}
    return pool.write("set_object_tags", may_refuse=True, key=KEY, version_id=vid, tags=tags)


def not_older(now: dict[str, Any], earlier: dict[str, Any]) -> bool:
    """``now`` reflects everything ``earlier`` did: merging them, ``now`` lacks nothing."""
    return "now" not in merge_key_states({"now": now, "earlier": earlier}).stale


@SETTINGS
@given(data=st.data())
def test_settled_reads_hold_the_merge_and_never_go_backwards(data: st.DataObject) -> None:
    """N=3, R=2. Writes land on random replicas between reads (each event on any subset, at any time); each read
    goes through a random coordinator, one random peer answers. After settle_key the coordinator's views hold the
    merge of its state and the answering peer's, the peer holds it too, and no later read returns an older state."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(Path(tmp))
        try:
            returned: dict[str, Any] | None = None
            for _ in range(data.draw(st.integers(3, 25), label="steps")):
                step = data.draw(st.sampled_from(["write", "write", "deliver", "read", "read"]), label="step")
                if step == "write":
                    new = decide(data, pool)
                    pool.give(new, sorted(data.draw(st.sets(st.sampled_from(IDS)), label="to")))
                elif step == "deliver":
                    lacking = [(i, n) for n in IDS for i in range(len(pool.events)) if i not in pool.held[n]]
                    if lacking:
                        i, n = data.draw(st.sampled_from(lacking), label="late event")
                        pool.give([i], [n])
                else:
                    coordinator = data.draw(st.sampled_from(IDS), label="coordinator")
                    peer = data.draw(st.sampled_from([p for p in IDS if p != coordinator]), label="answers")
                    pool.answering = {peer}
                    expected = merge_key_states({n: key_state(pool.nodes[n]) for n in (coordinator, peer)})
                    pool.passes.clear()
                    pool.repair_calls.clear()
                    settle(pool.reads(coordinator))
                    now = key_state(pool.nodes[coordinator])
                    assert now == expected.state
                    assert key_state(pool.nodes[peer]) == expected.state
                    assert bool(pool.passes) == (coordinator in expected.stale)
                    assert bool(pool.repair_calls) == (peer in expected.stale)
                    if returned is not None:
                        assert not_older(now, returned)
                    returned = now
        finally:
            pool.close()


def test_a_superseded_history_reads_the_same_through_every_coordinator(pool: Pool) -> None:
    """Deterministic companion of the property: a put, its delete marker and a tag on the first version, each on a
    different replica; three reads through three coordinators each return the union, and the third finds nothing
    to repair (the first two spread it)."""
    put = pool.put()
    vid = key_state(pool.writer)["vs"][0]["v"]
    marker = pool.write("delete_object", key=KEY, version_id=None)
    tags = pool.write("set_object_tags", key=KEY, version_id=vid, tags={"t": "a"})
    pool.give(put, ["n1"])
    pool.give(marker, ["n2"])
    pool.give(tags, ["n3"])
    union = merge_key_states({n: key_state(pool.nodes[n]) for n in IDS}).state
    assert union["vs"][0].get("dm") and union["vs"][1]["tg"] == {"t": "a"}
    for coordinator, peer in (("n1", "n2"), ("n2", "n3"), ("n3", "n1")):
        pool.answering = {peer}
        settle(pool.reads(coordinator))
    assert all(key_state(pool.nodes[n]) == union for n in IDS)
    pool.passes.clear()
    pool.repair_calls.clear()
    pool.answering = {"n1"}
    settle(pool.reads("n2"))
    assert pool.passes == [] and pool.repair_calls == []



def test_a_hedged_read_asks_one_peer_when_it_answers_in_time_and_the_peers_in_turn(pool: Pool) -> None:
    """R=2: one peer is asked (half the calls of asking both); successive reads ask the peers in turn."""
    pool.give(pool.put(), IDS)
    port = pool.reads("n1", settings=KeyReadSettings(read_s=30.0, repair_s=40.0, hedge_s=30.0))
    settle(port)
    settle(port)
    assert pool.asked == ["n2", "n3"]


@pytest.mark.parametrize("how", ["silent", "failing"])
def test_a_hedged_read_asks_the_other_peer_when_the_first_is_slow_or_fails(pool: Pool, how: str) -> None:
    """The peer asked first never answers (or fails): after hedge_s (at once on a failure) the other peer is asked
    and its answer is used; the read is served, not refused."""
    pool.give(pool.put(), IDS)
    if how == "silent":
        pool.answering = {"n3"}
    else:
        pool.read_fails = {"n2"}
    port = pool.reads("n1", settings=KeyReadSettings(read_s=30.0, repair_s=40.0, hedge_s=0.05))
    settle(port)
    assert pool.asked[0] == "n2" and "n3" in pool.asked
    assert (port.repairs, port.failures) == (0, 0)


class InFlightGate:
    """The read gate's one question ``QuorumKeyReads`` asks: is a write still in flight visible here for the key."""

    def __init__(self, in_flight: bool) -> None:
        self.answer = in_flight
        self.asked: list[tuple[str, int]] = []

    def in_flight(self, bucket: str, slot: int) -> bool:
        self.asked.append((bucket, slot))
        return self.answer


def _in_flight_on_n1_and_n3(pool: Pool) -> list[int]:
    """A write W of another coordinator, applied on n1 and n3 and still on its way to n2 (the jepsen history: a GET
    through n1 returned W, a later GET through n2, local under its leases, the value before)."""
    pool.give(pool.put(content=1), IDS)
    w = pool.put(content=2)
    pool.give(w, ["n1", "n3"])
    return w


def test_issue19_a_read_answering_a_write_in_flight_first_brings_it_to_a_leaseholder_that_lacks_it(pool: Pool) -> None:
    w = _in_flight_on_n1_and_n3(pool)
    pool.answering = {"n3"}  # the read's quorum is n1 + n3, both hold W; n2 (a leaseholder of n1) does not
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0, revoke_after_s=5.0))
    assert grants.grant("n2", 0) > 0
    port = pool.reads("n1", grants=grants, gate=InFlightGate(True))
    settle(port)
    assert set(w) <= pool.held["n2"]  # n2 holds W before the answer: its local reads cannot go back
    assert [(c, p) for c, p, _ in pool.repair_calls] == [("n1", "n2")] and port.covered == 1
    assert key_state(pool.nodes["n2"]) == key_state(pool.nodes["n1"])


def test_issue19_a_leaseholder_that_cannot_be_reached_loses_its_lease_and_the_read_waits_it_out(pool: Pool) -> None:
    w = _in_flight_on_n1_and_n3(pool)
    pool.answering = {"n3"}
    pool.repair_fails = {"n2"}
    clock = __import__("time").monotonic
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=0.4, revoke_after_s=0.05))
    grants.release("n3")
    assert grants.grant("n2", 0) > 0
    granted_until = clock() + 0.4
    port = pool.reads("n1", grants=grants, gate=InFlightGate(True))
    settle(port)
    assert not set(w) <= pool.held["n2"]
    assert clock() >= granted_until - 0.01  # answered only once n2's lease of n1 had run out
    assert grants.missed("n2") >= pool.nodes["n1"].journal.last_seq  # no new lease before it has W
    assert grants.grant("n2", 0) == 0.0


def test_issue19_a_peer_holding_no_lease_is_not_called_but_must_catch_up_before_its_next_grant(pool: Pool) -> None:
    w = _in_flight_on_n1_and_n3(pool)
    pool.answering = {"n3"}
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0))
    grants.release("n2")  # n2 reads nothing: it asks for no lease
    port = pool.reads("n1", grants=grants, gate=InFlightGate(True))
    settle(port)
    assert pool.repair_calls == [] and not set(w) <= pool.held["n2"]
    head = pool.nodes["n1"].journal.last_seq
    assert grants.missed("n2") >= head and grants.grant("n2", head - 1) == 0.0 and grants.grant("n2", head) > 0


def test_issue19_a_read_with_nothing_in_flight_covers_nothing(pool: Pool) -> None:
    _in_flight_on_n1_and_n3(pool)
    pool.answering = {"n3"}
    grants = LeaseGrants(["n2", "n3"], 0, LeaseSettings(lease_s=30.0))
    assert grants.grant("n2", 0) > 0
    gate = InFlightGate(False)
    port = pool.reads("n1", grants=grants, gate=gate)
    settle(port)
    assert gate.asked and pool.repair_calls == [] and port.covered == 0 and grants.missed("n2") == 0
