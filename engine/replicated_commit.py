"""The replicated commit path (S4_MODE=cluster): a command is committed by this node's own sequencer first (the
single-node durability rule: journaled and fsynced here), then the events it committed go to the pool's other
replicas through the ``ReplicationPort`` (engine/ports.py; cluster/replicator.py implements it), and the command's
answer waits until the write quorum holds them. A command the port refuses (this node still catching up) is not
decided at all; one whose quorum fails answers 503 ``ServiceUnavailable`` and is never half-applied: each replica
applies a batch of events whole or not at all.

The composition root (tools/server.py) chooses this path and ``attach``es the cluster's replicator once the node
is wired; until then (start-up: recovery, seeding the root user) commands commit locally and spread by catch-up.
With S4_WORKERS > 1 the supervisor's channel service commits its workers' commands through the same port
(engine/remote/service.py). docs/architecture/replication.md, "The quorum write path".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any

from .local_commit import LocalCommitPath
from .ports import Opened, ReplicationPort
from .sequencer import Command, Sequencer
from .space import SpaceGuard
from .volumes.store import VolumeStore


class ReplicatedPort:
    """The engine's ``CommitPort`` in a cluster node: local commit, then the quorum."""

    def __init__(self, sequencer: Sequencer) -> None:
        self.sequencer = sequencer
        self.replication: ReplicationPort | None = None

    def submit(self, command: Command) -> concurrent.futures.Future[Any]:
        """Node-local commands only (a sealed volume, a damage mark): committed here, never waited for."""
        return self.sequencer.submit(command)

    async def execute(self, command: Command) -> Any:
        replication = self.replication
        if replication is None:
            return await self.sequencer.execute(command)
        replication.admit()
        committed = await self.sequencer.execute_recorded(command)
        await replication.replicate(committed.events)
        return committed.result

    def execute_sync(self, command: Command) -> Any:
        replication = self.replication
        if replication is None:
            return self.sequencer.execute_sync(command)
        replication.admit()
        committed = self.sequencer.execute_recorded_sync(command)
        replication.replicate_sync(committed.events)
        return committed.result

    @property
    def stats(self) -> tuple[int, int]:
        return self.sequencer.stats

    @property
    def batch_sizes(self) -> Any:
        """The local sequencer's commands per group-committed batch: the metrics find it on the engine's port
        (api/journal_metrics.py), which in a pool is this wrapper."""
        return self.sequencer.batch_sizes

    def close(self) -> None:
        self.sequencer.close()


class ReplicatedCommitPath(LocalCommitPath):
    """``LocalCommitPath`` whose port waits for the pool once a replicator is attached."""

    pooled = True  # the views keep the replicated bookkeeping (docs/architecture/views.md, "Flavour")

    def __init__(self) -> None:
        super().__init__()
        self.port: ReplicatedPort | None = None

    def open(self, volumes: VolumeStore, space: SpaceGuard) -> Opened:
        opened = super().open(volumes, space)
        assert self.sequencer is not None
        self.port = ReplicatedPort(self.sequencer)
        return dataclasses.replace(opened, port=self.port)

    def attach(self, replication: ReplicationPort) -> None:
        """From now on every command waits for the write quorum. A port that can send a batch's events to the peers
        while this node's fsync runs (cluster/replicator.py ``send_early``) is told each batch before it is made
        durable; the command still waits for this node's copy too (``replicate`` runs after the commit)."""
        assert self.port is not None, "attach after the engine opened the path"
        self.port.replication = replication
        early, abandoned = getattr(replication, "send_early", None), getattr(replication, "not_durable", None)
        if early is not None and abandoned is not None and self.sequencer is not None:
            self.sequencer.before_durable, self.sequencer.not_durable = early, abandoned

    @property
    def replication(self) -> ReplicationPort | None:
        return None if self.port is None else self.port.replication
