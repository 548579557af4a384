"""The journal on a full disk (issue 18 item 9): a failed write or segment roll leaves the log as it was and the
next write works once there is room."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from s4.journal import EventDraft, EventType, Journal, writer
from s4.journal.segment import create_segment, list_segments


def drafts(n: int, start: int = 0) -> list[EventDraft]:
    return [EventDraft(EventType.BUCKET_CREATED, {"bucket": f"bucket-{start + i}"}) for i in range(n)]


def no_space(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_issue18_failed_segment_roll_keeps_the_tail_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, origin="n1", segment_size_bytes=64)
    journal.write_batch(drafts(2))  # the segment is past its size: the next write rolls
    with monkeypatch.context() as m:
        m.setattr(writer, "create_segment", no_space)
        with pytest.raises(OSError) as exc:
            journal.write_batch(drafts(1, 2))
    assert exc.value.errno == errno.ENOSPC
    assert journal.last_seq == 2
    journal.write_batch(drafts(1, 3))  # room again: the roll succeeds (before the fix: a closed descriptor)
    assert [e.payload["bucket"] for e in journal.read()] == ["bucket-0", "bucket-1", "bucket-3"]
    journal.close()
    again = Journal(tmp_path, origin="n1")
    assert [e.seq for e in again.read()] == [1, 2, 3]
    again.close()


def test_issue18_segment_creation_that_fails_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(OSError):
            create_segment(tmp_path, 1, 0)
    assert list_segments(tmp_path) == []
    create_segment(tmp_path, 1, 0)  # a retry is not refused by a leftover (O_EXCL)
    assert len(list_segments(tmp_path)) == 1
