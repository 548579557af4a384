"""Merkle anti-entropy: every interval, each node compares its Merkle view with each live peer's and repairs both.

An exchange with one peer (``AntiEntropy.exchange``), per bucket either side knows:

1. the bucket roots (``MerkleTree`` "buckets": root and bucket state); equal roots end it for that bucket;
2. the bucket's own state (life, deletion, config clocks) merged by cluster/key_merge.py ``merge_bucket_states``:
   the events of what a side lacks are shipped first (a key's events need its bucket);
3. the inner nodes, then the leaves under differing inner nodes, then the keys of differing leaves with their
   digests; keys whose digests differ are read from both sides (``ReadKeys`` records) and merged with
   ``merge_key_states``;
4. repair, both directions, by the events themselves: each record carries the identity ``(hlc, origin)`` of the
   event that wrote it, so what a side lacks is a set of event identities. This node pulls the ones it lacks
   (``GetEvents`` from the peer, applied through the one writer with the blobs they need fetched, as catch-up does)
   and pushes the ones the peer lacks (``ApplyEvents`` with ``FETCH``: the peer fetches the blobs from here).

Repair never synthesizes events: a replica ends up holding the same events, with their identities, that it would
have got from the write path. Keys and bytes are taken from token buckets first (cluster/rate_limit.py), so repair
runs at a bounded rate. Differences that no event explains (the digests drifted, or a prefix rename moved keys the
view follows only at a rebuild) make this node rebuild that bucket's digests (engine/views/merkle.py
``rebuild_corrections``), as the periodic rebuild does for every bucket. A tombstone older than the GC grace is never
shipped: tombstone GC (every replica has it) may have dropped it on the other side, and sending it back would undo
the GC. docs/architecture/anti-entropy.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from s4.engine import kms
from s4.engine.views import merkle
from s4.engine.views.env import MapFullError, Views, pack, unpack
from s4.engine.views.records import Tx
from s4.journal.codec import decode_event
from s4.journal.events import Event
from s4.journal.hlc import physical_ms

from .catch_up import BlobFetcher, JournalReader, PeerEventsApplier
from .key_merge import lock_events, merge_bucket_states, merge_key_states
from .merkle_service import BUCKETS, INNER, KEYS, KMS, LEAVES, MAX_EVENTS, MAX_LEAVES, events_by_id, tree
from .rate_limit import TokenBucket
from .reads import MAX_KEYS, OBJECT, read_states
from .wake import cancel_and_wait, wait_event
from .wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    BlobTransfer,
    EventId,
    GetEventsReply,
    GetEventsRequest,
    MerkleTreeReply,
    MerkleTreeRequest,
    ReadKeysReply,
    ReadKeysRequest,
)

log = logging.getLogger("s4.cluster")
Ident = tuple[int, str]  # an event's identity (hlc, origin)
DAY_MS = 86_400_000


class AntiEntropyTransport(Protocol):
    """The RPCs an exchange makes to one peer (gRPC in a node, in-process in tests)."""

    async def merkle_tree(self, peer: str, request: MerkleTreeRequest) -> MerkleTreeReply: ...

    async def get_events(self, peer: str, request: GetEventsRequest) -> GetEventsReply: ...

    async def read_keys(self, peer: str, request: ReadKeysRequest) -> ReadKeysReply: ...

    async def apply_events(self, peer: str, request: ApplyEventsRequest) -> ApplyEventsReply: ...


@dataclass(frozen=True, slots=True)
class AntiEntropySettings:
    interval_s: float = 600.0  # S4_ANTI_ENTROPY_INTERVAL_SECS: one exchange per peer this often (0: never)
    keys_per_s: float = 1000.0  # S4_ANTI_ENTROPY_RATE_KEYS: keys compared or repaired a second
    bytes_per_s: float = 32 * 1024 * 1024  # S4_ANTI_ENTROPY_RATE_BYTES: events and blobs shipped a second
    gc_grace_days: float = 7.0  # S4_GC_GRACE_DAYS: tombstones older than this are not shipped
    rebuild_s: float = 86_400.0  # every bucket's digests recomputed from the key views this often
    jitter: float = 0.2  # each wait is the interval times 1 +- jitter / 2
    first_delay_s: float = 5.0  # the first exchange after start-up (with jitter)
    backoff_s: float = 5.0  # a failed exchange is retried after this (doubling, up to the interval)


@dataclass
class PeerStats:
    """Per peer, since start: for GET /api/admin/cluster/repair-status and the metrics."""

    exchanges: int = 0
    failures: int = 0
    differences: int = 0  # keys (and buckets) found different
    keys_repaired: int = 0  # keys (and buckets) for which events were shipped, either way
    events_pulled: int = 0
    events_pushed: int = 0
    bytes: int = 0  # event envelopes and blob bytes shipped, either way
    unrepaired: int = 0  # differences no event explained (digest drift: a rebuild follows)
    last_exchange_ms: int | None = None  # wall clock when the last exchange ended
    last_differences: int = 0
    last_repaired: int = 0
    last_error: str | None = None

    def document(self) -> dict[str, Any]:
        return {"exchanges": self.exchanges, "failures": self.failures, "differences": self.differences,
                "keys_repaired": self.keys_repaired, "events_pulled": self.events_pulled,
                "events_pushed": self.events_pushed, "bytes": self.bytes, "unrepaired": self.unrepaired,
                "last_exchange_ms": self.last_exchange_ms, "last_differences": self.last_differences,
                "last_repaired": self.last_repaired, "last_error": self.last_error}


@dataclass
class _Round:
    """What one exchange found and did."""

    differences: int = 0
    repaired: int = 0
    pulled: int = 0
    pushed: int = 0
    bytes: int = 0
    unrepaired: int = 0
    rebuild: set[str] = field(default_factory=set)


class ExchangeError(Exception):
    pass


class AntiEntropy:
    """The anti-entropy loop of one node: one task per peer, an exchange per interval while SWIM says it is alive."""

    def __init__(self, node_id: str, peers: Sequence[str], views: Views, journal: JournalReader,
                 applier: PeerEventsApplier, transport: AntiEntropyTransport, *, fetcher: BlobFetcher | None = None,
                 state: Callable[[str], str] = lambda _peer: "alive", settings: AntiEntropySettings | None = None,
                 wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.node_id, self.peers = node_id, tuple(peers)
        self.views, self.journal, self.applier, self.transport = views, journal, applier, transport
        self.fetcher, self._state = fetcher, state
        self.settings = settings or AntiEntropySettings()
        self.wall, self.clock = wall, clock
        self.keys_rate = TokenBucket(self.settings.keys_per_s, clock=clock, sleep=sleep)
        self.bytes_rate = TokenBucket(self.settings.bytes_per_s, clock=clock, sleep=sleep)
        self.stats = {peer: PeerStats() for peer in self.peers}
        self.rebuilds = 0  # bucket rebuilds that found the digests drifted (and corrected them)
        self.rebuilt_keys = 0
        self.last_rebuild_ms: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = {peer: asyncio.Event() for peer in self.peers}
        self._locks = {peer: asyncio.Lock() for peer in self.peers}
        self._rebuild_lock = asyncio.Lock()
        self._next_rebuild = clock() + self.settings.rebuild_s

    # -- lifetime --------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.interval_s <= 0:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(peer), name=f"s4-anti-entropy-{peer}") for peer in self.peers]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    def wake(self, peer: str) -> None:
        """Exchange with ``peer`` now (tests; an operator's trigger)."""
        if peer in self._wake:
            self._wake[peer].set()

    def _jittered(self, seconds: float) -> float:
        j = self.settings.jitter
        return seconds * random.uniform(1 - j / 2, 1 + j / 2)

    async def _loop(self, peer: str) -> None:
        wait = self._jittered(min(self.settings.first_delay_s, self.settings.interval_s))
        backoff = self.settings.backoff_s
        while True:
            await wait_event(self._wake[peer], wait)
            self._wake[peer].clear()
            if self._state(peer) != "alive":
                wait = self._jittered(self.settings.interval_s)
                continue
            try:
                await self.exchange(peer)
                await self._maybe_rebuild_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted, logged, retried
                log.warning("anti-entropy with %s failed: %s; retrying in %.0fs", peer, _why(exc), backoff)
                wait, backoff = self._jittered(backoff), min(backoff * 2, self.settings.interval_s)
                continue
            wait, backoff = self._jittered(self.settings.interval_s), self.settings.backoff_s

    # -- one exchange ----------------------------------------------------------------------------------------------
    async def exchange(self, peer: str) -> _Round:
        """Compare with ``peer`` and repair both sides; raises on a failed call (counted in ``failures``)."""
        stats = self.stats[peer]
        async with self._locks[peer]:
            found = _Round()
            try:
                await self._exchange(peer, found)
            except Exception as exc:
                stats.failures += 1
                stats.last_error = _why(exc)
                raise
            finally:
                stats.differences += found.differences
                stats.keys_repaired += found.repaired
                stats.events_pulled += found.pulled
                stats.events_pushed += found.pushed
                stats.bytes += found.bytes
                stats.unrepaired += found.unrepaired
            stats.exchanges += 1
            stats.last_exchange_ms = int(self.wall() * 1000)
            stats.last_differences, stats.last_repaired = found.differences, found.repaired
            stats.last_error = None
        for bucket in sorted(found.rebuild):
            await self.rebuild(bucket)
        if found.differences:
            log.info("anti-entropy with %s: %d differences, %d repaired (%d events pulled, %d pushed, %d bytes)%s",
                     peer, found.differences, found.repaired, found.pulled, found.pushed, found.bytes,
                     f", {found.unrepaired} unexplained: rebuilding {sorted(found.rebuild)}" if found.rebuild else "")
        return found

    async def _exchange(self, peer: str, found: _Round) -> None:
        their_roots = await self.transport.merkle_tree(peer, MerkleTreeRequest(what=BUCKETS))
        my_roots = await self._local(MerkleTreeRequest(what=BUCKETS))
        if bytes(their_roots.kms_root) != bytes(my_roots.kms_root):
            await self._repair_kms(peer, found)
        theirs = {b.name: b for b in their_roots.buckets}
        mine = {b.name: b for b in my_roots.buckets}
        for name in sorted(mine.keys() | theirs.keys()):
            mb, tb = mine.get(name), theirs.get(name)
            if mb is not None and tb is not None and bytes(mb.root) == bytes(tb.root):
                continue
            none: dict[str, Any] = {"i": None, "bt": None, "b": None, "cfg": {}}
            states = {"me": unpack(mb.state) if mb is not None else none,
                      "peer": unpack(tb.state) if tb is not None else none}
            live = await self._repair_bucket(peer, name, states, found)
            if live:
                await self._repair_keys(peer, name, found)

    async def _repair_kms(self, peer: str, found: _Round) -> None:
        """The KMS keys differ: ship the ``kms.*`` events each side lacks (engine/kms.py ``ae_lacks``), first, since
        objects under a key are of no use to a node without it. A peer of an older release cannot answer "kms"
        (it holds no KMS root either): that side is left to catch-up."""
        try:
            reply = await self.transport.merkle_tree(peer, MerkleTreeRequest(what=KMS))
        except GRPCError as exc:
            if exc.status is not Status.INVALID_ARGUMENT:
                raise
            return
        theirs = unpack(reply.kms) if reply.kms else {}
        mine = unpack((await self._local(MerkleTreeRequest(what=KMS))).kms or pack({}))
        found.differences += 1
        shipped = 0
        for side, ids in (("me", kms.ae_lacks(mine, theirs)), ("peer", kms.ae_lacks(theirs, mine))):
            if ids:
                shipped += await self._ship(peer, side, sorted(ids), found)
        if shipped:
            found.repaired += 1

    async def _repair_bucket(self, peer: str, bucket: str, states: dict[str, dict[str, Any]], found: _Round) -> bool:
        """Ship the events of the bucket's own state a side lacks; whether both now hold one live incarnation."""
        merged = merge_bucket_states(states)
        state = merged.state
        if merged.stale:
            found.differences += 1
            shipped = False
            for side, lacks in merged.stale.items():
                ids: set[Ident] = set()
                source = states["peer" if side == "me" else "me"]
                for kind, what in lacks:
                    if kind == "bucket":
                        if state["i"] is not None:  # its life, and the configs of that life
                            ids.add((state["i"][0], state["i"][1]))
                            ids.update((c[0], c[1]) for _, c in state["cfg"].values() if c is not None)
                        bt = source.get("bt")
                        if bt is not None and len(bt) >= 4 and state["bt"] is not None and \
                                (bt[0], bt[1]) == (state["bt"][0], state["bt"][1]):
                            ids.add((bt[2], bt[3]))
                    elif kind == "config":
                        clock = state["cfg"].get(what, [None, None])[1]
                        if clock is not None:
                            ids.add((clock[0], clock[1]))
                if ids:
                    shipped |= await self._ship(peer, side, sorted(ids), found) > 0
            if shipped:
                found.repaired += 1
        return state["i"] is not None

    async def _repair_keys(self, peer: str, bucket: str, found: _Round) -> None:
        mine_inner = (await self._local(MerkleTreeRequest(what=INNER, bucket=bucket))).digests
        their_inner = (await self.transport.merkle_tree(peer, MerkleTreeRequest(what=INNER, bucket=bucket))).digests
        inner = [i for i, (a, b) in enumerate(zip(mine_inner, their_inner, strict=True)) if bytes(a) != bytes(b)]
        if not inner:
            return
        request = MerkleTreeRequest(what=LEAVES, bucket=bucket, indexes=inner)
        mine_leaves = (await self._local(request)).digests
        their_leaves = (await self.transport.merkle_tree(peer, request)).digests
        leaves = [inner[n // merkle.FANOUT] * merkle.FANOUT + n % merkle.FANOUT
                  for n, (a, b) in enumerate(zip(mine_leaves, their_leaves, strict=True)) if bytes(a) != bytes(b)]
        for i in range(0, len(leaves), MAX_LEAVES):
            request = MerkleTreeRequest(what=KEYS, bucket=bucket, indexes=leaves[i:i + MAX_LEAVES])
            mine = {bytes(k.key_hash): k for k in (await self._local(request)).keys}
            theirs = {bytes(k.key_hash): k for k in (await self.transport.merkle_tree(peer, request)).keys}
            names = sorted({(mine.get(h) or theirs[h]).key or (theirs.get(h) or mine[h]).key
                            for h in mine.keys() | theirs.keys()
                            if h not in mine or h not in theirs or bytes(mine[h].digest) != bytes(theirs[h].digest)})
            if "" in names:  # a key whose name neither side holds (views of an older layout): rebuild finds it
                names.remove("")
                found.unrepaired += 1
                found.rebuild.add(bucket)
            for j in range(0, len(names), MAX_KEYS):
                await self._repair_key_batch(peer, bucket, names[j:j + MAX_KEYS], found)

    async def _repair_key_batch(self, peer: str, bucket: str, names: list[str], found: _Round) -> None:
        await self.keys_rate.take(len(names))
        found.differences += len(names)
        mine = dict(zip(names, await asyncio.to_thread(read_states, self.views, OBJECT, bucket, names), strict=True))
        reply = await self.transport.read_keys(peer, ReadKeysRequest(kind=OBJECT, bucket=bucket, keys=names))
        if [r.key for r in reply.records] != names:
            raise ExchangeError(f"ReadKeys answered {len(reply.records)} records for {len(names)} keys")
        theirs = {r.key: unpack(r.record) for r in reply.records}
        need: dict[str, set[Ident]] = {"me": set(), "peer": set()}
        sizes: dict[Ident, int] = {}
        repaired: set[str] = set()
        for name in names:
            states = {"me": mine[name], "peer": theirs[name]}
            merged = merge_key_states(states)
            wanted = {side: self._lacks(states[side], merged.state, sizes) for side in states}
            if not any(wanted.values()):
                kinds = {kind for lacks in merged.stale.values() for kind, _ in lacks}
                if kinds and kinds <= {"tomb", "bucket", "config"}:
                    continue  # tombstones past the GC grace, or the bucket's own state (repaired per bucket)
                found.unrepaired += 1  # equal records, different digests: the digests drifted
                found.rebuild.add(bucket)
                continue
            repaired.add(name)
            for side, ids in wanted.items():
                need[side] |= ids
        shipped = 0
        for side in ("me", "peer"):
            if need[side]:
                await self.bytes_rate.take(sum(sizes.get(i, 0) for i in need[side]))
                shipped += await self._ship(peer, side, sorted(need[side]), found)
        if shipped:
            found.repaired += len(repaired)

    def _lacks(self, state: dict[str, Any], merged: dict[str, Any], sizes: dict[Ident, int]) -> set[Ident]:
        """The identities of the events whose records ``merged`` holds and ``state`` does not, tombstones past the
        GC grace left out."""
        if merged.get("i") is None or state.get("i") is None or \
                (state["i"][0], state["i"][1]) != (merged["i"][0], merged["i"][1]):
            return set()
        out: set[Ident] = set()
        have = {r["v"]: (r["h"], r.get("o", "")) for r in state["vs"]}
        for rec in merged["vs"]:
            ident = (rec["h"], rec.get("o", ""))
            if have.get(rec["v"]) != ident:
                out.add(ident)
                sizes[ident] = int(rec.get("s", 0))
        horizon = self.wall() * 1000 - self.settings.gc_grace_days * DAY_MS
        for vid, tomb in merged["vt"].items():
            ident = (tomb[0], tomb[1])
            held = state["vt"].get(vid)
            if held is None or (held[0], held[1]) != ident:
                if physical_ms(ident[0]) >= horizon or vid in have:
                    out.add(ident)  # an old tombstone still goes where it removes a version
        mine = state.get("tc") or {}
        for vid, clock in (merged.get("tc") or {}).items():  # tag clocks: each the newest tags_set of a version
            ident = (clock["h"], clock.get("o", ""))
            held = mine.get(vid)
            if held is None or (held["h"], held.get("o", "")) != ident:
                out.add(ident)
        mine = state.get("lkc") or {}
        for vid, clock in (merged.get("lkc") or {}).items():  # lock clocks: the lock events a version's state joins
            out |= lock_events(clock) - lock_events(mine.get(vid))
        return out

    # -- shipping events ---------------------------------------------------------------------------------------------
    async def _ship(self, peer: str, side: str, ids: list[Ident], found: _Round) -> int:
        """Pull (``side`` "me": this node lacks them) or push (``side`` "peer") the events ``ids``; how many went."""
        total = 0
        for i in range(0, len(ids), MAX_EVENTS):
            chunk = ids[i:i + MAX_EVENTS]
            if side == "me":
                reply = await self.transport.get_events(peer, GetEventsRequest(
                    ids=[EventId(hlc=h, origin=o) for h, o in chunk]))
                envelopes = [bytes(e) for e in reply.events]
                await self.bytes_rate.take(sum(len(e) for e in envelopes))
                applied = await self._pull([decode_event(e) for e in envelopes], peer)
                found.pulled += applied
                total += applied
            else:
                envelopes = await asyncio.to_thread(events_by_id, self.views, self.journal, chunk)
                if not envelopes:
                    continue
                await self.bytes_rate.take(sum(len(e) for e in envelopes))
                result = await self.transport.apply_events(peer, ApplyEventsRequest(events=envelopes,
                                                                                    blobs=BlobTransfer.FETCH))
                if result.missing_blobs:
                    raise ExchangeError(f"{peer} could not fetch {len(result.missing_blobs)} blobs from this node")
                found.pushed += len(envelopes)
                total += len(envelopes)
            found.bytes += sum(len(e) for e in envelopes)
        return total

    async def _pull(self, events: list[Event], peer: str) -> int:
        """Apply a peer's events here, fetching the blobs they reference (from it, or another live replica)."""
        if not events:
            return 0
        events.sort(key=lambda e: (e.hlc, e.origin))
        result = await self.applier.apply_peer_events(events)
        if result.missing_blobs:
            if self.fetcher is None:
                raise ExchangeError(f"{len(result.missing_blobs)} blobs missing and no blob fetcher")
            others = [p for p in self.peers if p != peer and self._state(p) == "alive"]
            for digest in result.missing_blobs:
                await self.fetcher.fetch([peer, *others], bytes(digest))
            result = await self.applier.apply_peer_events(events)
            if result.missing_blobs:
                raise ExchangeError(f"{len(result.missing_blobs)} blobs still missing after fetching them")
        return len(events)

    async def _local(self, request: MerkleTreeRequest) -> MerkleTreeReply:
        return await asyncio.to_thread(tree, self.views, request)

    # -- rebuilding the digests --------------------------------------------------------------------------------------
    async def _maybe_rebuild_all(self) -> None:
        if self.clock() < self._next_rebuild:
            return
        self._next_rebuild = self.clock() + self.settings.rebuild_s
        with self.views.read() as txn:
            names = merkle.bucket_names(Tx(txn, self.views.dbs))
        for name in names:
            await self.rebuild(name)
        self.last_rebuild_ms = int(self.wall() * 1000)

    async def rebuild(self, bucket: str) -> int:
        """Recompute ``bucket``'s digests from the key views and correct the stored ones; the keys corrected."""
        async with self._rebuild_lock:
            return await asyncio.to_thread(self._rebuild, bucket)

    def _rebuild(self, bucket: str) -> int:
        with self.views.read() as txn:
            fix = merkle.rebuild_corrections(Tx(txn, self.views.dbs), bucket)
        if not fix:
            return 0
        try:
            with self.views.begin_write() as txn:
                merkle.apply_correction(Tx(txn, self.views.dbs), bucket, fix)
        except MapFullError:
            log.warning("anti-entropy: the views are full; the digests of %s are corrected later", bucket)
            return 0
        self.rebuilds += 1
        self.rebuilt_keys += len(fix.keys)
        log.info("anti-entropy: corrected the digests of %d keys of bucket %s", len(fix.keys), bucket)
        return len(fix.keys)

    # -- status ----------------------------------------------------------------------------------------------------
    def counters(self, peer: str) -> dict[str, int]:
        """The metrics' counters for ``peer`` (api/metrics.py ``ANTI_ENTROPY_DOCS``)."""
        s = self.stats[peer]
        return {"exchanges": s.exchanges, "differences": s.differences, "keys_repaired": s.keys_repaired,
                "bytes": s.bytes}

    def document(self) -> dict[str, Any]:
        return {"interval_s": self.settings.interval_s, "rebuilds": self.rebuilds, "rebuilt_keys": self.rebuilt_keys,
                "last_rebuild_ms": self.last_rebuild_ms,
                "rate_limited_s": round(self.keys_rate.waited_s + self.bytes_rate.waited_s, 3),
                "peers": {peer: stats.document() for peer, stats in self.stats.items()}}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class GrpcAntiEntropyTransport:
    """``AntiEntropyTransport`` over the pool's channels (cluster/peers.py ``PeerPool``), each call bounded."""

    def __init__(self, pool: Any, *, call_s: float = 30.0) -> None:
        self.pool, self.call_s = pool, call_s

    async def merkle_tree(self, peer: str, request: MerkleTreeRequest) -> MerkleTreeReply:
        reply: MerkleTreeReply = await self.pool.stub(peer).merkle_tree(request, timeout=self.call_s)
        return reply

    async def get_events(self, peer: str, request: GetEventsRequest) -> GetEventsReply:
        reply: GetEventsReply = await self.pool.stub(peer).get_events(request, timeout=self.call_s)
        return reply

    async def read_keys(self, peer: str, request: ReadKeysRequest) -> ReadKeysReply:
        reply: ReadKeysReply = await self.pool.stub(peer).read_keys(request, timeout=self.call_s)
        return reply

    async def apply_events(self, peer: str, request: ApplyEventsRequest) -> ApplyEventsReply:
        reply: ApplyEventsReply = await self.pool.stub(peer).apply_events(request, timeout=self.call_s)
        return reply
