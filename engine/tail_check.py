"""The journal's last batch and the volume bytes it names: why the two fsyncs may overlap, and the start-up check.

A batch is durable when its events are in the journal and the bytes they name are in the volumes, each behind an
fdatasync. Run one after the other, the two fsyncs are two disk round trips in every write's latency; the
sequencer runs them in parallel (``Sequencer._make_durable``) and answers only after both. For that moment the
journal can hold a record whose bytes are not yet durable. Batches are serial (the next one is decided only after
every sync of this one has completed), so only the journal's *last* record can be in that state, and only if the
machine went down inside that moment: a process crash keeps every written byte in the page cache. Nothing in
that record was acknowledged.

At start-up, before anything is replayed into the views (``settle_tail``):

* after a machine crash (the views' boot-id marker is from another boot) or where no boot id is known, every
  location whose bytes the last record's command wrote (``written``; a deduplicated chunk was durable before, and
  its rot is not this record's fault) is verified (record header, digest, block checksums). If one fails, the record
  is cut from the journal, exactly like a torn tail. A location in a volume file that no longer exists is skipped: new
  bytes only ever go to a worker's active volume, whose file is created and its directory entry fsynced before
  the first append, so a missing file means an older blob that compaction moved (the projector keeps the
  blob's indexed location, not the one the writer saw);
* always, the volumes the last record names are fdatasynced: after a process crash their bytes may be only in
  the page cache, and they must be durable before replay makes the record visible.

Only batches this check can judge are overlapped: one journal record, and no event that names a new location
without its size (compaction's ``blob.moved``). Other batches sync their volumes before the journal write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from s4.journal import CorruptJournalError, Event, EventType, Journal
from s4.journal.segment import list_segments

from .model import BlobLocation
from .volumes.store import VolumeStore

log = logging.getLogger(__name__)
UNCHECKABLE = frozenset({EventType.BLOB_MOVED})  # names a new location without the size verification needs


def checkable(events: Iterable[Event]) -> bool:
    """True if ``settle_tail`` can verify every location these events name."""
    return not any(e.type in UNCHECKABLE for e in events)


def locations(events: Iterable[Event]) -> list[BlobLocation]:
    """The chunk locations whose bytes the events' command wrote (``written``: deduplicated chunks were durable
    before it, and bit rot in one of them is the scrubber's to find, never a reason to cut an acknowledged record);
    for an event from before ``written`` existed, every location it names (``blobs_at``)."""
    out = []
    for e in events:
        written = e.payload.get("written")
        for loc in e.payload.get("blobs_at", ()):
            if written is None or loc[0] in written:
                out.append(BlobLocation.from_record(loc))
    return out


def settle_tail(journal: Journal, volumes: VolumeStore, *, verify: bool, witness: int = 0) -> str | None:
    """Make the journal's last record safe to replay (see the module docstring); returns a note if it was cut.

    A record at or below ``witness`` (the trusted views' last_seq) was acknowledged: damage under it is
    corruption (CorruptJournalError), never a reason to cut it.
    """
    tail = journal.tail_record()
    if tail is None:
        return None
    named = locations(tail.events)
    if verify:
        problem = _first_problem(volumes, named)
        if problem is not None and tail.events[0].seq <= witness:
            raise CorruptJournalError(list_segments(journal.directory)[-1].name, tail.offset,
                                      f"the volume bytes of seq {tail.events[0].seq} are damaged ({problem}), "
                                      f"but the views prove it was committed (they hold seq {witness})")
        if problem is not None:
            note = (f"journal: cut the last record (seq {tail.events[0].seq}-{tail.events[-1].seq}, never "
                    f"acknowledged): {problem}")
            log.warning("%s", note)
            journal.cut_tail(tail.offset, tail.events[0].seq - 1)
            return note
    volumes.sync({loc.volume for loc in named})
    return None


def _first_problem(volumes: VolumeStore, named: Sequence[BlobLocation]) -> str | None:
    for loc in named:
        if not os.path.exists(volumes.directory / loc.volume):
            continue
        problem = volumes.verify_blob(loc)
        if problem is not None:
            return f"{loc.volume} at {loc.offset}: {problem}"
    return None
