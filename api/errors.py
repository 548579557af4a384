"""The HTTP error boundary: every failure of an S3 request becomes one S3 XML error response, the same way in
every process mode (one process, or workers talking to a supervisor).

    S3Error                    -> its status, code, message, fields and headers
    ServiceUnavailableError    -> 503 ServiceUnavailable + Retry-After (the node cannot commit now)
    an InternalError, or any other exception (a bug)
                               -> 500 InternalError with the generic message and the request id; the detail
                                  (exception text, a worker's forwarded message, paths) goes to the log with the
                                  traceback, never to the client
No body for HEAD or 304.
"""

from __future__ import annotations

import logging

import falcon
import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error, ServiceUnavailableError, StoredDataDamagedError, client_error

from .s3.xml import error_xml

log = logging.getLogger(__name__)


class ResponseAborted(Exception):
    """A response whose headers are out must be cut short: raised out of the app so the server closes the
    connection before Content-Length (the client sees a broken transfer, never a complete-looking wrong body).
    Whoever raises it has logged why; ``quiet_aborts`` keeps the server from adding a traceback as for a bug."""


class _DropAbortTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAborted))


_DROP_ABORT_TRACEBACKS = _DropAbortTracebacks()


def quiet_aborts(logger: logging.Logger | None = None) -> None:
    """Drop uvicorn's "Exception in ASGI application" record for a ``ResponseAborted`` (idempotent)."""
    target = logger or logging.getLogger("uvicorn.error")
    if _DROP_ABORT_TRACEBACKS not in target.filters:
        target.addFilter(_DROP_ABORT_TRACEBACKS)


def status_line(code: int) -> str:
    line: str = falcon.code_to_http_status(code)
    return line


def respond_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: BaseException,
                  request_id: str) -> None:
    """The one boundary: ``exc`` (whatever was raised) as the response the client gets."""
    error = client_error(exc)
    if error.code is ErrorCode.INTERNAL_ERROR and not isinstance(error, StoredDataDamagedError):
        log.error("request %s %s %s failed: %s", request_id, req.method, req.path, exc, exc_info=exc)
        error = S3Error(ErrorCode.INTERNAL_ERROR)  # the generic text only: no message, fields or headers
    elif isinstance(error, ServiceUnavailableError) or error.code is ErrorCode.SERVICE_UNAVAILABLE:
        log.warning("request %s %s %s: node cannot commit now (%s)", request_id, req.method, req.path,
                    getattr(error, "reason", "") or exc)
    render_error(req, resp, error, request_id)


def render_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: S3Error, request_id: str) -> None:
    resp.status = status_line(exc.status)
    for name, value in exc.headers.items():
        resp.set_header(name, value)
    if req.method == "HEAD" or exc.status == 304:
        resp.data = b""
        if exc.status != 304:
            resp.set_header("x-amz-error-code", exc.code.aws_code)
        return
    resp.content_type = "application/xml"
    resp.data = error_xml(exc.code.aws_code, exc.message, exc.resource, request_id,
                          {k: str(v) for k, v in exc.fields.items()})

