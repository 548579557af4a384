"""Cluster-wide IAM across pools (docs/architecture/pools.md, "IAM across pools"): a node outside the registry pool
follows the registry pool's IAM events over a simulated transport (cluster/iam_feed.py).

The registry pool is three nodes; an IAM change is *committed* once it is in the journals of a majority (W=2, at
different local seqs, one event identity), and may reach the third later. Properties: a round that reached a
majority applied every IAM change committed before it started (so a key created before a request works, and a
deleted one is refused, after one round); no other event is ever applied; the durable cursors never go backwards
and survive a restart; a round without a majority is ServiceUnavailable for the asker; concurrent askers share a
round, and a round that started before the ask is never taken for one after it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.feed_sim import new_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster.catch_up import BatchLimits, iam_event, journal_batches
from s4.cluster.iam_feed import CURSOR_PREFIX, IamFeed, PrefixedCursors
from s4.cluster.wire.s4cluster.v1 import CatchUpBatch, CatchUpRequest
from s4.engine.errors import ServiceUnavailableError
from s4.journal.events import Event, EventType

REGISTRY = ("r1", "r2", "r3")
IAM = (EventType.USER_CREATED, EventType.CREDENTIAL_CREATED, EventType.CREDENTIAL_DELETED, EventType.USER_DELETED)
OTHER = (EventType.OBJECT_VERSION_PUT, EventType.BUCKET_CREATED, EventType.BLOB_MOVED)


@dataclass
class Journal:
    """One registry node's journal: events with their identity (hlc, origin) at this node's own seqs."""

    events: list[Event] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def add(self, hlc: int, etype: EventType) -> None:
        self.events.append(Event(len(self.events) + 1, hlc, "r1", etype, {"bucket": "b"} if etype in OTHER else {}))

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Event]:
        yield from self.events[from_seq - 1: to_seq]


class Down(ConnectionRefusedError):
    pass


@dataclass
class Registry:
    """The registry nodes behind a switch, serving IamFeed (the CatchUp stream, IAM events only)."""

    journals: dict[str, Journal] = field(default_factory=lambda: {n: Journal() for n in REGISTRY})
    up: dict[str, bool] = field(default_factory=dict)
    gate: asyncio.Event | None = None  # set: streams wait for it (a round in flight)
    streams: int = 0

    async def catch_up(self, peer: str, request: CatchUpRequest) -> AsyncIterator[CatchUpBatch]:
        if not self.up.get(peer, True):
            raise Down(f"{peer} is down")
        self.streams += 1
        if self.gate is not None:
            await self.gate.wait()
        async for batch in journal_batches(self.journals[peer], request.after_seq,
                                           BatchLimits(events=2, bytes=1 << 20, scan=3), keep=iam_event):
            yield batch

    async def apply_events(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("the IAM feed never pushes")


@dataclass
class Applied:
    """The apply port: events by identity (hlc, origin), as the projection's last-writer-wins sees them."""

    held: set[int] = field(default_factory=set)
    types: list[EventType] = field(default_factory=list)

    async def apply_peer_events(self, events: list[Event]) -> object:
        for event in events:
            self.held.add(event.hlc)
            self.types.append(event.type)
        return _Result()


class _Result:
    applied, already_had, missing_blobs = 0, 0, ()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001  # every reading is later than the one before
        return self.now


def make(directory: Path, registry: Registry, applied: Applied, clock: Clock) -> IamFeed:
    return IamFeed(REGISTRY, registry, applied, PrefixedCursors(new_store(directory)), interval_s=0.01,
                   call_s=5.0, clock=clock)


def cursors(feed: IamFeed) -> dict[str, int]:
    store = feed.catch_up.store
    return {n: store.cursor(n) for n in REGISTRY}


actions = st.lists(st.one_of(
    st.tuples(st.just("commit"), st.sampled_from(IAM), st.permutations(REGISTRY), st.booleans()),
    st.tuples(st.just("other"), st.sampled_from(OTHER), st.integers(1, 4)),
    st.tuples(st.just("toggle"), st.sampled_from(REGISTRY)),
    st.tuples(st.just("late"),),
    st.tuples(st.just("refresh"),),
    st.tuples(st.just("restart"),),
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_iam_feed_round_that_reached_a_majority_applied_every_change_committed_before_it(schedule: list) -> None:
    async def main() -> None:
        directory = Path(tempfile.mkdtemp(prefix="s4-iam-feed-"))
        registry, applied, clock = Registry(), Applied(), Clock()
        feed = make(directory, registry, applied, clock)
        committed: set[int] = set()
        pending: list[tuple[str, int, EventType]] = []  # the third copy of a committed change, arriving later
        hlc, seen = 0, {n: 0 for n in REGISTRY}
        try:
            for kind, *args in schedule:
                if kind == "commit":  # in a majority's journals now (the registry's 200)
                    etype, order, third = args
                    hlc += 1
                    for node in order[:2]:
                        registry.journals[node].add(hlc, etype)
                    committed.add(hlc)
                    if third:
                        pending.append((order[2], hlc, etype))
                elif kind == "other":
                    etype, n = args
                    for node in REGISTRY:
                        for _ in range(n):
                            registry.journals[node].add(10_000 + len(registry.journals[node].events), etype)
                elif kind == "late" and pending:
                    node, at, etype = pending.pop(0)
                    registry.journals[node].add(at, etype)
                elif kind == "toggle":
                    registry.up[args[0]] = not registry.up.get(args[0], True)
                elif kind == "restart":  # the node restarts: a new feed over the reopened store
                    feed.catch_up.store.store.close()
                    feed = make(directory, registry, applied, clock)
                elif kind == "refresh":
                    before = set(committed)
                    answering = sum(registry.up.get(n, True) for n in REGISTRY)
                    if answering >= 2:
                        await feed.refresh()
                        assert before <= applied.held, "a change committed before the round was not applied"
                    else:
                        with pytest.raises(ServiceUnavailableError):
                            await feed.refresh()
                    now = cursors(feed)
                    assert all(now[n] >= seen[n] for n in REGISTRY), "a cursor went backwards"
                    seen = now
                assert set(applied.types) <= set(IAM), "a non-IAM event was applied"
            for node in REGISTRY:
                registry.up[node] = True
            await feed.refresh()
            assert committed <= applied.held
        finally:
            feed.catch_up.store.store.close()
            shutil.rmtree(directory, ignore_errors=True)

    asyncio.run(main())


def test_iam_feed_unknown_key_asks_a_round_that_started_after_the_request(tmp_path: Path) -> None:
    """A key created while a round is in flight (that round may miss it): the refresh of a request arriving after
    the 200 waits for the next round, which applies it; concurrent askers share that one round."""
    async def main() -> None:
        registry, applied, clock = Registry(), Applied(), Clock()
        feed = make(tmp_path, registry, applied, clock)
        registry.gate = asyncio.Event()
        early = asyncio.create_task(feed.round())  # a periodic round, its streams started, waiting
        while registry.streams < len(REGISTRY):
            await asyncio.sleep(0)
        for node in ("r1", "r2"):  # the key is created (committed in a majority) while that round runs
            registry.journals[node].add(7, EventType.CREDENTIAL_CREATED)
        askers = [asyncio.create_task(feed.refresh()) for _ in range(5)]
        await asyncio.sleep(0)
        registry.gate.set()
        await early
        rounds_before = feed.rounds
        await asyncio.gather(*askers)
        assert 7 in applied.held
        assert feed.rounds == rounds_before + 1  # five askers, one more round
        feed.catch_up.store.store.close()

    asyncio.run(main())


def test_iam_feed_deleted_key_stops_within_one_round_after_the_delete_and_cursor_survives_restart(
        tmp_path: Path) -> None:
    """The bound: a deletion committed before a round starts is applied by it (S4_IAM_SYNC_SECS + two rounds
    after the 200, at most, for the periodic rounds); a node down meanwhile does not matter while a majority
    answers. The cursors are durable under their own ``iam:`` keys and do not replay after a restart."""
    async def main() -> None:
        registry, applied, clock = Registry(), Applied(), Clock()
        feed = make(tmp_path, registry, applied, clock)
        for node in REGISTRY:
            registry.journals[node].add(1, EventType.CREDENTIAL_CREATED)
        await feed.refresh()
        assert applied.held == {1}
        registry.up["r3"] = False
        for node in ("r2", "r3"):
            registry.journals[node].add(2, EventType.CREDENTIAL_DELETED)  # r3 down: only r2's copy is reachable
        registry.journals["r1"].add(50, EventType.OBJECT_VERSION_PUT)
        done = await feed.round()
        assert done.reached and 2 in applied.held
        assert feed.status()["rounds"] == 2 and feed.status()["last_answered"] == 2
        stored = cursors(feed)
        assert stored == {"r1": 2, "r2": 2, "r3": 1}
        store = feed.catch_up.store.store
        assert store.cursor("r1") == 0 and store.cursor(CURSOR_PREFIX + "r1") == 2  # never mixed with catch-up's
        store.close()
        again = make(tmp_path, registry, Applied(), clock)
        assert cursors(again) == stored
        again.catch_up.store.store.close()

    asyncio.run(main())


def test_iam_feed_loop_runs_rounds_until_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        registry, applied, clock = Registry(), Applied(), Clock()
        feed = make(tmp_path, registry, applied, clock)
        for node in ("r1", "r3"):
            registry.journals[node].add(3, EventType.USER_DELETED)
        await feed.start()
        for _ in range(500):  # bounded: the loop's rounds run every 10 ms
            if 3 in applied.held and feed.rounds >= 2:
                break
            await asyncio.sleep(0.01)
        await feed.stop()
        assert 3 in applied.held and feed.rounds >= 2
        feed.catch_up.store.store.close()

    asyncio.run(main())


def test_iam_feed_streams_do_not_wait_for_catch_up_streams() -> None:
    """A registry node serving its pool's CatchUp streams (at most MAX_STREAMS, each possibly long) still serves the
    other pools' IamFeed: separate slots, so a peer's long catch-up cannot delay a deletion's arrival elsewhere."""
    from s4.cluster.catch_up import MAX_STREAMS, EventsService

    async def main() -> None:
        journal = Journal()
        for hlc in range(1, 6):
            journal.add(hlc, EventType.OBJECT_VERSION_PUT if hlc % 2 else EventType.USER_CREATED)
        service = EventsService(journal, limits=BatchLimits(events=1, bytes=1 << 20, scan=1))
        held = [service.catch_up("peer", CatchUpRequest()) for _ in range(MAX_STREAMS)]
        for stream in held:  # each suspended inside its slot, more batches to come
            assert (await anext(stream)).through_seq == 1
        feed = service.iam_feed("other-pool-node", CatchUpRequest())
        batches = [b async for b in feed]  # bounded: ends at the head; would wait forever on a shared slot
        sent = [e for b in batches for e in b.events]
        assert len(sent) == 2 and batches[-1].through_seq == 5
        for stream in held:
            await stream.aclose()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_registry_pool_node_settles_an_unknown_key_with_its_peers_on_demand(tmp_path: Path) -> None:
    """A node of the registry pool that was not among the W copies of a new key (a forwarded request from another
    pool may reach it first): ``refresh`` catches up with its pool peers through the pool's own CatchUp (its
    cursors), counting its own journal as one copy; no periodic rounds. Without a majority (itself included): 503."""
    from s4.cluster.catch_up import CatchUp

    async def main() -> None:
        registry, applied, clock = Registry(journals={"p1": Journal(), "p2": Journal()}), Applied(), Clock()
        store = new_store(tmp_path)
        pool_catch_up = CatchUp(("p1", "p2"), registry, applied, store, _Reporter())  # type: ignore[arg-type]
        feed = IamFeed(("p1", "p2"), None, None, None, clock=clock, on_demand=pool_catch_up)
        await feed.start()
        assert feed._task is None  # on demand only: the pool's replication brings events otherwise
        for node in ("p1", "p2"):
            registry.journals[node].add(9, EventType.CREDENTIAL_CREATED)  # W=2 of 3, not on this node
        registry.up["p2"] = False
        await feed.refresh()  # p1 and this node: a majority of three
        assert 9 in applied.held and store.cursor("p1") == 1  # the pool's own cursor moved (not an iam: one)
        registry.up["p1"] = False
        with pytest.raises(ServiceUnavailableError):
            await feed.refresh()  # this node alone is no majority
        store.close()

    asyncio.run(main())


class _Reporter:
    def applied(self, node_id: str, seq: int) -> None:
        return None

    def state(self, node_id: str) -> str:
        return "alive"
