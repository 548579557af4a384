"""Issue 19, the sequencer's ``before_durable`` / ``not_durable`` hooks (engine/sequencer.py), which a pool node uses
to send a batch to its peers while its own fsync runs (cluster/replicator.py ``send_early``).

What the engine promises: the hook gets exactly the events of the batch's recorded commands (not a peer's batch,
not a plain command's), before the journal write; the command's result still comes only after the batch is
durable; a batch that fails after the hook is reported through ``not_durable`` and answered with its error; and a
batch whose events were handed out is never decided a second time (the full-disk retry would give the peers a
second, different decision of the same request).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from helpers.replicas import Node

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.replica import PeerBatch, no_blobs
from s4.engine.sequencer import Command, Committed, Recorded
from s4.journal import Event


class Space:
    """A ``SpaceGuard`` with ballast to give back once, admitting every command."""

    def __init__(self) -> None:
        self.released = 0

    def admits(self, name: str, args: Any) -> bool:
        return True

    def below_reserve(self) -> bool:
        return False

    def release_ballast(self) -> bool:
        self.released += 1
        return self.released == 1

    def rearm_ballast(self) -> None:
        pass


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = Node(tmp_path / "a", "a", lambda: 1_000_000)
    n.run("create_bucket", bucket="b", region="us-east-1")
    assert n.own_events()
    yield n
    n.close()


def hooked(node: Node) -> tuple[list[str], list[list[Event]], list[list[Event]]]:
    order: list[str] = []
    early: list[list[Event]] = []
    abandoned: list[list[Event]] = []
    sequencer = node.sequencer

    def before(events: list[Event]) -> None:
        order.append("before_durable")
        early.append(list(events))

    sequencer.before_durable, sequencer.not_durable = before, abandoned.append
    write = node.journal.write_encoded

    def journal_write(batch: Any) -> int:
        order.append("journal")
        return write(batch)

    node.journal.write_encoded = journal_write  # type: ignore[method-assign]
    return order, early, abandoned


def rename(name: str) -> Command:
    """A command that commits one event (a bucket config), named for the test's reading."""
    return Command("set_bucket_config", {"bucket": "b", "kind": "cors", "value": {"rules": len(name)}}, actor="t")


def test_the_hook_gets_the_recorded_commands_events_before_the_journal_write(node: Node) -> None:
    order, early, abandoned = hooked(node)
    peer = Event(0, 5_000_000 << 16, "z", node.own_events()[0].type, node.own_events()[0].payload)
    results = node.sequencer.commit_now([Recorded(rename("p/")), rename("q/"),
                                         PeerBatch((peer,), no_blobs), Recorded(rename("r/"))])
    assert order == ["before_durable", "journal"]
    committed = [r for r in results if isinstance(r, Committed)]
    assert len(committed) == 2
    assert early == [[*committed[0].events, *committed[1].events]]  # recorded ones only, in seq order
    assert not abandoned


def test_a_batch_without_recorded_events_is_not_handed_out(node: Node) -> None:
    order, early, _ = hooked(node)
    node.sequencer.commit_now([rename("p/"), Recorded(Command("no_such_decider", {}, actor="t"))])
    assert early == [] and order == ["journal"]


def test_a_batch_that_fails_after_the_hook_is_reported_and_answered_with_its_error(node: Node) -> None:
    _, early, abandoned = hooked(node)
    head = node.journal.last_seq

    def failing(events: list[Event], volumes: set[str]) -> int:
        raise OSError(errno.EIO, "the volume sync failed")

    node.sequencer._make_durable = failing  # type: ignore[method-assign]
    results = node.sequencer.commit_now([Recorded(rename("p/"))])
    assert isinstance(results[0], S3Error) and results[0].code is ErrorCode.SERVICE_UNAVAILABLE
    assert abandoned == early and len(early) == 1
    assert node.journal.last_seq == head  # nothing of it is durable


def test_issue19_a_batch_handed_out_before_a_full_disk_is_not_decided_again(node: Node) -> None:
    """Before, a full disk made the sequencer give back its ballast and run the batch again: decided a second time,
    with new stamps (and new version ids), while the peers may hold the first decision."""
    _, early, abandoned = hooked(node)
    node.sequencer.space = Space()  # type: ignore[assignment]
    make_durable = node.sequencer._make_durable
    calls = []

    def full_once(events: list[Event], volumes: set[str]) -> int:
        calls.append(events)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return make_durable(events, volumes)

    node.sequencer._make_durable = full_once  # type: ignore[method-assign]
    results = node.sequencer.commit_now([Recorded(rename("p/"))])
    assert isinstance(results[0], S3Error) and results[0].code is ErrorCode.INSUFFICIENT_STORAGE
    assert len(early) == 1 and abandoned == early
    assert len(calls) == 1  # not decided again
    assert node.sequencer.space.released == 1  # type: ignore[union-attr]
    # The ballast given back serves the next batch.
    assert isinstance(node.sequencer.commit_now([Recorded(rename("q/"))])[0], Committed)


def test_without_the_hook_a_full_disk_batch_is_still_run_again(node: Node) -> None:
    node.sequencer.space = Space()  # type: ignore[assignment]
    make_durable = node.sequencer._make_durable
    calls = []

    def full_once(events: list[Event], volumes: set[str]) -> int:
        calls.append(events)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return make_durable(events, volumes)

    node.sequencer._make_durable = full_once  # type: ignore[method-assign]
    assert isinstance(node.sequencer.commit_now([Recorded(rename("p/"))])[0], Committed)
    assert len(calls) == 2
