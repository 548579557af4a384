"""Result batches -> the bytes a client asked for: S3 Select CSV/JSON records, or the SQL endpoint's JSON array."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
from typing import Any

import pyarrow as pa

from ..errors import ErrorCode, S3Error
from .inputs import MAX_RECORD_BYTES


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _text(value: Any) -> str:
    """One CSV field: NULL is empty, booleans lower-case, nested values as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=_json_default, separators=(",", ":"))
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    return str(value)


def _record(text: str) -> str:
    """One encoded result record, refused past S3 Select's 1 MiB maxCharsPerRecord (a character is at least a
    byte, so the length in characters is checked first and the bytes only when it could be close)."""
    if len(text) > MAX_RECORD_BYTES or (len(text) > MAX_RECORD_BYTES // 4 and len(text.encode()) > MAX_RECORD_BYTES):
        raise S3Error(ErrorCode.OVER_MAX_RECORD_SIZE, f"A result record is longer than {MAX_RECORD_BYTES} bytes "
                      "(S3 Select's maxCharsPerRecord of 1 MB).")
    return text


def _rows(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    return list(zip(*(column.to_pylist() for column in batch.columns), strict=True))


class CsvEncoder:
    def __init__(self, delimiter: str = ",", record_delimiter: str = "\n", quote: str = '"', escape: str = '"',
                 always_quote: bool = False, header: bool = False) -> None:
        self.options: dict[str, Any] = {
            "delimiter": delimiter, "lineterminator": record_delimiter, "quotechar": quote or '"',
            "quoting": csv.QUOTE_ALL if always_quote else csv.QUOTE_MINIMAL,
            "doublequote": escape in ("", quote), "escapechar": None if escape in ("", quote) else escape}
        self.header = header

    def _write(self, rows: list[Any]) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, **self.options)
        start = 0
        for row in rows:
            writer.writerow(row)
            end = out.tell()
            if end - start > MAX_RECORD_BYTES // 4:  # only then can the record be over the limit in bytes
                out.seek(start)
                _record(out.read())
            start = end
        return out.getvalue().encode()

    def begin(self, schema: pa.Schema) -> bytes:
        return self._write([schema.names]) if self.header else b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        return self._write([[_text(v) for v in row] for row in _rows(batch)])

    def end(self) -> bytes:
        return b""


class JsonRecordsEncoder:
    """S3 Select JSON output: one object per record, each followed by the record delimiter."""

    def __init__(self, record_delimiter: str = "\n") -> None:
        self.delimiter = record_delimiter
        self.names: list[str] = []

    def begin(self, schema: pa.Schema) -> bytes:
        self.names = schema.names
        return b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        return "".join(_record(json.dumps(dict(zip(self.names, row, strict=True)), default=_json_default,
                                          separators=(",", ":")) + self.delimiter) for row in _rows(batch)).encode()

    def end(self) -> bytes:
        return b""


class JsonArrayEncoder(JsonRecordsEncoder):
    """The SQL endpoint's JSON output: one array of row objects, streamed."""

    def __init__(self) -> None:
        super().__init__("")
        self.first = True

    def begin(self, schema: pa.Schema) -> bytes:
        super().begin(schema)
        return b"["

    def batch(self, batch: pa.RecordBatch) -> bytes:
        rows = [_record(json.dumps(dict(zip(self.names, row, strict=True)), default=_json_default))
                for row in _rows(batch)]
        if not rows:
            return b""
        text = ("" if self.first else ",") + ",".join(rows)
        self.first = False
        return text.encode()

    def end(self) -> bytes:
        return b"]"
