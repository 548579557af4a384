"""Object bytes for the query process: ranged reads asked of the HTTP process over the query's pipe.

The query runs in its own process (sandbox.py); it cannot open the volumes. Every read is one request, at most
``PIECE_BYTES`` long, answered by the HTTP process from ``Engine.read_object`` (runner.py), so no object is copied
whole into either process and the reply to a request is the only buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .inputs import BLOCK_BYTES, Meter, ObjectRef
from .readahead import ReadAhead

PIECE_BYTES = BLOCK_BYTES


class Requester(Protocol):
    def request(self, message: list[object]) -> bytes: ...


class Fetcher:
    """Pulls object bytes into the query process's reading threads, one piece per request."""

    def __init__(self, channel: Requester, meter: Meter) -> None:
        self.channel, self.meter = channel, meter
        self.gates: list[ReadAhead] = []

    def check(self) -> None:
        """Cancellation and timeouts end the whole query process; nothing to check between pieces."""

    def close(self) -> None:
        """The query ended: release pyarrow reading threads still waiting at a gate (a reader DuckDB never
        pulled from, after a binder error or a LIMIT, would otherwise hold its thread forever)."""
        for gate in self.gates:
            gate.close()

    def pieces(self, obj: ObjectRef, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        end = obj.size if length is None else min(obj.size, start + length)
        pos = start
        while pos < end:
            piece = self.channel.request(["read", obj.index, pos, min(PIECE_BYTES, end - pos), self.meter.processed])
            if not piece:
                return
            pos += len(piece)
            self.meter.scanned += len(piece)
            yield piece

    def read_range(self, obj: ObjectRef, start: int, length: int) -> bytes:
        return b"".join(self.pieces(obj, start, length))
