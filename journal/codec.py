"""msgpack encoding of event envelopes.

Envelope on disk (a msgpack array, so field names cost nothing per event)::

    [version, seq, hlc, origin, type, actor, payload]

A journal record holds one or more envelopes back to back (``encode_events``): the writer puts a whole
group-commit batch in one record, so a batch is durable or torn as a unit under its one checksum.

``payload`` is a msgpack map with string keys. Unknown types decode as-is (a newer node's event is still
dumpable); ``UPCASTERS`` turns old payload versions into the current shape on read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack

from .events import ENVELOPE_VERSION, Event, EventType

#: (event type, envelope version) -> function upgrading that payload to the next version.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class DecodeError(ValueError):
    """Bytes that passed the frame checksum but are not a valid envelope."""


_packers = threading.local()


def packb(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, the same bytes, through this thread's ``Packer``:
    ``msgpack.packb`` builds a Packer (and its 256 KiB buffer) on every call, ~3,000 instructions more than
    reusing one (docs/performance.md, "Issue 18's last bar"). A Packer is not thread-safe, hence one per thread;
    it resets itself after every ``pack``, a failed one included."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, buf_size=4096)
    encoded: bytes = packer.pack(value)
    return encoded


def encode_event(event: Event) -> bytes:
    return packb([ENVELOPE_VERSION, event.seq, event.hlc, event.origin, str(event.type), event.actor, event.payload])


def decode_event(data: bytes) -> Event:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not msgpack: {exc}") from exc
    return _from_obj(obj)


def _from_obj(obj: Any) -> Event:
    if not isinstance(obj, list) or len(obj) != 7:
        raise DecodeError("envelope is not a 7-element array")
    version, seq, hlc, origin, type_name, actor, payload = obj
    if not (isinstance(version, int) and isinstance(seq, int) and isinstance(hlc, int)):
        raise DecodeError("envelope header fields have wrong types")
    if not isinstance(payload, dict) or not isinstance(type_name, str):
        raise DecodeError("envelope payload is not a map")
    while version < ENVELOPE_VERSION:
        upcast = UPCASTERS.get((type_name, version))
        if upcast is not None:
            payload = upcast(payload)
        version += 1
    try:
        etype: EventType | str = EventType(type_name)
    except ValueError:
        etype = type_name
    return Event(seq=seq, hlc=hlc, origin=str(origin), type=etype, payload=payload, actor=str(actor))  # type: ignore[arg-type]


def encode_events(events: list[Event]) -> bytes:
    """Several envelopes concatenated: the payload of one journal record."""
    return b"".join(encode_event(e) for e in events)


def decode_events(data: bytes) -> list[Event]:
    """Every envelope of a record payload, in order (one or more)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    out = []
    try:
        for obj in unpacker:
            out.append(_from_obj(obj))
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"not msgpack: {exc}") from exc
    if not out:
        raise DecodeError("record holds no event")
    return out
