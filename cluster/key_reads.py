"""Quorum reads of one key with blocking read repair (the engine's ``KeyReadPort``, engine/ports.py).

Before a GET, HEAD, tagging read or a copy's source read, the coordinator reads the key's replicated state from
its own views and from R - 1 peers (``ReadKeys``; with R=2 one peer in turn, the others too only when it is slow or
fails: a hedged read), and merges them by the projection's rules
(cluster/key_merge.py). When they agree (the common case: every write goes to every replica at once) the read is
served from this node's views. Otherwise, before the answer:

* **this node lacks something**: it runs a catch-up pass from each answering peer (cluster/catch_up.py), which
  brings exactly the events it misses, with their blobs, through the one writer; then it reads its own state again,
  and refuses (503) if it still lacks what the merge holds;
* **an answering peer lacks something**: it asks that peer to catch up from this node now (``CatchUpFrom``), which
  returns once the peer applied this node's committed journal up to its head at the call.

So the R replicas that answered hold at least the state returned, and any later R-quorum intersects them when
W + R > N: successive quorum reads never go backwards (docs/architecture/replication.md, "Quorum reads").

A local read under read leases is no quorum: a peer holding a lease of this node reads from its own copy. So a read
about to answer with a write still in flight (visible here, not yet acknowledged or refused by its coordinator: the
read gate's count) first *covers* it as a write is covered (``LeaseGrants.cover``): every peer that may hold a lease
of this node and did not answer with it is brought up to this node's head (``CatchUpFrom``), or, failing that
within ``revoke_after_s``, loses its lease, and the read waits until the last grant to it ran out; a peer holding
none must catch up that far before its next grant (``missed``). Without it, a GET through this node could return the
in-flight write and a later GET through the leaseholder, which never got it, the value before.

Repair by catch-up moves whole journal suffixes rather than the key's records: simple and exact (events keep their
identities, blobs come along), and cheap when replicas are nearly in step, which the write path keeps them; a peer
far behind makes the read slow (bounded by ``repair_s``) rather than wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from s4.engine.errors import PoolUnavailableError
from s4.engine.read_gate import ReadGate, bucket_slot, key_slot, upload_slot
from s4.engine.views.env import Views

from .liveness import DEAD
from .quorum import QuorumError, call_quorum
from .read_leases import LeaseGrants
from .reads import BUCKET, MERGE, OBJECT, UPLOAD, ReadsStub, fetch_states, read_states
from .wire.s4cluster.v1 import CatchUpFromRequest

log = logging.getLogger("s4.cluster")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A hedged read's first call, finished or cancelled after the answer: its outcome is not needed."""
    if not task.cancelled():
        task.exception()


class ReadQuorumError(PoolUnavailableError):
    """Fewer than R replicas answered, or a stale one could not be repaired: 503 with Retry-After."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "Fewer replicas than the read quorum could answer for this key; retry later.")
        log.warning("read quorum: %s", reason)


class Puller(Protocol):
    """cluster/catch_up.py ``CatchUp``: one pass from a peer, now."""

    async def pass_once(self, peer: str) -> int: ...


class RepairStub(Protocol):
    def catch_up_from(self, message: CatchUpFromRequest, *, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class KeyReadSettings:
    read_s: float = 5.0  # the R answers
    repair_s: float = 30.0  # a stale replica's catch-up
    hedge_s: float = 0.2  # R=2: the other peers are asked too when the one asked has not answered by then


class QuorumKeyReads:
    """``KeyReadPort`` for one node of a pool."""

    def __init__(self, node_id: str, peers: Sequence[str], read_quorum: int, views: Views,
                 stub_of: Callable[[str], Any], puller: Puller, committed_seq: Callable[[], int], *,
                 state: Callable[[str], str] = lambda _peer: "alive", settings: KeyReadSettings | None = None,
                 grants: LeaseGrants | None = None, gate: ReadGate | None = None) -> None:
        """``grants`` and ``gate``: this node's read leases (None: no local reads anywhere, nothing to cover)."""
        self.node_id, self.peers, self.read_quorum = node_id, tuple(peers), read_quorum
        self.grants, self.gate = grants, gate
        self.covered = 0  # reads that answered with a write in flight, covered first (metrics)
        self.views, self.stub_of, self.puller = views, stub_of, puller
        self.committed_seq, self._state = committed_seq, state
        self.settings = settings or KeyReadSettings()
        self.repairs = 0  # reads that found a replica stale and repaired it first (metrics)
        self._turn = 0  # which peer a hedged read asks first (in turn, so the load is shared)
        self.failures = 0  # reads refused: fewer than R answers, or a repair that failed

    async def settle_key(self, bucket: str, key: str) -> None:
        await self._settle(OBJECT, bucket, key)

    async def settle_upload(self, bucket: str, upload_id: str) -> None:
        await self._settle(UPLOAD, bucket, upload_id)

    async def settle_bucket(self, name: str) -> None:
        await self._settle(BUCKET, name, name)

    async def _settle(self, kind: str, bucket: str, ident: str) -> None:
        need = self.read_quorum - 1
        if need <= 0 or not self.peers:
            return
        live = [p for p in self.peers if self._state(p) != DEAD]
        if len(live) < need:
            self.failures += 1
            raise ReadQuorumError(f"{len(live)} of {len(self.peers)} peers alive, {need} needed")
        timeout = self.settings.read_s

        async def one(peer: str) -> dict[str, Any]:
            stub: ReadsStub = self.stub_of(peer)
            return (await fetch_states(stub, kind, bucket, [ident], timeout))[ident]

        try:
            answers = await self._ask(live, one, need, timeout)
        except QuorumError as exc:
            self.failures += 1
            raise ReadQuorumError(str(exc)) from exc
        merge = MERGE[kind]
        merged = merge({self.node_id: self._local(kind, bucket, ident), **answers})
        if merged.stale:
            self.repairs += 1
            try:
                if self.node_id in merged.stale:
                    await self._pull(list(answers))
                    again = merge({self.node_id: self._local(kind, bucket, ident), **answers})
                    if self.node_id in again.stale:
                        raise ReadQuorumError(f"still lacks {again.stale[self.node_id]} of {kind} {bucket}/{ident} "
                                              "after catching up")
                stale_peers = [p for p in merged.stale if p != self.node_id]
                if stale_peers:
                    await self._push(stale_peers)
            except ReadQuorumError:
                self.failures += 1
                raise
        if self._in_flight(kind, bucket, ident):
            await self._cover(set(answers))

    async def settle_listing(self, bucket: str, answered: Sequence[str], stale: Sequence[str], in_flight: bool) -> None:
        """After a listing of ``bucket`` merged from this node and the ``answered`` peers (cluster/listings.py), before
        it is answered: the replicas it found lacking something (``stale``: this node or answering peers) are
        repaired as a key read repairs them (this node catches up from the answering peers, then the stale peers
        from this node), so the R replicas that answered hold everything listed; then, when a write is in flight
        here (``in_flight``: anything unsettled when the merge ended, or after catching up), it is covered as a key
        read covers it (a removal in flight hides an entry without leaving a key to ask about: cluster/listings.py).
        Without it a listing could show a write in flight that a later listing or GET through another node does not,
        or hide one that it shows again (docs/architecture/replication.md, "Listings over writes in flight")."""
        if self.read_quorum - 1 <= 0 or not self.peers:
            return
        if stale:
            self.repairs += 1
            try:
                if self.node_id in stale:
                    await self._pull(list(answered), strict=True)
                    in_flight = in_flight or (self.gate is not None and self.gate.unsettled != 0)
                stale_peers = [p for p in stale if p != self.node_id]
                if stale_peers:
                    await self._push(stale_peers)
            except ReadQuorumError:
                self.failures += 1
                raise
        if in_flight and self.gate is not None and self.grants is not None:
            await self._cover(set(answered))

    def _in_flight(self, kind: str, bucket: str, ident: str) -> bool:
        if self.gate is None or self.grants is None:
            return False
        slot = (key_slot(bucket, ident) if kind == OBJECT else upload_slot(bucket, ident) if kind == UPLOAD
                else bucket_slot(bucket))
        return self.gate.in_flight(bucket, slot)

    async def _cover(self, holding: set[str]) -> None:
        """Before answering with a write in flight: each peer that may hold a lease of this node and is not among
        ``holding`` (answered, and repaired if stale: they hold what is returned) gets this node's head, or loses
        its lease and the read waits it out (``LeaseGrants.cover``, as for a write); the others must catch up this
        far before a new grant."""
        assert self.grants is not None
        self.covered += 1
        seq = self.committed_seq()
        request = CatchUpFromRequest(through_seq=seq)
        running: dict[str, asyncio.Future[Any]] = {}
        for peer in self.peers:
            if peer not in holding and self.grants.holding(peer) and self._state(peer) != DEAD:
                stub: RepairStub = self.stub_of(peer)
                running[peer] = asyncio.ensure_future(stub.catch_up_from(request, timeout=self.settings.repair_s))
                running[peer].add_done_callback(_retrieve)
        await self.grants.cover(seq, holding, running)

    async def _ask(self, live: list[str], one: Callable[[str], Awaitable[dict[str, Any]]], need: int,
                   timeout: float) -> dict[str, dict[str, Any]]:
        """The answers of ``need`` live peers. With R=2 (one peer needed) one peer is asked, in turn, and the others
        only if it has not answered within ``hedge_s`` or failed (a hedged read): half the calls of asking every
        peer, and still the fastest answer when one peer is slow or gone."""
        if need != 1 or len(live) == 1:
            return (await call_quorum(live, one, need, timeout=timeout)).successes
        start = self._turn % len(live)
        self._turn += 1
        order = live[start:] + live[:start]
        first = asyncio.ensure_future(one(order[0]))
        try:
            done, _ = await asyncio.wait({first}, timeout=self.settings.hedge_s)
            if first in done and not first.cancelled() and first.exception() is None:
                return {order[0]: first.result()}

            async def hedged(peer: str) -> dict[str, Any]:
                return await (first if peer == order[0] else one(peer))

            return (await call_quorum(order, hedged, need, timeout=timeout)).successes
        finally:
            if not first.done():
                first.cancel()
            first.add_done_callback(_retrieve)

    def _local(self, kind: str, bucket: str, ident: str) -> dict[str, Any]:
        return read_states(self.views, kind, bucket, [ident])[0]

    async def _pull(self, peers: list[str], *, strict: bool = False) -> None:
        """This node catches up from the peers that answered (one pass each, at once). ``strict``: a pass that fails
        is a ReadQuorumError (a listing cannot compare its whole merge with this node's views again)."""
        try:
            async with asyncio.timeout(self.settings.repair_s):
                results = await asyncio.gather(*(self.puller.pass_once(p) for p in peers), return_exceptions=True)
        except TimeoutError:
            raise ReadQuorumError(f"catching up from {', '.join(peers)} took longer than "
                                  f"{self.settings.repair_s:.0f}s") from None
        failed = {p: r for p, r in zip(peers, results, strict=True) if isinstance(r, BaseException)}
        for peer, result in failed.items():
            log.info("read repair: catching up from %s failed: %s", peer, result)
        if failed and strict:
            raise ReadQuorumError("catching up from " + "; ".join(f"{p}: {type(e).__name__}: {e}"
                                                                  for p, e in failed.items()))

    async def _push(self, peers: list[str]) -> None:
        """The stale peers catch up from this node, through its committed head now."""
        request = CatchUpFromRequest(through_seq=self.committed_seq())

        async def one(peer: str) -> None:
            stub: RepairStub = self.stub_of(peer)
            await stub.catch_up_from(request, timeout=self.settings.repair_s)

        results = await asyncio.gather(*(one(p) for p in peers), return_exceptions=True)
        failed = {p: r for p, r in zip(peers, results, strict=True) if isinstance(r, BaseException)}
        if failed:
            raise ReadQuorumError("repairing " + "; ".join(f"{p}: {type(e).__name__}: {e}" for p, e in failed.items()))
