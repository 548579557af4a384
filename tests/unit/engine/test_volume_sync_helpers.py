"""engine/volumes/sync_helpers.py: a batch's volume fsyncs on long-lived helper threads (the sequencer's step 3).

What the sequencer relies on: every volume handed to ``start`` is synced exactly once, in parallel; ``wait`` returns
only after all of them finished and reports a failure; helpers are reused from batch to batch; closing stops them,
also while a batch is being handed over."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest

from s4.engine.volumes.sync_helpers import VolumeSyncers

WAIT_S = 10.0


def helper_threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("volume-sync-") and t.ident is not None}


def test_each_volume_is_synced_once_and_in_parallel() -> None:
    both = threading.Barrier(2, timeout=WAIT_S)  # breaks unless the two syncs run at the same time
    synced: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def sync(names: Iterable[str]) -> None:
        with lock:
            synced.append(tuple(names))
        both.wait()

    syncers = VolumeSyncers(sync)
    try:
        assert syncers.wait(syncers.start({"w01-00000001.vol", "w02-00000001.vol"})) is None
        assert sorted(synced) == [("w01-00000001.vol",), ("w02-00000001.vol",)]
    finally:
        syncers.close()


def test_a_failure_is_reported_and_wait_still_waits_for_the_other_syncs() -> None:
    release = threading.Event()
    failed_once = threading.Event()

    def sync(names: Iterable[str]) -> None:
        (name,) = tuple(names)
        if name == "bad.vol":
            failed_once.set()
            raise OSError(5, "simulated fsync failure")
        assert release.wait(WAIT_S)

    syncers = VolumeSyncers(sync)
    try:
        started = syncers.start({"bad.vol", "slow.vol"})
        outcome: list[BaseException | None] = []
        waiter = threading.Thread(target=lambda: outcome.append(syncers.wait(started)))
        waiter.start()
        assert failed_once.wait(WAIT_S)
        waiter.join(0.2)
        assert waiter.is_alive()  # the slow volume's sync still runs: no retry, no next batch before it ends
        release.set()
        waiter.join(WAIT_S)
        assert not waiter.is_alive()
        assert isinstance(outcome[0], OSError)
    finally:
        release.set()
        syncers.close()


def test_helpers_are_reused_from_batch_to_batch_and_bounded() -> None:
    synced: list[str] = []
    lock = threading.Lock()

    def sync(names: Iterable[str]) -> None:
        with lock:
            synced.extend(names)

    before = helper_threads()
    syncers = VolumeSyncers(sync, max_helpers=2)
    try:
        for batch in range(50):
            volumes = {f"w01-{batch}.vol", f"w02-{batch}.vol", f"w00-{batch}.vol"}  # three volumes, two helpers
            assert syncers.wait(syncers.start(volumes)) is None
        assert len(helper_threads() - before) == 2
        assert sorted(synced) == sorted(f"w0{w}-{b}.vol" for w in range(3) for b in range(50))  # each once
    finally:
        syncers.close()
    assert helper_threads() - before == set()


def test_close_stops_the_helpers_and_refuses_new_batches() -> None:
    before = helper_threads()
    syncers = VolumeSyncers(lambda names: None)
    assert syncers.wait(syncers.start({"a.vol", "b.vol"})) is None
    syncers.close()
    assert helper_threads() - before == set()
    with pytest.raises(RuntimeError):
        syncers.start({"a.vol"})
    syncers.close()  # twice is harmless


def test_a_sync_running_as_close_begins_still_completes() -> None:
    """Close while a helper syncs: the sync finishes, its waiter gets the answer, then the thread ends."""
    entered = threading.Event()
    release = threading.Event()

    def sync(names: Iterable[str]) -> None:
        entered.set()
        assert release.wait(WAIT_S)

    before = helper_threads()
    syncers = VolumeSyncers(sync)
    started = syncers.start({"a.vol"})
    assert entered.wait(WAIT_S)
    closer = threading.Thread(target=syncers.close)
    closer.start()
    release.set()
    assert syncers.wait(started) is None
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert helper_threads() - before == set()


def test_close_right_after_start_never_loses_the_handed_over_work() -> None:
    """Close racing a hand-over (the helper may not have taken its work yet): the work still runs and its waiter
    returns, every time (a lost hand-over would leave the waiter blocked: the run is bounded by a join)."""
    synced: list[str] = []
    before = helper_threads()

    def rounds() -> None:
        for i in range(200):
            syncers = VolumeSyncers(lambda names: synced.extend(names))
            started = syncers.start({f"{i}.vol"})
            syncers.close()
            assert syncers.wait(started) is None

    runner = threading.Thread(target=rounds, daemon=True)
    runner.start()
    runner.join(WAIT_S * 3)
    assert not runner.is_alive()
    assert sorted(synced) == sorted(f"{i}.vol" for i in range(200))
    assert helper_threads() - before == set()
