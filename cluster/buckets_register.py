"""Bucket names across the cluster: the CASPaxos register wired to this node's store, acceptor and peers.

With several pools (S4_CLUSTER_POOLS) the register that decides names is the registry pool's (the first by name):
its nodes are the acceptors, every node of every pool a proposer, and a create pins the bucket to the proposer's
pool (docs/architecture/pools.md).

``CasNode.open`` builds one node's part of the register: the durable acceptor store in the data directory, the
acceptor, the ``CasAcceptorService`` that ``ClusterServer`` delegates ``CasPrepare`` / ``CasAccept`` to, and a
``BucketRegister`` whose proposer reaches every node of the pool (itself in process). ``BucketRegister`` is what
CreateBucket and DeleteBucket call: every outcome is exact (cluster/caspaxos.py's change functions), and "no
majority reachable" or "outcome unknown" become ``ServiceUnavailableError`` (503 with Retry-After), never a guess.
A request retried with the same token settles its outcome (the change functions recognise their own token).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from s4.engine.errors import ServiceUnavailableError
from s4.engine.ports import NameClaim, NameOutcome, NameSpace

from .cas_restore import CasRestore, grpc_page
from .cas_rpc import BUCKET_CODEC, CasAcceptorService, GrpcAcceptorTransport
from .cas_store import CasStore, store_path
from .caspaxos import (
    Acceptor,
    Ballot,
    BucketChange,
    BucketRecord,
    BucketResult,
    BucketStatus,
    Change,
    Outcome,
    OutcomeUnknown,
    Proposer,
    RegisterUnavailable,
    abort_delete,
    create_if_absent,
    finish_delete,
    mark_deleting,
)
from .config import ClusterConfig, ClusterConfigError
from .peers import PeerPool
from .quorum import QuorumError, call_quorum

log = logging.getLogger("s4.cluster")

KEY_PREFIX = "bucket/"
"""Register keys of bucket names (other registers, if any, get their own prefix)."""
REMEMBERED_POOLS = 100_000
"""Bucket locations ``RegisterNames.pool_of`` keeps for when the registry cannot answer (least recently asked go)."""
KEY_PREFIXES = {space: f"{space.value}/" for space in NameSpace}
"""One key space per kind of name (engine/ports.py ``NameSpace``): ``bucket/<name>``, ``user/<username>``."""


class BucketRegister:
    """Linearizable CreateBucket / DeleteBucket decisions for the cluster (the registry pool's register: docs/
    architecture/pools.md), and the same for the other kinds of names (``space``: IAM usernames), each in its own
    key space. ``pool``: what a create pins the name to ("" with one pool: the records keep their old format)."""

    def __init__(self, proposer: Proposer[BucketRecord], pool: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.proposer = proposer
        self.pool = pool
        self._clock = clock

    async def create(self, name: str, owner: str, token: str, space: str = NameSpace.BUCKET) -> BucketResult:
        """CREATED (the record names ``owner`` and this node's pool), or ALREADY_EXISTS with the holder's record."""
        created_ms = int(self._clock() * 1000) if self.pool else 0
        return await self._run(name, create_if_absent(owner, token, self.pool, created_ms), space)

    async def mark_deleting(self, name: str, token: str, incarnation: int | None = None,
                            space: str = NameSpace.BUCKET) -> BucketResult:
        """Delete, step 1: MARKED (the name is fenced; check the bucket is empty) or NO_SUCH_BUCKET."""
        return await self._run(name, mark_deleting(token, incarnation), space)

    async def finish_delete(self, name: str, incarnation: int, token: str,
                            space: str = NameSpace.BUCKET) -> BucketResult:
        """Delete, step 2 when empty: DELETED, NOT_DELETING (aborted meanwhile) or NO_SUCH_BUCKET."""
        return await self._run(name, finish_delete(incarnation, token), space)

    async def abort_delete(self, name: str, incarnation: int, token: str,
                           space: str = NameSpace.BUCKET) -> BucketResult:
        """Delete, step 2 when not empty: RESTORED (the bucket is live again) or NO_SUCH_BUCKET."""
        return await self._run(name, abort_delete(incarnation, token), space)

    async def delete(self, name: str, token: str, is_empty: Callable[[BucketRecord], Awaitable[bool]]) -> BucketResult:
        """Both steps: fence the name, ask ``is_empty`` (a quorum read of the bucket's contents), then finish or
        abort. RESTORED means "not empty" (BucketNotEmpty). If the check fails, the fence is lifted before the
        error propagates (best effort: a retry of the delete re-marks it either way)."""
        marked = await self.mark_deleting(name, token)
        if marked.outcome is not Outcome.MARKED:
            return marked
        assert marked.record is not None
        incarnation = marked.record.incarnation
        try:
            empty = await is_empty(marked.record)
        except BaseException:
            try:
                await self.abort_delete(name, incarnation, token)
            except Exception:
                log.warning("bucket %s: could not lift the delete fence after a failed emptiness check", name)
            raise
        if empty:
            return await self.finish_delete(name, incarnation, token)
        return await self.abort_delete(name, incarnation, token)

    async def read(self, name: str, space: str = NameSpace.BUCKET) -> BucketRecord | None:
        """A linearizable read of the name's record (None: never created)."""
        result = await self._run(name, _read, space)
        return result.record

    async def list(self, space: str = NameSpace.BUCKET, max_pages: int = 1000) -> list[tuple[str, BucketRecord]]:
        """Every name of ``space`` with its record, in name order, as a majority of the acceptors hold it: per key
        the value of the highest accepted ballot among them. Every committed change is accepted by a majority, so
        any majority shows it or a later value; a change still in flight may show or not (ListBuckets across pools,
        docs/architecture/pools.md: not a linearizable read, as S3's ListBuckets is not either)."""
        prefix = KEY_PREFIXES[NameSpace(space)]
        transport = self.proposer.transport

        async def everything(peer: str) -> dict[str, tuple[Ballot, bytes | None]]:
            found: dict[str, tuple[Ballot, bytes | None]] = {}
            after = ""
            for _ in range(max_pages):
                page, truncated = await transport.list(peer, prefix, after)  # type: ignore[attr-defined]
                found.update((key, (ballot, value)) for key, ballot, value in page)
                if not truncated or not page:
                    return found
                after = page[-1][0]
            raise RuntimeError(f"{peer}: more than {max_pages} pages of names")

        try:
            result = await call_quorum(self.proposer.peers, everything, self.proposer.quorum,
                                       timeout=self.proposer.phase_timeout * 4)
        except QuorumError as exc:
            raise ServiceUnavailableError(f"the bucket registry did not answer: {exc}") from exc
        merged: dict[str, tuple[Ballot, bytes | None]] = {}
        for answer in result.successes.values():
            for key, (ballot, value) in answer.items():
                if key not in merged or ballot > merged[key][0]:
                    merged[key] = (ballot, value)
        return [(key[len(prefix):], BUCKET_CODEC.decode(value)) for key, (_, value) in sorted(merged.items())
                if value is not None]

    async def _run(self, name: str, fn: Callable[[BucketRecord | None], BucketChange],
                   space: str = NameSpace.BUCKET) -> BucketResult:
        prefix = KEY_PREFIXES[NameSpace(space)]  # ValueError for a space that is not a NameSpace
        try:
            return (await self.proposer.change(prefix + name, fn)).outcome
        except (RegisterUnavailable, OutcomeUnknown) as exc:
            log.warning("%s %s: %s", space, name, exc)
            raise ServiceUnavailableError(str(exc)) from exc


class RegisterNames:
    """The engine's ``BucketNamesPort`` (engine/ports.py) over a ``BucketRegister``: CreateBucket and DeleteBucket
    (engine/bucket_names.py) and IAM CreateUser and DeleteUser (engine/user_names.py) of a cluster node ask it
    first. The register's outcomes, in the engine's terms."""

    def __init__(self, register: BucketRegister) -> None:
        self.register = register
        self._pools: OrderedDict[str, str] = OrderedDict()  # bucket -> the pool the registry last said

    async def create(self, name: str, owner: str, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return _claim(await self.register.create(name, owner, token, space))

    async def mark_deleting(self, name: str, token: str, incarnation: int | None = None,
                            space: str = NameSpace.BUCKET) -> NameClaim:
        return _claim(await self.register.mark_deleting(name, token, incarnation, space))

    async def finish_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return _claim(await self.register.finish_delete(name, incarnation, token, space))

    async def abort_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return _claim(await self.register.abort_delete(name, incarnation, token, space))

    async def list_buckets(self, registry_pool: str) -> list[dict[str, Any]]:
        """Every live bucket of the cluster in name order: ``{name, pool, created_ms, owner}`` (ListBuckets)."""
        return [{"name": name, "pool": record.pool or registry_pool, "created_ms": record.created_ms,
                 "owner": record.owner} for name, record in await self.register.list()
                if record.status is BucketStatus.LIVE]

    async def pool_of(self, name: str, registry_pool: str) -> str | None:
        """The pool a live bucket is pinned to (a record from before pools: ``registry_pool``), None when the name
        is free or being deleted (a linearizable read of the registry).

        When the registry cannot answer (ServiceUnavailableError: no majority), the pool it last named for the
        bucket to any process of this node: every HTTP worker asks here, so a worker that never routed the bucket
        itself still routes it while the registry pool has no majority (api/pool_router.py remembers per process).
        A bucket the registry never named to this node, or last said is free, still raises: nothing is guessed."""
        try:
            record = await self.register.read(name)
        except ServiceUnavailableError:
            remembered = self._pools.get(name)
            if remembered is None:
                raise
            log.info("bucket %s: the registry cannot answer; the pool it last named, %s, routes", name, remembered)
            return remembered
        if record is None or record.status is not BucketStatus.LIVE:
            self._pools.pop(name, None)
            return None
        pool = record.pool or registry_pool
        self._pools[name] = pool
        self._pools.move_to_end(name)
        if len(self._pools) > REMEMBERED_POOLS:
            self._pools.popitem(last=False)
        return pool


def _claim(result: BucketResult) -> NameClaim:
    record = result.record
    if record is None:
        return NameClaim(NameOutcome(result.outcome.value))
    return NameClaim(NameOutcome(result.outcome.value), record.incarnation, record.owner)


def _read(current: BucketRecord | None) -> BucketChange:
    return Change(current, BucketResult(Outcome.ALREADY_EXISTS if current else Outcome.NO_SUCH_BUCKET, current))


@dataclass
class CasNode:
    """One node's share of the register: close() after the gRPC server that serves ``service`` has stopped."""

    store: CasStore
    acceptor: Acceptor[bytes]
    service: CasAcceptorService
    register: BucketRegister
    registry_peers: PeerPool | None = None  # the registry pool's nodes, when this node is outside that pool
    restore: CasRestore | None = None  # a replaced node's restore (cluster/cas_restore.py)
    _names: RegisterNames | None = None

    @property
    def names(self) -> RegisterNames:
        """The engine's bucket-name port over this node's register (one: it remembers bucket locations)."""
        if self._names is None:
            self._names = RegisterNames(self.register)
        return self._names

    @classmethod
    def open(cls, config: ClusterConfig, data_dir: str | os.PathLike[str], peers: PeerPool, *,
             phase_timeout: float = 2.0, **proposer_options: Any) -> CasNode:
        """Open the store (bumping the proposer's incarnation) and wire acceptor, service and proposer.

        The proposer's acceptors are the registry pool's nodes (docs/architecture/pools.md): this pool's own with one
        pool or in the registry pool; otherwise another pool's, called over ``registry_peers``. This node's acceptor
        serves this pool's other registers (job leases) either way."""
        store = CasStore(store_path(data_dir))
        try:
            incarnation = store.next_incarnation()
        except BaseException:
            store.close()
            raise
        registry = config.registry_pool
        names = KEY_PREFIXES[NameSpace.BUCKET]
        if registry.name != config.pool_name and any(k.startswith(names) for k in store.keys()):
            store.close()  # this pool's acceptors hold bucket names: the registry was here, the first pool changed
            raise ClusterConfigError(
                f"S4_CLUSTER_POOLS: this node's register holds bucket names, so pool {config.pool_name} has been the "
                f"bucket registry, but pool {registry.name} now sorts first and would be; the registry never moves: "
                "give the added pool a name after the registry pool's (docs/operations.md, Add a pool)")
        members = sorted(n.node_id for n in config.pool)
        try:
            recorded = store.claim_members(members)
        except BaseException:
            store.close()
            raise
        if recorded != members:
            store.close()
            raise ClusterConfigError(
                f"S4_POOL_NODES: pool {config.pool_name} was started with nodes {', '.join(recorded)} and now names "
                f"{', '.join(members)}; a pool's nodes never change (its quorums and register majorities count over "
                "them): grow the cluster by adding a pool, replace a lost node under its own id (docs/operations.md, "
                "Add a node)")
        try:
            replacing = store.replacing()  # a replaced node's fresh store: refuse to vote until restored
        except BaseException:
            store.close()
            raise
        acceptor: Acceptor[bytes] = Acceptor(store, refusing=replacing)
        others = [n.node_id for n in config.pool if n.node_id != config.node_id]
        restore = CasRestore(acceptor, others, grpc_page(peers, phase_timeout), store.raise_floor_async,
                             lambda: store.set_replacing_async(None), node=config.node_id, incarnation=incarnation)
        registry_peers = None if registry.name == config.pool_name else PeerPool(config, nodes=registry.nodes)
        transport = GrpcAcceptorTransport(config.node_id, acceptor, registry_peers or peers, BUCKET_CODEC,
                                          timeout_s=phase_timeout)
        proposer = Proposer(config.node_id, [n.node_id for n in registry.nodes], transport, incarnation=incarnation,
                            phase_timeout=phase_timeout, remote=registry_peers is not None, **proposer_options)
        pin = config.pool_name if config.cluster_pools else ""
        return cls(store, acceptor, CasAcceptorService(acceptor), BucketRegister(proposer, pin), registry_peers,
                   restore)

    def close(self) -> None:
        if self.restore is not None:
            self.restore.cancel()
        if self.registry_peers is not None:
            self.registry_peers.close()
        self.store.close()
