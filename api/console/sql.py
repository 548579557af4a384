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

from s4.engine.iam import IamError

from .app import Page, Route

MAX_ROWS_SHOWN = 1000
MAX_BYTES_SHOWN = 4 * 1024 * 1024
FORMATS = ("auto", "csv", "json", "parquet")


def routes() -> list[Route]:
    b = r"(?P<bucket>[^/]+)"
    return [
        ("GET", re.compile(rf"/buckets/{b}/sql"), sql_page, "user"),
        ("POST", re.compile(rf"/buckets/{b}/sql"), run_sql, "user"),
    ]


async def sql_page(page: Page) -> None:
    page.console.s3.authorize(page.user, page.req, "ListObjectsV2", page.params["bucket"])
    _render(page, "SELECT * FROM '*.csv' LIMIT 10", "auto", None, None, False)


def _render(page: Page, sql: str, fmt: str, header: list[str] | None, rows: list[list[str]] | None,
            truncated: bool, error: str = "") -> None:
    page.render("sql.html", bucket=page.params["bucket"], sql=sql, fmt=fmt, formats=FORMATS, header=header,
                rows=rows, truncated=truncated, error=error, max_rows=MAX_ROWS_SHOWN)


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
