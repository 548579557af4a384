"""Run one translated query in a query process (sandbox.py) and hand its encoded result chunks to the event loop.

The HTTP process reserves the query's memory from this process's share of the node budget (budget.py: a query
that does not fit is ``Busy``), takes a query process (spare.py: the warm spare, or one started for the query;
``python -m s4.engine.select.sandbox``), sends it the job, answers its
reads from ``Engine.read_object`` and relays its chunks through a small bounded queue, so a slow client slows the
scan instead of filling memory. The child first reports "ready" (query bound: unknown columns, bad casts of
literals... fail there, before any response byte). A timer kills the child at S4_SELECT_TIMEOUT; a client that goes
away kills it too. The reservation is released once the child has exited.

The child's DuckDB connection (``connect``): external access off (no files, network, extensions), Python
replacement scans off, ``memory_limit`` = the query's memory, a few threads, no spill, configuration locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from ..engine import Engine
from ..errors import ErrorCode, S3Error
from ..model import ObjectVersion
from . import spare
from .budget import BUDGET
from .channel import ChannelError, Job, frame, read_frame_async, reply
from .fetch import PIECE_BYTES
from .inputs import InputSpec, Meter, ObjectRef
from .sql import MACROS, Translated

log = logging.getLogger("s4.select")


class Encoder(Protocol):
    """Result batches -> response bytes (CSV, JSON records, a JSON array...)."""

    def begin(self, schema: pa.Schema) -> bytes: ...
    def batch(self, batch: pa.RecordBatch) -> bytes: ...
    def end(self) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024**2  # one query (S4_SELECT_MAX_MEMORY)
    timeout_s: float = 60.0
    threads: int = 2
    process_bytes: int = 1024**3  # this HTTP process's share of S4_SELECT_NODE_MEMORY

    @property
    def query_bytes(self) -> int:
        """What one query may use: its own limit, never more than the process's whole share."""
        return min(self.memory_bytes, self.process_bytes)


_DONE = object()


def connect(memory_bytes: int, threads: int) -> duckdb.DuckDBPyConnection:
    """The query's sandboxed DuckDB connection (in the query process)."""
    conn = duckdb.connect(":memory:", config={
        "enable_external_access": False, "python_enable_replacements": False,
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "memory_limit": f"{max(memory_bytes // 1024**2, 16)}MB",
        "threads": threads, "max_temp_directory_size": "0B", "temp_directory": ""})  # never spills: no .tmp/
    for macro in MACROS:
        conn.execute(macro)
    conn.execute("SET lock_configuration = true")
    return conn


class QueryRun:
    """One running query: ``await start()``, then ``async for chunk in chunks()``; ``cancel()`` on disconnect."""

    def __init__(self, engine: Engine, query: Translated, tables: dict[str, tuple[InputSpec, list[ObjectVersion]]],
                 encode: Encoder, limits: Limits) -> None:
        self.engine, self.query, self.encode, self.limits = engine, query, encode, limits
        self.meter = Meter()
        self.returned = 0
        self.timed_out = False
        self.cancelled = False
        self._versions: list[ObjectVersion] = []
        self._tables: dict[str, tuple[InputSpec, list[ObjectRef]]] = {}
        for name, (spec, versions) in tables.items():
            refs = []
            for version in versions:
                refs.append(ObjectRef(version.key, version.size, len(self._versions)))
                self._versions.append(version)
            self._tables[name] = (spec, refs)
        self._locations: dict[int, Any] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        self._worker: spare.QueryProcess | None = None
        self._pump: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reserved = 0

    # -- event-loop side
    async def start(self) -> None:
        """Hand the query to a query process; raises the query's S3Error if it fails before producing anything."""
        self._reserved = BUDGET.reserve(self.limits.query_bytes, self.limits.process_bytes)
        try:
            job = frame(None, raw=pickle.dumps(
                Job(self.query.sql, self._tables, self.encode, self.limits.query_bytes, self.limits.threads)))
            await self._hand_over(job)
            self._timer = asyncio.get_running_loop().call_later(self.limits.timeout_s, self._timeout)
            self._pump = asyncio.create_task(self._relay())
            first = await self._queue.get()
        except BaseException:
            self.cancel()
            if self._pump is None:
                await self._reap()
            raise
        if isinstance(first, S3Error):
            raise first

    async def _hand_over(self, job: bytes) -> None:
        """Give the job to a query process: the warm spare, or one started for this query when there is none or
        it died while it waited (before its hello, or before it read the job: once more, in a new process). The
        process acknowledges the job; from then on, whatever becomes of it is the query's."""
        for attempt in range(2):
            self._worker = worker = spare.pool().take()
            try:
                proc = await worker.ready()
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(job)
                await proc.stdin.drain()
                if await asyncio.wait_for(read_frame_async(proc.stdout), spare.SPAWN_TIMEOUT_S) != ["job"]:
                    raise ConnectionError("no word from the query process after its job")
            except (S3Error, ConnectionError) as exc:
                if not worker.warm or attempt:
                    if isinstance(exc, S3Error):
                        raise
                    raise S3Error(ErrorCode.INTERNAL_ERROR, "The query process went away.") from None
                await worker.reap()
                continue
            spare.pool().refill()
            log.debug("select: query in process %d (%s)", proc.pid, "warm spare" if worker.warm else "started for it")
            return

    @property
    def pid(self) -> int | None:
        """The query process's id (tests, debug logs; never in a response)."""
        return None if self._worker is None else self._worker.pid

    async def chunks(self, keepalive_s: float = 5.0) -> AsyncIterator[bytes | None]:
        """Encoded result chunks; None when ``keepalive_s`` passed without output (time for a Cont event)."""
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                if item is _DONE:
                    return
                if isinstance(item, S3Error):
                    raise item
                self.returned += len(item)
                yield item
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the query: kill its process (the relay then releases the memory once it has exited)."""
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()
        self._kill()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    def _timeout(self) -> None:
        self.timed_out = True
        self._kill()

    @property
    def _proc(self) -> asyncio.subprocess.Process | None:
        return None if self._worker is None else self._worker.proc

    def _kill(self) -> None:
        if self._worker is not None:
            self._worker.kill()

    async def _reap(self) -> None:
        """Wait for the child to be gone, then give its memory back to the budget (once)."""
        try:
            if self._worker is not None:
                await self._worker.reap()
        finally:
            BUDGET.release(self._reserved)
            self._reserved = 0

    async def _relay(self) -> None:
        """The child's messages until it exits: reads answered, chunks queued, the outcome delivered once."""
        assert self._proc is not None and self._proc.stdout is not None
        outcome: Any = None
        try:
            while outcome is None:
                message = await read_frame_async(self._proc.stdout)
                if not isinstance(message, list) or not message:
                    outcome = await self._ended(message)
                    break
                kind = message[0]
                if kind == "read":
                    await self._serve_read(*message[1:6])
                elif kind == "ready":
                    await self._queue.put(None)
                elif kind == "chunk":
                    self.meter.processed = int(message[2])
                    await self._queue.put(bytes(message[1]))
                elif kind == "done":
                    self.meter.processed = int(message[1])
                    outcome = _DONE
                elif kind == "error":
                    code = ErrorCode.__members__.get(str(message[1]), ErrorCode.INTERNAL_ERROR)
                    outcome = self._timeout_error() if self.timed_out else S3Error(code, str(message[2]))
                else:
                    raise ChannelError(f"unknown message {kind!r}")
        except ChannelError as exc:
            outcome = S3Error(ErrorCode.INTERNAL_ERROR, f"The query process broke its protocol: {exc}")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self._reap()
        await self._queue.put(outcome)

    async def _ended(self, message: Any) -> Any:
        """The child closed its pipe without a result: killed by the timer or a cancel, or it died."""
        assert self._proc is not None
        if message is not None:
            raise ChannelError("malformed message")
        code = await self._proc.wait()
        if self.timed_out:
            return self._timeout_error()
        if self.cancelled:
            return S3Error(ErrorCode.INTERNAL_ERROR, "The query was cancelled.")
        return S3Error(ErrorCode.RESOURCE_EXHAUSTED, f"The query process stopped (exit status {code}), most likely "
                       f"at its memory limit of {self.limits.query_bytes} bytes (S4_SELECT_MAX_MEMORY).")

    def _timeout_error(self) -> S3Error:
        return S3Error(ErrorCode.QUERY_TIMEOUT, f"The query ran longer than {self.limits.timeout_s:g}s "
                       "(S4_SELECT_TIMEOUT).")

    async def _serve_read(self, rid: Any, index: Any, offset: Any, length: Any, processed: Any) -> None:
        """Bytes [offset, offset+length) of object #index, at most one piece, for the child's reader."""
        assert self._proc is not None and self._proc.stdin is not None
        if not (isinstance(index, int) and 0 <= index < len(self._versions) and isinstance(offset, int)
                and isinstance(length, int) and 0 <= offset and 0 <= length <= PIECE_BYTES):
            raise ChannelError("bad read request")
        self.meter.processed = int(processed)
        version = self._versions[index]
        if index not in self._locations:
            self._locations[index] = self.engine.locate(version)
        pieces = []
        agen = self.engine.read_object(version, offset, length, self._locations[index])
        try:
            async for piece in agen:
                pieces.append(piece)
        finally:
            await agen.aclose()  # type: ignore[attr-defined]
        data = b"".join(pieces)
        self.meter.scanned += len(data)
        self._proc.stdin.write(reply(int(rid), data))
        with contextlib.suppress(ConnectionError):  # the child died: its end of stream follows
            await self._proc.stdin.drain()


def translate_error(exc: BaseException, memory_bytes: int) -> S3Error:
    """DuckDB / pyarrow / Python exceptions (in the query process) -> S3 Select style errors with the readable
    part of the message. Running out of the process's memory is ResourceExhausted, whoever noticed."""
    text = str(exc).split("\n\nLINE", 1)[0].strip()
    if (isinstance(exc, duckdb.OutOfMemoryException | MemoryError | pa.ArrowMemoryError) or "Out of Memory" in text
            or "bad_alloc" in text or "Cannot allocate memory" in text or "can't start new thread" in text):
        return S3Error(ErrorCode.RESOURCE_EXHAUSTED, f"The query needs more than {memory_bytes} bytes of "
                       f"memory (S4_SELECT_MAX_MEMORY): {text[:500]}")
    if isinstance(exc, duckdb.BinderException):
        if "Referenced column" in text or "not found in FROM clause" in text or "does not have a column" in text:
            return S3Error(ErrorCode.EVALUATOR_BINDING_DOES_NOT_EXIST, _readable(text))
        return S3Error(ErrorCode.INVALID_REQUEST, _readable(text))
    if isinstance(exc, duckdb.ConversionException):
        return S3Error(ErrorCode.CAST_FAILED, _readable(text))
    if isinstance(exc, duckdb.ParserException):
        return S3Error(ErrorCode.PARSE_UNEXPECTED_TOKEN, _readable(text))
    if isinstance(exc, duckdb.PermissionException):
        return S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, _readable(text))
    if isinstance(exc, pa.ArrowInvalid):
        return S3Error(ErrorCode.INVALID_REQUEST, text)
    if isinstance(exc, duckdb.Error):
        return S3Error(ErrorCode.INVALID_REQUEST, _readable(text))
    return S3Error(ErrorCode.INTERNAL_ERROR)


def _readable(text: str) -> str:
    """DuckDB's message without its class prefix; internal table names shown as the globs users wrote."""
    for prefix in ("Binder Error: ", "Conversion Error: ", "Parser Error: ", "Invalid Input Error: "):
        text = text.replace(prefix, "")
    return text
