"""Object bytes from the event loop into the query's worker thread, one piece at a time.

The query runs in a worker thread; ``Engine.read_object`` runs on the event loop and is pulled one piece at a time
(``asyncio.run_coroutine_threadsafe``), so no object is copied whole into memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from ..engine import Engine
from ..model import ObjectVersion
from .inputs import Meter
from .readahead import ReadAhead


class Fetcher:
    """Pulls object bytes from the event loop into the worker thread; checks cancellation between pieces."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, meter: Meter,
                 check: Callable[[], None]) -> None:
        self.engine, self.loop, self.meter, self.check = engine, loop, meter, check
        self.gates: list[ReadAhead] = []

    def close(self) -> None:
        """The query ended: release pyarrow reading threads still waiting at a gate (a reader DuckDB never
        pulled from, after a binder error or a LIMIT, would otherwise hold its thread forever)."""
        for gate in self.gates:
            gate.close()

    def pieces(self, version: ObjectVersion, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        agen = self.engine.read_object(version, start, length)
        try:
            while True:
                self.check()
                try:
                    piece = asyncio.run_coroutine_threadsafe(agen.__anext__(), self.loop).result()  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
                self.meter.scanned += len(piece)
                yield piece
        finally:
            asyncio.run_coroutine_threadsafe(agen.aclose(), self.loop).result()  # type: ignore[attr-defined]

    def read_range(self, version: ObjectVersion, start: int, length: int) -> bytes:
        return b"".join(self.pieces(version, start, length))
