"""Object bytes -> pyarrow readers, without copying whole objects into memory.

The query runs in a worker thread; object bytes come from ``Engine.read_object`` on the event loop, pulled one
piece at a time (``asyncio.run_coroutine_threadsafe``). CSV and JSON lines stream through pyarrow's incremental
readers; Parquet is opened through a pyarrow filesystem whose files are ranged reads, so DuckDB's projection and
filter pushdown into the pyarrow dataset only fetch the footer and the row groups / columns it needs.
"""

from __future__ import annotations

import asyncio
import atexit
import bz2
import csv
import io
import itertools
import json
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.json as pajson

from ..engine import Engine
from ..errors import ErrorCode, S3Error
from ..model import ObjectVersion

BATCH_ROWS = 8192
BLOCK_BYTES = 1 << 20


@dataclass
class CsvInput:
    header: str = "NONE"  # USE | IGNORE | NONE
    delimiter: str = ","
    record_delimiter: str = "\n"
    quote: str = '"'
    escape: str = '"'
    comments: str = ""
    quoted_record_delimiter: bool = False
    infer_types: bool = False  # multi-object SQL infers like DataFusion; S3 Select keeps every field a string


@dataclass
class InputSpec:
    """What InputSerialization (or the SQL endpoint's format fields) describe."""

    kind: str  # csv | json | parquet
    compression: str = "NONE"
    csv: CsvInput = field(default_factory=CsvInput)
    json_type: str = "LINES"  # LINES | DOCUMENT | AUTO
    json_path: list[str] = field(default_factory=list)
    scan_range: tuple[int | None, int | None] | None = None


class Meter:
    """Bytes read from storage and bytes after decompression: the Stats event's numbers."""

    def __init__(self) -> None:
        self.scanned = 0
        self.processed = 0


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


class ReadAhead:
    """Keeps pyarrow's background read-ahead near what the query has consumed.

    pyarrow's streaming CSV/JSON readers fetch up to 32 blocks ahead on an I/O thread, whatever the consumer does:
    32 MiB of raw bytes plus their parsed arrays per stream, none of it under DuckDB's memory limit. Here the
    reading thread waits while it is ``AHEAD`` blocks in front of the batches handed on. Should the parser ever
    need more blocks than that for its next batch (the consumer waits and nothing arrives for ``STALL_S``), one
    more block is let through per stall, so the gate can slow a scan but never deadlock it.
    """

    AHEAD = 4
    STALL_S = 0.05

    def __init__(self, check: Callable[[], None]) -> None:
        self._check = check
        self._cond = threading.Condition()
        self._read = self._consumed = 0
        self._waiting_since: float | None = None
        self._closed = False
        _OPEN_GATES.add(self)

    def _may_read(self) -> bool:
        if self._closed or self._read - self._consumed < self.AHEAD:
            return True
        if self._waiting_since is not None and time.monotonic() - self._waiting_since > self.STALL_S:
            self._waiting_since = time.monotonic()
            return True
        return False

    def before_read(self) -> None:
        with self._cond:
            while not self._may_read():
                self._cond.wait(self.STALL_S)
                self._check()
            if self._closed:  # the query is over: stop pyarrow's reading thread instead of feeding it
                raise OSError("the query no longer reads this object")
            self._read += 1

    @contextmanager
    def consumer_waits(self, counts: bool = True) -> Iterator[None]:
        with self._cond:
            self._waiting_since = time.monotonic()
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting_since = None
                self._consumed += counts
                self._cond.notify_all()

    def close(self) -> None:
        """No more reads: a waiting reader thread (and any later read) gets an error and ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


_OPEN_GATES: weakref.WeakSet[ReadAhead] = weakref.WeakSet()


@atexit.register
def _close_open_gates() -> None:
    """A pyarrow thread still waiting at a gate when the interpreter finalizes aborts the process."""
    for gate in list(_OPEN_GATES):
        gate.close()


class ThrottledFile(io.BufferedReader):
    """What pyarrow reads: each ``read`` is one block, admitted by the ReadAhead."""

    def __init__(self, raw: io.RawIOBase, gate: ReadAhead) -> None:
        super().__init__(raw, BLOCK_BYTES)
        self.gate = gate

    def read(self, size: int | None = -1) -> bytes:
        self.gate.before_read()
        return super().read(size)


class PullStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _decompress(chunks: Iterator[bytes], compression: str) -> Iterator[bytes]:
    """GZIP (multi-member) and BZIP2 (multi-stream) decoded incrementally."""
    if compression == "NONE":
        yield from chunks
        return
    factory: Callable[[], Any] = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if compression == "GZIP" \
        else bz2.BZ2Decompressor
    decoder = factory()
    try:
        for chunk in chunks:
            while chunk:
                yield decoder.decompress(chunk)
                chunk = decoder.unused_data if decoder.eof else b""
                if decoder.eof:
                    decoder = factory()
    except (zlib.error, OSError, EOFError) as exc:
        raise S3Error(ErrorCode.INVALID_COMPRESSION_FORMAT, f"The object is not valid {compression}: {exc}") from exc


def _metered(chunks: Iterator[bytes], meter: Meter) -> Iterator[bytes]:
    for chunk in chunks:
        meter.processed += len(chunk)
        yield chunk


def _lines(chunks: Iterator[bytes], sep: bytes = b"\n") -> Iterator[bytes]:
    """Whole records (each ending in ``sep`` except perhaps the last)."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(sep) + 1
        rest = data[cut:]
        if cut:
            if sep == b"\n":
                yield from io.BytesIO(data[:cut])
            else:
                *records, _ = data[:cut].split(sep)
                yield from (record + sep for record in records)
    if rest:
        yield rest


def _scan_range(chunks: Iterator[bytes], start: int, end: int | None, sep: bytes) -> Iterator[bytes]:
    """Records whose first byte lies in [start, end] (S3's ScanRange); ``chunks`` begins at byte max(start - 1, 0),
    so a record that starts exactly at ``start`` is recognised by the separator just before it."""
    pos = start - 1 if start > 0 else 0
    skipping = start > 0
    for line in _lines(chunks, sep):
        line_start, pos = pos, pos + len(line)
        if skipping:
            skipping = False
            continue  # the record that began before ``start`` (or the byte just before it)
        if end is not None and line_start > end:
            return
        yield line


def _filtered(chunks: Iterator[bytes], spec: CsvInput) -> Iterator[bytes]:
    """Comment lines dropped and a custom record delimiter turned into \\n, only when asked for."""
    if spec.record_delimiter not in ("\n", "\r\n", ""):
        delim = spec.record_delimiter.encode()
        chunks = (c.replace(b"\n", b" ").replace(delim, b"\n") for c in chunks) if len(delim) == 1 else chunks
    if not spec.comments:
        yield from chunks
        return
    marker = spec.comments.encode()
    for line in _lines(chunks):
        if not line.startswith(marker):
            yield line


def _peek_first_line(chunks: Iterator[bytes]) -> tuple[bytes | None, Iterator[bytes]]:
    """The first line (None: the stream is empty) and the stream, replayed from its start."""
    seen = b""
    for chunk in chunks:
        seen += chunk
        if b"\n" in seen or len(seen) > 4 * BLOCK_BYTES:
            break

    def replay() -> Iterator[bytes]:
        yield seen
        yield from chunks
    return (seen.split(b"\n", 1)[0] if seen else None), replay()


def _csv_reader(chunks: Iterator[bytes], spec: CsvInput, schema: pa.Schema | None, gate: ReadAhead,
                head: Callable[[], bytes] | None = None) -> pa.RecordBatchReader:
    """``head`` gives the object's first record when ``chunks`` is only part of it (a ScanRange): the header with
    FileHeaderInfo USE/IGNORE, and the column count if the range holds no record."""
    if head is not None and spec.header in ("USE", "IGNORE"):
        header = head()
        chunks = itertools.chain([header + b"\n"], chunks) if header else chunks
    first, chunks = _peek_first_line(chunks)
    empty = first is None
    if first is None:
        first = head() if head is not None else b""
    dialect = {"delimiter": spec.delimiter, "quotechar": spec.quote or '"'}
    fields = next(csv.reader([first.decode("utf-8", "replace").rstrip("\r")], **dialect), [])  # type: ignore[arg-type]
    if spec.header == "USE":
        names = [name.strip() for name in fields]
    elif spec.infer_types:
        names = [f"column_{i + 1}" for i in range(len(fields))]
    else:
        names = [f"_{i + 1}" for i in range(len(fields))]
    if schema is not None:
        names = schema.names
    skip = 1 if spec.header in ("USE", "IGNORE") else 0
    read = pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=BLOCK_BYTES)
    parse = pacsv.ParseOptions(delimiter=spec.delimiter, quote_char=spec.quote or False,
                               double_quote=spec.escape in ("", spec.quote),
                               escape_char=spec.escape if spec.escape not in ("", spec.quote) else False,
                               newlines_in_values=spec.quoted_record_delimiter)
    if schema is not None:
        types = {f.name: f.type for f in schema}
    elif spec.infer_types:
        types = {}
    else:
        types = {n: pa.string() for n in names}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=spec.infer_types,
                                   quoted_strings_can_be_null=False)
    if empty:  # pyarrow refuses an empty CSV; S3 Select answers no records
        return pa.RecordBatchReader.from_batches(pa.schema([(n, types.get(n, pa.string())) for n in names]), [])
    try:
        with gate.consumer_waits(counts=False):  # the first block is read here, on this thread
            return pacsv.open_csv(ThrottledFile(PullStream(chunks), gate), read_options=read, parse_options=parse,
                                  convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise S3Error(ErrorCode.CSV_PARSING_ERROR, str(exc)) from exc


def _follow(value: Any, path: list[str]) -> Iterator[Any]:
    for name in path:
        if not isinstance(value, dict):
            return
        value = next((v for k, v in value.items() if k.lower() == name.lower()), None)
        if value is None:
            return
    if isinstance(value, list) and path:
        yield from value
    else:
        yield value


def _json_values(chunks: Iterator[bytes], json_type: str) -> Iterator[Any]:
    """Top-level JSON values: one per line (LINES), or concatenated values of a document (DOCUMENT)."""
    decoder = json.JSONDecoder()
    try:
        if json_type == "LINES":
            for line in _lines(chunks):
                if line.strip():
                    yield json.loads(line)
            return
        text = b"".join(chunks).decode("utf-8")
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return
            value, pos = decoder.raw_decode(text, pos)
            if json_type == "AUTO" and isinstance(value, list):
                yield from value
            else:
                yield value
    except (ValueError, UnicodeDecodeError) as exc:
        raise S3Error(ErrorCode.JSON_PARSING_ERROR, f"Invalid JSON: {exc}") from exc


def _json_batches(values: Iterator[Any], path: list[str]) -> Iterator[pa.RecordBatch]:
    rows: list[dict[str, Any]] = []
    schema: pa.Schema | None = None
    for value in values:
        for row in _follow(value, path):
            rows.append(row if isinstance(row, dict) else {"_1": row})
            if len(rows) >= BATCH_ROWS:
                batch = _to_batch(rows, schema)
                schema = batch.schema
                yield batch
                rows = []
    if rows or schema is None:
        yield _to_batch(rows, schema)


def _to_batch(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.RecordBatch:
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise S3Error(ErrorCode.JSON_PARSING_ERROR, f"JSON records do not share one shape: {exc}") from exc


def _json_reader(chunks: Iterator[bytes], spec: InputSpec, gate: ReadAhead,
                 head: Callable[[], bytes] | None = None) -> pa.RecordBatchReader:
    """``head`` gives the object's first record when ``chunks`` is a ScanRange: the columns if it holds none."""
    if spec.json_type == "AUTO":  # SQL endpoint: a JSON array document, else JSON lines
        first, chunks = _peek_first_line(chunks)
        json_type = "AUTO" if (first or b"").lstrip().startswith(b"[") else "LINES"
        spec = InputSpec(spec.kind, spec.compression, spec.csv, json_type, spec.json_path)
    if spec.json_type == "LINES" and not spec.json_path:
        first, chunks = _peek_first_line(chunks)
        if first is None and head is not None and (record := head()).strip():
            try:  # no record starts in the range: no rows, with the columns of the object's first record
                schema = pajson.read_json(io.BytesIO(record)).schema
            except pa.ArrowInvalid as exc:
                raise S3Error(ErrorCode.JSON_PARSING_ERROR, str(exc)) from exc
            return pa.RecordBatchReader.from_batches(schema, [])
        try:
            with gate.consumer_waits(counts=False):
                return pajson.open_json(ThrottledFile(PullStream(chunks), gate),
                                        read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
        except pa.ArrowInvalid as exc:
            raise S3Error(ErrorCode.JSON_PARSING_ERROR, str(exc)) from exc
    batches = _json_batches(_json_values(chunks, spec.json_type), spec.json_path)
    first = next(batches)

    def all_batches() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches
    return pa.RecordBatchReader.from_batches(first.schema, all_batches())


def stream_reader(fetcher: Fetcher, versions: list[ObjectVersion], spec: InputSpec) -> pa.RecordBatchReader:
    """CSV or JSON objects, one after the other, as one stream of record batches (first object's schema)."""
    # ScanRange: records are split on the record delimiter's last byte (\n for \r\n) before any other filter
    sep = (spec.csv.record_delimiter.encode()[-1:] or b"\n") if spec.kind == "csv" else b"\n"

    def chunks_of(version: ObjectVersion) -> Iterator[bytes]:
        if spec.scan_range is not None:
            start = spec.scan_range[0] or 0
            raw = fetcher.pieces(version, max(start - 1, 0))  # read lazily: stops once past ``end``
            return _scan_range(_metered(raw, fetcher.meter), start, spec.scan_range[1], sep)
        return _metered(_decompress(fetcher.pieces(version), spec.compression), fetcher.meter)

    def head_of(version: ObjectVersion) -> bytes:
        """The object's first record (after comments), read in growing windows up to one block."""
        size = 4096
        while True:
            raw = fetcher.read_range(version, 0, size)
            data = b"".join(_filtered(iter([raw]), spec.csv)) if spec.kind == "csv" else raw
            cut = data.find(b"\n")
            if cut >= 0 or len(raw) < size or size >= BLOCK_BYTES:
                return data[:cut] if cut >= 0 else data
            size *= 4

    def reader_of(version: ObjectVersion, schema: pa.Schema | None) -> tuple[pa.RecordBatchReader, ReadAhead]:
        chunks, gate = chunks_of(version), ReadAhead(fetcher.check)
        fetcher.gates.append(gate)
        head = (lambda: head_of(version)) if spec.scan_range and (spec.scan_range[0] or 0) > 0 else None
        try:
            if spec.kind == "csv":
                return _csv_reader(_filtered(chunks, spec.csv), spec.csv, schema, gate, head), gate
            return _json_reader(chunks, spec, gate, head), gate
        except BaseException:
            gate.close()
            raise

    first = reader_of(versions[0], None)
    schema = first[0].schema

    def batches() -> Iterator[pa.RecordBatch]:
        yield from _checked(*first, versions[0], spec)
        for version in versions[1:]:
            reader = reader_of(version, schema if spec.kind == "csv" else None)
            for batch in _checked(*reader, version, spec):
                yield _conform(batch, schema, version)
    return pa.RecordBatchReader.from_batches(schema, batches())


def _checked(reader: pa.RecordBatchReader, gate: ReadAhead, version: ObjectVersion, spec: InputSpec
             ) -> Iterator[pa.RecordBatch]:
    """The reader's batches, each fetched with the ReadAhead told that the consumer waits."""
    code = ErrorCode.CSV_PARSING_ERROR if spec.kind == "csv" else ErrorCode.JSON_PARSING_ERROR
    try:
        while True:
            with gate.consumer_waits():
                batch = reader.read_next_batch()
            yield batch
    except StopIteration:
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise S3Error(code, f"{version.key}: {exc}") from exc
    finally:
        gate.close()


def _conform(batch: pa.RecordBatch, schema: pa.Schema, version: ObjectVersion) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    missing = [n for n in schema.names if n not in batch.schema.names]
    if missing:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"{version.key} lacks column(s) {', '.join(missing)}.")
    try:
        return pa.RecordBatch.from_arrays([batch.column(n).cast(schema.field(n).type) for n in schema.names],
                                          schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"{version.key} does not match the first object's columns: "
                      f"{exc}") from exc


class RangedFile(io.RawIOBase):
    """A seekable file over one object version; every read is a ranged read of the volumes."""

    def __init__(self, fetcher: Fetcher, version: ObjectVersion) -> None:
        self.fetcher, self.version, self.pos = fetcher, version, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.version.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.version.size - self.pos)
        if n <= 0:
            return 0
        data = self.fetcher.read_range(self.version, self.pos, n)
        buffer[: len(data)] = data
        self.pos += len(data)
        self.fetcher.meter.processed += len(data)
        return len(data)


class ObjectsFileSystem(pafs.FileSystemHandler):
    """A read-only pyarrow filesystem whose paths are the keys of the given versions."""

    def __init__(self, fetcher: Fetcher, versions: dict[str, ObjectVersion]) -> None:
        self.fetcher, self.versions = fetcher, versions

    def get_type_name(self) -> str:
        return "s4"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(p, pafs.FileType.File, size=self.versions[p].size) if p in self.versions
                else pafs.FileInfo(p, pafs.FileType.NotFound) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.get_file_info(list(self.versions))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(RangedFile(self.fetcher, self.versions[path]), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise OSError("read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


def parquet_dataset(fetcher: Fetcher, versions: list[ObjectVersion]) -> pads.Dataset:
    """Parquet objects as a pyarrow dataset: DuckDB pushes projections and filters into it."""
    fs = pafs.PyFileSystem(ObjectsFileSystem(fetcher, {v.key: v for v in versions}))
    try:
        return pads.dataset([v.key for v in versions], format="parquet", filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise S3Error(ErrorCode.PARQUET_PARSING_ERROR, str(exc)) from exc
