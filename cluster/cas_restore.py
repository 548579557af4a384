"""A replaced node's acceptor restores its register state from every other acceptor of its pool before it votes
(docs/architecture/replication.md, "Replacing an acceptor"; docs/operations.md, "Replace a dead node").

A node whose disk was lost comes back with the same node id and an empty ``cluster/cas.lmdb``: an *amnesiac*
acceptor. Voting at once, it could promise or accept a ballot below one its predecessor promised, or miss a value
its predecessor accepted as part of a majority, and two proposers could both commit (two CREATED for one bucket
name). ``s4-admin cluster replace`` (tools/cluster_bootstrap.py) marks the fresh store ``replacing``; the acceptor
then refuses every prepare and accept (and CasList) until ``CasRestore`` has read the whole state of **every** other
acceptor of the pool and kept, per key, the highest promised ballot and the highest accepted (ballot, value,
lineage) among them. Any quorum that counted the lost acceptor holds at least one other acceptor, so together the
others hold (at least) everything it promised or accepted as part of a completed phase. A phase still in flight is
stopped by a *fence*: the second of two reading rounds first raises every other acceptor's floor (a promise for
every key) above every ballot the pool holds plus ``MARGIN``, so a late answer to a phase that counted the lost
acceptor is a refusal. With any other acceptor unreachable the restore cannot be complete: it keeps refusing,
retries after each heartbeat round, and says which peers it waits for (cluster health, ``cas``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from .cas_rpc import MAX_LIST, ballot_from_wire, ballot_to_wire
from .caspaxos import ZERO, Acceptor, Ballot, Slot
from .peers import PeerPool
from .wire.s4cluster.v1 import CasListRequest

log = logging.getLogger("s4.cluster")

V = TypeVar("V")

REASON = ("this node replaces a dead node whose data was lost (`s4-admin cluster replace`): its acceptor does not "
          "vote until it has restored the register state from every other node of its pool")

Page = Callable[[str, str, Ballot | None], Awaitable[tuple[list[tuple[str, Slot[bytes]]], bool, Ballot]]]
"""``(peer, after, fence)`` -> one page of the peer's registers after ``after`` (key order), whether more follow, and
the peer's floor; with ``fence`` the peer first raises its floor to it (durably)."""

MARGIN = 1 << 32
"""How far above every counter the pool holds the fence is put: a ballot still in flight from before the restore was
drawn by a proposer at most this many attempts past what any acceptor stored (docs/architecture/replication.md)."""


def merge(slots: Iterable[Slot[V]]) -> Slot[V]:
    """The slot an acceptor that knew everything the given acceptors know would hold: the highest promise (at least
    the highest accepted ballot) and the value of the highest accepted ballot, with its lineage."""
    promised, best = Slot[V]().promised, Slot[V]()
    for slot in slots:
        promised = max(promised, slot.promised, slot.accepted)
        if slot.accepted > best.accepted:
            best = slot
    return Slot(promised, best.accepted, best.value, best.lineage)


def grpc_page(peers: PeerPool, timeout_s: float) -> Page:
    """Pages of a peer's whole register state over CasList (every key: prefix "")."""

    async def page(peer: str, after: str,
                   fence: Ballot | None) -> tuple[list[tuple[str, Slot[bytes]]], bool, Ballot]:
        reply = await peers.stub(peer).cas_list(
            CasListRequest(prefix="", after=after, limit=MAX_LIST,
                           fence=None if fence is None else ballot_to_wire(fence)), timeout=timeout_s)
        return ([(e.key, Slot(ballot_from_wire(e.promised_ballot), ballot_from_wire(e.accepted_ballot), e.value,
                              tuple(ballot_from_wire(b) for b in e.lineage))) for e in reply.entries],
                reply.truncated, ballot_from_wire(reply.floor))

    return page


class CasRestore:
    """Restores ``acceptor`` (refusing until then) from ``others`` (the pool's other nodes). ``fence_self`` raises
    the local store's floor; ``done`` makes the end durable (unmarks the store) before the acceptor votes. Fences
    are ``node``'s ballots (``incarnation``: its proposer's, this start's)."""

    def __init__(self, acceptor: Acceptor[bytes], others: Sequence[str], page: Page,
                 fence_self: Callable[[Ballot], Awaitable[object]], done: Callable[[], Awaitable[None]], *,
                 node: str, incarnation: int, max_pages: int = 100_000) -> None:
        self.acceptor, self.others, self.page, self.done = acceptor, tuple(others), page, done
        self.fence_self, self.node, self.incarnation = fence_self, node, incarnation
        self.max_pages = max_pages
        self.restored = acceptor.refusing is None
        self.waiting_for: list[str] = list(self.others)
        self.keys = 0
        self.attempts = 0
        self._task: asyncio.Task[bool] | None = None

    async def _everything(self, peer: str, fence: Ballot | None) -> tuple[dict[str, Slot[bytes]], Ballot]:
        found: dict[str, Slot[bytes]] = {}
        after, floor = "", ZERO
        for _ in range(self.max_pages):
            page, truncated, floor = await self.page(peer, after, fence)
            fence = None  # raised with the first page: every save after it is at or above it
            found.update(page)
            if not truncated or not page:
                return found, floor
            after = page[-1][0]
        raise RuntimeError(f"{peer}: more than {self.max_pages} pages of registers")

    async def _round(self, fence: Ballot | None) -> list[tuple[dict[str, Slot[bytes]], Ballot]] | None:
        """Every other acceptor's whole state (fenced first, with ``fence``); None if any did not answer."""
        answers = await asyncio.gather(*(self._everything(peer, fence) for peer in self.others),
                                       return_exceptions=True)
        failed = {peer: a for peer, a in zip(self.others, answers, strict=True) if isinstance(a, BaseException)}
        self.waiting_for = sorted(failed)
        if failed:
            why = "; ".join(f"{peer}: {exc}" for peer, exc in failed.items())
            log.warning("CAS restore: waiting for %s (%s): this node's acceptor does not vote until every other node "
                        "of its pool has answered", ", ".join(failed), why)
            return None
        return [a for a in answers if not isinstance(a, BaseException)]

    async def attempt(self) -> bool:
        """One try: read every other acceptor to place a fence above every ballot the pool holds, fence every other
        acceptor and read it again; if all answered, save the merged state, fence this one, and start voting."""
        if self.restored:
            return True
        self.attempts += 1
        first = await self._round(None)
        if first is None:
            return False
        top = max((b.counter for state, floor in first for slot in state.values()
                   for b in (slot.promised, slot.accepted, floor)), default=0)
        top = max([top, *(floor.counter for _, floor in first)])
        fence = Ballot(top + MARGIN, self.node, self.incarnation)
        fenced = await self._round(fence)
        if fenced is None:
            return False
        states = [state for state, _ in fenced]
        store = self.acceptor.store
        await self.fence_self(fence)
        keys = sorted(set().union(*states)) if states else []
        for key in keys:  # merged with what an earlier, interrupted attempt saved here (both only grow)
            slot = merge([await store.load(key), *(state[key] for state in states if key in state)])
            await store.save(key, replace(slot, promised=max(slot.promised, fence)))
        await self.done()
        self.keys, self.restored = len(keys), True
        self.acceptor.refusing = None
        log.info("CAS restore: %d registers restored from %s; this node's acceptor votes again", len(keys),
                 ", ".join(self.others) or "no other node")
        return True

    def kick(self) -> None:
        """Start an attempt unless one runs or the restore is done (called after each heartbeat round)."""
        if self.restored or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._guarded(), name="s4-cas-restore")

    async def _guarded(self) -> bool:
        try:
            return await self.attempt()
        except Exception as exc:  # noqa: BLE001 - the store failed: keep refusing, the next round retries
            log.error("CAS restore failed: %s; this node's acceptor keeps refusing to vote", exc)
            return False

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def document(self) -> dict[str, Any]:
        """Cluster health's ``cas``: whether this node's acceptor votes, and what a restore waits for."""
        if self.restored:
            return {"acceptor": "voting", "restored_registers": self.keys}
        return {"acceptor": "restoring", "waiting_for": self.waiting_for, "attempts": self.attempts,
                "detail": self.acceptor.refusing}
