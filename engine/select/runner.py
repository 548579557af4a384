"""Run one translated query in a worker thread and hand encoded result chunks to the event loop.

Each query gets its own DuckDB connection: external access off (no files, network, extensions), Python
replacement scans off, ``memory_limit`` = S4_SELECT_MAX_MEMORY, a few threads, configuration locked. A timer
interrupts the connection at S4_SELECT_TIMEOUT. The worker first reports "ready" (query bound: unknown columns,
bad casts of literals... fail here, before any response byte), then streams chunks through a small bounded queue,
so a slow client slows the scan instead of filling memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from ..engine import Engine
from ..errors import ErrorCode, S3Error
from ..model import ObjectVersion
from .fetch import Fetcher
from .inputs import InputSpec, Meter
from .parquet import parquet_dataset
from .sql import MACROS, Translated
from .streams import stream_reader


class Encoder(Protocol):
    """Result batches -> response bytes (CSV, JSON records, a JSON array...)."""

    def begin(self, schema: pa.Schema) -> bytes: ...
    def batch(self, batch: pa.RecordBatch) -> bytes: ...
    def end(self) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024**2
    timeout_s: float = 60.0
    threads: int = 2


_DONE = object()
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None
if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):  # musl
    _LIBC = None


class QueryRun:
    """One running query: ``await start()``, then ``async for chunk in chunks()``; ``cancel()`` on disconnect."""

    def __init__(self, engine: Engine, query: Translated, tables: dict[str, tuple[InputSpec, list[ObjectVersion]]],
                 encode: Encoder, limits: Limits) -> None:
        self.engine, self.query, self.tables, self.encode, self.limits = engine, query, tables, encode, limits
        self.meter = Meter()
        self.returned = 0
        self.timed_out = False
        self.cancelled = False
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="s4-select", daemon=True)
        self._timer = threading.Timer(limits.timeout_s, self._timeout)

    # -- event-loop side
    async def start(self) -> None:
        """Start the worker; raises the query's S3Error if it fails before producing anything."""
        self._thread.start()
        self._timer.start()
        first = await self._queue.get()
        if isinstance(first, S3Error):
            raise first

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
        self.cancelled = True
        self._timer.cancel()
        conn = self._conn
        if conn is not None:
            try:
                conn.interrupt()
            except duckdb.Error:
                pass

    # -- worker side
    def _timeout(self) -> None:
        self.timed_out = True
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def _check(self) -> None:
        if self.timed_out:
            raise S3Error(ErrorCode.QUERY_TIMEOUT, f"The query ran longer than {self.limits.timeout_s:g}s "
                          "(S4_SELECT_TIMEOUT).")
        if self.cancelled:
            raise S3Error(ErrorCode.INTERNAL_ERROR, "The query was cancelled.")

    def _put(self, item: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                if self.cancelled:
                    future.cancel()
                    raise S3Error(ErrorCode.INTERNAL_ERROR, "The client went away.") from None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(":memory:", config={
            "enable_external_access": False, "python_enable_replacements": False,
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "memory_limit": f"{max(self.limits.memory_bytes // 1024**2, 16)}MB",
            "threads": self.limits.threads, "max_temp_directory_size": "0B"})
        for macro in MACROS:
            conn.execute(macro)
        conn.execute("SET lock_configuration = true")
        return conn

    def _work(self) -> None:
        fetcher = Fetcher(self.engine, self._loop, self.meter, self._check)
        try:
            conn = self._conn = self._connect()
            for name, (spec, versions) in self.tables.items():
                if spec.kind == "parquet":
                    conn.register(name, parquet_dataset(fetcher, versions))
                else:
                    conn.register(name, stream_reader(fetcher, versions, spec))
            relation = conn.sql(self.query.sql)  # binds: unknown columns etc. fail before the 200
            self._put(None)
            fetch = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch  # DuckDB < 1.4
            reader = fetch(8192)
            for data in self._encoded(reader):
                if data:
                    self._put(data)
            self._put(_DONE)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an S3 error for the client
            try:
                self._put(self._as_s3_error(exc))
            except S3Error:
                pass
        finally:
            self._timer.cancel()
            fetcher.close()
            if self._conn is not None:
                self._conn.close()
            _release_memory()

    def _encoded(self, reader: pa.RecordBatchReader) -> Iterator[bytes]:
        """Encoded output; the encoder's opening bytes go out with the first rows (or the end), so the first chunk
        a client sees means the query produced something."""
        head = self.encode.begin(reader.schema)
        for batch in reader:
            self._check()
            data = self.encode.batch(batch)
            if data:
                yield head + data
                head = b""
        yield head + self.encode.end()

    def _as_s3_error(self, exc: BaseException) -> S3Error:
        cause: BaseException | None = exc
        while cause is not None:  # our own S3Errors raised inside pyarrow/DuckDB callbacks
            if isinstance(cause, S3Error):
                return cause
            cause = cause.__cause__ or cause.__context__
        if self.timed_out:
            return S3Error(ErrorCode.QUERY_TIMEOUT, f"The query ran longer than {self.limits.timeout_s:g}s "
                           "(S4_SELECT_TIMEOUT).")
        return translate_error(exc, self.limits)


def _release_memory() -> None:
    """Give the memory a finished query freed back to the OS. pyarrow's pool and glibc's per-thread arenas keep
    freed pages for reuse, so each query on a fresh set of threads would otherwise leave its peak resident."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def translate_error(exc: BaseException, limits: Limits) -> S3Error:
    """DuckDB / pyarrow exceptions -> S3 Select style errors with the readable part of the message."""
    text = str(exc).split("\n\nLINE", 1)[0].strip()
    if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory" in text:
        return S3Error(ErrorCode.RESOURCE_EXHAUSTED, f"The query needs more than {limits.memory_bytes} bytes of "
                       f"memory (S4_SELECT_MAX_MEMORY): {text}")
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
    if isinstance(exc, duckdb.InterruptException):
        return S3Error(ErrorCode.INTERNAL_ERROR, "The query was interrupted.")
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
