"""The rejoin rule: a node's data that was away longer than S4_MAX_REJOIN_DOWNTIME_DAYS, while its pool moved on
without it, must not rejoin (docs/architecture/tombstones.md, "Rejoining").

Three durable records in the feed store (cluster/feed_store.py ``meta``), so a bootstrap (which removes the store)
starts a new life:

* ``data_life``: a random id of this data directory's life, told in every Ping;
* ``last_contact_ms``: the last time a peer answered or pinged this node (written at most once a minute);
* per peer, the life it last told (``life:``) and the life this node gave up waiting for (``waived:``).

Each node counts, per peer, how long it has not heard from it **while this node was running** (a restart counts as
hearing: a pool powered off together never gives up on anyone). Past the limit, and only if this node itself heard
from a majority of the pool (itself included) without a gap for longer than the limit (the side of a partition that
went on, never a node that was cut off, nor one that just came back), it waives the peer's life: from then
on the peer's old data is no longer needed for tombstone GC (cluster/tombstone_gc.py) and is refused everywhere:
``blocked`` makes the peer dead to the write and read paths (cluster/liveness.py), catch-up does not pull from it,
ApplyEvents from it is refused, and Ping answers it ``rejoin_refused``, which makes that node stop with a message
naming ``s4-admin cluster bootstrap``. A peer that comes back with a new life (bootstrapped) is taken again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence

from .feed_store import FeedStore

log = logging.getLogger("s4.cluster")

LIFE = b"data_life"
LAST_CONTACT = b"last_contact_ms"
LIFE_OF = b"life:"
WAIVED = b"waived:"
REFUSED = b"refused"  # why this data must not rejoin: kept until a bootstrap removes the store
CONTACT_EVERY_S = 60.0
RECENT_S = 10.0  # heard within this long: in contact now (for the majority rule)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _int(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw is not None else None


def refusal(peer: str, max_days: float) -> str:
    return (f"this node's data must not rejoin the pool: {peer} waited longer than S4_MAX_REJOIN_DOWNTIME_DAYS="
            f"{max_days:g} days for it and may have dropped tombstones it lacks, so "
            "its old objects could come back. Stop the server and run `s4-admin cluster bootstrap --yes` on this node"
            " (it empties the node's data, keeping its identity and configuration; catch-up refills it), then start "
            "it again (docs/operations.md, 'Bootstrap a long-absent node')")


class Rejoin:
    """Per-peer silence, waivers and this node's own life; the blocking store calls run at open and in ``tick``."""

    def __init__(self, peers: Sequence[str], store: FeedStore, max_rejoin_s: float, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.peers = tuple(peers)
        self.store, self.max_rejoin_s = store, max_rejoin_s
        self._clock, self._wall = clock, wall
        life = _int(store.meta(LIFE))
        if life is None:
            life = secrets.randbits(63) or 1
            store.set_meta(LIFE, _u64(life))
        self.life = life
        self.last_contact_ms = _int(store.meta(LAST_CONTACT))
        self.lives = {k[len(LIFE_OF):].decode(): _int(v) or 0 for k, v in store.metas(LIFE_OF).items()}
        self.waived = {k[len(WAIVED):].decode(): _int(v) or 0 for k, v in store.metas(WAIVED).items()}
        now = clock()
        self._heard = {peer: now for peer in self.peers}  # starting counts as hearing (module docstring)
        self._changed: dict[bytes, bytes | None] = {}
        self._contact_written = now - CONTACT_EVERY_S
        self._contact = False
        self._majority_since: float | None = None  # since when this node has heard from a majority, without a gap
        refused = store.meta(REFUSED)
        self.refused: str | None = refused.decode() if refused else None  # why this node must stop

    def heard(self, peer: str, life: int) -> None:
        """``peer`` answered or pinged, telling its data life (0: it told none)."""
        if peer not in self._heard:
            return
        self._heard[peer] = self._clock()
        self._contact = True
        if life and self.lives.get(peer) != life:
            self.lives[peer] = life
            self._changed[LIFE_OF + peer.encode()] = _u64(life)
            if peer in self.waived and self.waived[peer] != life:
                log.info("peer %s is back with a new data life (bootstrapped): taking its data again", peer)
                del self.waived[peer]
                self._changed[WAIVED + peer.encode()] = None

    def blocked(self, peer: str) -> bool:
        """Whether ``peer``'s current data must not rejoin (its life, as last told, is the one waived)."""
        waived = self.waived.get(peer)
        return waived is not None and self.lives.get(peer, waived) == waived

    def waived_peer(self, peer: str) -> bool:
        """Given up on: its reports no longer hold tombstone GC back."""
        return peer in self.waived

    def told_refused(self, peer: str) -> None:
        """``peer`` answered that this node's data must not rejoin."""
        if self.refused is None:
            self.refused = refusal(peer, self.max_rejoin_s / 86400)
            self._changed[REFUSED] = self.refused.encode()
            log.error("%s", self.refused)

    def away_too_long(self) -> bool:
        """Whether this node's last contact with its pool is older than the limit (it asks its peers before
        serving: tools/server.py)."""
        last = self.last_contact_ms
        return last is not None and self._wall() * 1000 - last > self.max_rejoin_s * 1000

    def tick(self) -> dict[bytes, bytes | None]:
        """On the event loop: waive the peers silent too long, note the contact time (once a minute); the records
        to write (``write``, in the store's thread)."""
        now = self._clock()
        recent = min(RECENT_S, self.max_rejoin_s / 4)
        heard = sum(1 for peer in self.peers if now - self._heard[peer] <= recent)
        if heard + 1 < (len(self.peers) + 1) // 2 + 1:
            self._majority_since = None
        elif self._majority_since is None:
            self._majority_since = now
        in_majority = self._majority_since is not None and now - self._majority_since > self.max_rejoin_s
        for peer in self.peers:
            if peer in self.waived or now - self._heard[peer] <= self.max_rejoin_s or not self.lives.get(peer):
                continue  # a peer never heard from in any life is not waived: it holds GC back (conservative)
            if not in_majority:
                continue  # only a node that stayed in a majority all along moves on, never one that was away
            self.waived[peer] = self.lives[peer]
            self._changed[WAIVED + peer.encode()] = _u64(self.lives[peer])
            log.warning("peer %s has been silent longer than S4_MAX_REJOIN_DOWNTIME_DAYS=%g: tombstone GC no longer "
                        "waits for it, and its data must not rejoin (it will be refused until bootstrapped)", peer,
                        self.max_rejoin_s / 86400)
        if self._contact and now - self._contact_written >= min(CONTACT_EVERY_S, self.max_rejoin_s / 4):
            self._contact, self._contact_written = False, now
            self.last_contact_ms = int(self._wall() * 1000)
            self._changed[LAST_CONTACT] = _u64(self.last_contact_ms)
        changed, self._changed = self._changed, {}
        return changed

    def write(self, changed: dict[bytes, bytes | None]) -> None:
        """Blocking: make ``tick``'s records durable."""
        for key, value in changed.items():
            self.store.set_meta(key, value)
