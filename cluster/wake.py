"""Waiting for a wake-up event with a timeout, in a way a cancel always ends.

The background loops of a node (catch-up, hints, SWIM's driver) sleep until their event is set or a timeout passes.
``asyncio.wait_for(event.wait(), timeout)`` does that, but on Python 3.11 it returns normally when the cancel of the
waiting task arrives in the same loop iteration as the event is set (CPython gh-86296, fixed in 3.12): the loop goes
round again, its task stays "cancelling" forever and the ``stop()`` awaiting it hangs. That happened when a peer came
back alive (``peer_alive`` sets the event) while the node was stopping. ``asyncio.wait`` has no such path: a cancel
always raises.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set (True) or ``timeout`` seconds passed (False); a cancel always propagates."""
    if event.is_set():
        return True
    waiter = asyncio.get_running_loop().create_task(event.wait())
    try:
        done, _ = await asyncio.wait((waiter,), timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel every per-peer loop, then wait until each has ended (the loops' shared ``stop``)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
