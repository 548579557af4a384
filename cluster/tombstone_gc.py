"""Tombstone GC in a cluster node: the horizon from what the peers told, and the paced job that journals the
collection (docs/architecture/tombstones.md; the engine side is engine/tombstones.py).

The horizon (``horizon``) counts every pool peer whose data may still rejoin (cluster/rejoin.py): a peer that has
not told this process how far it applied this node's journal (Ping ``applied_your_journal``), or with which this
node has not completed a catch-up pass since it started, holds every tombstone back. So does S4_GC_GRACE_DAYS: a
tombstone goes only when its stamp is older than the grace both now and at the start of the last completed pass
with every peer.

The job runs in the journal-owning process, one sweep every ``interval_s`` (a quarter of the grace, between 1 s and
an hour), a page of ``page`` entries per step in a read transaction off the event loop, each step's collectable
tombstones journaled as one node-local ``tombstones.collected`` through the sequencer (never replicated: each node
collects its own when its own horizon allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from s4.engine.sequencer import Command
from s4.engine.tombstones import KINDS, Entry, Horizon, candidates
from s4.engine.views.env import Views
from s4.engine.views.keys import MAX_U64
from s4.engine.views.records import Tx

from .rejoin import Rejoin
from .wire.s4cluster.v1 import PingRequest

log = logging.getLogger("s4.cluster")
ACTOR = "tombstone-gc"
PACE_S = 0.05  # between pages: the writer is shared with clients


class Submit(Protocol):
    def submit(self, command: Command) -> Any: ...


@dataclass
class GcStats:
    collected: int = 0  # since start
    sweeps: int = 0
    last_horizon: Horizon | None = None
    blocked_by: list[str] = field(default_factory=list)


class TombstoneGC:
    """Ping's ``applied_your_journal`` and data life in (``on_ping``, the ``TombstoneHandler`` of grpc_server), the
    horizon and the sweeps out."""

    def __init__(self, peers: Sequence[str], views: Views, sequencer: Submit, grace_s: float, rejoin: Rejoin,
                 synced_ms: Callable[[str], int | None], *, wall: Callable[[], float] = time.time,
                 interval_s: float | None = None, page: int = 256) -> None:
        self.peers = tuple(peers)
        self.views, self.sequencer, self.grace_s, self.rejoin = views, sequencer, grace_s, rejoin
        self.synced_ms = synced_ms
        self._wall = wall
        self.interval_s = interval_s if interval_s is not None else min(3600.0, max(1.0, grace_s / 4))
        self.page = page
        self.holds: dict[str, int] = {}  # per peer: how far it applied this node's journal, as it last told
        self.stats = GcStats()
        self._task: asyncio.Task[None] | None = None

    # -- Ping -------------------------------------------------------------------------------------------------------
    def on_ping(self, caller: str, request: PingRequest) -> tuple[bool, int]:
        self.rejoin.heard(caller, request.data_life)
        if caller in self.peers and not self.rejoin.blocked(caller):
            self.holds[caller] = request.applied_your_journal
        return self.rejoin.blocked(caller), self.rejoin.life

    # -- the horizon ------------------------------------------------------------------------------------------------
    def horizon(self) -> Horizon | None:
        """What may go now, or None while a peer holds everything back (``stats.blocked_by`` says which)."""
        now_ms = int(self._wall() * 1000)
        floor, max_seq, blocked = now_ms, MAX_U64, []
        for peer in self.peers:
            if self.rejoin.waived_peer(peer):
                continue
            held, synced = self.holds.get(peer), self.synced_ms(peer)
            if held is None or synced is None:
                blocked.append(peer)
                continue
            floor, max_seq = min(floor, synced), min(max_seq, held)
        self.stats.blocked_by = blocked
        if blocked:
            return None
        return Horizon(before_ms=floor - int(self.grace_s * 1000), max_seq=max_seq)

    # -- the job ----------------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """One pass over every kind of tombstone; how many were collected."""
        horizon = self.horizon()
        self.stats.last_horizon = horizon
        if horizon is None:
            return 0
        collected = 0
        for db in KINDS:
            after: bytes | None = None
            while True:
                entries, after = await asyncio.to_thread(self._page, horizon, db, after)
                if entries:
                    future = self.sequencer.submit(Command("collect_tombstones", {"entries": entries}, ACTOR))
                    collected += int(await asyncio.wrap_future(future))
                if after is None:
                    break
                await asyncio.sleep(PACE_S)
        self.stats.sweeps += 1
        self.stats.collected += collected
        if collected:
            log.info("tombstone GC: collected %d tombstones (stamped before %d ms, journal seq <= %d)", collected,
                     horizon.before_ms, horizon.max_seq)
        return collected

    def _page(self, horizon: Horizon, db: str, after: bytes | None) -> tuple[list[Entry], bytes | None]:
        with self.views.read() as txn:
            return candidates(Tx(txn, self.views.dbs), horizon, db=db, after=after, limit=self.page)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="s4-tombstone-gc")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; the next sweep tries again
                log.warning("tombstone GC sweep failed: %s", exc)

    def document(self) -> dict[str, Any]:
        """The health document's ``tombstone_gc``."""
        horizon = self.stats.last_horizon
        with self.views.read() as txn:
            held = Tx(txn, self.views.dbs).tombstones()
        return {"version_tombstones": held, "collected": self.stats.collected, "sweeps": self.stats.sweeps,
                "blocked_by": self.stats.blocked_by,
                "horizon_ms": None if horizon is None else horizon.before_ms,
                "horizon_seq": None if horizon is None else horizon.max_seq,
                "waived": sorted(self.rejoin.waived)}
