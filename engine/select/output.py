"""Result batches -> the bytes a client asked for: S3 Select CSV/JSON records, or the SQL endpoint's JSON array."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
from typing import Any

import pyarrow as pa


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
        csv.writer(out, **self.options).writerows(rows)
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
        return "".join(json.dumps(dict(zip(self.names, row, strict=True)), default=_json_default,
                                  separators=(",", ":")) + self.delimiter for row in _rows(batch)).encode()

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
        rows = [json.dumps(dict(zip(self.names, row, strict=True)), default=_json_default)
                for row in _rows(batch)]
        if not rows:
            return b""
        text = ("" if self.first else ",") + ",".join(rows)
        self.first = False
        return text.encode()

    def end(self) -> bytes:
        return b"]"
