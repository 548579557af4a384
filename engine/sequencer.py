"""The node's single writer: commands in, durable events and updated views out.

A command is data (a decider name, msgpack-able args, the actor), so commands can later arrive from other
worker processes. For each group-committed batch, on the sequencer thread:

  1. open one LMDB write transaction;
  2. per command, in a nested transaction: run its decider against the views as they stand (including earlier
     commands of this batch); the decider validates and emits events, each stamped (seq, hlc) and applied at
     once; an S3Error aborts only that command's nested transaction -- a failed request changes nothing;
  3. fdatasync every volume the batch's commands still name       (bytes durable before any event names them;
     requests made their own bytes durable already: volumes/group_sync.py; compaction's moves name w00)
  4. write all events with one write + fdatasync                  (the commit point: acknowledged from here)
  5. commit the LMDB transaction (views + last_seq together; no fsync of its own: views/unsynced.py)
  6. complete each command's future.

A crash before 4 leaves no event and unreferenced volume bytes (reclaimed by compaction); a crash between 4 and
5 is repaired at start-up by replaying the journal past the views' ``last_seq``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lmdb

from s4.journal import Event, EventDraft, EventType, GroupCommitQueue, Journal

from . import projector
from .errors import ErrorCode, S3Error
from .views.env import Views
from .views.records import Tx
from .volumes.store import VolumeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Command:
    """A request to change state: which decider, its arguments, who asked, and volumes it wrote to."""

    name: str
    args: dict[str, Any]
    actor: str = ""
    volumes: tuple[str, ...] = ()


class Decision:
    """What a decider sees: the views (read/write through ``tx``) and ``emit`` to record facts."""

    def __init__(self, tx: Tx, journal: Journal, seq: int, actor: str) -> None:
        self.tx = tx
        self._journal = journal
        self.seq = seq
        self.actor = actor
        self.events: list[Event] = []

    def emit(self, type: EventType, payload: dict[str, Any]) -> Event:
        """Stamp an event, apply it to the views now (later commands see it), and queue it for the journal."""
        self.seq += 1
        event = self._journal.stamp(EventDraft(type, payload, self.actor), self.seq)
        projector.apply(self.tx, event)
        self.events.append(event)
        return event


Decider = Callable[[Decision, dict[str, Any]], Any]


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    events: list[Event] = field(default_factory=list)


class Sequencer:
    """Runs deciders one batch at a time on one thread; see the module docstring for the steps."""

    def __init__(self, journal: Journal, views: Views, volumes: VolumeStore,
                 deciders: dict[str, Decider]) -> None:
        self.journal = journal
        self.views = views
        self.volumes = volumes
        self.deciders = deciders
        self._queue: GroupCommitQueue[Command, Any] = GroupCommitQueue(self._process, name="sequencer")

    def submit(self, command: Command) -> concurrent.futures.Future[Any]:
        """Queue a command from any thread; the future completes when its batch is durable."""
        return self._queue.submit_sync(command)

    async def execute(self, command: Command) -> Any:
        return await self._queue.submit(command)

    def execute_sync(self, command: Command) -> Any:
        return self._queue.submit_sync(command).result()

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

    def _process(self, batch: list[Command]) -> Sequence[Any]:
        while True:
            try:
                return self._commit(batch)
            except lmdb.MapFullError:
                self.views.grow()

    def _commit(self, batch: list[Command]) -> list[Any]:
        env = self.views.env
        txn = env.begin(write=True)
        try:
            seq = self.journal.last_seq
            outcomes = []
            for cmd in batch:
                outcome = self._decide(env, txn, cmd, seq)
                seq += len(outcome.events)
                outcomes.append(outcome)
            events = [e for o in outcomes for e in o.events]
            if events:
                volumes = {v for cmd, o in zip(batch, outcomes, strict=True) if o.events for v in cmd.volumes}
                self.volumes.sync(volumes)
                self.journal.write_events(events)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.Error:
            # The events are durable facts now: the batch must never be decided again (that would journal a second
            # copy). Project exactly these events, as start-up replay would, growing the map if that was the cause.
            log.warning("LMDB commit failed after the journal write; applying the %d journaled events", len(events))
            apply_events(self.views, events)
        return [o.error if o.error is not None else o.result for o in outcomes]

    def _decide(self, env: Any, txn: Any, cmd: Command, seq: int) -> _Outcome:
        decider = self.deciders.get(cmd.name)
        if decider is None:
            return _Outcome(error=S3Error(ErrorCode.INTERNAL_ERROR, f"unknown command {cmd.name}"))
        child = env.begin(write=True, parent=txn)
        decision = Decision(Tx(child, self.views.dbs), self.journal, seq, cmd.actor)
        try:
            result = decider(decision, cmd.args)
        except lmdb.MapFullError:
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
        return _Outcome(result=result, events=decision.events)


def apply_events(views: Views, events: list[Event]) -> None:
    """Project ``events`` in one LMDB transaction (growing the map if needed); used by replay and the tools."""
    while True:
        try:
            with views.env.begin(write=True) as txn:
                tx = Tx(txn, views.dbs)
                for event in events:
                    projector.apply(tx, event)
            return
        except lmdb.MapFullError:
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
