"""Events as JSON-ready documents with every secret redacted: what ``s4-journal dump``, the audit export and the
admin event stream (``GET /api/admin/events``) print, one shape for all three."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .events import Event, redacted
from .hlc import physical_ms


def rfc3339_ms(ms: int) -> str:
    """``2024-05-01T12:00:00.123Z`` -- integer arithmetic, so no float rounding of the milliseconds."""
    moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public(value: Any) -> Any:
    """A JSON-ready copy with every secret field redacted: bytes become hex, every dict passes ``redacted``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else str(k)): public(v) for k, v in redacted(value).items()}
    if isinstance(value, list | tuple):
        return [public(v) for v in value]
    return value


def event_json(event: Event) -> dict[str, Any]:
    """One event as the dump, the export's JSON lines and the event stream show it."""
    return {"seq": event.seq, "hlc": event.hlc, "time": rfc3339_ms(physical_ms(event.hlc)),
            "origin": event.origin, "actor": event.actor, "type": str(event.type), "payload": public(event.payload)}
