"""Imported versions: a version copied from another S3 server keeps the source's Last-Modified.

``s4-admin import`` (tools/importer.py) writes each source version through the ordinary PutObject/DeleteObject
commands with an *import stamp* (docs/architecture/imports.md): ``it`` the source's Last-Modified in ms and ``is``
an opaque identity of the source version. The stamp travels in the event (the version record of
``object.version_put``, the payload of ``delete_marker.put``), so replay and every replica derive the same record;
``model.stamped`` then makes ``t`` (Last-Modified, what lifecycle ages count from) the source time instead of the
event's clock. Order among a key's versions stays the HLC's: the importer writes a key's versions oldest first.

One decider check serves both commands (``check``): the time may not lie in the future, and a version whose
``is`` the key already holds is not written again: the command answers with the version already there, so an
importer killed between S4's commit and its own bookkeeping can resend without copying anything twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, S3Error
from .reads import object_id

if TYPE_CHECKING:  # the projector imports this module too, and the sequencer imports the projector
    from .sequencer import Decision

#: The version record's (and delete-marker payload's) fields of an import stamp.
TIME, SOURCE = "it", "is"
MAX_SOURCE_ID = 256  # the importer sends a sha256 hex; anything longer is refused, not stored


def stamp(time_ms: int, source: str) -> dict[str, Any]:
    """The fields an imported version carries (merged into its record or its delete marker's payload)."""
    return {TIME: int(time_ms), SOURCE: source}


def of(rec: dict[str, Any]) -> dict[str, Any]:
    """The import stamp in a record or payload ({} when it has none)."""
    return {k: rec[k] for k in (TIME, SOURCE) if k in rec}


def check(d: Decision, bucket: Any, key: str, imported: dict[str, Any]) -> dict[str, Any] | None:
    """Validate an import stamp at decision time; the key's version already imported from the same source
    version (then nothing is written), else None. A time after the decider's clock is InvalidArgument: a
    version cannot have been modified in the future, and lifecycle would never age it."""
    if not imported:
        return None
    source, time_ms = imported.get(SOURCE), imported.get(TIME)
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_ID:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The import source id must be 1 to 256 characters.",
                      ArgumentName="x-amz-s4-import-source", ArgumentValue=str(source)[:64])
    if not isinstance(time_ms, int) or time_ms < 0 or time_ms > d.now_ms():
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The import time must not be in the future.",
                      ArgumentName="x-amz-s4-import-last-modified", ArgumentValue=str(time_ms))
    oid = object_id(d.tx, bucket, key)
    if oid is None:
        return None
    for _, rec in d.tx.versions(oid):
        if rec.get(SOURCE) == source:
            return rec
    return None
