"""Event envelope and the catalogue of event types.

Events are past-tense facts. ``EventType`` values are stable strings written to disk: never rename or reuse one;
a changed payload gets a new ``version`` and an upcaster in ``codec.py``. The full catalogue with payload fields
and the views each type touches is in docs/architecture/events.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NewType

Seq = NewType("Seq", int)
NodeId = NewType("NodeId", str)


class EventType(enum.StrEnum):
    BUCKET_CREATED = "bucket.created"
    BUCKET_DELETED = "bucket.deleted"
    BUCKET_CONFIG_SET = "bucket.config_set"  # versioning, cors, lifecycle, tagging, policy; value None = deleted
    OBJECT_VERSION_PUT = "object.version_put"
    DELETE_MARKER_PUT = "object.delete_marker_put"
    OBJECT_VERSION_REMOVED = "object.version_removed"
    OBJECT_TAGS_SET = "object.tags_set"
    MULTIPART_CREATED = "multipart.created"
    PART_STORED = "multipart.part_stored"
    MULTIPART_COMPLETED = "multipart.completed"
    MULTIPART_ABORTED = "multipart.aborted"
    PREFIX_RENAMED = "namespace.prefix_renamed"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    CREDENTIAL_CREATED = "credential.created"
    CREDENTIAL_DELETED = "credential.deleted"
    BLOB_MOVED = "blob.moved"
    BLOB_FREED = "blob.freed"
    BLOB_DAMAGED = "blob.damaged"  # a blob's stored bytes failed their checksums at this location
    VOLUME_SEALED = "volume.sealed"
    VOLUME_RETIRED = "volume.retired"
    TOMBSTONES_COLLECTED = "tombstones.collected"  # tombstone GC dropped these (engine/tombstones.py), node-local
    OBJECT_LOCK_SET = "object.lock_set"  # a version's retention and legal hold (engine/object_lock.py)
    KMS_KEY_CREATED = "kms.key_created"  # the built-in KMS (engine/kms.py): material wrapped, never in clear
    KMS_KEY_ROTATED = "kms.key_rotated"
    KMS_KEY_UPDATED = "kms.key_updated"  # enabled / disabled


#: Logical events: what a replica applies from a peer (docs/architecture/replication.md). Their payloads name
#: content hashes only, apart from ``blobs_at``, which each node fills with its own locations.
REPLICATED: frozenset[EventType] = frozenset({
    EventType.BUCKET_CREATED, EventType.BUCKET_DELETED, EventType.BUCKET_CONFIG_SET, EventType.OBJECT_VERSION_PUT,
    EventType.DELETE_MARKER_PUT, EventType.OBJECT_VERSION_REMOVED, EventType.OBJECT_TAGS_SET,
    EventType.PREFIX_RENAMED, EventType.MULTIPART_CREATED, EventType.PART_STORED, EventType.MULTIPART_COMPLETED,
    EventType.MULTIPART_ABORTED, EventType.USER_CREATED, EventType.USER_UPDATED, EventType.USER_DELETED,
    EventType.CREDENTIAL_CREATED, EventType.CREDENTIAL_DELETED,
    EventType.OBJECT_LOCK_SET,
    EventType.KMS_KEY_CREATED, EventType.KMS_KEY_ROTATED, EventType.KMS_KEY_UPDATED,
})

#: Node-local events (where this node's bytes live): never sent to a peer, and refused from one.
NODE_LOCAL: frozenset[EventType] = frozenset(EventType) - REPLICATED

#: Payload fields that are secrets: dump and audit export print ``"<redacted>"`` instead.
SECRET_FIELDS = frozenset({"secret_key", "password_hash", "secret", "material"})  # material: a KMS key, wrapped

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the journal gives it a place in the order (seq, hlc, origin)."""

    type: EventType
    payload: dict[str, Any]
    actor: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A durable fact: its position in the node's log plus what happened and who did it."""

    seq: int
    hlc: int
    origin: str
    type: EventType
    payload: dict[str, Any] = field(default_factory=dict)
    actor: str = ""

    @property
    def bucket(self) -> str | None:
        """The bucket an event concerns, if any (used by filters in dump/export)."""
        value = self.payload.get("bucket")
        return value if isinstance(value, str) else None


def redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` with every secret field replaced, recursively."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in SECRET_FIELDS and value is not None:
            out[key] = "<redacted>"
        elif isinstance(value, dict):
            out[key] = redacted(value)
        elif isinstance(value, list):
            out[key] = [redacted(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out
