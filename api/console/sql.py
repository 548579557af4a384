"""The SQL page: a query over a bucket's objects through S4's ``POST /bucket?sql`` (MultiObjectSQL), the S3 API's
own handler and limits (S4_SELECT_*), with a results table and a CSV download of the whole result."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from s4.engine.errors import S3Error
from s4.engine.iam import IamError

from .app import Page, Route
from .select import INPUTS, SelectFailed, records, request_xml, safe_name

MAX_ROWS_SHOWN = 1000
MAX_BYTES_SHOWN = 4 * 1024 * 1024
FORMATS = ("auto", "csv", "json", "parquet")


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("GET", re.compile(rf"/buckets/{b}/sql"), sql_page, "user"),
        ("POST", re.compile(rf"/buckets/{b}/sql"), run_sql, "user"),
        ("POST", re.compile(rf"/buckets/{b}/select"), run_select, "user"),
    ]


async def sql_page(page: Page) -> None:
    page.console.s3.authorize(page.user, page.req, "ListObjectsV2", page.params["bucket"])
    _render(page, "SELECT * FROM '*.csv' LIMIT 10", "auto", None, None, False)


def _render(page: Page, sql: str, fmt: str, header: list[str] | None, rows: list[list[str]] | None,
            truncated: bool, error: str = "", select: dict[str, Any] | None = None) -> None:
    chosen = {"key": "", "expression": "SELECT * FROM s3object s LIMIT 10", "input": "csv", "error": "",
              "rows": None, "truncated": False, **(select or {})}
    page.render("sql.html", bucket=page.params["bucket"], sql=sql, fmt=fmt, formats=FORMATS, header=header,
                rows=rows, truncated=truncated, error=error, max_rows=MAX_ROWS_SHOWN, select=chosen, inputs=INPUTS)


async def run_select(page: Page) -> None:
    """S3 Select over one object (SelectObjectContent): CSV rows as a table (no header: S3 Select's CSV output has
    none), or the whole result as a CSV download."""
    bucket, key = page.params["bucket"], page.arg("key")
    expression, input_format = page.arg("expression"), page.arg("input", "csv")
    chosen: dict[str, Any] = {"key": key, "expression": expression, "input": input_format}
    if not key:
        raise IamError(400, "name the object to query")
    try:
        found = await page.console.s3.call(page.user, page.req, "SelectObjectContent", bucket, key,
                                           query={"select": "", "select-type": "2"},
                                           body=request_xml(expression, input_format))
    except S3Error as exc:  # bad SQL, no such key, not allowed: said beside the form, nothing changed
        _render(page, "SELECT * FROM '*.csv' LIMIT 10", "auto", None, None, False,
                select={**chosen, "error": f"{exc.code.aws_code}: {exc.message}"})
        return
    if page.arg("action") == "csv":  # the whole result as a file (an error mid-stream truncates it)
        page.resp.content_type = "text/csv; charset=utf-8"
        page.resp.set_header("Content-Disposition",
                             f"attachment; filename*=UTF-8''{quote(safe_name(key), safe='')}.csv")
        page.resp.stream = records(found.stream)
        return
    try:
        text, truncated = await _head(records(found.stream))
    except SelectFailed as exc:
        _render(page, "SELECT * FROM '*.csv' LIMIT 10", "auto", None, None, False,
                select={**chosen, "error": str(exc)})
        return
    rows = list(csv.reader(io.StringIO(text)))
    if truncated and rows:
        rows.pop()
    if len(rows) > MAX_ROWS_SHOWN:
        rows, truncated = rows[:MAX_ROWS_SHOWN], True
    _render(page, "SELECT * FROM '*.csv' LIMIT 10", "auto", None, None, False,
            select={**chosen, "rows": rows, "truncated": truncated})


async def run_sql(page: Page) -> None:
    bucket, sql, fmt = page.params["bucket"], page.arg("sql"), page.arg("format", "auto")
    if fmt not in FORMATS:
        raise IamError(400, f"format is one of {', '.join(FORMATS)}")
    doc: dict[str, Any] = {"sql": sql, "output": "csv", "has_headers": page.arg("has_headers") != "false"}
    if fmt != "auto":
        doc["format"] = fmt
    found = await page.console.s3.call(page.user, page.req, "MultiObjectSQL", bucket, query={"sql": ""},
                                       body=json.dumps(doc).encode())
    if found.status_code != 200:
        data = found.data or b"{}"
        message = json.loads(data).get("error", "the query failed") if data.startswith(b"{") else "the query failed"
        _render(page, sql, fmt, None, None, False, message)
        return
    stream: Any = found.stream  # the handler's async iterator of the result's chunks
    if page.arg("action") == "csv":  # the whole result, streamed as a file
        page.resp.content_type = "text/csv; charset=utf-8"
        page.resp.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(bucket, safe='')}.csv")
        page.resp.stream = stream
        return
    text, truncated = await _head(stream)
    rows = list(csv.reader(io.StringIO(text)))
    if truncated and rows:
        rows.pop()  # possibly cut mid-row
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    if len(body) > MAX_ROWS_SHOWN:
        body, truncated = body[:MAX_ROWS_SHOWN], True
    _render(page, sql, fmt, header, body, truncated)


async def _head(stream: AsyncIterator[bytes] | None) -> tuple[str, bool]:
    """The first MAX_BYTES_SHOWN bytes of the result; the query is stopped if there is more."""
    if stream is None:
        return "", False
    got, size = [], 0
    try:
        async for chunk in stream:
            got.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES_SHOWN:
                return b"".join(got)[:MAX_BYTES_SHOWN].decode(errors="replace"), True
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()
    return b"".join(got).decode(errors="replace"), False
