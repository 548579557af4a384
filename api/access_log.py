"""The access log: one JSON line per request on stderr (``S4_ACCESS_LOG``, default on).

Fields, in this order: ``time`` (UTC, ms), ``remote`` (client address; a forwarded one only from a trusted proxy),
``actor`` (the verified access key, ``-`` when none), ``operation`` (the S3 operation, or ``Admin``, ``Health``,
``Metrics``; for an answer the connection layer gives before the app sees the request, the S3 error code),
``method``, ``bucket``, ``key``, ``status``, ``bytes`` (response body bytes sent), ``duration_ms`` (from the
request reaching the app to its last response byte written) and ``request_id`` (the ``x-amz-request-id`` sent).

Never logged: the query string (presigned URLs carry ``X-Amz-Signature`` and ``X-Amz-Credential``), any header
(``Authorization``, cookies, tokens) and bodies. Strings are JSON-escaped (control characters, quotes and non-ASCII
as ``\\uXXXX``), so a key cannot forge a line.

The hook sits at the app's edge, in its one ASGI wrapper (api/body_gate.py ``BodyGate``, ``access_log=``): it
times the request and counts what is sent; the app fills the entry (api/app.py ``S3Service`` makes it falcon's
request context). ``STDERR`` is the writer the server uses: it keeps each request's fields and formats the lines
in its flush.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from json.encoder import encode_basestring_ascii as _quote  # type: ignore[attr-defined]
from typing import Any

import falcon

SCOPE_KEY = "s4.access"
Scope = MutableMapping[str, Any]
Asgi = Callable[..., Awaitable[None]]  # an ASGI app (falcon and the wrappers type scope and messages differently)


class AccessEntry(falcon.Context):
    """The request's context object: the app sets ``operation``, ``bucket``, ``key`` and ``actor`` on it."""

    operation = "-"
    bucket = ""
    key = ""
    actor = ""
    request_id = ""  # the x-amz-request-id the app sends (else read from the response headers)


class LineBuffer:
    """The server's access-log writer: requests' fields gathered for up to ``FLUSH_S``, then formatted and written
    to stderr in pieces of whole lines of at most ``PIPE_BUF`` bytes, so another process's pieces never split one
    (a write to a pipe that size is atomic).

    A request hands its raw fields (``add``: a ``Row``, one tuple), not a line: the lines are formatted in the
    flush, in one loop (``format_rows``), which costs less than a call of ``format_line`` per request and takes
    that work off the request's own path. ``__call__`` takes a line already formatted (the connection layer's
    answers); both keep their order. One write per piece instead of one per request: the write system call was
    most of the log's cost once. What is still buffered when the process is SIGKILLed is lost; a normal exit
    writes it (atexit). Without a running event loop everything is written at once.
    """

    PIPE_BUF = 4096
    FLUSH_S = 0.1
    MAX_ROWS = 256  # a flush at least this often under load: a bounded buffer whatever the request rate

    def __init__(self) -> None:
        self._rows: list[Row | str] = []
        self._timer = False
        atexit.register(self.flush)

    def __call__(self, line: str) -> None:
        self.add(line)

    def add(self, row: Row | str) -> None:
        """Buffer one request's fields (or a formatted line); the flush is at most ``FLUSH_S`` away."""
        rows = self._rows
        rows.append(row)
        if self._timer:
            if len(rows) >= self.MAX_ROWS:
                self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_later(self.FLUSH_S, self._tick)
        self._timer = True

    def _tick(self) -> None:
        self._timer = False
        self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rows = self._rows
        self._rows = []
        try:
            for piece in pieces(format_rows(rows), self.PIPE_BUF):
                sys.stderr.write(piece)
                sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stderr never fails a request
            pass


def pieces(lines: list[str], limit: int) -> list[str]:
    """The lines joined into pieces of whole lines of at most ``limit`` characters (a longer line alone)."""
    out: list[str] = []
    start = size = 0
    for i, line in enumerate(lines):
        if size + len(line) > limit and i > start:
            out.append("".join(lines[start:i]))
            start, size = i, 0
        size += len(line)
    if start < len(lines):
        out.append("".join(lines[start:]))
    return out


_stderr = LineBuffer()
STDERR = _stderr  # the access log's writer in a server process (api/app.py, api/gateway.py)


class _Clock:
    """``time`` as RFC 3339 with milliseconds; the seconds part is formatted once per second, the milliseconds
    come from a table (no formatting per line)."""

    _MS = tuple(f"{ms:03d}Z" for ms in range(1000))

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second, ms = divmod(int(now * 1000), 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return self._prefix + self._MS[ms]


_clock = _Clock()


class _Quoted(dict[str, str]):
    """JSON-quoted strings of the fields that repeat from request to request (remote, actor, operation, method,
    bucket names up to 63 characters, the longest valid one): each is escaped once, not once per line. Bounded:
    cleared when it grows past ``LIMIT`` entries."""

    LIMIT = 4096

    def __missing__(self, value: str) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
        quoted = self[value] = _quote(value)
        return quoted


_quoted = _Quoted()

#: One request's fields: (time in integer ms since the epoch, remote, actor, operation, method, bucket, key, status,
#: bytes sent, duration in integer microseconds, request_id). Integers, so the flush formats them without floats
#: (``format_rows``); ``format_line`` takes the same fields with the time and duration in float seconds.
Row = tuple[int, str, str, str, str, str, str, int, int, int, str]


def format_line(now: float, remote: str, actor: str, operation: str, method: str, bucket: str, key: str,
                status: int, sent: int, duration_s: float, request_id: str) -> str:
    q = _quoted
    quoted_bucket = q[bucket] if len(bucket) < 64 else _quote(bucket)
    return (f'{{"time":"{_clock(now)}","remote":{q[remote or "-"]},"actor":{q[actor or "-"]},'
            f'"operation":{q[operation or "-"]},"method":{q[method or "-"]},"bucket":{quoted_bucket},'
            f'"key":{_quote(key)},"status":{status},"bytes":{sent},"duration_ms":{duration_s * 1000:.3f},'
            f'"request_id":{_quote(request_id or "-")}}}\n')


class _Segments(dict[tuple[str, str, str, str, str], str]):
    """The quoted ``"remote":..,"actor":..,"operation":..,"method":..,"bucket":..`` part of a line, per combination
    of those five fields: they repeat from request to request, so most lines take it whole from here instead of
    five lookups and interpolations. Bounded like ``_Quoted``; bucket names past 63 characters never kept."""

    LIMIT = 4096

    def __missing__(self, fields: tuple[str, str, str, str, str]) -> str:
        remote, actor, operation, method, bucket = fields
        q = _quoted
        segment = (f'"remote":{q[remote or "-"]},"actor":{q[actor or "-"]},"operation":{q[operation or "-"]},'
                   f'"method":{q[method or "-"]},"bucket":{q[bucket] if len(bucket) < 64 else _quote(bucket)}')
        if len(bucket) < 64:
            if len(self) >= self.LIMIT:
                self.clear()
            self[fields] = segment
        return segment


_segments = _Segments()
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))
_STATUSES = tuple(str(n) for n in range(1000))


def format_rows(rows: list[Row | str]) -> list[str]:
    """``format_line`` of every row (a ``str`` is a line already), in one loop: the same bytes for the same
    instant and duration (tests/unit/api/test_access_log.py compares the two), without a call per line, floats
    or a lookup per repeating field."""
    segments = _segments
    clock = _clock
    ms_table = _Clock._MS
    digits3 = _DIGITS3
    statuses = _STATUSES
    quote = _quote
    second_seen, prefix = clock._second, clock._prefix
    out: list[str] = []
    append = out.append
    for row in rows:
        if isinstance(row, str):
            append(row)
            continue
        ms, remote, actor, operation, method, bucket, key, status, sent, duration_us, request_id = row
        second, ms = divmod(ms, 1000)
        if second != second_seen:
            clock(float(second))
            second_seen, prefix = second, clock._prefix
        append(f'{{"time":"{prefix}{ms_table[ms]}",{segments[remote, actor, operation, method, bucket]},'
               f'"key":{quote(key)},"status":{statuses[status] if 0 <= status < 1000 else status},"bytes":{sent},'
               f'"duration_ms":{duration_us // 1000}.{digits3[duration_us % 1000]},'
               f'"request_id":{quote(request_id or "-")}}}\n')
    return out
