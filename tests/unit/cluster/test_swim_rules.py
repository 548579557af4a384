"""Issue 20, SWIM membership: the rules one node applies, without a network (cluster/swim_messages.py,
cluster/swim_gossip.py, cluster/swim.py). The precedence is the paper's and a total order (any order of arrival
gives the same record); only a node raises its own incarnation; the gossip buffer sends each update a bounded
number of times, least sent and newest first, within a byte budget; a message of another cluster is dropped and
counted; the buddy record goes first to a suspected recipient."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.swim import Change, MemberState, Swim, SwimSettings
from s4.cluster.swim_gossip import GossipBuffer
from s4.cluster.swim_messages import (
    ACK,
    ALIVE,
    DEAD,
    JOIN,
    JOIN_REPLY,
    PING,
    PING_REQ,
    SUSPECT,
    Message,
    Update,
    overrides,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    def send(self, address: str, message: Message) -> None:
        self.sent.append((address, message))

    def take(self) -> list[tuple[str, Message]]:
        sent, self.sent = self.sent, []
        return sent


def node(node_id: str = "a", incarnation: int = 10, cluster: str = "c") -> tuple[Swim, Outbox, Clock]:
    outbox, clock = Outbox(), Clock()
    swim = Swim(cluster=cluster, node_id=node_id, address=f"{node_id}:1", incarnation=incarnation, transport=outbox,
                clock=clock, rng=random.Random(0))
    swim.start()
    return swim, outbox, clock


def msg(kind: str, sender: str, inc: int, *updates: Update, seq: int = 0, target: str = "", cluster: str = "c",
        target_addr: str = "") -> Message:
    return Message(kind, cluster, sender, f"{sender}:1", inc, seq, target, target_addr, tuple(updates))


# -- precedence ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("new,state,inc,expected", [
    # alive(i) overrides alive/suspect/dead(j) iff i > j
    ((ALIVE, 5), ALIVE, 4, True), ((ALIVE, 5), ALIVE, 5, False), ((ALIVE, 5), SUSPECT, 4, True),
    ((ALIVE, 5), SUSPECT, 5, False), ((ALIVE, 5), DEAD, 4, True), ((ALIVE, 5), DEAD, 5, False),
    # suspect(i) overrides alive(j) iff i >= j, suspect(j) iff i > j; dead(j) only for a newer life
    ((SUSPECT, 5), ALIVE, 5, True), ((SUSPECT, 5), ALIVE, 6, False), ((SUSPECT, 5), SUSPECT, 5, False),
    ((SUSPECT, 6), SUSPECT, 5, True), ((SUSPECT, 5), DEAD, 5, False), ((SUSPECT, 6), DEAD, 5, True),
    # dead(i) overrides alive(j) and suspect(j) iff i >= j
    ((DEAD, 5), ALIVE, 5, True), ((DEAD, 5), SUSPECT, 5, True), ((DEAD, 4), ALIVE, 5, False),
    ((DEAD, 5), DEAD, 5, False),
])
def test_swim_precedence_is_the_papers(new: tuple[str, int], state: str, inc: int, expected: bool) -> None:
    assert overrides(Update(new[0], "x", "x:1", new[1]), state, inc) is expected


updates = st.lists(st.builds(Update, st.sampled_from([ALIVE, SUSPECT, DEAD]), st.just("b"), st.just("b:1"),
                             st.integers(0, 4), st.sampled_from(["b", "c", "d"])), min_size=1, max_size=12)


@given(updates, st.randoms(use_true_random=False))
def test_swim_record_is_the_greatest_update_whatever_the_arrival_order(batch: list[Update], rnd: random.Random) -> None:
    """Two nodes that heard the same updates, in different orders and with repeats, hold the same record of a
    member: the greatest by (incarnation, alive < suspect < dead)."""
    rank = {ALIVE: 0, SUSPECT: 1, DEAD: 2}
    best = max(batch, key=lambda u: (u.incarnation, rank[u.state]))
    for order in (batch, rnd.sample(batch, len(batch)), batch + batch[::-1]):
        swim, _, _ = node("a")
        for u in order:
            swim.receive(msg(ACK, "c", 1, u))
        record = swim.member("b")
        assert record is not None and (record.state, record.incarnation) == (best.state, best.incarnation)


# -- incarnations -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", [SUSPECT, DEAD])
def test_swim_node_refutes_a_suspicion_or_death_of_itself_by_raising_its_own_incarnation(state: str) -> None:
    swim, outbox, _ = node("a", incarnation=10)
    swim.receive(msg(PING, "b", 3, Update(state, "a", "a:1", 10, "b"), seq=7, target="a"))
    assert swim.incarnation == 11 and swim.counters.refutations == 1
    [(address, ack)] = outbox.take()
    assert address == "b:1" and ack.kind == ACK and ack.sender_inc == 11
    assert Update(ALIVE, "a", "a:1", 11, "a") in ack.updates
    swim.receive(msg(PING, "b", 3, Update(state, "a", "a:1", 10, "b"), seq=8, target="a"))
    assert swim.incarnation == 11  # a stale verdict (an older incarnation) needs no answer


def test_swim_restarted_node_with_a_lower_start_stamp_outbids_its_past_life() -> None:
    """A wall clock set back across a restart: the seed's record of the past life (dead at 500) reaches the node in
    the join reply and it raises its own incarnation above it, so the others take its word again."""
    swim, outbox, _ = node("a", incarnation=100)
    swim.receive(msg(JOIN_REPLY, "b", 3, Update(ALIVE, "b", "b:1", 3, "b"), Update(DEAD, "a", "a:1", 500, "c")))
    assert swim.incarnation == 501


def test_swim_never_raises_another_members_incarnation() -> None:
    """Hearing a member suspected or dead, or probing it in vain, never moves its incarnation: only its own word."""
    swim, outbox, clock = node("a")
    swim.receive(msg(ACK, "b", 7))
    for _ in range(40):  # b never answers: suspect, then dead
        clock.t += 0.25
        swim.tick()
    record = swim.member("b")
    assert record is not None and record.state == DEAD and record.incarnation == 7
    for _, sent in outbox.take():
        assert all(u.incarnation == 7 for u in sent.updates if u.node_id == "b")


def test_swim_update_claiming_this_id_at_another_address_is_a_conflict_not_a_refutation() -> None:
    swim, _, _ = node("a", incarnation=10)
    swim.receive(msg(ACK, "b", 3, Update(SUSPECT, "a", "elsewhere:1", 10, "b")))
    assert swim.incarnation == 10 and swim.counters.conflicts == 1


# -- isolation and addressing -------------------------------------------------------------------------------------

def test_swim_message_of_another_cluster_is_dropped_and_counted() -> None:
    swim, outbox, _ = node("a", cluster="c")
    for kind in (PING, JOIN, ACK):
        swim.receive(msg(kind, "x", 1, Update(ALIVE, "y", "y:1", 1, "y"), target="a", cluster="other"))
    assert swim.members() == [] and outbox.take() == [] and swim.counters.foreign_dropped == 3


def test_swim_ping_meant_for_another_node_at_this_address_gets_no_ack() -> None:
    """A new node took a dead member's address: its ack must not make the dead member look alive."""
    swim, outbox, _ = node("a")
    swim.receive(msg(PING, "b", 1, seq=1, target="old"))
    assert outbox.take() == [] and swim.counters.misdirected == 1


def test_swim_malformed_updates_are_counted_and_ignored() -> None:
    swim, _, _ = node("a")
    swim.receive(msg(ACK, "b", 1, Update("zombie", "c", "c:1", 1), Update(ALIVE, "d", "d:1", -1)))
    swim.receive(msg("gossip", "b", 1))
    assert [m.node_id for m in swim.members()] == ["b"] and swim.counters.malformed == 3


# -- probing ------------------------------------------------------------------------------------------------------

def test_swim_probe_goes_indirect_after_the_timeout_and_suspects_at_the_periods_end() -> None:
    s = SwimSettings()
    swim, outbox, clock = node("a")
    for peer in ("b", "c", "d", "e"):
        swim.receive(msg(ACK, peer, 1))
    outbox.take()
    clock.t = swim.next_deadline()
    swim.tick()  # the period starts: one ping
    [(_, ping)] = [(a, m) for a, m in outbox.take() if m.kind == PING]
    target = ping.target_id
    clock.t += s.probe_timeout_s
    swim.tick()
    reqs = [(a, m) for a, m in outbox.take() if m.kind == PING_REQ]
    assert len(reqs) == s.indirect_checks and {m.target_id for _, m in reqs} == {target}
    assert target not in {a.split(":")[0] for a, _ in reqs}
    clock.t += s.period_s - s.probe_timeout_s
    swim.tick()
    record = swim.member(target)
    assert record is not None and record.state == SUSPECT and swim.counters.suspicions == 1
    # nobody nacked: Lifeguard's local health says this node may be the slow one
    assert swim.awareness == s.indirect_checks


def test_swim_relay_forwards_the_ack_or_nacks() -> None:
    swim, outbox, clock = node("r")
    swim.receive(msg(PING_REQ, "a", 1, seq=41, target="t", target_addr="t:1"))
    [(address, ping)] = outbox.take()
    assert address == "t:1" and ping.kind == PING and ping.target_id == "t"
    swim.receive(msg(ACK, "t", 1, seq=ping.seq, target="t"))
    [(address, ack)] = outbox.take()
    assert address == "a:1" and ack.kind == ACK and (ack.seq, ack.target_id) == (41, "t")
    swim.receive(msg(PING_REQ, "a", 1, seq=42, target="t", target_addr="t:1"))
    outbox.take()
    clock.t += SwimSettings().probe_timeout_s
    swim.tick()
    nacks = [(a, m) for a, m in outbox.take() if m.kind == "nack"]
    assert [(a, m.seq) for a, m in nacks] == [("a:1", 42)]


def _suspicion_setup(peers: str) -> tuple[Swim, Clock]:
    """Node a knowing ``peers`` alive at incarnation 1 (n = len(peers) + 1), at t = 0, before its first period."""
    swim, _, clock = node("a")
    for peer in peers:
        swim.receive(msg(ACK, peer, 1))
    return swim, clock


def test_swim_suspicion_timeout_falls_only_with_independent_confirmations() -> None:
    """Lifeguard's dogpile: n = 6, so the timeout runs from 12 s (no confirmation) down to 4 s (k = 3 confirmations
    from other origins). The same origin's suspicion heard again through gossip is no confirmation."""
    swim, clock = _suspicion_setup("bcdef")
    for sender in "cde":  # c's suspicion, gossiped by c, d and e
        swim.receive(msg(ACK, sender, 1, Update(SUSPECT, "b", "b:1", 1, "c")))
    clock.t = 5.0
    swim.tick()
    assert swim.member("b") == MemberState("b", "b:1", SUSPECT, 1)  # had the repeats counted, dead at 4 s
    for origin in "def":
        swim.receive(msg(ACK, "c", 1, Update(SUSPECT, "b", "b:1", 1, origin)))
    swim.tick()
    assert swim.member("b") == MemberState("b", "b:1", DEAD, 1)  # three confirmations: the 4 s minimum, passed


def test_swim_refutation_ends_the_suspicion_and_a_later_death_of_the_refuted_incarnation_is_ignored() -> None:
    """A suspicion of b at 1, then b's alive at 2: the timer is gone (nothing dies when it would have run out) and
    a death of incarnation 1 that some member still gossips (its timer ran out first) does not bury b again."""
    swim, clock = _suspicion_setup("bcde")
    swim.receive(msg(ACK, "c", 1, Update(SUSPECT, "b", "b:1", 1, "c")))
    swim.receive(msg(ACK, "d", 1, Update(ALIVE, "b", "b:1", 2, "b")))
    swim.receive(msg(ACK, "e", 1, Update(DEAD, "b", "b:1", 1, "c")))
    clock.t = 13.0  # past the longest suspicion (12 s for n = 5)
    swim.tick()
    assert swim.member("b") == MemberState("b", "b:1", ALIVE, 2)


def test_swim_suspicion_of_the_refuted_incarnation_starts_a_fresh_timer() -> None:
    """b refuted a confirmed suspicion of 1 and is suspected again at 2 (it is slow: every probe fails); at t = 3
    the new suspicion reaches this node before b's alive at 2 did. It replaces the old one and runs from its own
    arrival with no confirmation (up to 12 s, until t = 15), not on the old one's clock or confirmations (that one
    ran out at 4 s), and it ends in a death of incarnation 2."""
    swim, clock = _suspicion_setup("bcde")
    for origin in "cde":
        swim.receive(msg(ACK, "c", 1, Update(SUSPECT, "b", "b:1", 1, origin)))
    clock.t = 3.0
    swim.receive(msg(ACK, "d", 1, Update(SUSPECT, "b", "b:1", 2, "c")))
    clock.t = 14.9
    swim.tick()
    assert swim.member("b") == MemberState("b", "b:1", SUSPECT, 2)
    clock.t = 15.0
    swim.tick()
    assert swim.member("b") == MemberState("b", "b:1", DEAD, 2)


def test_swim_suspected_recipient_gets_its_own_record_first() -> None:
    """Lifeguard's buddy system: a ping to a suspect carries the suspicion, whatever the gossip buffer holds."""
    swim, outbox, _ = node("a")
    swim.receive(msg(ACK, "b", 1, *[Update(ALIVE, f"m{i}", f"m{i}:1", 1) for i in range(40)],
                     Update(SUSPECT, "b", "b:1", 1, "c")))
    outbox.take()
    swim._send("b:1", PING, "b", seq=1, target_id="b")
    [(_, ping)] = outbox.take()
    assert ping.updates[0] == Update(SUSPECT, "b", "b:1", 1, "c")


def test_swim_listeners_hear_every_change() -> None:
    swim, _, _ = node("a")
    changes: list[Change] = []
    swim.subscribe(changes.append)
    swim.subscribe(lambda change: 1 / 0)  # a failing listener is logged, not fatal
    swim.receive(msg(ACK, "b", 1, Update(SUSPECT, "b", "b:1", 1, "c"), Update(ALIVE, "b", "b:1", 2, "b")))
    assert [(c.node_id, c.old, c.new, c.incarnation) for c in changes] == [
        ("b", None, ALIVE, 1), ("b", ALIVE, SUSPECT, 1), ("b", SUSPECT, ALIVE, 2)]


def test_swim_settings_refuse_a_probe_timeout_beyond_the_period() -> None:
    with pytest.raises(ValueError):
        SwimSettings(period_s=1.0, probe_timeout_s=1.0)


# -- the gossip buffer --------------------------------------------------------------------------------------------

def test_swim_gossip_sends_each_update_a_bounded_number_of_times_least_sent_newest_first() -> None:
    buffer = GossipBuffer(retransmit_mult=2, max_bytes=10_000, max_count=2, max_entries=100)
    for i in range(3):
        buffer.add(Update(ALIVE, f"m{i}", "x:1", 1))
    assert buffer.limit(9) == 2 and buffer.limit(10) == 4  # mult * ceil(log10(n + 1))
    assert [u.node_id for u in buffer.take(9)] == ["m2", "m1"]
    assert [u.node_id for u in buffer.take(9)] == ["m0", "m2"]  # m0 was never sent
    assert [u.node_id for u in buffer.take(9)] == ["m1", "m0"]
    assert buffer.take(9) == [] and len(buffer) == 0


def test_swim_gossip_newer_update_replaces_older_and_the_buffer_is_bounded() -> None:
    buffer = GossipBuffer(retransmit_mult=4, max_bytes=10_000, max_count=100, max_entries=5)
    buffer.add(Update(ALIVE, "b", "b:1", 1))
    buffer.add(Update(SUSPECT, "b", "b:1", 1, "c"))
    assert buffer.pending() == [Update(SUSPECT, "b", "b:1", 1, "c")]
    for i in range(20):
        buffer.add(Update(ALIVE, f"m{i}", "x:1", 1))
    assert len(buffer) == 5


@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=60), st.integers(64, 2000))
def test_swim_gossip_never_exceeds_its_byte_budget(ids: list[str], budget: int) -> None:
    buffer = GossipBuffer(retransmit_mult=4, max_bytes=budget, max_count=1000, max_entries=1000)
    for node_id in ids:
        buffer.add(Update(SUSPECT, node_id, node_id + ":7946", 1, "origin"))
    for _ in range(100):
        taken = buffer.take(len(ids))
        assert sum(u.size() for u in taken) <= budget
        if not taken:
            break


def test_swim_left_node_sends_its_death_to_every_member_and_then_never_answers_nor_refutes() -> None:
    """leave(): one LEAVE per member not dead, carrying dead(own incarnation, origin itself); afterwards a ping
    carrying that death as the buddy record is neither acked nor refuted (a refutation would make a stopped node
    look alive again), and the node has no deadline left."""
    from s4.cluster.swim_messages import LEAVE
    a, outbox, clock = node("a", 10)
    a.receive(msg(PING, "b", 3, seq=1, target="a"))
    a.receive(msg(PING, "c", 4, Update(DEAD, "d", "d:1", 2, "c"), seq=2, target="a"))
    outbox.take()
    assert a.leave() == 2
    sent = outbox.take()
    assert sorted(addr for addr, _ in sent) == ["b:1", "c:1"]  # not the dead d
    for _, m in sent:
        assert m.kind == LEAVE and m.updates == (Update(DEAD, "a", "a:1", 10, "a"),)
    a.receive(msg(PING, "b", 3, Update(DEAD, "a", "a:1", 10, "b"), seq=5, target="a"))
    clock.t += 100
    a.tick()
    assert outbox.take() == [] and a.incarnation == 10 and a.counters.refutations == 0
    assert a.next_deadline() == float("inf") and a.leave() == 0
    b, _, _ = node("b", 3)
    b.receive(sent[0][1])
    assert b.member("a").state == DEAD  # type: ignore[union-attr]
    assert b.member("a").incarnation == 10 and b.counters.leaves == 1  # type: ignore[union-attr]
