"""A peer's inline blob's fdatasync, started as soon as its bytes are written instead of beside the journal's.

A replica stores the blobs an ``ApplyEvents`` carries inline (cluster/blob_server.py ``store_inline``) on its event
loop, then hands the events to the sequencer thread, which projects them and makes the batch durable: the journal's
write + fdatasync and, beside it, an fdatasync of every volume holding a blob the batch names
(engine/sequencer.py ``_make_durable``). Both are on the write's critical path, and on one disk the two fdatasyncs
of one batch contend (each a metadata commit of an appended file).

``EarlySync`` starts the volume's fdatasync on a helper thread the moment ``store_inline`` has written the blob, so
it runs while the message goes to the sequencer thread and is projected; the batch's own sync of that volume then
finds nothing left to write. It is a head start, nothing more: no reply and no commit rests on it. The batch still
syncs the volume itself, and a failure of the early sync is recorded by the volume store (``VolumeSyncError`` for
every later sync of that volume, engine/volumes/store.py) before the batch's sync can run -- the engine's store
syncs this store's volumes through it (``VolumeStore.delegates``, set by cluster/wiring.py) and syncs of one volume
run one at a time -- so the batch fails rather than acknowledging bytes the disk lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable

from ..engine.volumes.store import VolumeStore

log = logging.getLogger("s4.cluster.blobs")

_STOP = None


class EarlySync:
    """One daemon thread that fdatasyncs the volumes it is handed (``start``), coalescing what queued meanwhile."""

    def __init__(self, volumes: VolumeStore, *, name: str = "s4-early-sync") -> None:
        self.volumes = volumes
        self._queue: queue.SimpleQueue[frozenset[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self.synced = 0  # fdatasync calls made (tests, metrics)
        self._thread.start()

    def start(self, names: Iterable[str]) -> None:
        """Begin syncing ``names`` without waiting (from any thread); ignored once closed."""
        if not self._closed:
            self._queue.put(frozenset(names))

    def close(self) -> None:
        """Finish what was handed, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            names, stopping = set(first), False
            while True:  # what was handed while the last sync ran: one fdatasync per volume for all of it
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                names |= more
            for name in names:
                try:
                    self.volumes.sync((name,))
                    self.synced += 1
                except Exception as exc:  # noqa: BLE001 - recorded by the store: the batch's own sync raises it
                    log.warning("early sync of volume %s failed: %s (the batch naming it will fail)", name, exc)
            if stopping:
                return
