"""A simulated pool for the CASPaxos register: a lossy network of acceptors on simulated time (helpers.simloop).

Every request and reply is delayed by a random amount (so messages reorder), may be dropped, and a request may be
delivered twice. A node can crash (its acceptor stops, in-flight handlers are cancelled, unsent replies are lost)
and restart (a new Acceptor over the same durable store). Stores write only after a simulated fsync delay, so a
crash during the fsync loses the write, and the acceptor (which replies after saving) never answered for it.
All randomness comes from one seeded ``random.Random``; on the deterministic SimLoop a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from s4.cluster.caspaxos import Accepted, Acceptor, Ballot, Promise, Reject, Slot


class SimStore:
    """Durable per-key slots; a save becomes durable only after the fsync delay (a crash meanwhile loses it)."""

    def __init__(self, rng: random.Random, fsync_delay: float) -> None:
        self.rng = rng
        self.fsync_delay = fsync_delay
        self.slots: dict[str, Slot[Any]] = {}

    async def load(self, key: str) -> Slot[Any]:
        return self.slots.get(key, Slot())

    async def save(self, key: str, slot: Slot[Any]) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.fsync_delay))
        self.slots[key] = slot


class ForgetfulAcceptor(Acceptor[Any]):
    """Deliberately broken: grants a prepare without recording the promise, so it later accepts lower ballots."""

    async def prepare(self, key: str, ballot: Ballot) -> Promise[Any] | Reject:
        slot = await self.store.load(key)
        if ballot <= slot.promised:
            return Reject(slot.promised)
        return Promise(ballot, slot.accepted, slot.value, slot.lineage)


@dataclass
class Faults:
    max_delay: float = 0.01
    drop: float = 0.0
    duplicate: float = 0.0
    fsync_delay: float = 0.002


@dataclass
class SimNetwork:
    """Implements AcceptorTransport for proposers on any node; ``acceptor_type`` lets a test plant a broken one."""

    nodes: list[str]
    rng: random.Random
    faults: Faults = field(default_factory=Faults)
    acceptor_type: type[Acceptor[Any]] = Acceptor
    messages: int = 0

    def __post_init__(self) -> None:
        self.stores = {n: SimStore(self.rng, self.faults.fsync_delay) for n in self.nodes}
        self.acceptors: dict[str, Acceptor[Any] | None] = {n: self.acceptor_type(self.stores[n]) for n in self.nodes}
        self.handlers: dict[str, dict[asyncio.Task[None], None]] = {n: {} for n in self.nodes}  # ordered sets

    def up(self, node: str) -> bool:
        return self.acceptors[node] is not None

    def crash(self, node: str) -> None:
        self.acceptors[node] = None
        for task in list(self.handlers[node]):
            task.cancel()

    def restart(self, node: str) -> None:
        if self.acceptors[node] is None:
            self.acceptors[node] = self.acceptor_type(self.stores[node])

    async def prepare(self, peer: str, key: str, ballot: Ballot) -> Promise[Any] | Reject:
        return await self._rpc(peer, lambda a: a.prepare(key, ballot))  # type: ignore[no-any-return]

    async def accept(self, peer: str, key: str, ballot: Ballot, value: Any,
                     lineage: tuple[Ballot, ...]) -> Accepted | Reject:
        return await self._rpc(peer, lambda a: a.accept(key, ballot, value, lineage))  # type: ignore[no-any-return]

    async def _rpc(self, peer: str, handler: Callable[[Acceptor[Any]], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            self.messages += 1
            if self.rng.random() >= self.faults.drop:
                loop.call_later(self.rng.uniform(0, self.faults.max_delay), self._deliver, peer, handler, reply)
        return await reply  # a lost message leaves this waiting: the proposer's phase timeout ends it

    def _deliver(self, peer: str, handler: Callable[[Acceptor[Any]], Awaitable[Any]],
                 reply: asyncio.Future[Any]) -> None:
        acceptor = self.acceptors[peer]
        if acceptor is None:
            return  # the node is down: the message is lost
        task = asyncio.ensure_future(self._handle(acceptor, handler, reply))
        self.handlers[peer][task] = None
        task.add_done_callback(lambda t: self.handlers[peer].pop(t, None))

    async def _handle(self, acceptor: Acceptor[Any], handler: Callable[[Acceptor[Any]], Awaitable[Any]],
                      reply: asyncio.Future[Any]) -> None:
        answer = await handler(acceptor)
        if self.rng.random() >= self.faults.drop:
            asyncio.get_running_loop().call_later(self.rng.uniform(0, self.faults.max_delay), _resolve, reply, answer)


def _resolve(reply: asyncio.Future[Any], answer: Any) -> None:
    if not reply.done():  # a duplicate's answer, or the caller gave up
        reply.set_result(answer)
