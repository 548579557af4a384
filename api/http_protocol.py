"""uvicorn's httptools protocol with the limits a public server needs (issue 18, item 6).

uvicorn bounds neither the request head nor the time a client may take to send it or its body, so a slowloris, a
256 MB header or a stalled upload holds a descriptor (and memory) forever. Per connection, this subclass adds:

- a **header-section limit** (``max_header_bytes``, request line + header fields): more is answered 400
  ``RequestHeaderSectionTooLarge`` and the connection closed. Counted while bytes arrive, so at most the limit plus
  one read (uvloop reads at most 256 KiB) is ever buffered;
- a **header deadline** (``header_timeout_s``) from the connection's start (or a keep-alive request's first byte) to
  the end of its head: an idle connection is closed, a half-sent head is answered 400 ``RequestTimeout``;
- a **body and write watchdog** (``body_timeout_s``): a request body that stops arriving while the app waits for it
  fails the request with ``RequestTimeout`` (raised from ``receive``, so the app's error boundary answers it and
  nothing partial is stored), and a response the client stops reading is aborted;
- a **connection cap per process** (``max_connections``): over it, the oldest idle connection (no request in
  progress) is closed to make room, as nginx reuses idle keep-alive connections; when every connection is busy the
  new request is answered 503 ``ServiceUnavailable`` with ``Retry-After``, and past a hard bound (cap + 1/8) a
  new connection is closed at once, so descriptors never run out under a flood;
- an answer for a **half-closed** client: one that sends a whole request and then shuts down its sending side
  (``shutdown(SHUT_WR)``) still gets its response (uvicorn would treat the EOF as a disconnect: the request runs
  on, a PUT is stored, and its response is thrown away); the connection closes after the answer. An EOF before
  the request is complete (a body cut short) is still a disconnect: nothing is stored or acknowledged.

The deadlines cost no timer per request: each connection notes when its head or its request started (one
``loop.time()``), and one sweeper per process (``ConnectionLimits.sweep``), running only while connections are
open, checks them every ``tick_s`` (an eighth of the shorter timeout, between 0.05 and 1 s). A deadline therefore
fires between its timeout and one tick later.

Answers given here are S3 XML errors with a request id, logged like any request (api/access_log.py), and written
before a short lingering close: the rest of the client's request is read and dropped for a moment, so the
client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httptools
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from s4.engine.errors import ErrorCode, S3Error

from .access_log import _stderr, format_line
from .s3.xml_render import error_xml

log = logging.getLogger(__name__)
LINGER_S = 2.0  # how long a refused connection's remaining input is read and dropped
LINGER_BYTES = 1024 * 1024  # ... and at most this much of it
HEAD_OVERHEAD = 4  # ": " and CRLF per header line
# A TLS transport's close() sends close_notify and then waits for the peer's (uvloop and asyncio: up to 30 s). An idle
# pooled client never answers until it next uses the connection, so every close (keep-alive timeout, eviction,
# shutdown) held the descriptor for 30 s and a SIGTERM took 30 s more than it should. The sweeper aborts a TLS
# connection it has seen closing for this long (so after one to two ticks): close_notify was sent, nothing of a
# response is lost.
TLS_CLOSE_GRACE_S = 1.0


@dataclass
class ConnectionLimits:
    """The per-process limits (tools/config.py's S4_MAX_HEADER_SIZE, S4_HEADER_TIMEOUT_SECS,
    S4_BODY_TIMEOUT_SECS, S4_MAX_CONNECTIONS), and this process's registry of idle connections."""

    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024
    access_log: bool = False
    idle: dict[LimitedHttpProtocol, None] = field(default_factory=dict)  # oldest first
    open: dict[LimitedHttpProtocol, None] = field(default_factory=dict)  # every connection, for the sweeper
    _sweeping: bool = False

    @property
    def tick_s(self) -> float:
        return min(1.0, max(0.05, min(self.header_timeout_s, self.body_timeout_s) / 8))

    def track(self, conn: LimitedHttpProtocol) -> None:
        """A new connection: swept from now on (the sweeper starts with the first open connection)."""
        self.open[conn] = None
        if not self._sweeping:
            self._sweeping = True
            conn.loop.call_later(self.tick_s, self.sweep, conn.loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check every open connection's deadlines; stops when none is open (``track`` restarts it)."""
        if not self.open:
            self._sweeping = False
            return
        now = loop.time()
        for conn in list(self.open):
            conn.check_deadlines(now)
        loop.call_later(self.tick_s, self.sweep, loop)

    @property
    def hard_connections(self) -> int:
        return self.max_connections + self.max_connections // 8 + 8

    def evict_idle(self, connections: set[Any]) -> bool:
        """Close the oldest idle connection to make room for a new one; False when none is idle."""
        for victim in self.idle:
            victim.evict(connections)
            return True
        return False


def connection_cap(wanted: int, nofile: int | None = None) -> int:
    """``wanted``, lowered so the connections (cap + 1/8 + 8 pending refusals) leave a quarter of the descriptor
    limit (at least 128) to the engine: volumes, journal, LMDB, pipes."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    reserve = max(128, nofile // 4)
    room = max(8, ((nofile - reserve - 8) * 8) // 9)
    return max(1, min(wanted, room))


def raise_nofile_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit (a server needs them: one per connection and
    per volume); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


class _Refused(Exception):
    """Raised from a parser callback to stop parsing: the answer is in ``LimitedHttpProtocol._refusal``."""


class WatchedCycle(RequestResponseCycle):
    """A request whose body stalled gets ``RequestTimeout`` from ``receive`` (never an early end of body)."""

    timed_out = False

    async def receive(self) -> Any:
        if self.timed_out:
            raise S3Error(ErrorCode.REQUEST_TIMEOUT)
        message = await RequestResponseCycle.receive(self)
        if self.timed_out:
            raise S3Error(ErrorCode.REQUEST_TIMEOUT)
        return message


class LimitedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with the limits of ``limits`` (set by ``protocol_class``).

    The per-request callbacks call uvicorn's methods by class (``HttpToolsProtocol.on_body(self, body)``), not
    through ``super()``: each ``super()`` builds an object per call, ~1,500 instructions, and a request ran five
    (~6,000 of the ~16,000 this class added to uvicorn's own cost per request)."""

    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte and the end of its head
        self._head_bytes = 0
        self._head_deadline: float | None = None  # when a head still not complete is timed out
        self._watch_at: float | None = None  # when the running request's progress is next checked
        self._progress = False
        self._write_backlog = -1
        self._over_cap = False
        self._refusal: tuple[ErrorCode, dict[str, str]] | None = None
        self._lingering = -1  # bytes dropped since a refusal (-1: not lingering)
        self._discarding = False  # unparseable bytes followed a complete request: drop input, close after answering
        self._read_bytes = 0  # size of the read being parsed
        self._head_span = 0  # bytes of the earlier reads that held part of the current head
        self._tls = False
        self._closing_since: float | None = None  # TLS: when the sweeper first saw the transport closing

    # -- connection life ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        while len(self.connections) > limits.max_connections:
            if limits.evict_idle(self.connections):
                continue
            if len(self.connections) > limits.hard_connections:
                self.connections.discard(self)
                transport.abort()
                return
            self._over_cap = True  # answered 503 once its head is in (unless room was made meanwhile)
            break
        if not self._over_cap:
            limits.idle[self] = None
        self._head_deadline = self.loop.time() + limits.header_timeout_s
        self._tls = transport.get_extra_info("sslcontext") is not None
        limits.track(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.idle.pop(self, None)
        self.limits.open.pop(self, None)
        self._cancel_timers()
        super().connection_lost(exc)

    def evict(self, connections: set[Any]) -> None:
        """Closed to make room under the cap: between requests, so no request is lost."""
        self.limits.idle.pop(self, None)
        connections.discard(self)
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        self._head_deadline = self._watch_at = None

    def check_deadlines(self, now: float) -> None:
        """Called by the sweeper: run the head timeout and the progress watch when they are due, and end a TLS
        close the peer does not answer (TLS_CLOSE_GRACE_S)."""
        if self._tls and self.transport.is_closing():
            if self._closing_since is None:
                self._closing_since = now
            elif now - self._closing_since >= TLS_CLOSE_GRACE_S:
                self.transport.abort()
                return
        if self._head_deadline is not None and now >= self._head_deadline:
            self._head_deadline = None
            self._head_timeout()
        if self._watch_at is not None and now >= self._watch_at:
            self._watch_at = None
            if self.cycle is not None:
                self._watch(self.cycle)

    # -- reading --------------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._lingering >= 0:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        in_head = self._in_head
        self._read_bytes = len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                # bytes after a complete request that start no request (a body longer than its Content-Length):
                # the request in progress is answered (e.g. BadDigest), then the connection closes; the rest of
                # the input is dropped. A 400 now would be read as that request's answer.
                cycle.keep_alive = False
                self._discarding = True
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head:  # a head still incomplete after this read: an upper bound of its size so far
            self._head_span += len(data)
        if in_head and self._in_head:  # the whole read was head bytes, and the head is still not complete
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(ErrorCode.REQUEST_HEADER_SECTION_TOO_LARGE, {})

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol allows a bool
        if self._lingering >= 0:
            self.transport.close()
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body and not cycle.disconnected:
            cycle.keep_alive = False  # a complete request, then a half-close: answer, then close
            return True  # keep the transport open for the response
        return None  # nothing in flight, or the request is incomplete: close as uvicorn does

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self.limits.idle.pop(self, None)
        self._in_head = True
        self._head_bytes = self._head_span = 0
        if self._head_deadline is None:
            self._head_deadline = self.loop.time() + self.limits.header_timeout_s

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = None
        # The head lies within this read and the earlier ones it spans: only when those are larger than the limit
        # can the head be, and only then is it measured.
        if self._head_span + self._read_bytes > self.limits.max_header_bytes and \
                self._head_size() > self.limits.max_header_bytes:
            self._refusal = (ErrorCode.REQUEST_HEADER_SECTION_TOO_LARGE, {})
            raise _Refused
        if self._over_cap:
            if len(self.connections) > self.limits.max_connections:
                self._refusal = (ErrorCode.SERVICE_UNAVAILABLE, {"Retry-After": "1"})
                raise _Refused
            self._over_cap = False
        # uvicorn builds the request's cycle from its module's ``RequestResponseCycle``: pointed at WatchedCycle for
        # this call, the cycle is born a WatchedCycle. Assigning ``__class__`` afterwards (as this did) moves the
        # object's attributes out of CPython's inline layout into a dict of their own, which made every attribute
        # access of the cycle (uvicorn's ``send``, ``receive``, ``run_asgi``: dozens per request) about five times
        # slower. The event loop runs this on one thread; a cycle another thread's uvicorn built meanwhile would
        # only be a WatchedCycle that never times out.
        httptools_impl.RequestResponseCycle = WatchedCycle  # type: ignore[misc]
        try:
            HttpToolsProtocol.on_headers_complete(self)
        finally:
            httptools_impl.RequestResponseCycle = RequestResponseCycle  # type: ignore[misc]

    def on_body(self, body: bytes) -> None:
        self._progress = True
        HttpToolsProtocol.on_body(self, body)

    def _head_size(self) -> int:
        return len(self.url) + 16 + sum(len(name) + len(value) + HEAD_OVERHEAD for name, value in self.headers)

    def on_response_complete(self) -> None:
        self._watch_at = None
        HttpToolsProtocol.on_response_complete(self)
        if self.timeout_keep_alive_task is not None:  # idle until the next request: may be evicted
            self.limits.idle[self] = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        HttpToolsProtocol._start_asgi_task(self, cycle, app)
        self._progress = False
        self._write_backlog = -1
        self._watch_at = self.loop.time() + self.limits.body_timeout_s

    def resume_writing(self) -> None:
        self._progress = True
        super().resume_writing()

    # -- timeouts -------------------------------------------------------------------------------------------------
    def _head_timeout(self) -> None:
        """No complete head in time: a half-sent one is answered RequestTimeout, an idle connection just closed."""
        if self.transport.is_closing() or self._lingering >= 0:
            return
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined head behind a running request:
            self._head_deadline = self.loop.time() + self.limits.header_timeout_s  # timed after
        elif self._in_head:
            self._refuse(ErrorCode.REQUEST_TIMEOUT, {})
        else:
            self.limits.idle.pop(self, None)
            self.transport.close()

    def _watch(self, cycle: RequestResponseCycle) -> None:
        """Every ``body_timeout_s`` while a request runs: did the client send body bytes or read response bytes?"""
        if cycle is not self.cycle or cycle.response_complete or self.transport.is_closing():
            return
        stalled = False
        if isinstance(cycle, WatchedCycle) and cycle.timed_out:
            stalled = True  # told the app a period ago and it has still not answered
        elif self._progress:
            self._progress = False
            self._write_backlog = -1
        elif cycle.more_body and not cycle.response_started and not self.flow.read_paused and \
                not cycle.waiting_for_100_continue:
            if isinstance(cycle, WatchedCycle):  # the app is waiting for body bytes that do not come
                cycle.timed_out = True
                cycle.keep_alive = False
                cycle.message_event.set()
            else:
                stalled = True
        elif self.flow.write_paused:
            backlog = self.transport.get_write_buffer_size()
            stalled = backlog == self._write_backlog  # the client read nothing for a whole period
            self._write_backlog = backlog
        if stalled:
            self.logger.info("resetting a connection from %s: no progress for %.1f s", self.client,
                             self.limits.body_timeout_s)
            self._reset()
            return
        self._watch_at = self.loop.time() + self.limits.body_timeout_s

    def _reset(self) -> None:
        """Abort with a TCP reset: a graceful close would keep the unsent bytes (and the kernel's memory) queued
        for a client that reads nothing."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # -- answers of the connection layer --------------------------------------------------------------------------
    def _refuse(self, code: ErrorCode, headers: dict[str, str]) -> None:
        """Answer ``code`` as S3 XML, then close after lingering (the client reads the answer, not a reset)."""
        self._refusal = None
        self.limits.idle.pop(self, None)
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # a response is being written: an answer now would corrupt it
            return
        request_id = secrets.token_hex(8).upper()
        method = self.scope.get("method", "") if self.scope else ""
        body = b"" if method == "HEAD" else error_xml(code.aws_code, code.default_message, None, request_id, {})
        lines = [f"HTTP/1.1 {code.status} {_REASONS.get(code.status, '')}", "Server: S4",
                 f"Date: {formatdate(usegmt=True)}", f"x-amz-request-id: {request_id}", f"x-amz-id-2: {request_id}",
                 "Content-Type: application/xml", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if self.limits.access_log:
            _stderr(format_line(time.time(), self.client[0] if self.client else "", "", code.aws_code, method,
                                "", "", code.status, len(body), 0.0, request_id))
        self.flow.resume_reading()
        self._lingering = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


_REASONS = {400: "Bad Request", 503: "Service Unavailable"}


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to pass as uvicorn's ``http=``: ``LimitedHttpProtocol`` bound to ``limits``."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
