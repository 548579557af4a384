"""Which peers are alive: SWIM's verdicts (cluster/swim.py) per peer, with what the heartbeat's Ping tells of it.

Two sources, each for its own part (docs/architecture/membership.md, "Wiring as built"):

* **the states** (alive, suspect, dead) come from SWIM once a node follows it (``follow_membership``; a cluster
  node always does): ``member`` records each verdict and incarnation as SWIM announces it. A peer SWIM has not
  heard of yet is suspect, and dead once DEAD_AFTER_S have passed since this node started (a refused node, of
  another cluster or with another secret, is never heard of and so never alive);
* **the rest** comes from the Ping heartbeat (cluster/node.py), a Ping this node sent that a peer answered or one
  it sent here: ``seen`` records its HLC, journal head, S3 address and when (``last_seen``, in wall-clock ms for
  people), ``missed`` why the last Ping failed.

Without ``follow_membership`` (tests of the areas that only need a peer "alive") the state is the part 1 heartbeat's
function of the silence, on a monotonic clock (a wall clock set back must not revive a dead peer):

    alive    seen within SUSPECT_AFTER_S
    suspect  not seen for more than SUSPECT_AFTER_S (missed about three heartbeats), or never seen yet
    dead     not seen for more than DEAD_AFTER_S (counted from this node's start when never seen)

States are computed when asked (no timer); the records are guarded by a lock (read by the health API and the
metrics in any thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: How often the heartbeat pings every peer.
HEARTBEAT_INTERVAL_S = 1.0
#: How long one Ping may take (connect included) before it counts as missed; below the interval so rounds never
#: overlap.
PING_TIMEOUT_S = 0.8
#: Not seen for this long: suspect (about three missed heartbeats).
SUSPECT_AFTER_S = 3.0
#: Not seen for this long: dead.
DEAD_AFTER_S = 10.0

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"


@dataclass(frozen=True)
class LivenessSettings:
    """The heartbeat's timing; the defaults above, changeable for tests and for operators who need to."""

    interval_s: float = HEARTBEAT_INTERVAL_S
    ping_timeout_s: float = PING_TIMEOUT_S
    suspect_after_s: float = SUSPECT_AFTER_S
    dead_after_s: float = DEAD_AFTER_S

    def __post_init__(self) -> None:
        if not 0 < self.ping_timeout_s <= self.interval_s:
            raise ValueError("ping_timeout_s must be positive and at most interval_s")
        if not self.interval_s < self.suspect_after_s < self.dead_after_s:
            raise ValueError("need interval_s < suspect_after_s < dead_after_s")


@dataclass
class PeerRecord:
    """What this node knows of one peer."""

    node_id: str
    seen_at: float | None = None  # monotonic time of the last proof of life
    last_seen_ms: int | None = None  # the same moment in wall-clock ms since the epoch
    hlc: int = 0  # the peer's HLC at that moment (journal/hlc.py encoding)
    journal_seq: int = 0  # the highest journal seq the peer reported
    applied_seq: int = 0  # the highest seq of the peer's journal this node has applied (replication sets it)
    http_addr: str = ""  # the S3 address the peer serves, as it told us
    last_error: str = ""  # why the last Ping failed ("" after a success)
    member_state: str = ""  # SWIM's verdict ("" until SWIM hears of the peer)
    incarnation: int | None = None  # the peer's SWIM incarnation (None until SWIM hears of it)

    @property
    def journal_lag(self) -> int:
        """Events the peer reported that this node has not applied from it (0 when it reported nothing newer)."""
        return max(0, self.journal_seq - self.applied_seq)


class Liveness:
    """Per-peer records and their states; thread-safe (read by the health API and the metrics in any thread)."""

    def __init__(self, peers: Iterable[str], settings: LivenessSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings or LivenessSettings()
        self._clock, self._wall = clock, wall
        self._started = clock()
        self._lock = threading.Lock()
        self._peers = {node_id: PeerRecord(node_id) for node_id in peers}
        self._membership = False
        #: Peers whose data must not rejoin (cluster/tombstone_gc.py): dead to every caller until bootstrapped.
        self.blocked: Callable[[str], bool] = lambda node_id: False

    def follow_membership(self) -> None:
        """From now on the states are SWIM's (``member``), no longer a function of the time since the last Ping."""
        self._membership = True

    def member(self, node_id: str, state: str, incarnation: int) -> None:
        """SWIM's verdict on ``node_id`` changed (ignored for a node outside the pool)."""
        with self._lock:
            record = self._peers.get(node_id)
            if record is not None:
                record.member_state, record.incarnation = state, incarnation

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peers)

    def seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        """``node_id`` proved alive now, with its clock, journal head and (if it sent it) its S3 address."""
        with self._lock:
            record = self._peers.get(node_id)
            if record is None:  # not a pool member: authentication refuses those; nothing to track
                return
            record.seen_at, record.last_seen_ms = self._clock(), int(self._wall() * 1000)
            record.hlc = max(record.hlc, hlc)
            record.journal_seq = max(record.journal_seq, journal_seq)
            if http_addr:
                record.http_addr = http_addr
            record.last_error = ""

    def missed(self, node_id: str, why: str) -> None:
        """A Ping to ``node_id`` failed or timed out (the state follows from the time since the last proof)."""
        with self._lock:
            record = self._peers.get(node_id)
            if record is not None:
                record.last_error = why

    def applied(self, node_id: str, seq: int) -> None:
        """This node has applied the peer's journal up to ``seq`` (for the replication lag)."""
        with self._lock:
            record = self._peers.get(node_id)
            if record is not None:
                record.applied_seq = max(record.applied_seq, seq)

    def applied_seq(self, node_id: str) -> int:
        """How far into the peer's journal this node has applied (catch-up's cursor)."""
        with self._lock:
            return self._peers[node_id].applied_seq

    def state(self, node_id: str) -> str:
        with self._lock:
            return self._state(self._peers[node_id], self._clock())

    def snapshot(self) -> list[tuple[PeerRecord, str]]:
        """Copies of every record with its state now, in pool order."""
        with self._lock:
            now = self._clock()
            return [(PeerRecord(**vars(r)), self._state(r, now)) for r in self._peers.values()]

    def _state(self, record: PeerRecord, now: float) -> str:
        if self.blocked(record.node_id):
            return DEAD
        if self._membership:
            if record.member_state:
                return record.member_state
            return SUSPECT if now - self._started <= self.settings.dead_after_s else DEAD
        since = now - (record.seen_at if record.seen_at is not None else self._started)
        if record.seen_at is not None and since <= self.settings.suspect_after_s:
            return ALIVE
        return SUSPECT if since <= self.settings.dead_after_s else DEAD
