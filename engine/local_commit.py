"""The local commit path (engine/ports.py): this process owns the node's journal, the LMDB writer and the sequencer.

Used by a single-process server, by the supervisor of a multi-process one (which also commits its workers'
commands through ``sequencer``: engine/remote/service.py) and by the offline tools. Claiming locks the data
directory (engine/datadir.py) before anything in it is touched; opening recovers the journal against the views,
replays it into them, and starts the sequencer. A replicated pool wraps this path: after ``open`` its ``journal``,
``views`` and ``sequencer`` are the node's, and an event decided elsewhere must enter them through the sequencer
(the one writer), so that the journal's order stays the views' order.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from s4.journal import Event, Journal

from . import commands, datadir
from .datadir import DataDirLock
from .errors import ServiceUnavailableError
from .ports import Opened
from .replica import BlobResolver, PeerBatch, PeerBatchResult, no_blobs
from .sequencer import Sequencer, replay
from .space import BALLAST_NAME, SpaceGuard
from .tail_check import settle_tail
from .views.env import Views
from .views.unsynced import UnsyncedMarker, current_boot_id
from .volumes.store import VolumeStore

if TYPE_CHECKING:
    from .engine import EngineOptions

log = logging.getLogger(__name__)


class LocalCommitPath:
    """Commands are decided and group-committed by a Sequencer in this process, over the journal it opened."""

    #: Whether this path serves in a pool (ReplicatedCommitPath): the data directory is marked pooled when claimed.
    pooled = False

    def __init__(self) -> None:
        self.journal: Journal | None = None
        self.views: Views | None = None
        self.sequencer: Sequencer | None = None
        self._lock: DataDirLock | None = None
        self._unsynced: UnsyncedMarker | None = None
        self._data_dir = Path()
        self._node_id = ""
        self._segment_size_bytes = 0
        self._replicated = True  # the views' flavour this node needs (``claim``)

    def claim(self, options: EngineOptions) -> str:
        """Lock the data directory (the journal's owner is the only process that may), then its node id."""
        data_dir = Path(options.data_dir)
        self._lock = DataDirLock.acquire(data_dir)
        try:
            self._node_id = datadir.node_id(data_dir, options.node_id)
            if self.pooled:
                datadir.mark_pooled(data_dir)
            self._replicated = datadir.pooled(data_dir)
        except BaseException:
            self.close()
            raise
        self._data_dir, self._segment_size_bytes = data_dir, options.segment_size_bytes
        return self._node_id

    def open(self, volumes: VolumeStore, space: SpaceGuard) -> Opened:
        self.views = self._open_views(self._data_dir / "views", self._data_dir / "journal", volumes)
        assert self.journal is not None
        replayed = replay(self.journal, self.views)
        if replayed:
            log.info("replayed %d journal events into the views", replayed)
        space.arm_ballast(self._data_dir / BALLAST_NAME)  # the reserve other processes cannot eat (space.py)
        self.sequencer = Sequencer(self.journal, self.views, volumes, commands.DECIDERS, space)
        return Opened(views=self.views, port=self.sequencer, journal=self.journal)

    def apply_peer_events(self, events: Sequence[Event], resolve: BlobResolver = no_blobs,
                          volumes: Sequence[str] = ()) -> concurrent.futures.Future[PeerBatchResult]:
        """Commit events decided by other nodes through this node's sequencer (the one writer, the same group commit
        as commands): the future gives, per event, applied or already held once they are journaled, fsynced and in
        the views; or the refusal (``PeerBatchRefused``, ``ClockOffsetError``), which leaves nothing. ``resolve``
        finds the referenced blobs this node does not index yet; ``volumes`` are volumes the caller wrote them to.
        The cluster layer (cluster/) calls this; see docs/architecture/replication.md."""
        if self.sequencer is None:
            raise ServiceUnavailableError("the commit path is not open")
        return self.sequencer.submit_peer(PeerBatch(tuple(events), resolve, tuple(volumes)))

    def close(self) -> None:
        """The journal, then the views (synced first where commits skip their fsync), then the lock."""
        journal, self.journal = self.journal, None
        if journal is not None:
            journal.close()
        views, self.views = self.views, None
        unsynced, self._unsynced = self._unsynced, None
        if views is not None:
            if unsynced is not None:
                views.env.sync(True)
                unsynced.clear()
            views.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _open_views(self, path: Path, journal_dir: Path, volumes: VolumeStore) -> Views:
        """The node's views and (``self.journal``) its journal, opened in this order because trusted views witness
        what was committed: every seq up to their ``last_seq`` was acknowledged, so journal recovery refuses to
        end the log below it (journal/recovery.py, rule 5) instead of dropping those events.

        Views without per-commit fsync are trusted where a boot id can tell a process crash from a machine crash
        (views/unsynced.py); after a machine crash they are discarded (no witness) and rebuilt from the journal.
        The journal's last record is then settled against the volumes (tail_check.py)."""
        boot_id = current_boot_id()
        self._unsynced = unsynced = UnsyncedMarker(path, boot_id)
        machine_crashed = unsynced.views_untrusted()
        if machine_crashed:
            log.warning("the views were not synced before the machine restarted: rebuilding them from the journal")
            shutil.rmtree(path)
        views = Views(path, sync=boot_id is None, replicated=self._replicated)
        try:
            witness = views.last_seq()
            self.journal = Journal(journal_dir, origin=self._node_id, segment_size_bytes=self._segment_size_bytes,
                                   witness=witness)
            settle_tail(self.journal, volumes, verify=machine_crashed or boot_id is None, witness=witness)
        except BaseException:
            if self.journal is not None:
                self.journal.close()
                self.journal = None
            views.close()
            raise
        if views.layout_stale():  # their last_seq still witnessed the journal above; their keys must not be read
            log.warning("the views were written in an older key layout: rebuilding them from the journal")
            views.close()
            shutil.rmtree(path)
            views = Views(path, sync=boot_id is None, replicated=self._replicated)
        elif self._replicated and not views.replicated:
            # A single node's views lack the last-writer-wins bookkeeping a pool reads (event identities, tombstones,
            # the Merkle view); the journal, never trimmed, holds every event to project them again with it.
            log.warning("this data directory serves in a pool now: rebuilding its views from the journal with the "
                        "replicated bookkeeping a single node leaves out")
            views.close()
            shutil.rmtree(path)
            views = Views(path, sync=boot_id is None, replicated=True)
        if boot_id is not None:
            unsynced.mark()
        return views
