"""A bucket's notification configuration as stored (``bucket_cfg`` kind ``notification``) and its matching.

The record is a list of rules ``{"id", "shape", "arn", "target", "events", "prefix", "suffix"}``; ``shape`` is the
XML element the client used (``Queue``, ``Topic``, ``CloudFunction``) so GetBucketNotificationConfiguration gives
back what was put. A rule selects an event when one of its event patterns names it (exactly, or ``s3:Kind:*``) and
the object key starts with ``prefix`` and ends with ``suffix`` (AWS's filter rules; both may be empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CONFIG_KIND = "notification"

#: The event names S4 emits, without the ``s3:`` prefix (docs/architecture/notifications.md).
EVENT_NAMES: frozenset[str] = frozenset({
    "ObjectCreated:Put", "ObjectCreated:Post", "ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload",
    "ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated",
    "ObjectTagging:Put", "ObjectTagging:Delete",
    "ObjectRenamed:Rename",
})
#: What a configuration may name: every event name with ``s3:``, and ``s3:<Kind>:*`` for each kind.
EVENT_PATTERNS: frozenset[str] = frozenset({f"s3:{n}" for n in EVENT_NAMES} |
                                           {f"s3:{n.split(':')[0]}:*" for n in EVENT_NAMES})


@dataclass(frozen=True, slots=True)
class Rule:
    """One Queue/Topic/CloudFunction configuration: which events of which keys go to which target."""

    id: str
    shape: str
    arn: str
    target: str
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""

    def selects(self, event_name: str) -> bool:
        """``event_name`` without ``s3:`` (``ObjectCreated:Put``), as messages carry it."""
        full = "s3:" + event_name
        return any(p == full or (p.endswith(":*") and full.startswith(p[:-1])) for p in self.events)

    def matches(self, event_name: str, key: str) -> bool:
        return self.selects(event_name) and key.startswith(self.prefix) and key.endswith(self.suffix)


def to_record(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [{"id": r.id, "shape": r.shape, "arn": r.arn, "target": r.target, "events": list(r.events),
             "prefix": r.prefix, "suffix": r.suffix} for r in rules]


def from_record(record: Any) -> list[Rule]:
    """Rules from a stored record (None or [] when the bucket has no configuration)."""
    if not record:
        return []
    return [Rule(str(r["id"]), str(r.get("shape", "Queue")), str(r["arn"]), str(r["target"]),
                 tuple(r.get("events", ())), str(r.get("prefix", "")), str(r.get("suffix", ""))) for r in record]


def matching(rules: Sequence[Rule], target: str, event_name: str, key: str) -> list[Rule]:
    """The rules sending this change of ``key`` to ``target``: one message each, as AWS sends one per
    configuration."""
    return [r for r in rules if r.target == target and r.matches(event_name, key)]
