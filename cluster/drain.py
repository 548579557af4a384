"""Operations on a running node: drain, and the hand-off of a graceful shutdown.

A node about to stop (SIGTERM) or drained by an operator (``POST /api/admin/cluster/nodes/{id}/drain``) hands off
what the others would otherwise wait for (docs/architecture/replication.md, "Graceful shutdown and drain"):

* **hints**: it delivers the hints it holds to live peers now (bounded in time; what is left stays in
  ``feed.lmdb`` and is delivered after a restart, and catch-up brings every such event to its peer anyway);
* **read leases**: it stops reading from its own copy, then tells every grantor (``Ping.release_lease``), so their
  writes stop waiting for its copy at once instead of when its last grant runs out;
* **job leases**: it gives back the pool-wide job leases it holds (``hooks``: the engine's jobs, tools/server.py);
* on shutdown only, **SWIM leave**: every member is told it is dead at its current incarnation (cluster/swim.py
  ``Swim.leave``), so nobody waits out a suspicion; its next life's start stamp makes it alive again.

A draining node keeps serving as a replica (ApplyEvents, reads and blobs for peers, catch-up) so quorums stay
reachable, and keeps answering the S3 requests that still reach it; only its ``/health`` answers 503 ``draining``
so load balancers and gateways take it out. Each node tells its draining state and the hints it holds in every
Ping and Ping answer, so every node's health document shows them for the whole pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from s4.engine.errors import ServiceUnavailableError

from .liveness import DEAD
from .wire.s4cluster.v1 import DrainReply, DrainRequest, PingRequest

if TYPE_CHECKING:
    from .node import ClusterNode

log = logging.getLogger("s4.cluster")

#: How long a graceful shutdown spends delivering hints before it goes on (what is left waits in feed.lmdb).
HANDOFF_S = 10.0
#: A forwarded Drain call's bound.
DRAIN_CALL_S = 5.0


class Drain:
    """One node's draining state, its hand-off, and the Drain RPC (``grpc_server.DrainHandler``)."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.draining = False
        self.leaving = False  # graceful shutdown under way
        self.hooks: list[Callable[[bool], Awaitable[int]]] = []  # give back (True) / take again (False) job leases
        self.peers: dict[str, tuple[bool, int]] = {}  # per peer, as it last told: (draining, hints it holds)
        self._handoff: asyncio.Task[None] | None = None

    @property
    def gives_back(self) -> bool:
        """Read leases are given back and not asked for while draining or stopping."""
        return self.draining or self.leaving

    def hints_pending(self) -> int:
        hints = self.node.hints
        return 0 if hints is None else sum(hints.pending(p) for p in hints.peers)

    # -- the hand-off ------------------------------------------------------------------------------------------

    async def hand_off_hints(self, timeout_s: float) -> tuple[int, int]:
        """Deliver the hints held for peers not dead now, all peers at once, for at most ``timeout_s``; returns
        (delivered, still pending). A batch cut off by the bound stays queued (delivery is at least once)."""
        hints, liveness = self.node.hints, self.node.liveness
        if hints is None:
            return 0, 0
        before = sum(hints.delivered.values())
        # Not dead: a suspect peer may well answer (the bound caps the cost of one that does not).
        peers = [p for p in hints.peers if hints.pending(p) and liveness.state(p) != DEAD]
        tasks = [asyncio.ensure_future(self._deliver(p)) for p in peers]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        return sum(hints.delivered.values()) - before, self.hints_pending()

    async def _deliver(self, peer: str) -> None:
        hints = self.node.hints
        assert hints is not None
        try:
            await hints.deliver(peer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - kept queued: delivered after the restart, or by its loop
            log.warning("hand-off: hints to %s not delivered (%s: %s)", peer, type(exc).__name__, exc)

    async def release_read_leases(self) -> int:
        """Stop reading from this node's copy, then tell every peer (one Ping each, bounded); how many answered."""
        node = self.node
        if node.read_leases is None:
            return 0
        node.read_leases.release()
        hlc, seq = node.status()
        answered = await asyncio.gather(*(node._ping(peer, hlc, seq) for peer in node.liveness.peers))
        return sum(1 for ok in answered if ok)

    async def _job_leases(self, draining: bool) -> int:
        given = 0
        for hook in self.hooks:
            try:
                given += await hook(draining)
            except Exception:  # noqa: BLE001 - an unreleased job lease expires
                log.exception("job leases: hook failed")
        return given

    async def shutdown(self, handoff_s: float = HANDOFF_S) -> None:
        """SIGTERM, after HTTP drained and the jobs stopped (their leases given back): hints, read leases, SWIM
        leave, then ``ClusterNode.stop``. Each step is logged with its counts."""
        node = self.node
        self.leaving = True
        try:
            if node.hints is not None:  # their calls may hang on a dead connection, holding a peer's queue
                await node.hints.stop()
            pending = self.hints_pending()
            delivered, left = await self.hand_off_hints(handoff_s)
            log.info("shutdown: delivered %d hint(s) to live peers; %d of %d left in feed.lmdb (delivered after the "
                     "restart; catch-up brings those events anyway)", delivered, left, pending)
            released = await self.release_read_leases()
            log.info("shutdown: read leases given back to %d peer(s)", released)
            told = await node.membership.leave()
            log.info("shutdown: SWIM leave announced to %d member(s)", told)
        except Exception:  # noqa: BLE001 - the hand-off is a courtesy: stopping must go on
            log.exception("shutdown: hand-off failed")
        await node.stop()

    async def set_draining(self, on: bool) -> dict[str, Any]:
        """Start (or cancel) draining this node; idempotent. Starting gives back the job and read leases at once and
        delivers the hints in the background (the hint loops go on delivering after that bound)."""
        if on and not self.draining:
            self.draining = True
            log.warning("draining: /health answers 503; handing off hints, read leases and job leases (this node "
                        "keeps serving as a replica); stop it once hints_pending is 0")
            jobs = await self._job_leases(True)
            released = await self.release_read_leases()
            log.info("draining: %d job lease(s) given back; read leases given back to %d peer(s); %d hint(s) "
                     "pending", jobs, released, self.hints_pending())
            if self._handoff is None or self._handoff.done():
                self._handoff = asyncio.get_running_loop().create_task(self._drain_hints(), name="s4-drain-hints")
        elif not on and self.draining:
            self.draining = False
            if self.node.read_leases is not None:
                self.node.read_leases.resume()
            await self._job_leases(False)
            log.warning("draining cancelled: this node takes read and job leases again")
        return self.document()

    async def _drain_hints(self) -> None:
        delivered, left = await self.hand_off_hints(HANDOFF_S)
        log.info("draining: delivered %d hint(s); %d left (the hint loops keep delivering them)", delivered, left)

    async def stop(self) -> None:
        task, self._handoff = self._handoff, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def document(self) -> dict[str, Any]:
        return {"node_id": self.node.config.node_id, "draining": self.draining, "hints_pending": self.hints_pending()}

    # -- the port (engine/ports.py ClusterStatus.drain) and the RPC ----------------------------------------------

    async def drain(self, node_id: str, on: bool) -> dict[str, Any]:
        """Drain (or cancel draining) ``node_id``: this node, or a peer over the Drain RPC. KeyError: not a member
        of the pool; ServiceUnavailableError: the peer did not answer."""
        node = self.node
        if node_id == node.config.node_id:
            return await self.set_draining(on)
        if node_id not in node.liveness.peers:
            raise KeyError(node_id)
        try:
            reply = await asyncio.wait_for(node.pool.stub(node_id).drain(DrainRequest(drain=on), timeout=DRAIN_CALL_S),
                                           DRAIN_CALL_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, timed out: the operator retries
            raise ServiceUnavailableError(f"node {node_id}: {type(exc).__name__}",
                                          f"Node {node_id} did not answer the drain request ({type(exc).__name__}); "
                                          "retry, or stop it directly.") from exc
        self.peers[node_id] = (reply.draining, reply.hints_pending)
        return {"node_id": reply.node_id, "draining": reply.draining, "hints_pending": reply.hints_pending}

    async def rpc_drain(self, caller: str, request: DrainRequest) -> DrainReply:
        log.info("drain request from node %s: %s", caller, "drain" if request.drain else "cancel")
        doc = await self.set_draining(request.drain)
        return DrainReply(node_id=doc["node_id"], draining=doc["draining"], hints_pending=doc["hints_pending"])

    def on_ping(self, caller: str, request: PingRequest) -> tuple[bool, int]:
        """A peer's Ping tells its state; the answer tells this node's."""
        self.peers[caller] = (request.draining, request.hints_pending)
        return self.draining, self.hints_pending()

    def peer_answered(self, peer: str, draining: bool, hints_pending: int) -> None:
        self.peers[peer] = (draining, hints_pending)
