"""Issue 20: a node's background loops stop even when their wake-up event is set as they are cancelled.

``asyncio.wait_for(event.wait(), timeout)`` on Python 3.11 returns normally when the cancel arrives in the same loop
iteration as the event is set: the hint and catch-up loops then went round again and ``stop()`` hung forever (seen
in tests/integration/test_cluster_feed.py once SWIM woke them as a node stopped). cluster/wake.py ``wait_event`` is
what they wait with now. Each test bounds itself: a loop that survives its cancel fails the test instead of
hanging it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

from helpers.feed_sim import Applier, Fetcher, MemJournal, Reporter, Transport, new_store

from s4.cluster.catch_up import CatchUp, CatchUpSettings
from s4.cluster.hints import Hints, HintSettings
from s4.cluster.wake import wait_event

PEERS = ("b", "c")


async def ends_within(tasks: list[asyncio.Task[None]], stop: Awaitable[None], limit_s: float = 5.0) -> bool:
    """Run ``stop``; True if it and every task ended within the bound. Otherwise cancel them again until they end
    (each further cancel meets no set event), so a failing test fails rather than hangs."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait([stopping, *tasks], timeout=limit_s)
    ended = len(done) == len(tasks) + 1
    for _ in range(1000):
        if all(t.done() for t in [stopping, *tasks]):
            break
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0.001)
    return ended


async def settle() -> None:
    for _ in range(20):  # the loops run their first pass and go to wait on their event
        await asyncio.sleep(0)


def test_wait_event_returns_on_set_or_timeout_and_a_cancel_always_ends_the_waiting_loop() -> None:
    async def main() -> list[bool]:
        event = asyncio.Event()
        assert await wait_event(event, 0.001) is False
        event.set()
        assert await wait_event(event, 3600) is True
        outcomes = []
        for yields in range(1, 5):  # the cancel meeting the set at several points of the wait
            event = asyncio.Event()

            async def loop(event: asyncio.Event = event) -> None:
                while True:
                    await wait_event(event, 3600)
                    event.clear()

            task = asyncio.get_running_loop().create_task(loop())
            for _ in range(yields):
                await asyncio.sleep(0)
            event.set()
            task.cancel()
            outcomes.append(await ends_within([task], asyncio.sleep(0), limit_s=1.0))
        return outcomes

    assert asyncio.run(main()) == [True] * 4


def test_hints_stop_while_a_peer_comes_back_alive_ends_every_loop(tmp_path: Path) -> None:
    async def main() -> bool:
        transport = Transport({p: MemJournal(p) for p in PEERS})
        hints = Hints(PEERS, new_store(tmp_path), transport, Reporter(), 1.0,
                      HintSettings(check_s=3600, backoff_s=3600, backoff_max_s=3600))
        await hints.start()
        tasks = list(hints._tasks)
        await settle()
        for peer in PEERS:
            hints.peer_alive(peer)  # SWIM says the peer is back, as the node stops
        try:
            return await ends_within(tasks, hints.stop())
        finally:
            hints.store.close()

    assert asyncio.run(main()), "a hint loop swallowed its cancel: Hints.stop() would hang"


def test_catch_up_stop_while_a_peer_comes_back_alive_ends_every_loop(tmp_path: Path) -> None:
    async def main() -> bool:
        applier = Applier()
        store = new_store(tmp_path)
        catch_up = CatchUp(PEERS, Transport({p: MemJournal(p) for p in PEERS}), applier, store, Reporter(),
                           Fetcher(applier), CatchUpSettings(sweep_s=3600, backoff_s=3600, backoff_max_s=3600))
        await catch_up.start()
        tasks = list(catch_up._tasks)
        await settle()
        for peer in PEERS:
            catch_up.peer_alive(peer)
        try:
            return await ends_within(tasks, catch_up.stop())
        finally:
            store.close()

    assert asyncio.run(main()), "a catch-up loop swallowed its cancel: CatchUp.stop() would hang"

