"""Group fsync of a process's own volumes: concurrent writers of one volume share each fdatasync.

Object bytes must be durable before the journal event that names them. The sequencer used to fdatasync every
volume of a batch itself, on its one thread, before the journal write: with several workers that was one fsync
per worker volume in the node's serial commit path (and on a small VM each fsync costs real CPU too). Now the
process that wrote the bytes makes them durable before it sends the command, so the fsyncs of different workers
run in parallel and overlap with the sequencer committing other batches; the sequencer only journals.

Within a process the same group-commit rule as the journal's applies per volume: a caller whose write finished
before a sync *started* is covered by it; callers arriving while one runs share the next. A failed sync fails
every caller waiting on it (their requests fail; nothing was acknowledged) and the next caller starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _VolumeSyncs:
    started: int = 0
    completed: int = 0
    running: asyncio.Future[None] | None = None


class GroupSync:
    """Shares fdatasyncs among the tasks of one event loop; ``sync(names)`` does the blocking call on a thread."""

    def __init__(self, sync: Callable[[Iterable[str]], None]) -> None:
        self._sync = sync
        self._volumes: dict[str, _VolumeSyncs] = {}
        self.syncs = 0  # fdatasync calls made (for tests and curiosity)

    async def durable(self, names: Iterable[str]) -> None:
        """Return once every byte this process wrote to ``names`` before the call is on disk."""
        for name in names:
            await self._durable(name)

    async def _durable(self, name: str) -> None:
        state = self._volumes.setdefault(name, _VolumeSyncs())
        needed = state.started + 1  # a sync that starts from now on covers what was written before this call
        while state.completed < needed:
            if state.running is None:
                state.started += 1
                self.syncs += 1
                state.running = asyncio.ensure_future(self._sync_once(state, name, state.started))
            await asyncio.shield(state.running)

    async def _sync_once(self, state: _VolumeSyncs, name: str, generation: int) -> None:
        # The state changes inside the task, before it completes: a waiter resuming (or finding the task already
        # done) sees them at once, without waiting for a done-callback to run.
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._sync, (name,))
            state.completed = generation
        finally:
            state.running = None
