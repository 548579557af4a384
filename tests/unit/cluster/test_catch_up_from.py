"""Issue 19, the receiving side of blocking read repair: ``EventsService.catch_up_from`` (cluster/catch_up.py) runs
one catch-up pass from the caller over the simulated transport (tests/helpers/feed_sim.py) and answers only once
the pass reached the caller's ``through_seq``. A caller it does not catch up from is UNIMPLEMENTED; a pass that
fails, for any reason, or that stops short of ``through_seq`` is UNAVAILABLE (the coordinator turns that into a
503 for its read); success answers the cursor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from helpers.feed_sim import LOCAL, LOGICAL, Applier, Fetcher, MemJournal, Reporter, Transport, new_store

from s4.cluster.catch_up import CatchUp, CatchUpSettings, EventsService
from s4.cluster.wire.s4cluster.v1 import CatchUpFromReply, CatchUpFromRequest

PEERS = ("b", "c")


class Sim:
    def __init__(self, tmp_path: Path) -> None:
        self.journals = {p: MemJournal(p) for p in PEERS}
        self.transport, self.applier, self.reporter = Transport(self.journals), Applier(), Reporter()
        self.store = new_store(tmp_path)
        self.puller = CatchUp(PEERS, self.transport, self.applier, self.store, self.reporter, Fetcher(self.applier),
                              CatchUpSettings(batch_events=3))
        self.service = EventsService(MemJournal("a"), puller=self.puller)

    def call(self, caller: str, through_seq: int) -> CatchUpFromReply:
        return asyncio.run(self.service.catch_up_from(caller, CatchUpFromRequest(through_seq=through_seq)))

    def refused(self, caller: str, through_seq: int) -> GRPCError:
        with pytest.raises(GRPCError) as err:
            self.call(caller, through_seq)
        return err.value


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    sim = Sim(tmp_path)
    try:
        yield sim
    finally:
        sim.store.close()


def fill(journal: MemJournal, n: int) -> None:
    for i in range(n):
        journal.append(LOGICAL[i % len(LOGICAL)])
    journal.append(LOCAL[0])  # the head is a node-local event: the pass's cursor still reaches it


def test_success_answers_the_cursor_once_the_callers_journal_is_applied(sim: Sim) -> None:
    fill(sim.journals["b"], 7)
    reply = sim.call("b", through_seq=8)
    assert reply.cursor == 8 == sim.store.cursor("b")
    assert sim.applier.held == {("b", s) for s in range(1, 8)}
    assert sim.call("b", through_seq=5).cursor == 8  # already through it: answered at once, nothing re-applied


def test_an_unknown_caller_is_unimplemented(sim: Sim) -> None:
    fill(sim.journals["b"], 2)
    err = sim.refused("z", through_seq=1)
    assert err.status is Status.UNIMPLEMENTED
    assert sim.applier.calls == 0


def test_a_node_without_a_puller_is_unimplemented(sim: Sim) -> None:
    service = EventsService(MemJournal("a"))
    with pytest.raises(GRPCError) as err:
        asyncio.run(service.catch_up_from("b", CatchUpFromRequest(through_seq=1)))
    assert err.value.status is Status.UNIMPLEMENTED


def test_an_unreachable_caller_is_unavailable(sim: Sim) -> None:
    fill(sim.journals["b"], 4)
    sim.transport.up["b"] = False
    err = sim.refused("b", through_seq=5)
    assert err.status is Status.UNAVAILABLE and "down" in (err.message or "")
    sim.transport.up["b"] = True
    sim.transport.cut_after["b"] = 1  # a stream cut after one batch: part applied, still a refusal
    err = sim.refused("b", through_seq=5)
    assert err.status is Status.UNAVAILABLE
    assert sim.store.cursor("b") == 3
    assert sim.call("b", through_seq=5).cursor == 5  # the next call finishes the job


def test_a_pass_failing_in_this_node_is_unavailable(sim: Sim) -> None:
    """The apply port raising (e.g. the sequencer stopping) fails the pass: the caller must hear UNAVAILABLE, not an
    unknown-status application error."""
    fill(sim.journals["b"], 4)
    sim.applier.fail = True
    err = sim.refused("b", through_seq=5)
    assert err.status is Status.UNAVAILABLE and "apply failed" in (err.message or "")
    assert sim.store.cursor("b") == 0


def test_a_pass_that_stops_below_through_seq_is_unavailable(sim: Sim) -> None:
    fill(sim.journals["b"], 3)
    err = sim.refused("b", through_seq=9)  # the caller's head (4) is below what it asked for
    assert err.status is Status.UNAVAILABLE and "not 9" in (err.message or "")
    assert sim.store.cursor("b") == 4  # what it did apply stays applied


def test_a_pass_held_back_by_a_blob_no_replica_has_is_unavailable(sim: Sim) -> None:
    sim.journals["b"].append(LOGICAL[1], blob=b"h1")
    err = sim.refused("b", through_seq=1)
    assert err.status is Status.UNAVAILABLE and "no replica could give" in (err.message or "")
    assert sim.store.cursor("b") == 0
