"""The commit port: how the engine's commands get ordered, made durable and visible. The engine defines it; the
composition root (tools/server.py) chooses the implementation; the engine never asks which one it has.

Two shapes:

* ``CommitPort``: what the engine calls for every change: ``execute`` (await the outcome), ``submit`` (from any
  thread, don't wait), ``execute_sync`` (the background jobs, on their threads), ``stats`` and ``close``. Its answer
  comes once the command's events are durable and visible in the views this process reads.
* ``CommitPath``: the factory handed to ``Engine``, one per engine. ``claim`` takes the data directory (before
  anything in it is touched) and says whose node it is; ``open`` (given the engine's volumes) opens the views and
  returns the port and what the node shares with it; ``close`` releases all of that at the end.

Implementations: ``LocalCommitPath`` (engine/local_commit.py: this process owns the journal, the LMDB writer and
the data-directory lock) and ``ChannelCommitPath`` (engine/remote/client.py: an HTTP worker process, whose commands
go to the supervisor's sequencer). The replicated pool (``cluster/``, later) wraps a ``LocalCommitPath``: its journal,
views and sequencer are public after ``open`` for that. See docs/architecture/commit-port.md.

``ClusterStatus`` is the node's view of its pool for the health API and the metrics: the cluster code implements it
(cluster/node.py), ``SingleNodeStatus`` below is the single-mode answer, and an HTTP worker's forwards to the
supervisor (engine/remote). tools/server.py sets ``Engine.cluster``; api/ reads it and never imports cluster/.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from s4.journal import Event, Journal

from .model import BlobLocation, ListPage, UploadListPage, VersionListPage
from .sequencer import Command
from .space import SpaceGuard
from .views.env import Views
from .volumes.store import VolumeStore

if TYPE_CHECKING:
    from .engine import EngineOptions


class CommitPort(Protocol):
    """Orders commands and commits them: a command's answer (its decider's result, or its error: the same S3Error
    whichever implementation) comes only once its events are durable and visible in this process's views. A
    command that cannot be committed now fails with ServiceUnavailableError (503 with Retry-After)."""

    def submit(self, command: Command) -> concurrent.futures.Future[Any]:
        """From any thread, without waiting (a volume sealed on an ingest thread, a damage mark)."""
        ...

    async def execute(self, command: Command) -> Any:
        """On the event loop: the command's result once committed."""
        ...

    def execute_sync(self, command: Command) -> Any:
        """Blocking, off the event loop (the background jobs' threads, start-up)."""
        ...

    @property
    def stats(self) -> tuple[int, int]:
        """(batches, commands) committed by this process so far, for metrics."""
        ...

    def close(self) -> None:
        """Drain what was submitted; later commands fail with ServiceUnavailableError."""
        ...


class ReplicaPort(Protocol):
    """Where a node's replication code (cluster/) commits events decided by its peers: the local sequencer, the one
    writer (``LocalCommitPath.apply_peer_events``; engine/replica.py). The future gives a ``PeerBatchResult`` (per
    event: applied, or already held) once the batch is durable and visible, or the refusal that left nothing."""

    def apply_peer_events(self, events: Sequence[Event], resolve: Callable[[bytes], BlobLocation | None] = ...,
                          volumes: Sequence[str] = ()) -> concurrent.futures.Future[Any]: ...


class ReplicationPort(Protocol):
    """Where a replicated pool's coordinator sends the events a command committed here (cluster/replicator.py
    implements it; engine/replicated_commit.py and the supervisor's channel service call it). The engine answers the
    client only after ``replicate`` returned."""

    def admit(self) -> None:
        """Raise PoolUnavailableError (a 503 ServiceUnavailableError) when this node may not coordinate a write now
        (it is still catching up with its peers): checked before the command is decided."""
        ...

    async def replicate(self, events: Sequence[Event]) -> None:
        """Return once the write quorum holds ``events`` durably (this node's copy counts: it is committed
        already); raise PoolUnavailableError (a 503 ServiceUnavailableError, which leaves this node's volumes in
        use: its commit synced them) when it cannot. Node-local events are not sent."""
        ...

    def replicate_sync(self, events: Sequence[Event]) -> None:
        """``replicate`` from a thread that is not the node's event loop (the background jobs)."""
        ...


class KeyReadPort(Protocol):
    """Quorum reads in a replicated pool (cluster/key_reads.py implements it; the engine calls it before reading or
    deciding on a key's, an upload's or a bucket's state in its own views).

    Each call makes this node's views hold at least the newest state of that one thing that R replicas hold, and
    repairs the answering replicas that lack it, before it returns (blocking read repair: a later quorum read never
    goes backwards). Each raises ServiceUnavailableError when fewer than R replicas answer or a repair fails."""

    async def settle_key(self, bucket: str, key: str) -> None: ...

    async def settle_upload(self, bucket: str, upload_id: str) -> None: ...

    async def settle_bucket(self, name: str) -> None: ...


class BlobRepairPort(Protocol):
    """Heals this node's bad or missing copy of a blob from a replica in a pool (cluster/scrub_heal.py ``BlobHealer``
    in the journal owner; engine/remote ``RemoteBlobRepair`` in an HTTP worker). None on the engine in single mode.

    ``repair(location, problem, cause)``: ``location`` is where the index put the blob when a read or the scrubber
    found its bytes failing (``problem``); ``cause`` is "read" or "scrub" (for the counts). Marks the copy damaged,
    fetches the blob by its SHA-256 from a replica that has a good copy (size and hash verified, written and
    fsynced to this node's volumes) and repoints the index to it (node-local ``blob.moved``), then returns True;
    also True when the index already names another, unmarked copy. False when no replica could give a verified
    copy (the blob stays marked damaged; reads of it keep failing). docs/architecture/recovery.md, "Scrub
    healing"."""

    async def repair(self, location: BlobLocation, problem: str, cause: str = "read") -> bool: ...


class BlobPushPort(Protocol):
    """Copies a large body's chunks to a pool's peers while the upload still runs (cluster/blob_push.py
    ``BlobPusher`` in the journal owner; engine/remote ``RemoteBlobPush`` in an HTTP worker). None on the engine in
    single mode.

    ``stored(location)``: the ingest appended a new chunk of a body larger than one chunk (so the write will send
    its peers ``BLOB_TRANSFER_FETCH``); called on the event loop, never raises, never waits. Only a head start: the
    write is acknowledged exactly as without it (docs/architecture/replication.md, "Large writes: chunks pushed
    during the upload")."""

    def stored(self, location: BlobLocation) -> None: ...


class ListingPort(Protocol):
    """Listings merged from R replicas in a replicated pool (cluster/listings.py); the engine lists its own views
    when it has none."""

    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           max_keys: int) -> ListPage: ...

    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                            version_id_marker: str, max_keys: int) -> VersionListPage: ...

    async def list_uploads(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                           upload_id_marker: str, max_uploads: int) -> UploadListPage: ...


class NameOutcome(StrEnum):
    """What a bucket-name register decided (the engine's names for cluster/caspaxos.py's outcomes)."""

    CREATED = "created"  # create: the name was free; this request holds it now
    ALREADY_EXISTS = "already_exists"  # create: the name is live or being deleted
    MARKED = "marked"  # delete, step 1: the name is fenced; check emptiness, then finish or abort
    DELETED = "deleted"  # delete, step 2: the name is free again
    RESTORED = "restored"  # delete aborted: the bucket is live again
    NO_SUCH_BUCKET = "no_such_bucket"
    NOT_DELETING = "not_deleting"  # finish after someone aborted the delete


@dataclass(frozen=True, slots=True)
class NameClaim:
    """One decision of the name register and the record it left: ``incarnation`` counts the name's creations
    (0: the register never held the name); ``owner`` is the creator's access key (a bucket) or the user's id (a
    username)."""

    outcome: NameOutcome
    incarnation: int = 0
    owner: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "incarnation": self.incarnation, "owner": self.owner}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> NameClaim:
        return cls(NameOutcome(rec["outcome"]), rec["incarnation"], rec["owner"])


class NameSpace(StrEnum):
    """The kinds of names the pool's name register keeps unique, each its own key space (``<space>/<name>``)."""

    BUCKET = "bucket"  # CreateBucket / DeleteBucket (engine/bucket_names.py); owner: the creator's access key
    USER = "user"  # IAM usernames (engine/user_names.py); owner: the user's id


class BucketNamesPort(Protocol):
    """Linearizable names across a pool (S4_MODE=cluster): every CreateBucket and DeleteBucket, and every IAM
    CreateUser and DeleteUser, is first decided by this register (cluster/buckets_register.py ``RegisterNames``; in
    an HTTP worker the supervisor's, over the channel). ``space`` says which kind of name (``NameSpace``: bucket
    names and usernames never meet). ``token`` is one request's id: a step retried with it settles its own outcome.
    Every method raises ServiceUnavailableError (503 with Retry-After) when no majority answers or the outcome is
    unknown. The flows are engine/bucket_names.py and engine/user_names.py; single mode has no register
    (``Engine.names`` is None)."""

    async def create(self, name: str, owner: str, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        """CREATED (the record names ``owner`` and a new incarnation) or ALREADY_EXISTS (the holder's record)."""
        ...

    async def mark_deleting(self, name: str, token: str, incarnation: int | None = None,
                            space: str = NameSpace.BUCKET) -> NameClaim:
        """MARKED (fenced: no create can take the name; only the live or deleting record of ``incarnation``, if
        given) or NO_SUCH_BUCKET."""
        ...

    async def finish_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        """DELETED, NOT_DELETING (aborted meanwhile) or NO_SUCH_BUCKET (finished by another delete)."""
        ...

    async def abort_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        """RESTORED (live again) or NO_SUCH_BUCKET."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What a job lease answered (``JobLeasePort.acquire``). Granted: this node may act until ``deadline`` on its
    ``time.monotonic()`` clock (``math.inf`` in single mode), a safety margin before the lease's expiry. Not granted:
    ``holder`` (and ``expires_ms``, on the holder's wall clock) name who holds it, or ``reason`` says why the pool
    could not answer."""

    job: str
    granted: bool
    holder: str = ""  # the node holding the lease ("" when none or unknown)
    term: int = 0  # how many times the lease went to a new holder; grows, never reused
    expires_ms: int = 0  # wall-clock ms (the holder's clock) at which the holder's grant runs out
    deadline: float = 0.0  # granted: monotonic seconds after which this node must not act on it
    reason: str = ""  # not granted: "held" (another node holds it) or why the register did not answer

    def to_record(self) -> dict[str, Any]:
        """For job reports and status (the monotonic deadline means nothing to another process)."""
        return {"job": self.job, "granted": self.granted, "holder": self.holder, "term": self.term,
                "expires_ms": self.expires_ms, "reason": self.reason}


class JobLeasePort(Protocol):
    """Which node of a pool runs a pool-wide background job (lifecycle, multipart-upload expiry): the holder of the
    job's lease. cluster/job_lease.py keeps the leases in the pool's CASPaxos register; ``SoleNodeLeases`` below is
    single mode. Chosen by tools/server.py; engine/jobs/lease.py renews a held lease and stops a run that lost it.
    docs/architecture/replication.md, "Background jobs: one lease per job"."""

    async def acquire(self, job: str) -> LeaseGrant:
        """Grant (or renew) ``job``'s lease to this node if it is free, expired or already this node's; otherwise
        say who holds it. Never raises for an unreachable pool: that is a grant refused with its ``reason``."""
        ...

    async def release(self, job: str) -> None:
        """Give the lease up (best effort; call only once nothing acts on it any more): another node may take it
        at once instead of waiting for it to expire."""
        ...


class SoleNodeLeases:
    """S4_MODE=single: the node is its own pool, every lease is granted for good."""

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id

    async def acquire(self, job: str) -> LeaseGrant:
        return LeaseGrant(job, True, self.node_id, deadline=math.inf)

    async def release(self, job: str) -> None:
        return None


class IamFeedPort(Protocol):
    """Several pools: a node outside the registry pool follows its IAM (cluster/iam_feed.py). ``refresh`` returns
    once a round that started after the call applied what a majority of the registry pool holds (an access key
    created there before the call is then in the views); ServiceUnavailableError when no majority answered."""

    async def refresh(self) -> None: ...


class LoginThrottlePort(Protocol):
    """The node-wide login throttle, when another process keeps it (engine/login_throttle.py)."""

    async def throttle(self, action: str, username: str, client: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Opened:
    """What a commit path opened for an engine."""

    views: Views
    port: CommitPort
    journal: Journal | None = None  # the journal this process writes, if it owns one (metrics, tools)
    login_throttle: LoginThrottlePort | None = None  # None: this process keeps the node's login throttle
    jobs: Any = None  # the background jobs' handle when they run elsewhere; None: this process runs them


class CommitPath(Protocol):
    """Chosen by the composition root (tools/server.py); ``Engine`` calls ``claim``, builds its volumes, calls
    ``open``, and at the end closes the port, its volumes, then ``close``."""

    def claim(self, options: EngineOptions) -> str:
        """Take the data directory before anything in it is touched; return this node's id."""
        ...

    def open(self, volumes: VolumeStore, space: SpaceGuard) -> Opened:
        """Open the views (and whatever commits into them) over ``volumes``; return the port."""
        ...

    def close(self) -> None:
        """Release what ``claim`` and ``open`` took (journal, views, lock); safe after a failed ``open``, and twice."""
        ...


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """One peer as this node sees it, for the metrics."""

    peer: str
    up: bool  # state "alive"
    last_seen_s: float | None  # wall-clock seconds since the epoch of its last proof of life; None: never
    journal_lag: int  # events it reported holding that this node has not applied from it
    hints_pending: int = 0  # events kept for it (cluster/hints.py), not yet delivered
    hints_dropped: int = 0  # hints for it dropped (older than S4_HINT_TTL_HOURS, or hints off), since start
    hints_delivered: int = 0  # hints it acknowledged, since start
    #: Merkle anti-entropy with it since start (cluster/anti_entropy.py): exchanges, differences found, keys
    #: repaired (either way), bytes shipped (either way)
    anti_entropy: dict[str, int] = field(default_factory=dict)


class ClusterStatus(Protocol):
    """The node's pool and the liveness of its members (docs/architecture/replication.md, "Node life")."""

    async def health(self) -> dict[str, Any]:
        """The document of ``GET /api/admin/cluster/health``: cluster, node_id, mode, nodes, pools."""
        ...

    def peer_health(self) -> list[PeerHealth]:
        """Per-peer numbers, in the process that runs the heartbeat; empty elsewhere (and in single mode)."""
        ...

    def quorum_failures(self) -> int:
        """Requests this node answered 503 because fewer than W replicas acknowledged a write or fewer than R
        answered a read, since start; 0 outside the process that coordinates."""
        ...

    async def repair_status(self) -> dict[str, Any]:
        """The document of ``GET /api/admin/cluster/repair-status`` without its ``scrub`` part: per peer the hints
        pending and the last anti-entropy exchange (cluster/node.py ``repair_document``)."""
        ...

    async def drain_node(self, node_id: str, on: bool) -> dict[str, Any]:
        """Start (``on``) or cancel draining ``node_id`` of the pool (cluster/drain.py): ``{"node_id", "draining",
        "hints_pending"}``. KeyError: no such member; ServiceUnavailableError: it did not answer."""
        ...

    def is_draining(self) -> bool:
        """This node drains: ``/health`` answers 503 so load balancers and gateways take it out."""
        ...


class SingleNodeStatus:
    """S4_MODE=single: a pool of one, this node, always alive."""

    def __init__(self, node_id: str, http_addr: str | None) -> None:
        self.node_id, self.http_addr = node_id, http_addr

    async def health(self) -> dict[str, Any]:
        node = {"id": self.node_id, "pool": None, "http_addr": self.http_addr, "grpc_addr": None, "state": "alive",
                "last_seen": int(time.time() * 1000)}
        return {"cluster": None, "node_id": self.node_id, "mode": "single", "nodes": [node], "pools": []}

    def peer_health(self) -> list[PeerHealth]:
        return []

    def quorum_failures(self) -> int:
        return 0

    async def drain_node(self, node_id: str, on: bool) -> dict[str, Any]:
        raise KeyError(node_id)  # a single node has no pool to hand off to

    def is_draining(self) -> bool:
        return False

    async def repair_status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "mode": "single", "catch_up": None, "anti_entropy": None, "peers": {}}
