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
times the request and counts what is sent; the app fills the request's context (``LoggedRequest`` makes the
wrapper's entry that context). ``STDERR`` is the writer the server uses.
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
import falcon.asgi

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


_request_init = falcon.asgi.Request.__init__


class LoggedRequest(falcon.asgi.Request):
    """A falcon request whose ``context`` is the access-log entry the wrapper put into the ASGI scope. The app
    uses it only with the log on (api/app.py ``build_app``); falcon's own ``__init__`` is called directly, with
    positional arguments (``super()`` and keywords cost ~900 instructions a request)."""

    def __init__(self, scope: dict[str, Any], receive: Any, first_event: Any = None, options: Any = None) -> None:
        _request_init(self, scope, receive, first_event, options)
        entry = scope.get(SCOPE_KEY)
        if entry is not None:
            self.context = entry


class LineBuffer:
    """Lines gathered for up to ``FLUSH_S`` and written to stderr in pieces of whole lines of at most ``PIPE_BUF``
    bytes, so another process's pieces never split one (a write to a pipe that size is atomic).

    One write per piece instead of one per request: the write system call was most of the log's cost, a few
    percent of a small GET's CPU. Lines still buffered when the process is SIGKILLed are lost; a normal exit
    writes them (atexit). Without a running event loop a line is written at once.
    """

    PIPE_BUF = 4096
    FLUSH_S = 0.1

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0
        self._timer = False
        atexit.register(self.flush)

    def __call__(self, line: str) -> None:
        if self._size + len(line) > self.PIPE_BUF:
            self.flush()
        self._lines.append(line)
        self._size += len(line)
        if not self._timer:
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
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stderr never fails a request
            pass


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


def format_line(now: float, remote: str, actor: str, operation: str, method: str, bucket: str, key: str,
                status: int, sent: int, duration_s: float, request_id: str) -> str:
    q = _quoted
    quoted_bucket = q[bucket] if len(bucket) < 64 else _quote(bucket)
    return (f'{{"time":"{_clock(now)}","remote":{q[remote or "-"]},"actor":{q[actor or "-"]},'
            f'"operation":{q[operation or "-"]},"method":{q[method or "-"]},"bucket":{quoted_bucket},'
            f'"key":{_quote(key)},"status":{status},"bytes":{sent},"duration_ms":{duration_s * 1000:.3f},'
            f'"request_id":{_quote(request_id or "-")}}}\n')


def client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
