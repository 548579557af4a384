"""``s4-journal export``: the audit log, one row per selected event, as JSON lines or Parquet."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from s4.journal import Event
from s4.journal.hlc import physical_ms
from s4.journal.public import public, rfc3339_ms

from .events import filter_from

#: Payload fields left out of the audit log's ``details``: chunk lists say nothing to an auditor.
BULKY_FIELDS = frozenset({"blobs_at", "b"})
PARQUET_BATCH_ROWS = 10_000


def _slim(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _slim(v) for k, v in value.items() if not (k in BULKY_FIELDS and isinstance(v, list))}
    if isinstance(value, list):
        return [_slim(v) for v in value]
    return value


def audit_row(event: Event) -> dict[str, Any]:
    """One audit-log row: who did what to which object, when; ``time`` is epoch ms (formatted by the writer)."""
    p = event.payload
    version: dict[str, Any] = p["version"] if isinstance(p.get("version"), dict) else {}
    upload: dict[str, Any] = p["upload"] if isinstance(p.get("upload"), dict) else {}
    key = p.get("key", p.get("src", upload.get("k")))
    version_id = p.get("version_id", version.get("v"))
    return {"time": physical_ms(event.hlc), "seq": event.seq, "origin": event.origin, "actor": event.actor,
            "type": str(event.type), "bucket": event.bucket,
            "key": None if key is None else str(key), "version_id": None if version_id is None else str(version_id),
            "details": json.dumps(public(_slim(p)), sort_keys=True, separators=(",", ":"))}


def _write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        row["time"] = rfc3339_ms(row["time"])
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
    return count


def _write_parquet(rows: Iterator[dict[str, Any]], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("time", pa.timestamp("ms", tz="UTC")), ("seq", pa.int64()), ("origin", pa.string()),
                        ("actor", pa.string()), ("type", pa.string()), ("bucket", pa.string()),
                        ("key", pa.string()), ("version_id", pa.string()), ("details", pa.string())])
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= PARQUET_BATCH_ROWS:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                count += len(batch)
                batch.clear()
        writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))  # an empty log still gets a schema
        count += len(batch)
    return count


def cmd_export(args: argparse.Namespace) -> int:
    rows = (audit_row(e) for e in filter_from(args).select(args.data_dir / "journal"))
    if args.format == "parquet":
        if args.output is None:
            sys.stderr.write("error: --format parquet needs --output PATH\n")
            return 2
        count = _write_parquet(rows, args.output)
    elif args.output is None:
        _write_jsonl(rows, sys.stdout)
        return 0
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            count = _write_jsonl(rows, fh)
    sys.stderr.write(f"exported {count} events to {args.output}\n")
    return 0
