"""S3Error -> HTTP response: the S3 XML error document, status, extra headers; no body for HEAD or 304.

Anything that is not an S3Error is a bug: it is logged with the request id and answered as InternalError
without internal detail.
"""

from __future__ import annotations

import logging

import falcon
import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error

from .s3.xml import error_xml

log = logging.getLogger(__name__)


def status_line(code: int) -> str:
    return falcon.code_to_http_status(code)


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


def internal_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: BaseException,
                   request_id: str) -> None:
    log.error("request %s %s %s failed", request_id, req.method, req.path, exc_info=exc)
    render_error(req, resp, S3Error(ErrorCode.INTERNAL_ERROR), request_id)
