"""The volume fdatasyncs of a batch, run on helper threads while the sequencer writes and syncs the journal.

The sequencer makes a batch durable with one journal fdatasync and, at the same time, one fdatasync per volume the
batch's commands wrote to (sequencer.py ``_make_durable``; docs/architecture/volumes.md, "Durability"). With
several HTTP workers a batch usually names one volume per worker. Each batch used to hand its volumes to a
``ThreadPoolExecutor`` and wait with ``concurrent.futures.wait``: a Future, a work item, a waiter, three
Conditions and their locks per volume and batch, ~57 µs of CPU per hand-off on the 2-core VM against ~18 µs for
a hand-off through two plain locks (docs/performance.md, "Multi-worker commit path"). Here each helper is one
long-lived thread with a ``go`` and a ``done`` lock: handing it a volume is one release, waiting for it one acquire.

One caller at a time (the sequencer's batches are strictly one at a time: GroupCommitQueue). A helper's failure is
returned by ``wait``, never lost; ``wait`` returns only when every helper started by ``start`` has finished, so no
batch is retried or followed while a sync of it still runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable

MAX_HELPERS = 4  # as many volumes synced at once; more volumes in one batch share helpers (rare: compaction)


class _Helper:
    """One thread that runs ``sync(names)`` each time it is handed names, reporting the failure if any."""

    def __init__(self, sync: Callable[[Iterable[str]], None], name: str) -> None:
        self._sync = sync
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._names: tuple[str, ...] = ()
        self._error: BaseException | None = None
        self._pending = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def start(self, names: tuple[str, ...]) -> None:
        self._names, self._error, self._pending = names, None, True
        self._go.release()

    def wait(self) -> BaseException | None:
        self._done.acquire()
        return self._error

    def close(self) -> None:
        """Stop the thread once it has finished whatever it was handed (a sync already started still completes
        and is still reported to its waiter)."""
        self._closing = True
        try:
            self._go.release()
        except RuntimeError:  # a start's release not yet taken: the thread runs that work, then sees the close
            pass
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._go.acquire()
            if self._pending:
                self._pending = False
                try:
                    self._sync(self._names)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, which raises it
                    self._error = exc
                finally:
                    self._done.release()
            if self._closing:
                return


class VolumeSyncers:
    """``start`` syncs volumes in parallel on helper threads; ``wait`` blocks until all of them are done."""

    def __init__(self, sync: Callable[[Iterable[str]], None], *, max_helpers: int = MAX_HELPERS,
                 name: str = "volume-sync") -> None:
        self._sync = sync
        self._max = max(1, max_helpers)
        self._name = name
        self._helpers: list[_Helper] = []
        self._lock = threading.Lock()  # start/close may race at shutdown; batches themselves never overlap
        self._closed = False

    def start(self, volumes: Collection[str]) -> list[_Helper]:
        """Begin syncing ``volumes`` (one helper each, up to ``max_helpers``; beyond that helpers take several);
        pass the result to ``wait``. Raises RuntimeError once closed."""
        names = sorted(volumes)
        count = min(len(names), self._max)
        with self._lock:
            if self._closed:
                raise RuntimeError("volume syncers are closed")
            while len(self._helpers) < count:
                self._helpers.append(_Helper(self._sync, f"{self._name}-{len(self._helpers)}"))
            started = self._helpers[:count]
        for i, helper in enumerate(started):
            helper.start(tuple(names[i::count]))
        return started

    @staticmethod
    def wait(started: list[_Helper]) -> BaseException | None:
        """Wait for every helper ``start`` set going; the first failure among them, or None."""
        failed = None
        for helper in started:
            error = helper.wait()
            if failed is None:
                failed = error
        return failed

    def close(self) -> None:
        """Stop the helper threads (none may be syncing: call it after the last batch)."""
        with self._lock:
            self._closed, helpers, self._helpers = True, self._helpers, []
        for helper in helpers:
            helper.close()
