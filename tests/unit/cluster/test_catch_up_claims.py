"""Issue 19, the catch-up sweep streams only what claims do not cover (cluster/claims.py, cluster/catch_up.py):
the merged range sets, the server skipping claimed ranges, the client asking it to, and the ranges a receiver
answers per coalesced write (``reply_ranges``). The cursor may move over an event only if this node holds it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from helpers.feed_sim import LOCAL, LOGICAL, Applier, Fetcher, MemJournal, Reporter, Transport, new_store
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.catch_up import BatchLimits, CatchUp, CatchUpSettings, journal_batches, reply_ranges
from s4.cluster.claims import RangeSet, coalesce
from s4.cluster.wire.s4cluster.v1 import ApplyEventsRequest
from s4.journal.codec import decode_event

ranges_st = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=12)


def covered(ranges: list[tuple[int, int]]) -> set[int]:
    return {s for a, t in ranges for s in range(a + 1, t + 1)}


@given(ranges_st, st.integers(0, 80))
def test_issue19_a_range_set_holds_exactly_the_union_and_joins_a_cursor_across_what_touches_it(
        ranges: list[tuple[int, int]], cursor: int) -> None:
    held = RangeSet()
    for after, through in ranges:
        held.add(after, through)
    listed = list(held)
    assert covered(listed) == covered(ranges) and listed == coalesce(ranges)
    assert all(t < a for (_, t), (a, _) in zip(listed, listed[1:], strict=False))  # disjoint, not touching
    above = held.above(cursor, 1000)
    assert covered(above) == {s for s in covered(ranges) if s > cursor}
    moved = held.join(cursor)
    expect = cursor
    while expect + 1 in covered(ranges):
        expect += 1
    assert moved == expect  # exactly as far as the held seqs run on from the cursor, never across a gap
    assert covered(list(held)) == {s for s in covered(ranges) if s > moved}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(LOGICAL + LOCAL), min_size=1, max_size=40), ranges_st, st.integers(0, 10))
def test_issue19_catch_up_skips_claimed_ranges_and_its_batches_still_cover_every_seq(
        types: list, skip: list[tuple[int, int]], after: int) -> None:
    journal = MemJournal("b")
    for etype in types:
        journal.append(etype)

    async def main() -> list:
        return [b async for b in journal_batches(journal, after, BatchLimits(events=3, bytes=1 << 20, scan=5),
                                                 skip=skip)]

    batches = asyncio.run(main())
    head = journal.last_seq
    last = after
    sent = []
    for batch in batches:
        assert batch.through_seq >= last and batch.head_seq == head
        last = batch.through_seq
        sent += [decode_event(bytes(e)).seq for e in batch.events]
    assert last == max(after, head)  # the caller's cursor reaches the head: skipped ranges included
    expect = [e.seq for e in journal.events[after:] if e.type in LOGICAL and e.seq not in covered(skip)]
    assert sent == expect


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(LOGICAL + LOCAL), min_size=1, max_size=30), st.data())
def test_issue19_a_pass_streams_only_the_gaps_between_claims_and_the_cursor_never_passes_an_event_not_held(
        types: list, data: st.DataObject) -> None:
    """Claims are made only for events this node holds (as the write path does); whatever claims arrived, in any
    order, a pass ends at the head with every logical event held and the claimed ones not streamed again."""
    async def main() -> None:
        journals = {"b": MemJournal("b"), "c": MemJournal("c")}
        for etype in types:
            journals["b"].append(etype)
        transport, applier, reporter = Transport(journals), Applier(), Reporter()
        directory = tempfile.TemporaryDirectory(prefix="s4-feed-")
        store = new_store(Path(directory.name))
        catch_up = CatchUp(("b", "c"), transport, applier, store, reporter, Fetcher(applier),
                           CatchUpSettings(batch_events=3))
        try:
            head = journals["b"].last_seq
            claims = data.draw(st.lists(st.tuples(st.integers(0, head), st.integers(0, 6)), max_size=8))
            claimed: set[int] = set()
            for a, n in claims:
                t = min(head, a + n)
                for event in journals["b"].events[a:t]:  # held here first (the write path's condition)
                    if event.type in LOGICAL:
                        applier.held.add((event.origin, event.seq))
                claimed |= set(range(a + 1, t + 1))
                catch_up.pushed("b", [(a, t)])
            held_before = set(applier.held)
            assert await catch_up.pass_once("b") == head
            assert {(e.origin, e.seq) for e in journals["b"].events if e.type in LOGICAL} <= applier.held
            streamed = catch_up.streamed["b"]
            gaps = [e for e in journals["b"].events if e.type in LOGICAL and e.seq not in claimed]
            contiguous = 0
            while contiguous + 1 in claimed:
                contiguous += 1
            assert streamed == len([e for e in gaps if e.seq > contiguous])
            assert held_before <= applier.held
        finally:
            store.close()
            directory.cleanup()

    asyncio.run(main())


def test_issue19_a_restarted_node_has_no_claims_and_streams_everything_after_its_durable_cursor(
        tmp_path: Path) -> None:
    async def main() -> None:
        journals = {"b": MemJournal("b"), "c": MemJournal("c")}
        for _ in range(6):
            journals["b"].append(LOGICAL[0])
        transport, applier, reporter = Transport(journals), Applier(), Reporter()
        catch_up = CatchUp(("b", "c"), transport, applier, new_store(tmp_path), reporter, Fetcher(applier),
                           CatchUpSettings(batch_events=3))
        applier.held |= {("b", 4), ("b", 5)}
        catch_up.pushed("b", [(3, 5)])  # ahead of the cursor: waits, in memory only
        catch_up.store.close()
        restarted = CatchUp(("b", "c"), transport, applier, new_store(tmp_path), reporter, Fetcher(applier),
                            CatchUpSettings(batch_events=3))
        try:
            assert await restarted.pass_once("b") == 6
            assert transport.skips["b"] == [[]]  # nothing claimed in this life: nothing skipped
            assert restarted.streamed["b"] == 6
        finally:
            restarted.store.close()

    asyncio.run(main())


def part_request(parts: list[int]) -> ApplyEventsRequest:
    return ApplyEventsRequest(events=[b"e"] * sum(parts), parts=parts if len(parts) > 1 else [])


def test_issue19_reply_ranges_name_per_write_only_the_events_journaled_for_it() -> None:
    # Two coalesced writes, all new: consecutive seqs 11..13; each part its own range.
    assert [(r.after, r.through) for r in reply_ranges(part_request([2, 1]), [0, 1, 2], [11, 12, 13])] == \
        [(10, 12), (12, 13)]
    # The first write's first event was already held: its range covers only what this call journaled.
    assert [(r.after, r.through) for r in reply_ranges(part_request([2, 1]), [0, 1, 2], [0, 11, 12])] == \
        [(10, 11), (11, 12)]
    # A write with nothing new gets none (0, 0); with nothing new at all, no ranges.
    assert [(r.after, r.through) for r in reply_ranges(part_request([1, 1]), [0, 1], [0, 7])] == [(0, 0), (6, 7)]
    assert reply_ranges(part_request([1, 1]), [0, 1], [0, 0]) == []
    # A write's events not consecutive (another write's between them): no range rather than one spanning both.
    assert [(r.after, r.through) for r in reply_ranges(part_request([2, 1]), [0, 1, 2], [11, 13, 12])] == \
        [(0, 0), (11, 12)]
    # Parts that do not add up to the events (a malformed request), or seqs missing (an applier without them).
    assert reply_ranges(ApplyEventsRequest(events=[b"e"] * 3, parts=[1, 1]), [0, 1, 2], [1, 2, 3]) == []
    assert reply_ranges(part_request([3]), [0, 1, 2], []) == []
    # A node-local event the receiver dropped before applying (kept: the indexes applied).
    assert [(r.after, r.through) for r in reply_ranges(part_request([2, 1]), [1, 2], [5, 6])] == [(4, 5), (5, 6)]
