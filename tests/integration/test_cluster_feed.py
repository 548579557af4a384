"""Issue 19, catch-up and hints over real sockets: three ClusterNodes in this process on 127.0.0.1/.2/.3, each with
its own Engine (real journal) in a tmp dir, a feed store, and a simple apply port that journals a peer's events
(re-sequenced, deduplicated by (hlc, origin)) in a journal of its own. A node stopped while another journals catches
up everything when it returns; hints for a down node are delivered when it returns, and dropped after a tiny TTL
with the metric counting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.cluster_pool import pool_configs
from helpers.feed_sim import Result

from s4.api.metrics import cluster_families
from s4.cluster.catch_up import CatchUpSettings, replicated
from s4.cluster.config import ClusterConfig
from s4.cluster.feed_store import FeedStore, store_path
from s4.cluster.hints import HintSettings
from s4.cluster.liveness import LivenessSettings
from s4.cluster.node import ClusterNode, journal_head
from s4.engine import Engine, EngineOptions
from s4.journal import Journal
from s4.journal.events import Event

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
FAST = LivenessSettings(interval_s=0.1, ping_timeout_s=0.1, suspect_after_s=0.4, dead_after_s=0.8)



def configs(hint_ttl_hours: float) -> list[ClusterConfig]:
    return pool_configs(HOSTS, hint_ttl_hours=hint_ttl_hours)


class JournalApplier:
    """A simple apply port: a peer's logical events journalled (fsynced) in ``replica/``, each (hlc, origin) once."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.journal = Journal(directory, origin=origin)
        self.seen = {(e.hlc, e.origin) for e in self.journal.read()}
        self._lock = asyncio.Lock()

    async def apply_peer_events(self, events: list[Event]) -> Result:
        async with self._lock:
            new: list[Event] = []
            for e in events:
                if (e.hlc, e.origin) not in self.seen and all((n.hlc, n.origin) != (e.hlc, e.origin) for n in new):
                    new.append(e)
            base = self.journal.last_seq
            stamped = [Event(base + i, e.hlc, e.origin, e.type, e.payload, e.actor) for i, e in enumerate(new, 1)]
            if stamped:
                await asyncio.to_thread(self.journal.write_events, stamped)
                self.seen |= {(e.hlc, e.origin) for e in stamped}
            return Result(applied=len(new), already_had=len(events) - len(new))


@dataclass
class Node:
    config: ClusterConfig
    directory: Path
    engine: Engine | None = None
    node: ClusterNode | None = None
    store: FeedStore | None = None
    applier: JournalApplier | None = None

    async def start(self) -> None:
        self.engine = Engine(EngineOptions(self.directory, node_id=self.config.node_id))
        assert self.engine.journal is not None
        self.applier = JournalApplier(self.directory / "replica", self.config.node_id)
        self.store = FeedStore(store_path(self.directory))
        self.node = ClusterNode(self.config, journal_head(self.engine.journal), FAST)
        self.node.enable_feed(self.store, self.engine.journal, self.applier,
                              catch_up=CatchUpSettings(batch_events=5, sweep_s=0.5, backoff_s=0.05,
                                                       backoff_max_s=0.2),
                              hints=HintSettings(check_s=0.05, backoff_s=0.05, backoff_max_s=0.2))
        await self.node.start()

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
        for closable in (self.store, self.applier and self.applier.journal, self.engine):
            if closable is not None:
                closable.close()
        self.node = self.store = self.applier = self.engine = None


async def until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within the bound: {what}")
        await asyncio.sleep(0.02)


def run_pool(tmp_path: Path, body: Callable[[list[Node]], Any], hint_ttl_hours: float = 3.0) -> None:
    async def main() -> None:
        nodes = [Node(c, tmp_path / c.node_id) for c in configs(hint_ttl_hours)]
        try:
            for n in nodes:
                await n.start()
            await asyncio.wait_for(body(nodes), 60)
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())


def logical(engine: Engine | None) -> set[tuple[int, str]]:
    assert engine is not None and engine.journal is not None
    return {(e.hlc, e.origin) for e in engine.journal.read() if replicated(e)}


def test_issue19_a_stopped_node_catches_up_what_a_peer_journalled_meanwhile(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        one, _, three = nodes
        assert one.engine is not None and three.node is not None
        await one.engine.create_bucket("before")
        await until(lambda: three.applier is not None and logical(one.engine) <= three.applier.seen,
                    "node-3 has node-1's first events")
        # the events are applied before the pass that brought them ends and marks node-1 caught up: wait for it
        await until(lambda: three.node is not None and three.node.ready, "node-3 ready")
        assert three.node.health_document()["caught_up"] is True
        await three.stop()
        for i in range(30):  # more than a few batches of 5
            await one.engine.create_bucket(f"while-away-{i}")
        await three.start()
        await until(lambda: three.node is not None and three.node.ready, "node-3 ready again")
        await until(lambda: three.applier is not None and logical(one.engine) <= three.applier.seen,
                    "node-3 caught up with node-1")
        head = one.engine.journal.last_seq  # type: ignore[union-attr]
        await until(lambda: three.node is not None and three.store is not None
                    and three.store.cursor("node-1") == head, "node-3's cursor at node-1's head")
        lag = {p.peer: p.journal_lag for p in three.node.peer_health()}  # type: ignore[union-attr]
        await until(lambda: {p.peer: p.journal_lag for p in three.node.peer_health()}["node-1"] == 0,  # type: ignore[union-attr]
                    f"no lag from node-1 (was {lag})")

    run_pool(tmp_path, body)


def metric(node: Node, name: str, peer: str) -> float:
    for family in cluster_families(node.node):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"peer": peer}:
                return float(sample.value)
    raise AssertionError(f"no {name}{{peer={peer}}}")


def hinted_events(n: int, first_hlc: int) -> list[Event]:
    from s4.journal.events import EventType

    return [Event(i + 1, first_hlc + i, "node-1", EventType.BUCKET_CREATED, {"bucket": f"hinted-{i}"})
            for i in range(n)]


def test_issue19_hints_for_a_down_node_delivered_when_it_returns(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        one, _, three = nodes
        await three.stop()
        assert one.node is not None and one.node.hints is not None
        events = hinted_events(7, 10**15)
        await one.node.hints.hint("node-3", events)
        assert metric(one, "s4_cluster_hints_pending", "node-3") == 7
        await three.start()
        await until(lambda: one.node is not None and one.node.hints is not None
                    and one.node.hints.delivered["node-3"] == 7, "the hints delivered")
        assert three.applier is not None and {(e.hlc, e.origin) for e in events} <= three.applier.seen
        assert metric(one, "s4_cluster_hints_pending", "node-3") == 0
        assert metric(one, "s4_cluster_hints_delivered_total", "node-3") == 7
        assert metric(one, "s4_cluster_hints_dropped_total", "node-3") == 0

    run_pool(tmp_path, body)


def test_issue19_hints_for_a_node_that_stays_down_dropped_after_the_ttl(tmp_path: Path) -> None:
    async def body(nodes: list[Node]) -> None:
        one, _, three = nodes
        await three.stop()
        assert one.node is not None and one.node.hints is not None
        await one.node.hints.hint("node-3", hinted_events(4, 10**15))
        await until(lambda: metric(one, "s4_cluster_hints_dropped_total", "node-3") == 4, "the hints expired")
        assert metric(one, "s4_cluster_hints_pending", "node-3") == 0
        assert metric(one, "s4_cluster_hints_delivered_total", "node-3") == 0

    run_pool(tmp_path, body, hint_ttl_hours=0.3 / 3600)  # 0.3 s
