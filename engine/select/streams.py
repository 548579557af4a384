"""CSV and JSON objects -> one stream of record batches, through pyarrow's incremental readers.

CSV and JSON lines stream through ``pyarrow.csv.open_csv`` / ``pyarrow.json.open_json`` behind a ReadAhead gate;
JSON documents and ``[*].path`` queries are parsed in Python into batches.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from ..errors import ErrorCode, S3Error
from .fetch import Fetcher
from .inputs import BATCH_ROWS, BLOCK_BYTES, MAX_RECORD_BYTES, CsvInput, InputSpec, ObjectRef
from .readahead import PullStream, ReadAhead, ThrottledFile
from .records import decompress, filtered, lines, metered, over_max_record, peek_first_line, scan_range


def _csv_reader(chunks: Iterator[bytes], spec: CsvInput, schema: pa.Schema | None, gate: ReadAhead,
                head: Callable[[], bytes] | None = None) -> pa.RecordBatchReader:
    """``head`` gives the object's first record when ``chunks`` is only part of it (a ScanRange): the header with
    FileHeaderInfo USE/IGNORE, and the column count if the range holds no record."""
    if head is not None and spec.header in ("USE", "IGNORE"):
        header = head()
        chunks = itertools.chain([header + b"\n"], chunks) if header else chunks
    first, chunks = peek_first_line(chunks)
    empty = first is None
    if first is None:
        first = head() if head is not None else b""
    if len(first) > MAX_RECORD_BYTES:  # (csv.reader would also refuse a field over its 128 KiB default)
        raise over_max_record("input")
    dialect = {"delimiter": spec.delimiter, "quotechar": spec.quote or '"'}
    try:
        fields = next(csv.reader([first.decode("utf-8", "replace").rstrip("\r")], **dialect), [])  # type: ignore[arg-type]
    except csv.Error as exc:
        raise S3Error(ErrorCode.CSV_PARSING_ERROR, f"The first record cannot be read: {exc}") from exc
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
        raise _parse_error(ErrorCode.CSV_PARSING_ERROR, str(exc)) from exc


csv.field_size_limit(MAX_RECORD_BYTES)  # the first record is read with csv.reader: fields up to S3's record size


def _parse_error(code: ErrorCode, message: str) -> S3Error:
    """pyarrow's readers need each record inside one block (BLOCK_BYTES = S3's 1 MiB record limit): a record that
    straddles two blocks is S3 Select's OverMaxRecordSize, not a parsing error."""
    if "straddl" in message:
        return over_max_record("input")
    return S3Error(code, message)


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
            for line in lines(chunks):
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
        first, chunks = peek_first_line(chunks)
        json_type = "AUTO" if (first or b"").lstrip().startswith(b"[") else "LINES"
        spec = InputSpec(spec.kind, spec.compression, spec.csv, json_type, spec.json_path)
    if spec.json_type == "LINES" and not spec.json_path:
        first, chunks = peek_first_line(chunks)
        if first is None and head is not None and (record := head()).strip():
            try:  # no record starts in the range: no rows, with the columns of the object's first record
                schema = pajson.read_json(io.BytesIO(record)).schema
            except pa.ArrowInvalid as exc:
                raise _parse_error(ErrorCode.JSON_PARSING_ERROR, str(exc)) from exc
            return pa.RecordBatchReader.from_batches(schema, [])
        try:
            with gate.consumer_waits(counts=False):
                return pajson.open_json(ThrottledFile(PullStream(chunks), gate),
                                        read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
        except pa.ArrowInvalid as exc:
            raise _parse_error(ErrorCode.JSON_PARSING_ERROR, str(exc)) from exc
    batches = _json_batches(_json_values(chunks, spec.json_type), spec.json_path)
    first = next(batches)

    def all_batches() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches
    return pa.RecordBatchReader.from_batches(first.schema, all_batches())


def stream_reader(fetcher: Fetcher, versions: list[ObjectRef], spec: InputSpec) -> pa.RecordBatchReader:
    """CSV or JSON objects, one after the other, as one stream of record batches (first object's schema)."""
    # ScanRange: records are split on the record delimiter's last byte (\n for \r\n) before any other filter
    sep = (spec.csv.record_delimiter.encode()[-1:] or b"\n") if spec.kind == "csv" else b"\n"

    def chunks_of(version: ObjectRef) -> Iterator[bytes]:
        if spec.scan_range is not None:
            start = spec.scan_range[0] or 0
            raw = fetcher.pieces(version, max(start - 1, 0))  # read lazily: stops once past ``end``
            return scan_range(metered(raw, fetcher.meter), start, spec.scan_range[1], sep)
        return metered(decompress(fetcher.pieces(version), spec.compression), fetcher.meter)

    def head_of(version: ObjectRef) -> bytes:
        """The object's first record (after comments), read in growing windows up to one block."""
        size = 4096
        while True:
            raw = fetcher.read_range(version, 0, size)
            data = b"".join(filtered(iter([raw]), spec.csv)) if spec.kind == "csv" else raw
            cut = data.find(b"\n")
            if cut >= 0 or len(raw) < size or size >= BLOCK_BYTES:
                return data[:cut] if cut >= 0 else data
            size *= 4

    def reader_of(version: ObjectRef, schema: pa.Schema | None) -> tuple[pa.RecordBatchReader, ReadAhead]:
        chunks, gate = chunks_of(version), ReadAhead(fetcher.check)
        fetcher.gates.append(gate)
        head = (lambda: head_of(version)) if spec.scan_range and (spec.scan_range[0] or 0) > 0 else None
        try:
            if spec.kind == "csv":
                return _csv_reader(filtered(chunks, spec.csv), spec.csv, schema, gate, head), gate
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


def _checked(reader: pa.RecordBatchReader, gate: ReadAhead, version: ObjectRef, spec: InputSpec
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
        raise _parse_error(code, f"{version.key}: {exc}") from exc
    finally:
        gate.close()


def _conform(batch: pa.RecordBatch, schema: pa.Schema, version: ObjectRef) -> pa.RecordBatch:
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
