"""The node's single writer: commands in, durable events and updated views out.

A command is data (a decider name, msgpack-able args, the actor), so commands can later arrive from other
worker processes. For each group-committed batch, on the sequencer thread:

  1. open one LMDB write transaction;
  2. per command, in a nested transaction: run its decider against the views as they stand (including earlier
     commands of this batch); the decider validates and emits events, each stamped (seq, hlc) and applied at
     once; an S3Error aborts only that command's nested transaction -- a failed request changes nothing;
  3. write all events with one write + fdatasync, and in parallel fdatasync every volume holding bytes the
     batch's commands wrote (one thread per volume); both must complete (the commit point)
  4. commit the LMDB transaction (views + last_seq together; no fsync of its own: views/unsynced.py)
  5. complete each command's future.

Events decided by other nodes enter the same queue as a ``PeerBatch`` (engine/replica.py): in step 2 they are
checked, given local seqs and projected by the same projector in their own nested transaction (a refused batch
leaves nothing), then steps 3-5 make them durable and visible with the commands of the batch.

Step 3 overlaps the journal's fsync with the volumes' only for batches start-up can check (tail_check.py): if the
machine dies between the two, the journal's last record may name bytes that never reached the disk, and start-up
cuts that record (it was never acknowledged). Other batches sync their volumes first. A volume sync that fails
after the journal write cuts the batch back out of the journal and fails its commands.

A full disk (engine/space.py) fails the whole batch with 507 InsufficientStorage and leaves nothing of it: the
journal truncates a failed write, an LMDB commit that cannot be redone cuts the batch back out of the journal, and
the next batch runs normally, so deletes can free space. Below the reserve, commands that grow the store are
refused one by one (``SpaceGuard.admits``) before they are decided.

A crash before 3 completes leaves at most an unacknowledged last record (kept if its bytes are intact) and
unreferenced volume bytes (reclaimed by compaction); a crash between 3 and 4 is repaired at start-up by replaying
the journal past the views' ``last_seq``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s4.journal import Event, EventDraft, EventType, GroupCommitQueue, Journal, JournalClosedError
from s4.journal.hlc import ClockOffsetError, physical_ms

from . import projector, tail_check
from .errors import ErrorCode, PeerBatchRefused, S3Error, ServiceUnavailableError
from .model import Bucket
from .replica import GROWTH_EVENTS, PeerBatch, apply_peer_batch
from .space import SpaceGuard, disk_full_error, is_disk_full
from .views.env import MapFullError, Views, ViewsError
from .views.records import Tx
from .volumes.store import VolumeStore
from .volumes.sync_helpers import VolumeSyncers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Command:
    """A request to change state: which decider, its arguments, who asked, and volumes it wrote to. ``blobs``:
    ``(sha256, bytes)`` of small blobs its events reference, as the caller wrote them (a pool node's replicator
    sends them to the peers inline from there instead of reading them back: engine/remote/service.py); no decider
    reads them."""

    name: str
    args: dict[str, Any]
    actor: str = ""
    volumes: tuple[str, ...] = ()
    blobs: tuple[tuple[bytes, bytes], ...] = ()


class Decision:
    """What a decider sees: the views (read/write through ``tx``) and ``emit`` to record facts."""

    def __init__(self, tx: Tx, journal: Journal, seq: int, actor: str) -> None:
        self.tx = tx
        self._journal = journal
        self.seq = seq
        self.actor = actor
        self.events: list[Event] = []

    def now_ms(self) -> int:
        """The decision's clock: the wall part of a fresh HLC tick (never behind any event this node stamped), so
        a time rule (object lock retention) is judged on the clock that stamps the events it allows."""
        return physical_ms(self._journal.clock.tick())

    def emit(self, type: EventType, payload: dict[str, Any], bucket: Bucket | None = None) -> Event:
        """Stamp an event, apply it to the views now (later commands see it), and queue it for the journal.

        A bucket-scoped event carries the bucket's incarnation (``inc``), so a replica ignores it once that life
        of the bucket is over (docs/architecture/replication.md). ``bucket``: the event's bucket as the decider
        read it in this decision (its incarnation cannot have changed since), which spares a second read of it
        on every object write."""
        if "bucket" in payload and type is not EventType.BUCKET_CREATED and "inc" not in payload:
            if bucket is None or bucket.name != payload["bucket"]:
                bucket = self.tx.bucket(payload["bucket"])
            if bucket is not None and bucket.incarnation is not None:
                payload = dict(payload, inc=bucket.incarnation)
        self.seq += 1
        event = self._journal.stamp(EventDraft(type, payload, self.actor), self.seq)
        projector.apply(self.tx, event)
        self.events.append(event)
        return event


Decider = Callable[[Decision, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Recorded:
    """A command whose caller also wants the events it committed (the replicated commit port sends them to the
    pool's other replicas: engine/replicated_commit.py). Its result is a ``Committed``."""

    command: Command


@dataclass(frozen=True, slots=True)
class Committed:
    """A recorded command's outcome: its decider's result and the events it journaled (in seq order)."""

    result: Any
    events: tuple[Event, ...]


Item = Command | PeerBatch | Recorded


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    events: list[Event] = field(default_factory=list)
    volumes: tuple[str, ...] | set[str] = ()  # volumes holding bytes the events name, synced with the batch


class Sequencer:
    """Runs deciders one batch at a time on one thread; see the module docstring for the steps."""

    def __init__(self, journal: Journal, views: Views, volumes: VolumeStore,
                 deciders: dict[str, Decider], space: SpaceGuard | None = None) -> None:
        self.journal = journal
        self.views = views
        self.volumes = volumes
        self.deciders = deciders
        self.space = space
        self._syncers = VolumeSyncers(lambda names: self.volumes.sync(names))  # a batch's volumes, beside the journal
        self._queue: GroupCommitQueue[Item, Any] = GroupCommitQueue(self._process, name="sequencer")
        #: Called with a batch's events once they are durable, just before they become visible in the views (a
        #: pool node's read gate counts writes still in flight: engine/read_gate.py). Must not raise.
        self.before_visible: Callable[[list[Event]], None] | None = None
        #: Called on the batch's thread with the events of its ``Recorded`` commands once decided, before they are
        #: made durable (a pool node starts sending them to its peers while its own fsync runs: cluster/replicator.py
        #: ``send_early``; the command is still answered only after this batch is durable); ``not_durable`` with the
        #: same list when the batch then fails (nothing of it is durable, visible or answered). Must not raise.
        self.before_durable: Callable[[list[Event]], None] | None = None
        self.not_durable: Callable[[list[Event]], None] | None = None
        self._sent_early = False  # the batch being committed handed events to before_durable

    def submit(self, command: Command) -> concurrent.futures.Future[Any]:
        """Queue a command from any thread; the future completes when its batch is durable. A closed journal
        fails it with ServiceUnavailableError, like every "cannot commit now" (engine/errors.py)."""
        return self._submit(command)

    def submit_peer(self, batch: PeerBatch) -> concurrent.futures.Future[Any]:
        """Queue events decided by other nodes (engine/replica.py), from any thread. The future gives a
        ``PeerBatchResult`` once the new events are journaled, fsynced and in the views, or the refusal
        (``PeerBatchRefused``: ``MissingBlobsError``, ``PeerEventRefused``; ``ClockOffsetError``), which leaves
        nothing of the batch."""
        return self._submit(batch)

    async def apply_peer(self, batch: PeerBatch) -> Any:
        """``submit_peer`` awaited on the event loop."""
        try:
            return await self._queue.submit(batch)
        except JournalClosedError as exc:
            raise _unavailable(exc) from exc

    async def execute_recorded(self, command: Command) -> Committed:
        """``execute``, also giving the events the command committed."""
        committed: Committed = await self.execute(Recorded(command))
        return committed

    def execute_recorded_sync(self, command: Command) -> Committed:
        committed: Committed = self.execute_sync(Recorded(command))
        return committed

    def _submit(self, item: Item) -> concurrent.futures.Future[Any]:
        queued = self._queue.submit_sync(item)
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if answer.cancelled():  # its waiter gave up (a peer's call cancelled): the outcome stands regardless
                return
            error = done.exception()
            if error is None:
                answer.set_result(done.result())
            else:
                answer.set_exception(_unavailable(error))

        queued.add_done_callback(settle)
        return answer

    async def execute(self, command: Command | Recorded) -> Any:
        try:
            return await self._queue.submit(command)
        except JournalClosedError as exc:
            raise _unavailable(exc) from exc

    def execute_sync(self, command: Command | Recorded) -> Any:
        try:
            return self._queue.submit_sync(command).result()
        except JournalClosedError as exc:
            raise _unavailable(exc) from exc

    def commit_now(self, commands: Sequence[Item]) -> Sequence[Any]:
        """Run ``commands`` as one batch on the calling thread (serialised with the sequencer thread's batches);
        returns each one's result or error, once the batch is durable."""
        return [_unavailable(r) if isinstance(r, BaseException) else r
                for r in self._queue.commit_now(list(commands))]

    @property
    def batch_sizes(self) -> Any:
        """Commands per group-committed batch (a ``FixedHistogram``), for metrics."""
        return self._queue.batch_sizes

    @property
    def stats(self) -> tuple[int, int]:
        """(batches, commands) committed so far."""
        return self._queue.batches, self._queue.items

    def close(self) -> None:
        self._queue.close()
        self._syncers.close()

    def _process(self, batch: list[Item]) -> Sequence[Any]:
        while True:
            try:
                results = self._commit(batch)
                if self.space is not None:
                    self.space.rearm_ballast()  # cheap unless a full disk made it give the ballast back
                return results
            except MapFullError:
                self.views.grow()
            except Exception as exc:
                # A full disk failed the whole batch (journal write or sync, volume sync, LMDB): nothing of it is
                # durable or visible (_commit), and the next batch runs normally: a delete can free space.
                if is_disk_full(exc, self.space):
                    if self.space is not None and self.space.release_ballast() and not self._sent_early:
                        log.warning("disk full: a batch of %d commands failed (%s); the space ballast is given "
                                    "back and the batch runs again (deletes and aborts can commit; writes stay "
                                    "refused below the reserve)", len(batch), exc)
                        continue
                    # (A batch whose events went to peers before its fsync is not decided again: the peers may
                    # hold the first decision; the space given back serves the next batch.)
                    log.warning("disk full: a batch of %d commands failed (%s)", len(batch), exc)
                    raise disk_full_error() from exc
                if isinstance(exc, OSError):  # the disk failed a write or a sync: a fault to retry, not a 500
                    log.error("storage error: a batch of %d commands failed (%s)", len(batch), exc)
                    raise ServiceUnavailableError(f"storage error: {exc}") from exc
                raise

    def _commit(self, batch: list[Item]) -> list[Any]:
        env = self.views.env
        txn = env.begin(None, None, True)  # (db, parent, write)
        early: list[Event] = []
        self._sent_early = False
        try:
            seq = self.journal.last_seq
            outcomes = []
            for cmd in batch:
                if isinstance(cmd, PeerBatch):
                    outcome = self._apply_peer(env, txn, cmd, seq)
                elif isinstance(cmd, Recorded):
                    outcome = self._decide(env, txn, cmd.command, seq)
                    if outcome.error is None:
                        outcome.result = Committed(outcome.result, tuple(outcome.events))
                else:
                    outcome = self._decide(env, txn, cmd, seq)
                seq += len(outcome.events)
                outcomes.append(outcome)
            events = [e for o in outcomes for e in o.events]
            start = -1
            early = self._send_early(batch, outcomes)
            if events:
                volumes = {v for o in outcomes if o.events for v in o.volumes}
                start = self._make_durable(events, volumes)
        except BaseException:
            txn.abort()
            self._abandon(early)
            raise
        if events and self.before_visible is not None:
            self.before_visible(events)
        try:
            txn.commit()
        except ViewsError:
            # The events are durable facts now: the batch must never be decided again (that would journal a second
            # copy). Project exactly these events, as start-up replay would, growing the map if that was the cause.
            log.warning("LMDB commit failed after the journal write; applying the %d journaled events", len(events))
            try:
                apply_events(self.views, events)
            except BaseException:
                # Still not projected (a full disk): nobody was acknowledged, so the batch leaves the journal too,
                # or the next batch would be decided against views that lack it and replay would add it later.
                self.journal.cut_tail(start, events[0].seq - 1)
                self._abandon(early)
                raise
        return [o.error if o.error is not None else o.result for o in outcomes]

    def _send_early(self, batch: list[Item], outcomes: list[_Outcome]) -> list[Event]:
        """Hand the recorded commands' events to ``before_durable`` (see there); returns them."""
        if self.before_durable is None:
            return []
        early = [e for item, o in zip(batch, outcomes, strict=True) if isinstance(item, Recorded) for e in o.events]
        if early:
            self.before_durable(early)
            self._sent_early = True
        return early

    def _abandon(self, early: list[Event]) -> None:
        if early and self.not_durable is not None:
            self.not_durable(early)

    def _make_durable(self, events: list[Event], volumes: set[str]) -> int:
        """Step 3: the events in the journal and the bytes they name in the volumes, both fsynced; returns the
        journal offset the batch starts at."""
        batch = self.journal.encode(events)
        if not volumes:
            return self.journal.write_encoded(batch)
        if batch.records > 1 or not tail_check.checkable(events):
            self.volumes.sync(volumes)
            return self.journal.write_encoded(batch)
        syncs = self._syncers.start(volumes)
        try:
            start = self.journal.write_encoded(batch)
        finally:
            failed = self._syncers.wait(syncs)  # no retry and no next batch while a sync of this one still runs
        if failed is not None:
            self.journal.cut_tail(start, batch.first_seq - 1)
            raise failed
        return start

    def _decide(self, env: Any, txn: Any, cmd: Command, seq: int) -> _Outcome:
        decider = self.deciders.get(cmd.name)
        if decider is None:
            return _Outcome(error=S3Error(ErrorCode.INTERNAL_ERROR, f"unknown command {cmd.name}"))
        if self.space is not None and not self.space.admits(cmd.name, cmd.args):
            return _Outcome(error=disk_full_error())  # the disk is down to the reserve kept for freeing space
        child = env.begin(None, txn, True)  # (db, parent, write): positional, py-lmdb's keywords cost ~1,000
        decision = Decision(Tx(child, self.views.dbs, self.views.replicated), self.journal, seq, cmd.actor)
        try:
            result = decider(decision, cmd.args)
        except MapFullError:
            child.abort()
            raise
        except S3Error as exc:
            child.abort()
            return _Outcome(error=exc)
        except Exception as exc:  # a bug in a decider: fail this command only, loudly
            child.abort()
            log.exception("command %s failed", cmd.name)
            return _Outcome(error=exc)
        child.commit()
        return _Outcome(result=result, events=decision.events, volumes=cmd.volumes)

    def _apply_peer(self, env: Any, txn: Any, batch: PeerBatch, seq: int) -> _Outcome:
        """A peer's events in a nested transaction (engine/replica.py); a refusal aborts it: nothing applied."""
        if self.space is not None and any(e.type in GROWTH_EVENTS for e in batch.events) \
                and self.space.below_reserve():
            return _Outcome(error=disk_full_error())
        if not self.views.replicated:  # a peer's event needs the bookkeeping a single node's views leave out
            return _Outcome(error=PeerBatchRefused("this node's views are a single node's projection (no "
                                                   "last-writer-wins bookkeeping): it takes no peer events"))
        child = env.begin(write=True, parent=txn)
        try:
            applied = apply_peer_batch(Tx(child, self.views.dbs), self.journal, seq, batch)
        except MapFullError:
            child.abort()
            raise
        except (PeerBatchRefused, ClockOffsetError) as exc:
            child.abort()
            return _Outcome(error=exc)
        except Exception as exc:  # a projection bug or a malformed event: refuse this batch only, loudly
            child.abort()
            log.exception("a batch of %d peer events failed", len(batch.events))
            return _Outcome(error=exc)
        child.commit()
        return _Outcome(result=applied.result, events=applied.events, volumes=applied.volumes)


def _unavailable(error: BaseException) -> BaseException:
    """A closed journal (or group commit) as the engine's one "cannot commit now" error; other errors as they are."""
    return ServiceUnavailableError(str(error)) if isinstance(error, JournalClosedError) else error


def apply_events(views: Views, events: list[Event]) -> None:
    """Project ``events`` in one LMDB transaction (growing the map if needed); used by replay and the tools."""
    while True:
        try:
            with views.env.begin(write=True) as txn:
                tx = Tx(txn, views.dbs, views.replicated)
                for event in events:
                    projector.apply(tx, event)
            return
        except MapFullError:
            views.grow()


def replay(journal: Journal, views: Views, batch_size: int = 2000) -> int:
    """Apply journal events past the views' ``last_seq``; returns how many were applied."""
    applied = 0
    pending: list[Event] = []
    for event in journal.read(views.last_seq() + 1):
        journal.clock.observe(event.hlc)
        pending.append(event)
        applied += 1
        if len(pending) >= batch_size:
            apply_events(views, pending)
            pending.clear()
    if pending:
        apply_events(views, pending)
    return applied
