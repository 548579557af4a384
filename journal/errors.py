"""Journal error family.

    JournalError
     +-- CorruptJournalError   damage before the durable end: start-up refuses (names segment and offset)
     +-- JournalClosedError    append after close()
"""

from __future__ import annotations


class JournalError(Exception):
    """Base of every error the journal raises."""


class CorruptJournalError(JournalError):
    """A frame before the durable end failed its checks; the log cannot be trusted past it."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(
            f"journal corrupt in segment {segment} at offset {offset}: {reason}. "
            "Refusing to start; inspect with `s4-journal verify` and repair on purpose with "
            "`s4-journal repair` (which truncates the log at this point)."
        )
        self.segment = segment
        self.offset = offset
        self.reason = reason


class JournalClosedError(JournalError):
    """The journal was closed; no further appends are accepted."""
