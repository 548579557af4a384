"""The blob index record (``blobs`` database, key = sha256 of the chunk): its one owner.

Value: ``[volume, offset, size, refs]`` or, once a copy of the blob was found damaged,
``[volume, offset, size, refs, bad]`` where ``bad`` lists ``[volume, offset]`` of every location whose bytes failed
their checksums (``blob.damaged``). The blob is damaged while its current location is in that list; a write that
stores the bytes afresh repoints the record to the new copy (healed), and the list keeps the bad places so no late
write can point the blob back at one of them (commands.check_locations). See docs/architecture/dedup.md.
"""

from __future__ import annotations

from typing import Any

VOLUME, OFFSET, SIZE, REFS, BAD = range(5)


def damaged_locations(rec: list[Any]) -> list[list[Any]]:
    return rec[BAD] if len(rec) > BAD else []


def is_damaged(rec: list[Any]) -> bool:
    """True if the blob's current copy is known to be damaged."""
    return len(rec) > BAD and [rec[VOLUME], rec[OFFSET]] in rec[BAD]


def mark_damaged(rec: list[Any], volume: str, offset: int) -> bool:
    """Record ``volume``/``offset`` as a bad place of the blob; True if it is the current one and was not yet."""
    if len(rec) <= BAD:
        rec.append([])
    if [volume, offset] in rec[BAD]:
        return False
    rec[BAD].append([volume, offset])
    return [rec[VOLUME], rec[OFFSET]] == [volume, offset]
