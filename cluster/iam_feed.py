"""Cluster-wide IAM across pools: a node outside the registry pool follows the registry pool's IAM events.

docs/architecture/pools.md, "IAM across pools". The registry pool (the first by name) is the IAM home: every IAM
change is decided and committed there (a node of another pool forwards the admin API's user requests to it:
api/pool_router.py). The other pools' nodes apply its IAM events into their own journal and views through the same
projection as a peer's events (last-writer-wins by ``(hlc, origin)``, never re-decided), pulled with ``IamFeed``
(the ``CatchUp`` stream restricted to user.* and credential.* events, served by the registry pool's nodes):

* per registry node a durable cursor (the node's ``FeedStore`` under ``iam:<node id>``) that moves only after the
  events up to it were applied and fsynced (cluster/catch_up.py ``CatchUp``, reused as is: a head below the cursor
  resets it, a re-applied batch changes nothing);
* a **round** runs one pass from every registry node at once; it *reached the registry* when a majority of them
  answered to their heads. An event the registry pool committed before the round started is then applied here
  (it is in the journals of W >= a majority of them, so in at least one that answered);
* rounds run every ``interval_s`` (S4_IAM_SYNC_SECONDS) and on demand: an S3 request signed with an access key
  this node does not know asks for a round that started after it arrived (``refresh``; concurrent askers share
  one), so a key works everywhere right after the 200 that created it. A round that did not reach the registry
  is ``ServiceUnavailableError`` for the asker (503: this node cannot tell whether the key exists).

Bound: a user or key deleted with a 200 is refused by a node that reaches a majority of the registry pool within
``interval_s`` plus two rounds' duration (each bounded by ``call_s``). A node that cannot reach one keeps the
credentials it has (they keep working while the registry pool has no majority) and applies the deletion in its
first round that does: never later, since the cursors never skip an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from s4.engine.errors import ServiceUnavailableError

from .catch_up import CatchUp, CatchUpError, CatchUpSettings, EventsTransport, PeerEventsApplier
from .feed_store import FeedStore
from .wake import cancel_and_wait

log = logging.getLogger("s4.cluster")
T = TypeVar("T")

#: The cursor keys of the registry nodes in this node's feed store (node ids never hold ':', cluster/config.py).
CURSOR_PREFIX = "iam:"


class PrefixedCursors:
    """The cursor part of ``FeedStore`` as CatchUp uses it, each peer's key prefixed (``iam:<node>``), so the IAM
    cursors never mix with this pool's catch-up cursors."""

    def __init__(self, store: FeedStore, prefix: str = CURSOR_PREFIX) -> None:
        self.store, self.prefix = store, prefix

    def cursor(self, peer: str) -> int:
        return self.store.cursor(self.prefix + peer)

    def advance(self, peer: str, seq: int) -> int:
        return self.store.advance(self.prefix + peer, seq)

    def reset(self, peer: str) -> None:
        self.store.reset(self.prefix + peer)

    async def run(self, fn: Callable[[], T]) -> T:
        return await self.store.run(fn)


class _Quiet:
    """CatchUp's reporter: the registry nodes are not this pool's peers (no lag metric, no blob fetching)."""

    def applied(self, node_id: str, seq: int) -> None:
        return None

    def state(self, node_id: str) -> str:
        return "alive"


@dataclass(frozen=True, slots=True)
class Round:
    """One round: when it started (the feed's clock), how many registry nodes answered to their heads, of how many;
    ``own``: 1 on a node of the registry pool (it holds its own journal: one more copy, always there)."""

    started: float
    answered: int
    nodes: int
    own: int = 0

    @property
    def reached(self) -> bool:
        return self.answered + self.own > (self.nodes + self.own) // 2


def wanted(config: Any) -> bool:
    """Whether a node runs an ``IamFeed`` (cluster/wiring.py; its HTTP workers then ask their supervisor's): with
    several pools, outside the registry pool (the registry's IAM, followed), or inside it with peers (an unknown
    key settles against the pool's peers, ``on_demand``, which needs the pool's catch-up: not with S4_CATCH_UP=off)."""
    if not config.other_pools:
        return False
    return config.registry_pool.name != config.pool_name or (bool(config.peers) and config.anti_entropy.catch_up)


class IamFeed:
    """Follow the registry pool's IAM events (module docstring). ``start``/``stop`` run the periodic rounds;
    ``refresh`` is the engine's port for an unknown access key (engine/ports.py ``IamFeedPort``).

    ``on_demand``: a node *of* the registry pool (several pools): the registry pool's other nodes are its pool
    peers, followed by the pool's own ``catch_up`` (given; its cursors); no periodic round (the pool's
    replication already brings every event), only ``refresh``, which catches up with the peers and counts this
    node's own journal as one copy. So a key answered 200 through one registry node works through the others at
    once, which a forwarded request from another pool may reach."""

    def __init__(self, registry: Sequence[str], transport: EventsTransport | None, applier: PeerEventsApplier | None,
                 store: Any, *, interval_s: float = 1.0, call_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, on_demand: CatchUp | None = None) -> None:
        self.registry = tuple(registry)
        self.interval_s, self.call_s = interval_s, call_s
        self._clock = clock
        self.own = 0 if on_demand is None else 1
        self.catch_up = on_demand or CatchUp(self.registry, transport, applier, store,  # type: ignore[arg-type]
                                             _Quiet(), settings=CatchUpSettings(backoff_s=interval_s))
        self._lock = asyncio.Lock()
        self.last: Round | None = None
        self.last_reached: Round | None = None
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Return once a round that started after this call reached the registry (one already running that started
        later is shared); ServiceUnavailableError when it did not."""
        asked = self._clock()
        async with self._lock:
            done = self.last
            if done is None or done.started < asked:
                done = await self._round()
        if not done.reached:
            raise ServiceUnavailableError(
                f"IAM feed: {done.answered} of {done.nodes} registry nodes answered",
                "This node cannot reach the cluster's IAM (the registry pool) right now to look up this access key; "
                "retry later.")

    async def round(self) -> Round:
        """One round now (after the one running, if any)."""
        async with self._lock:
            return await self._round()

    async def _round(self) -> Round:
        started = self._clock()
        results = await asyncio.gather(*(self._pass(node) for node in self.registry))
        done = Round(started, sum(results), len(self.registry), self.own)
        self.rounds += 1
        self.last = done
        if done.reached:
            self.last_reached = done
        return done

    async def _pass(self, node: str) -> bool:
        try:
            async with asyncio.timeout(self.call_s):
                await self.catch_up.pass_once(node)
        except (CatchUpError, TimeoutError) as exc:
            log.info("IAM feed from %s: %s", node, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - this node's own failure (apply, feed store): the pass failed
            log.warning("IAM feed from %s failed here: %s", node, exc)
            return False
        return True

    async def start(self) -> None:
        if self.own:  # on demand only
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="s4-iam-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task] if task is not None else [])

    async def _loop(self) -> None:
        missed = 0
        while True:
            try:
                done = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("IAM feed round failed")
            else:
                missed = 0 if done.reached else missed + 1
                if missed in (1, 30):  # once when it starts, once more if it lasts
                    log.warning("IAM feed: %d of %d registry nodes answered; credentials deleted in the registry "
                                "pool meanwhile are refused here only once a majority answers again",
                                done.answered, done.nodes)
            await asyncio.sleep(self.interval_s)

    def status(self) -> dict[str, Any]:
        """For the health endpoint: rounds run, how long ago the last one that reached the registry started (None:
        none yet), and how many registry nodes the last round reached."""
        age = None if self.last_reached is None else round(self._clock() - self.last_reached.started, 3)
        last = self.last
        return {"registry": list(self.registry), "rounds": self.rounds, "synced_age_s": age,
                "last_answered": None if last is None else last.answered}

