"""Journal events -> AWS S3 event messages (``{"Records": [...]}``, eventVersion 2.1).

One journal event is at most one change of one key; each rule that selects it makes one message (one record), as
AWS sends them. Fields follow AWS's event message structure: ``eventTime`` is the event's HLC time, ``sequencer``
its HLC in hex (greater for a later change of the same key, which is what AWS promises), ``userIdentity`` the
journal's actor, the key URL-encoded as AWS does (``quote_plus``: a space becomes ``+``, ``/`` stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from s4.journal import Event, EventType
from s4.journal.hlc import physical_ms
from s4.journal.public import rfc3339_ms

from .rules import Rule

NULL_VERSION = "null"


@dataclass(frozen=True, slots=True)
class Change:
    """What a notification tells about one event: which key, how it changed, and the object's numbers."""

    bucket: str
    key: str
    name: str  # e.g. "ObjectCreated:Put" (no "s3:")
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    source_key: str | None = None  # a rename's source


#: How S4's operations appear among ``object.version_put`` events (payload ``s3op``; absent: PutObject).
_CREATED_BY = {"CopyObject": "ObjectCreated:Copy", "PostObject": "ObjectCreated:Post"}


def change_of(event: Event) -> Change | None:
    """The notification-worthy change an event records, or None (bucket configs, uploads, users, blobs...)."""
    p = event.payload
    bucket = p.get("bucket")
    if not isinstance(bucket, str):
        return None
    t = event.type
    if t in (EventType.OBJECT_VERSION_PUT, EventType.MULTIPART_COMPLETED):
        version = p.get("version") or {}
        name = "ObjectCreated:CompleteMultipartUpload" if t is EventType.MULTIPART_COMPLETED else \
            _CREATED_BY.get(str(p.get("s3op", "")), "ObjectCreated:Put")
        return Change(bucket, str(p["key"]), name, int(version.get("s", 0)), str(version.get("e", "")),
                      _version(version.get("v")))
    if t is EventType.DELETE_MARKER_PUT:
        return Change(bucket, str(p["key"]), "ObjectRemoved:DeleteMarkerCreated", version_id=_version(p["version_id"]))
    if t is EventType.OBJECT_VERSION_REMOVED:
        return Change(bucket, str(p["key"]), "ObjectRemoved:Delete", version_id=_version(p["version_id"]))
    if t is EventType.OBJECT_TAGS_SET:
        if p.get("s3op") == "PutObjectAcl":  # an ACL change travels in the same event type; not a tagging one
            return None
        name = "ObjectTagging:Put" if p.get("tags") else "ObjectTagging:Delete"
        return Change(bucket, str(p["key"]), name, version_id=_version(p.get("version_id")))
    if t is EventType.PREFIX_RENAMED:
        return Change(bucket, str(p["dst"]), "ObjectRenamed:Rename", source_key=str(p["src"]))
    return None


def _version(value: Any) -> str | None:
    return None if value in (None, "", NULL_VERSION) else str(value)


def sequencer(hlc: int) -> str:
    """Hex of the HLC, fixed width: compares as AWS's sequencer does (as strings of one length)."""
    return f"{hlc:016X}"


def record(event: Event, change: Change, rule: Rule, region: str, owner: str = "") -> dict[str, Any]:
    """One AWS S3 event record; ``owner``: the bucket's owner (its creator), the actor when unknown."""
    obj: dict[str, Any] = {"key": quote_plus(change.key, safe="/")}
    if change.size is not None:
        obj["size"] = change.size
    if change.etag:
        obj["eTag"] = change.etag
    if change.version_id is not None:
        obj["versionId"] = change.version_id
    obj["sequencer"] = sequencer(event.hlc)
    if change.source_key is not None:
        obj["s4SourceKey"] = quote_plus(change.source_key, safe="/")
    actor = event.actor or "anonymous"
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": rfc3339_ms(physical_ms(event.hlc)),
        "eventName": change.name,
        "userIdentity": {"principalId": actor},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {"x-amz-request-id": f"{event.origin}-{event.seq}", "x-amz-id-2": event.origin},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": rule.id,
            "bucket": {"name": change.bucket, "ownerIdentity": {"principalId": owner or actor},
                       "arn": f"arn:aws:s3:::{change.bucket}"},
            "object": obj,
        },
    }


def message(event: Event, change: Change, rule: Rule, region: str, owner: str = "") -> dict[str, Any]:
    return {"Records": [record(event, change, rule, region, owner)]}
