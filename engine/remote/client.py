"""The worker-process side: the commit path of an HTTP worker (engine/ports.py) and the stand-ins it gives the
engine for the local Sequencer, Jobs and login throttle, which forward over its LoopChannel.

Engine code cannot tell the difference: ``execute`` returns the decider's result or raises its error exactly
as the in-process sequencer would, after the event is durable in the sequencer process.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import datadir
from ..model import BlobLocation
from ..ports import NameClaim, NameSpace, Opened, PeerHealth
from ..sequencer import Command
from ..space import SpaceGuard
from ..views.env import Views
from ..volumes.store import VolumeStore
from .loop_channel import LoopChannel

if TYPE_CHECKING:
    from ..engine import EngineOptions

STATUS_TIMEOUT_S = 30.0

log = logging.getLogger("s4.engine.remote")


def _command_message(command: Command) -> dict[str, Any]:
    message: dict[str, Any] = {"op": "cmd", "name": command.name, "args": command.args, "actor": command.actor,
                               "volumes": list(command.volumes)}
    if command.blobs:  # a pool node's small write: its bytes, for the supervisor's replicator (Command.blobs)
        message["blobs"] = [list(blob) for blob in command.blobs]
    return message


class RemoteSequencer:
    """Submits commands to the node's sequencer process."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    def submit(self, command: Command) -> concurrent.futures.Future[Any]:
        return self.channel.request(_command_message(command))

    async def execute(self, command: Command) -> Any:
        return await self.channel.call(_command_message(command))

    def execute_sync(self, command: Command) -> Any:
        return self.submit(command).result()

    @property
    def stats(self) -> tuple[int, int]:
        """Batch statistics live in the sequencer process; a worker has none of its own."""
        return 0, 0

    def close(self) -> None:
        self.channel.close()


class RemoteIam:
    """Node-wide IAM state that is not in the views: the login throttle, kept by the sequencer process."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def throttle(self, action: str, username: str, client: str) -> None:
        await self.channel.call({"op": "throttle", "action": action, "username": username, "client": client})


class RemoteJobs:
    """The admin API's view of the background jobs, which run once per node in the sequencer process."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await self.channel.call({"op": "job", "method": method, "kwargs": kwargs})

    async def lifecycle(self, dry_run: bool | None = None) -> dict[str, Any]:
        return await self._call("lifecycle", dry_run=dry_run)  # type: ignore[no-any-return]

    async def compaction(self, dry_run: bool | None = None, threshold: float | None = None,
                         max_volumes: int | None = None) -> dict[str, Any]:
        return await self._call("compaction", dry_run=dry_run, threshold=threshold,  # type: ignore[no-any-return]
                                max_volumes=max_volumes)

    async def scrubber(self, throttled: bool = False) -> dict[str, Any]:
        return await self._call("scrubber", throttled=throttled)  # type: ignore[no-any-return]

    async def scrub_status(self) -> dict[str, Any]:
        """The scrubber's progress and heals (engine/jobs/service.py ``Jobs.scrub_status``), kept by the
        sequencer process."""
        return await self._call("scrub_status")  # type: ignore[no-any-return]

    def status(self, name: str) -> dict[str, Any]:
        """Blocking (call it off the event loop): the status is a few dict reads in the sequencer process."""
        fut = self.channel.request({"op": "job", "method": "status", "kwargs": {"name": name}})
        return fut.result(STATUS_TIMEOUT_S)  # type: ignore[no-any-return]


class RemoteCluster:
    """The cluster's status (engine/ports.py ``ClusterStatus``) in an HTTP worker: the heartbeat runs in the
    supervisor, which answers the health document over the channel."""

    def __init__(self, channel: LoopChannel, drain_marker: Path | None = None) -> None:
        """``drain_marker``: the file the supervisor keeps while the node drains (tools/server.py), so ``/health``
        needs no call to it."""
        self.channel = channel
        self.drain_marker = drain_marker

    async def health(self) -> dict[str, Any]:
        return await self.channel.call({"op": "cluster", "method": "health"})  # type: ignore[no-any-return]

    async def drain_node(self, node_id: str, on: bool) -> dict[str, Any]:
        return await self.channel.call({"op": "cluster", "method": "drain_node",  # type: ignore[no-any-return]
                                         "node_id": node_id, "on": on})

    def is_draining(self) -> bool:
        return self.drain_marker is not None and self.drain_marker.exists()

    async def repair_status(self) -> dict[str, Any]:
        return await self.channel.call({"op": "cluster", "method": "repair_status"})  # type: ignore[no-any-return]

    def peer_health(self) -> list[PeerHealth]:
        """None here: the supervisor publishes the peer metrics to the multi-process files every worker reads."""
        return []

    def quorum_failures(self) -> int:
        return 0  # counted and published by the supervisor, like the peer metrics


class RemoteKeyReads:
    """The quorum reads (engine/ports.py ``KeyReadPort``) in an HTTP worker: the supervisor runs the cluster node,
    so the worker asks it to settle a key before reading it from the views it shares."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def settle_key(self, bucket: str, key: str) -> None:
        await self.channel.call({"op": "settle", "kind": "key", "bucket": bucket, "ident": key})

    async def settle_upload(self, bucket: str, upload_id: str) -> None:
        await self.channel.call({"op": "settle", "kind": "upload", "bucket": bucket, "ident": upload_id})

    async def settle_bucket(self, name: str) -> None:
        await self.channel.call({"op": "settle", "kind": "bucket", "bucket": name, "ident": name})

    async def settle_listing(self, bucket: str, answered: Sequence[str], stale: Sequence[str], in_flight: bool) -> None:
        """A listing merged here, before it is answered: the supervisor repairs and covers (cluster/listings.py)."""
        await self.channel.call({"op": "settle", "kind": "listing", "bucket": bucket, "ident": "",
                                 "answered": list(answered), "stale": list(stale), "in_flight": in_flight})


class RemoteBlobRepair:
    """Healing of a bad blob (engine/ports.py ``BlobRepairPort``) in an HTTP worker: the supervisor runs the cluster
    node and its blob service, so it fetches the replica's copy and repoints the index; the worker then reads the
    healed copy from the volumes and views it shares (channel op ``repair``)."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def repair(self, location: BlobLocation, problem: str, cause: str = "read") -> bool:
        return bool(await self.channel.call({"op": "repair", "hash": location.hash, "volume": location.volume,
                                             "offset": location.offset, "size": location.size,
                                             "problem": problem, "cause": cause}))


class RemoteBlobPush:
    """A large body's chunks copied to the peers during its upload (engine/ports.py ``BlobPushPort``) from an HTTP
    worker: the supervisor runs the cluster node, so the worker names each new chunk to it (channel op ``push``,
    not waited for) and the supervisor reads it from the volumes it shares and sends it (cluster/blob_push.py)."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    def stored(self, location: BlobLocation) -> None:
        try:
            self.channel.request({"op": "push", "hash": location.hash, "volume": location.volume,
                                  "offset": location.offset, "size": location.size})
        except Exception:  # noqa: BLE001 - only a head start: the peers fetch the chunk with the write otherwise
            log.debug("naming a stored chunk to the supervisor failed", exc_info=True)


class RemoteIamFeed:
    """The registry pool's IAM (engine/ports.py ``IamFeedPort``) in an HTTP worker: the supervisor follows it, so
    a refresh runs there (channel op ``iam_refresh``); the worker then reads the views it shares."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def refresh(self) -> None:
        await self.channel.call({"op": "iam_refresh"})


class RemoteNames:
    """The name register (engine/ports.py ``BucketNamesPort``: bucket names and usernames) in an HTTP worker of a
    cluster node: the supervisor runs the cluster node, so each register step goes over the channel and runs there
    (the channel op ``names`` passes the keyword arguments, ``space`` included, to the supervisor's port)."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel

    async def _call(self, method: str, **kwargs: Any) -> NameClaim:
        return NameClaim.from_record(await self.channel.call({"op": "names", "method": method, "kwargs": kwargs}))

    async def create(self, name: str, owner: str, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return await self._call("create", name=name, owner=owner, token=token, space=str(space))

    async def mark_deleting(self, name: str, token: str, incarnation: int | None = None,
                            space: str = NameSpace.BUCKET) -> NameClaim:
        return await self._call("mark_deleting", name=name, token=token, incarnation=incarnation, space=str(space))

    async def finish_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return await self._call("finish_delete", name=name, incarnation=incarnation, token=token, space=str(space))

    async def abort_delete(self, name: str, incarnation: int, token: str, space: str = NameSpace.BUCKET) -> NameClaim:
        return await self._call("abort_delete", name=name, incarnation=incarnation, token=token, space=str(space))

    async def list_buckets(self, registry_pool: str) -> list[dict[str, Any]]:
        """Several pools: every live bucket of the cluster (``RegisterNames.list_buckets``)."""
        return list(await self.channel.call({"op": "names", "method": "list_buckets",
                                             "kwargs": {"registry_pool": registry_pool}}))

    async def pool_of(self, name: str, registry_pool: str) -> str | None:
        """Several pools: the pool a live bucket is pinned to (cluster/buckets_register.py ``RegisterNames``)."""
        pool = await self.channel.call({"op": "names", "method": "pool_of",
                                        "kwargs": {"name": name, "registry_pool": registry_pool}})
        return None if pool is None else str(pool)


class ChannelCommitPath:
    """An HTTP worker process's commit path: it writes its own volumes and reads the views directly, but owns
    neither the journal nor the LMDB writer nor the data-directory lock (the supervisor holds them and has replayed
    the journal before starting any worker): commands, background-job calls and the login throttle go over
    ``channel`` to the supervisor (docs/architecture/processes.md)."""

    def __init__(self, channel: LoopChannel) -> None:
        self.channel = channel
        self._data_dir = Path()
        self._views: Views | None = None

    def claim(self, options: EngineOptions) -> str:
        """No lock (the supervisor holds it); the node id the supervisor's engine stored (a worker never sets one)."""
        self._data_dir = Path(options.data_dir)
        return datadir.node_id(self._data_dir)

    def open(self, volumes: VolumeStore, space: SpaceGuard) -> Opened:
        self._views = Views(self._data_dir / "views")
        return Opened(views=self._views, port=RemoteSequencer(self.channel), login_throttle=RemoteIam(self.channel),
                      jobs=RemoteJobs(self.channel))

    def close(self) -> None:
        views, self._views = self._views, None
        if views is not None:
            views.close()
