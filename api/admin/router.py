"""``/api/...`` requests: route table, bearer-token check, JSON bodies, ``{"error": ...}`` answers.

Every refusal is an ``IamError`` (status + message) rendered as ``{"error": message}``; a bug is a 500 with a
generic message and a logged traceback. Bad input is never a 500.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from s4.engine import Engine
from s4.engine.errors import ErrorCode, S3Error, client_error
from s4.engine.iam import IamError

from ..s3.access import AccessControl
from ..settings import ApiSettings
from . import buckets, events, health, jobs, kms, notify, stats, users
from .call import AdminCall, Result, Streamed
from .tokens import ThrottledError, TokenIssuer

log = logging.getLogger(__name__)
AdminHandler = Callable[[AdminCall], Awaitable[Result]]
# access: "open" (no token), "iam" (IAM must be on, no token), "super" (SuperUser token)
Route = tuple[str, re.Pattern[str], AdminHandler, str]


class AdminApi:
    def __init__(self, engine: Engine, settings: ApiSettings, access: AccessControl | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.access = access  # bucket policies apply to the console's bucket actions too (s3/access.py)
        self.started = time.time()
        self.tokens = TokenIssuer(settings.jwt_secret)
        seg = r"(?P<id>[^/]+)"
        self.routes: list[Route] = [
            ("GET", re.compile(r"/api/stats"), stats.get_stats, "open"),
            ("POST", re.compile(r"/api/admin/login"), users.login, "iam"),
            ("GET", re.compile(r"/api/admin/users"), users.list_users, "super"),
            ("POST", re.compile(r"/api/admin/users"), users.create_user, "super"),
            ("GET", re.compile(rf"/api/admin/users/{seg}"), users.get_user, "super"),
            ("PUT", re.compile(rf"/api/admin/users/{seg}"), users.update_user, "super"),
            ("DELETE", re.compile(rf"/api/admin/users/{seg}"), users.delete_user, "super"),
            ("POST", re.compile(rf"/api/admin/users/{seg}/credentials"), users.create_credential, "super"),
            ("DELETE", re.compile(rf"/api/admin/users/{seg}/credentials"), users.delete_credential, "super"),
            ("GET", re.compile(r"/api/admin/bucket-stats"), stats.bucket_stats, "super"),
            ("PUT", re.compile(rf"/api/admin/buckets/{seg}"), buckets.create_bucket, "super"),
            ("DELETE", re.compile(rf"/api/admin/buckets/{seg}"), buckets.delete_bucket, "super"),
            ("GET", re.compile(rf"/api/admin/buckets/{seg}/objects"), buckets.list_objects, "super"),
            ("POST", re.compile(r"/api/admin/lifecycle/run"), jobs.run_lifecycle, "super"),
            ("GET", re.compile(r"/api/admin/lifecycle/status"), jobs.lifecycle_status, "super"),
            ("POST", re.compile(r"/api/admin/compaction/run"), jobs.run_compaction, "super"),
            ("GET", re.compile(r"/api/admin/compaction/status"), jobs.compaction_status, "super"),
            ("POST", re.compile(r"/api/admin/scrubber/run"), jobs.run_scrubber, "super"),
            ("GET", re.compile(r"/api/admin/scrubber/status"), jobs.scrubber_status, "super"),
            ("GET", re.compile(r"/api/admin/cluster/health"), health.cluster_health, "super"),
            ("GET", re.compile(r"/api/admin/cluster/repair-status"), health.cluster_repair_status, "super"),
            ("POST", re.compile(rf"/api/admin/cluster/nodes/{seg}/drain"), health.drain_node, "super"),
            ("DELETE", re.compile(rf"/api/admin/cluster/nodes/{seg}/drain"), health.undrain_node, "super"),
            ("POST", re.compile(r"/api/admin/kms/keys"), kms.create_key, "super"),
            ("GET", re.compile(r"/api/admin/kms/keys"), kms.list_keys, "super"),
            ("GET", re.compile(rf"/api/admin/kms/keys/{seg}"), kms.get_key, "super"),
            ("PUT", re.compile(rf"/api/admin/kms/keys/{seg}"), kms.update_key, "super"),
            ("POST", re.compile(rf"/api/admin/kms/keys/{seg}/rotate"), kms.rotate_key, "super"),
            ("GET", re.compile(r"/api/admin/events"), events.stream_events, "super"),
            ("GET", re.compile(r"/api/admin/notify/targets"), notify.list_targets, "super"),
            ("GET", re.compile(r"/api/admin/notify/parked"), notify.list_parked, "super"),
            ("POST", re.compile(r"/api/admin/notify/parked/retry"), notify.retry_parked, "super"),
            ("POST", re.compile(r"/api/admin/notify/parked/discard"), notify.discard_parked, "super"),
        ]

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/api/stats" or path.startswith("/api/admin/") or path == "/api/admin"

    async def __call__(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = "application/json"
        try:
            status, body = await self._dispatch(req)
        except ThrottledError as exc:
            resp.set_header("Retry-After", str(exc.retry_after_s))
            status, body = exc.status, {"error": exc.message}
        except IamError as exc:
            status, body = exc.status, {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - the admin side of the one error boundary (api/errors.py)
            error = client_error(exc)  # S3Error as itself (NoSuchBucket...), cannot-commit as 503, bugs as 500
            if error.code is ErrorCode.INTERNAL_ERROR:
                log.error("admin request %s %s failed: %s", req.method, req.path, exc, exc_info=exc)
                error = S3Error(ErrorCode.INTERNAL_ERROR, "internal error")
            for name, value in error.headers.items():
                resp.set_header(name, value)
            status, body = error.status, {"error": error.message}
        resp.status = falcon.code_to_http_status(status)
        if isinstance(body, Streamed):  # the event stream: written as produced, for as long as the client reads
            resp.content_type = body.content_type
            resp.stream = body.chunks
            return
        resp.data = b"" if body is None else json.dumps(body).encode()

    async def _dispatch(self, req: falcon.asgi.Request) -> Result:
        path = req.path.rstrip("/") or "/"
        matched = [(method, m, handler, access) for method, rx, handler, access in self.routes
                   if (m := rx.fullmatch(path))]
        if not matched:
            raise IamError(404, "not found")
        for method, m, handler, access in matched:
            if method != req.method:
                continue
            call = AdminCall(self, req, m.groupdict(), query=dict(req.params))
            if access != "open" and not self.settings.iam_enabled:
                raise IamError(404, "IAM is disabled")
            if access == "super":
                call.user = self.authenticate(req)
                req.context.actor = call.actor  # for the access log
                if call.user["role"] != "SuperUser":
                    raise IamError(403, "SuperUser role required")
            return await handler(call)
        if not self.settings.iam_enabled and all(a != "open" for *_, a in matched):
            raise IamError(404, "IAM is disabled")
        raise IamError(405, "method not allowed")

    def authenticate(self, req: falcon.asgi.Request) -> dict[str, Any]:
        """The active user a bearer token names, if the token is valid and not older than the user's epoch."""
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IamError(401, "missing bearer token")
        claims = self.tokens.claims(token.strip())
        try:
            user = self.engine.get_user(claims["sub"])
        except IamError as exc:
            raise IamError(401, "invalid token") from exc
        if not user.get("active", True) or user.get("epoch", 0) != claims["epoch"]:
            raise IamError(401, "token revoked")
        return user
