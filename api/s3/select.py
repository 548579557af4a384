"""SelectObjectContent (``POST /bucket/key?select&select-type=2``) and S4's multi-object SQL (``POST /bucket?sql``).

Both translate and validate the SQL (s4.engine.select.sql), start a QueryRun, and only once the query is bound
send the 200: errors found before that are ordinary error responses (S3 XML for Select, JSON for ?sql); later ones
are an error event (Select) or a truncated body (?sql).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from xml.etree.ElementTree import Element

import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import ObjectVersion
from s4.engine.select.inputs import CsvInput, InputSpec
from s4.engine.select.output import CsvEncoder, JsonArrayEncoder, JsonRecordsEncoder
from s4.engine.select.runner import Encoder, Limits, QueryRun
from s4.engine.select.sql import TABLE, translate

from ..inputs import digits_value
from . import eventstream
from .call import Call
from .xml_parse import local_name, parse_root

MAX_GLOB_OBJECTS = 10_000
KEEPALIVE_S = 5.0


def _require_enabled(call: Call) -> None:
    if not call.settings.select_enabled:
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, "S3 Select and SQL queries are disabled on this server "
                      "(S4_SELECT_ENABLED=false).")


def _limits(call: Call) -> Limits:
    return Limits(memory_bytes=call.settings.select_max_memory, timeout_s=call.settings.select_timeout_s,
                  process_bytes=call.settings.select_process_memory)


# -- SelectObjectContent request XML

def _children(elem: Element | None) -> dict[str, Element]:
    return {local_name(c): c for c in elem} if elem is not None else {}


def _text(elem: Element | None, name: str, default: str = "") -> str:
    child = _children(elem).get(name)
    return child.text or "" if child is not None else default


def _char(value: str, what: str) -> str:
    if len(value) > 1 and what != "RecordDelimiter":
        raise S3Error(ErrorCode.INVALID_REQUEST, f"{what} must be a single character.")
    return value


def parse_input(elem: Element) -> InputSpec:
    parts = _children(elem)
    compression = _text(elem, "CompressionType", "NONE").upper() or "NONE"
    if compression not in ("NONE", "GZIP", "BZIP2"):
        raise S3Error(ErrorCode.INVALID_COMPRESSION_FORMAT, f"Unsupported CompressionType {compression}.")
    if "CSV" in parts:
        c = parts["CSV"]
        header = _text(c, "FileHeaderInfo", "NONE").upper() or "NONE"
        if header not in ("USE", "IGNORE", "NONE"):
            raise S3Error(ErrorCode.INVALID_REQUEST, f"Invalid FileHeaderInfo {header}.")
        quote = _char(_text(c, "QuoteCharacter", '"'), "QuoteCharacter")
        spec = CsvInput(header=header, delimiter=_char(_text(c, "FieldDelimiter", ",") or ",", "FieldDelimiter"),
                        record_delimiter=_char(_text(c, "RecordDelimiter", "\n") or "\n", "RecordDelimiter"),
                        quote=quote, escape=_char(_text(c, "QuoteEscapeCharacter", quote), "QuoteEscapeCharacter"),
                        comments=_char(_text(c, "Comments", ""), "Comments"),
                        quoted_record_delimiter=_text(c, "AllowQuotedRecordDelimiter", "false").lower() == "true")
        return InputSpec("csv", compression, csv=spec)
    if "JSON" in parts:
        json_type = _text(parts["JSON"], "Type", "DOCUMENT").upper() or "DOCUMENT"
        if json_type not in ("DOCUMENT", "LINES"):
            raise S3Error(ErrorCode.INVALID_REQUEST, f"Invalid JSON Type {json_type}.")
        return InputSpec("json", compression, json_type=json_type)
    if "Parquet" in parts:
        if compression != "NONE":
            raise S3Error(ErrorCode.INVALID_COMPRESSION_FORMAT, "Parquet input takes no CompressionType.")
        return InputSpec("parquet")
    raise S3Error(ErrorCode.MISSING_REQUIRED_PARAMETER, "InputSerialization needs CSV, JSON or Parquet.")


def parse_output(elem: Element) -> Encoder:
    parts = _children(elem)
    if "JSON" in parts:
        return JsonRecordsEncoder(_text(parts["JSON"], "RecordDelimiter", "\n") or "\n")
    if "CSV" in parts:
        c = parts["CSV"]
        quote = _text(c, "QuoteCharacter", '"') or '"'
        return CsvEncoder(delimiter=_text(c, "FieldDelimiter", ",") or ",",
                          record_delimiter=_text(c, "RecordDelimiter", "\n") or "\n", quote=quote,
                          escape=_text(c, "QuoteEscapeCharacter", quote) or quote,
                          always_quote=_text(c, "QuoteFields", "ASNEEDED").upper() == "ALWAYS")
    raise S3Error(ErrorCode.MISSING_REQUIRED_PARAMETER, "OutputSerialization needs CSV or JSON.")


def _scan_range(elem: Element | None, spec: InputSpec) -> None:
    if elem is None:
        return
    start_text, end_text = _text(elem, "Start").strip(), _text(elem, "End").strip()
    start, end = digits_value(start_text), digits_value(end_text)
    if (start is None and end is None) or (start_text and start is None) or (end_text and end is None):
        raise S3Error(ErrorCode.INVALID_REQUEST, "ScanRange needs a numeric Start and/or End.")
    if start is not None and end is not None and start > end:
        raise S3Error(ErrorCode.INVALID_REQUEST, "ScanRange Start must not be greater than End.")
    if spec.kind == "parquet" or spec.compression != "NONE" or (spec.kind == "json" and spec.json_type != "LINES"):
        raise S3Error(ErrorCode.UNSUPPORTED_SCAN_RANGE_INPUT, "ScanRange applies to uncompressed CSV and JSON "
                      "LINES objects only.")
    if spec.kind == "csv" and spec.csv.quoted_record_delimiter:  # a record's start cannot be found from the middle
        raise S3Error(ErrorCode.UNSUPPORTED_SCAN_RANGE_INPUT, "ScanRange cannot be used with "
                      "AllowQuotedRecordDelimiter TRUE.")
    if start is None:  # End alone: the last End bytes, as S3 defines it
        spec.scan_range = (-(end or 0), None)
    else:
        spec.scan_range = (start, end)


async def select_object_content(call: Call, resp: falcon.asgi.Response) -> None:
    _require_enabled(call)
    root = parse_root(await call.read_body(), "SelectObjectContentRequest")
    parts = _children(root)
    expression = _text(root, "Expression")
    if _text(root, "ExpressionType", "SQL").upper() != "SQL":
        raise S3Error(ErrorCode.INVALID_EXPRESSION_TYPE)
    if "InputSerialization" not in parts or "OutputSerialization" not in parts:
        raise S3Error(ErrorCode.MISSING_REQUIRED_PARAMETER, "InputSerialization and OutputSerialization are "
                      "required.")
    spec = parse_input(parts["InputSerialization"])
    encoder = parse_output(parts["OutputSerialization"])
    _scan_range(parts.get("ScanRange"), spec)
    progress = _text(parts.get("RequestProgress"), "Enabled", "false").lower() == "true"
    query = translate(expression)
    spec.json_path = query.json_path
    await call.engine.settle_key(call.bucket, call.key)
    version = call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))
    if spec.scan_range is not None and spec.scan_range[0] is not None and spec.scan_range[0] < 0:
        spec.scan_range = (max(version.size + spec.scan_range[0], 0), None)
    run = QueryRun(call.engine, query, {TABLE: (spec, [version])}, encoder, _limits(call))
    await run.start()
    resp.content_type = "application/octet-stream"
    resp.stream = _events(run, progress, KEEPALIVE_S)


async def _events(run: QueryRun, progress: bool, keepalive_s: float) -> AsyncIterator[bytes]:
    """Records as they come; every ``keepalive_s`` without output a Cont (so proxies and SDKs keep the
    connection), and with RequestProgress a Progress at that pace and one with the final numbers before Stats."""
    def numbers() -> tuple[int, int, int]:
        return run.meter.scanned, run.meter.processed, run.returned

    last_progress = time.monotonic()
    try:
        async for chunk in run.chunks(keepalive_s):
            if chunk is None:
                yield eventstream.cont()
            else:
                yield eventstream.records(chunk)
            if progress and time.monotonic() - last_progress >= keepalive_s:
                last_progress = time.monotonic()
                yield eventstream.progress(*numbers())
    except S3Error as exc:
        yield eventstream.error(exc.code.aws_code, exc.message)
        return
    if progress:
        yield eventstream.progress(*numbers())
    yield eventstream.stats(*numbers())
    yield eventstream.end()


# -- multi-object SQL

FORMATS = {"csv": "csv", "json": "json", "jsonl": "json", "ndjson": "json", "parquet": "parquet"}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` stay within one path segment; ``**`` crosses '/' (``**/`` also matches no directory)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[" and (close := pattern.find("]", i + 1)) > i + 1:
            body = pattern[i + 1:close]
            out.append("[" + ("^" + re.escape(body[1:]) if body[0] in "!^" else re.escape(body)) + "]")
            i = close + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z")


async def expand_glob(call: Call, pattern: str) -> list[ObjectVersion]:
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    regex = glob_regex(pattern)
    found: list[ObjectVersion] = []
    after = ""
    while True:
        page = await call.engine.list_objects(call.bucket, prefix=literal, start_after=after, max_keys=1000)
        for entry in page.entries:
            if regex.match(entry.key):
                call.authorize("s3:GetObject", call.bucket, entry.key)  # every object the query reads
                found.append(entry.version)
        if len(found) > MAX_GLOB_OBJECTS:
            raise S3Error(ErrorCode.INVALID_REQUEST, f"The pattern '{pattern}' matches more than "
                          f"{MAX_GLOB_OBJECTS} objects.")
        if not page.is_truncated or not page.entries:
            return found
        after = page.entries[-1].key


def _format_of(body: dict[str, object], pattern: str) -> str:
    """The glob's own extension when it names a format (so one query can join CSV with JSON lines), else
    the body's "format", else CSV."""
    extension = pattern.rsplit(".", 1)[-1].lower()
    name = extension if extension in FORMATS else str(body.get("format") or "csv").lower()
    if name not in FORMATS:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"Unknown format {name!r}: use csv, json, jsonl, ndjson or parquet.")
    return FORMATS[name]


async def multi_object_sql(call: Call, resp: falcon.asgi.Response) -> None:
    try:
        await _multi_object_sql(call, resp)
    except S3Error as exc:
        resp.status = falcon.code_to_http_status(exc.status)
        resp.content_type = "application/json"
        resp.data = json.dumps({"error": exc.message, "code": exc.code.aws_code}).encode()


async def _multi_object_sql(call: Call, resp: falcon.asgi.Response) -> None:
    _require_enabled(call)
    try:
        body = json.loads(await call.read_body())
    except ValueError as exc:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"The request body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
        raise S3Error(ErrorCode.INVALID_REQUEST, 'The body must be a JSON object with a "sql" string.')
    output = str(body.get("output") or "json").lower()
    if output not in ("json", "csv"):
        raise S3Error(ErrorCode.INVALID_REQUEST, f"Unknown output {output!r}: use json or csv.")
    call.engine.get_bucket(call.bucket)
    query = translate(body["sql"], globs=True)
    tables = {}
    for name, pattern in query.globs.items():
        versions = await expand_glob(call, pattern)
        if not versions:
            raise S3Error(ErrorCode.INVALID_REQUEST, f"The pattern '{pattern}' matched no objects in bucket "
                          f"'{call.bucket}'.")
        kind = _format_of(body, pattern)
        delimiter = str(body.get("delimiter") or ",")
        csv_spec = CsvInput(header="USE" if body.get("has_headers", True) else "NONE", delimiter=delimiter,
                            infer_types=True)
        tables[name] = (InputSpec(kind, csv=csv_spec, json_type="AUTO"), versions)
    encoder: Encoder = JsonArrayEncoder() if output == "json" else CsvEncoder(header=True)
    run = QueryRun(call.engine, query, tables, encoder, _limits(call))
    try:
        await run.start()
        # The status waits for the first output: a query that fails before producing a row (a timeout or the
        # memory limit during an aggregate's scan) still gets an error status and a JSON body.
        chunks = run.chunks(KEEPALIVE_S)
        first = await _first_output(chunks)
    except S3Error as exc:
        message = exc.message
        for name, pattern in query.globs.items():
            message = message.replace(f'"{name}"', f"'{pattern}'").replace(name, f"'{pattern}'")
        raise S3Error(exc.code, message) from exc
    except BaseException:  # cancelled while waiting: stop the worker too
        run.cancel()
        raise
    resp.content_type = "application/json" if output == "json" else "text/csv"
    resp.stream = _body(first, chunks)


async def _first_output(chunks: AsyncIterator[bytes | None]) -> bytes:
    async for chunk in chunks:
        if chunk:
            return chunk
    return b""


async def _body(first: bytes, chunks: AsyncIterator[bytes | None]) -> AsyncIterator[bytes]:
    yield first
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    except S3Error:
        return  # the status is already sent: a truncated body is the only signal left
