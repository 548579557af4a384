"""Issue 19, catch-up client side over a simulated transport: per peer a durable cursor that never skips an event
and never goes backwards whatever the up/down schedule (hypothesis), missing blobs fetched before the cursor moves,
a cursor above the peer's head reset, readiness once every peer was caught up with or found unreachable, and the
loop woken by a peer coming back."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers.feed_sim import LOCAL, LOGICAL, Applier, Fetcher, MemJournal, Reporter, Transport, new_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.cluster.catch_up import CatchUp, CatchUpError, CatchUpSettings
from s4.journal.events import Event

PEERS = ("b", "c")


def make(tmp_path: Path | None = None, **kw: object) -> tuple[CatchUp, Transport, Applier, Reporter, Fetcher]:
    journals = {p: MemJournal(p) for p in PEERS}
    transport, applier, reporter = Transport(journals), Applier(), Reporter()
    fetcher = Fetcher(applier)
    store = new_store(tmp_path)
    return (CatchUp(PEERS, transport, applier, store, reporter, fetcher, CatchUpSettings(batch_events=3)),
            transport, applier, reporter, fetcher)


def logical_through(journal: MemJournal, seq: int) -> set[tuple[str, int]]:
    return {(e.origin, e.seq) for e in journal.events[:seq] if e.type in LOGICAL}


actions = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from(PEERS), st.sampled_from(LOGICAL + LOCAL), st.integers(1, 6)),
    st.tuples(st.just("toggle"), st.sampled_from(PEERS)),
    st.tuples(st.just("cut"), st.sampled_from(PEERS), st.integers(0, 3)),
    st.tuples(st.just("pass"), st.sampled_from(PEERS)),
    st.tuples(st.just("restart")),
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_issue19_catch_up_cursor_never_skips_nor_goes_back_under_random_up_down(schedule: list[tuple]) -> None:
    async def main() -> None:
        directory = Path(tempfile.mkdtemp(prefix="s4-feed-"))
        catch_up, transport, applier, reporter, fetcher = make(directory)
        cursors = {p: 0 for p in PEERS}
        try:
            for action in schedule:
                kind, *args = action
                if kind == "append":
                    peer, etype, n = args
                    for _ in range(n):
                        transport.journals[peer].append(etype)
                elif kind == "toggle":
                    transport.up[args[0]] = not transport.up.get(args[0], True)
                elif kind == "cut":
                    transport.cut_after[args[0]] = args[1]
                elif kind == "restart":  # the node restarts: a new CatchUp over the reopened store
                    catch_up.store.close()
                    catch_up = CatchUp(PEERS, transport, applier, new_store(directory), reporter, fetcher,
                                       CatchUpSettings(batch_events=3))
                else:
                    peer = args[0]
                    head = transport.journals[peer].last_seq
                    try:
                        after = await catch_up.pass_once(peer)
                    except CatchUpError:
                        after = None
                    else:
                        assert after == head  # a finished pass reaches the head the stream started at
                    stored = catch_up.store.cursor(peer)
                    assert stored >= cursors[peer], "the cursor went backwards"
                    cursors[peer] = stored
                    # never skipped: every logical event up to the cursor is applied
                    assert logical_through(transport.journals[peer], stored) <= applier.held
                    assert reporter.applied_seq.get(peer, 0) == stored
                    assert not any(e[0] == peer and transport.journals[peer].events[e[1] - 1].type in LOCAL
                                   for e in applier.held), "a node-local event was applied"
            for peer in PEERS:  # everything arrives once the peer is up
                transport.up[peer] = True
                transport.cut_after.clear()
                await catch_up.pass_once(peer)
                assert logical_through(transport.journals[peer], transport.journals[peer].last_seq) <= applier.held
            assert catch_up.ready
        finally:
            catch_up.store.close()
            shutil.rmtree(directory, ignore_errors=True)

    asyncio.run(main())


def test_issue19_catch_up_cursor_survives_a_restart_and_is_fsynced_after_apply(tmp_path: Path) -> None:
    order: list[str] = []

    async def main() -> None:
        catch_up, transport, applier, _, _ = make(tmp_path)
        for _ in range(7):
            transport.journals["b"].append(LOGICAL[0])
        real_apply = applier.apply_peer_events

        async def apply(events: list) -> object:  # type: ignore[type-arg]
            order.append("apply")
            return await real_apply(events)

        applier.apply_peer_events = apply  # type: ignore[method-assign]
        real_sync = catch_up.store._sync
        catch_up.store._sync = lambda: (order.append("fsync"), real_sync())[1]  # type: ignore[method-assign]
        assert await catch_up.pass_once("b") == 7
        catch_up.store.close()
        reopened = new_store(tmp_path)
        try:
            assert reopened.cursor("b") == 7 and reopened.cursor("c") == 0
        finally:
            reopened.close()

    asyncio.run(main())
    # batches of 3: every cursor move (fsync) follows the apply of the events it passes
    assert order == ["apply", "fsync", "apply", "fsync", "apply", "fsync"]


def test_issue19_catch_up_fetches_missing_blobs_before_moving_the_cursor(tmp_path: Path) -> None:
    async def main() -> None:
        catch_up, transport, applier, reporter, fetcher = make(tmp_path)
        transport.journals["b"].append(LOGICAL[1], blob=b"h1")
        transport.journals["b"].append(LOGICAL[1], blob=b"h2")
        reporter.states = {"c": "alive"}
        with pytest.raises(CatchUpError, match="no replica could give"):
            await catch_up.pass_once("b")
        assert catch_up.store.cursor("b") == 0 and not applier.held  # nothing passed, nothing half-applied
        fetcher.available = {b"h1", b"h2"}
        assert await catch_up.pass_once("b") == 2
        assert applier.held == {("b", 1), ("b", 2)}
        assert fetcher.asked[-1][0] == ("b", "c")  # the peer first, then the other live peers
        catch_up.store.close()

    asyncio.run(main())


def test_issue19_catch_up_streams_again_when_what_supersedes_a_held_event_came_after_the_stream_began(
        tmp_path: Path) -> None:
    """Concurrent PUTs of one key (three real nodes, tests/integration/test_cluster_history.py): the peer journals
    its own put (seq 1), the stream starts at head 1, then the peer applies a newer put of that key (seq 2) and
    releases the first put's blob. Fetching it fails everywhere; the stream ends at head 1 with the put held back.
    The pass used to fail there (a read repair through it answered 503 with every node up); it streams again from
    the cursor and seq 2 supersedes the held put, which is applied without its bytes."""
    async def main() -> None:
        catch_up, transport, applier, _, fetcher = make(tmp_path)
        journal = transport.journals["b"]
        first = journal.append(LOGICAL[1], blob=b"h1")
        newer: list[Event] = []
        real_fetch, real_apply = fetcher.fetch, applier.apply_peer_events

        async def fetch(peers: Sequence[str], digest: bytes) -> object:
            if digest == b"h1" and not newer:  # the peer commits the newer put as the fetch of h1 fails
                newer.append(journal.append(LOGICAL[1], blob=b"h2"))
            return await real_fetch(peers, digest)

        async def apply(events: list[Event]) -> object:  # the engine applies a superseded put without its blob
            superseded = {first.seq} if any(e.seq in {n.seq for n in newer} for e in events) else set()
            return await real_apply([e if e.seq not in superseded else Event(e.seq, e.hlc, e.origin, LOGICAL[0],
                                                                              {"bucket": "b0"}) for e in events])

        fetcher.fetch, applier.apply_peer_events = fetch, apply  # type: ignore[method-assign]
        fetcher.available = {b"h2"}
        assert await catch_up.pass_once("b") == 2
        assert applier.held == {("b", 1), ("b", 2)}
        catch_up.store.close()

    asyncio.run(main())


def test_issue19_catch_up_resets_a_cursor_above_the_peers_head(tmp_path: Path) -> None:
    async def main() -> None:
        catch_up, transport, applier, _, _ = make(tmp_path)
        for _ in range(5):
            transport.journals["b"].append(LOGICAL[0])
        await catch_up.pass_once("b")
        transport.journals["b"] = fresh = type(transport.journals["b"])("b")  # data directory replaced
        fresh.append(LOGICAL[2])
        with pytest.raises(CatchUpError, match="reset"):
            await catch_up.pass_once("b")
        assert catch_up.store.cursor("b") == 0
        applier.held.clear()
        assert await catch_up.pass_once("b") == 1 and applier.held == {("b", 1)}
        catch_up.store.close()

    asyncio.run(main())


def test_issue19_catch_up_ready_once_every_peer_caught_up_or_unreachable(tmp_path: Path) -> None:
    async def main() -> None:
        catch_up, transport, applier, _, _ = make(tmp_path)
        transport.journals["b"].append(LOGICAL[0])
        transport.up["c"] = False
        assert not catch_up.ready
        await catch_up.pass_once("b")
        assert not catch_up.ready  # c not tried yet
        applier.fail = True  # a local failure is not "unreachable"
        transport.up["c"] = True
        transport.journals["c"].append(LOGICAL[0])
        with pytest.raises(RuntimeError):
            await catch_up.pass_once("c")
        assert not catch_up.ready and catch_up.status["c"] == "pending"
        transport.up["c"] = False
        with pytest.raises(CatchUpError):
            await catch_up.pass_once("c")
        assert catch_up.ready and catch_up.status == {"b": "caught_up", "c": "unreachable"}
        applier.fail = False
        transport.up["b"] = False  # latched: a peer going away later does not unready the node
        with pytest.raises(CatchUpError):
            await catch_up.pass_once("b")
        assert catch_up.ready and catch_up.status["b"] == "caught_up"
        catch_up.store.close()

    asyncio.run(main())


def test_issue19_catch_up_loop_runs_at_start_and_when_a_peer_comes_back(tmp_path: Path) -> None:
    async def main() -> None:
        catch_up, transport, applier, reporter, _ = make(tmp_path)
        catch_up.settings = CatchUpSettings(batch_events=3, sweep_s=3600, backoff_s=3600, backoff_max_s=3600)
        transport.journals["b"].append(LOGICAL[0])
        transport.up["c"] = False
        await catch_up.start()
        try:
            await wait_for(lambda: catch_up.ready)
            assert ("b", 1) in applier.held and catch_up.status["c"] == "unreachable"
            transport.journals["c"].append(LOGICAL[1])
            transport.up["c"] = True
            catch_up.peer_alive("c")  # without the wake the loop would sleep an hour
            await wait_for(lambda: ("c", 1) in applier.held)
            await wait_for(lambda: reporter.applied_seq.get("c") == 1)
        finally:
            await catch_up.stop()
            catch_up.store.close()

    asyncio.run(main())


async def wait_for(condition: object, limit: int = 2000) -> None:
    for _ in range(limit):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_issue19_a_peers_own_writes_move_the_cursor_without_streaming_them_again(tmp_path: Path) -> None:
    """``pushed``: the journal ranges of a peer's ApplyEvents (its own commits, applied here) move the cursor
    once they join it, in any order; a later pass starts after them, and the cursor is made durable shortly."""
    async def main() -> None:
        catch_up, transport, applier, reporter, _ = make(tmp_path)
        journal = transport.journals["b"]
        for _ in range(6):
            journal.append(LOGICAL[0])
        await catch_up.start()
        try:
            catch_up.pushed("b", [(2, 4)])  # ahead of the cursor (0): waits for (0, 2]
            assert reporter.applied_seq.get("b", 0) == 0
            catch_up.pushed("b", [(0, 2)])
            assert reporter.applied_seq["b"] == 4
            catch_up.pushed("b", [(4, 6), (9, 12)])  # (9, 12] leaves a gap: it waits
            assert reporter.applied_seq["b"] == 6
            applier.held.clear()
            assert await catch_up.pass_once("b") == 6
            assert applier.held == set()  # nothing streamed again
            for _ in range(100):
                if catch_up.store.cursor("b") == 6:
                    break
                await asyncio.sleep(0.05)
            assert catch_up.store.cursor("b") == 6  # durable
            journal.append(LOGICAL[0])
            assert await catch_up.pass_once("b") == 7 and applier.held == {("b", 7)}
        finally:
            await catch_up.stop()
            catch_up.store.close()

    asyncio.run(main())
