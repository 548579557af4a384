"""s4.journal: the ordered, durable event log of a node. Imports no other s4 package."""

from .codec import decode_event, encode_event
from .errors import CorruptJournalError, JournalClosedError, JournalError
from .events import NODE_LOCAL, REPLICATED, SECRET_FIELDS, Event, EventDraft, EventType, redacted
from .groupcommit import GroupCommitQueue
from .hlc import HybridClock
from .recovery import RecoveryReport, recover
from .writer import Journal

__all__ = [
    "NODE_LOCAL",
    "REPLICATED",
    "SECRET_FIELDS",
    "CorruptJournalError",
    "Event",
    "EventDraft",
    "EventType",
    "GroupCommitQueue",
    "HybridClock",
    "Journal",
    "JournalClosedError",
    "JournalError",
    "RecoveryReport",
    "decode_event",
    "encode_event",
    "recover",
    "redacted",
]
