"""The falcon ASGI application: one sink that authenticates, routes and dispatches every S3 request.

Flow per request: request id -> health probes (no auth) -> ``/api/...`` admin JSON API (its own bearer tokens) and
unsigned ``GET /metrics`` -> CORS preflight (no auth) -> signature (SigV4 header or query, SigV2 header or query;
unsigned: anonymous) -> route to an AWS operation -> access control (s3/access.py: bucket policy, then role; POST
object's own, after its form's signature: s3/post_object.py) -> security
headers S4 cannot honour refused (s3/security.py) -> what the headers allow checked before the body
(``Call.check_before_body``) -> handler -> CORS headers. Path and query are decoded strictly (api/inputs.py); no
body is read, and no ``100 Continue`` sent, before the handler asks (api/body_gate.py).
Every response carries ``x-amz-request-id``; every failure goes through the one error boundary (api/errors.py).
"""

from __future__ import annotations

import hmac
import importlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from s4.engine import Engine
from s4.engine.errors import ErrorCode, S3Error

from . import access_log
from .admin.router import AdminApi
from .auth.request import AuthContext, AuthRequest, auth_scheme
from .auth.sigv2 import verify_sigv2
from .auth.sigv4 import verify_sigv4
from .body_gate import BodyGate
from .errors import quiet_aborts, respond_error
from .inputs import digits_value, parse_query
from .metrics import Metrics
from .s3 import acl as s3_acl
from .s3 import attributes, buckets, multipart, objects, public_access, sse
from .s3 import lifecycle as s3_lifecycle
from .s3 import notification as s3_notification
from .s3 import object_lock as s3_object_lock
from .s3 import policy as s3_policy
from .s3.access import AccessControl, RequestFacts, client_address
from .s3.bucket_reads import for_request as bucket_reads_for
from .s3.call import Call
from .s3.imports import check_import_headers
from .s3.post_object import PostObject
from .s3.router import route, split_target
from .s3.security import check_security_headers
from .s3.xml import cors_from_record, cors_response_headers, match_cors, split_header_list
from .settings import ApiSettings

#: Operations answered from a bucket's configuration: in a pool, read from R replicas first (engine.settle_bucket).
BUCKET_CONFIG_READS = frozenset({"GetBucketCors", "GetBucketEncryption", "GetBucketLifecycleConfiguration",
                                 "GetBucketLocation", "GetBucketPolicy", "GetBucketTagging", "GetBucketVersioning",
                                 "GetBucketPolicyStatus", "GetObjectLockConfiguration"})
log = logging.getLogger(__name__)
Handler = Callable[[Call, falcon.asgi.Response], Awaitable[None]]



def _lazy(module: str, name: str) -> Handler:
    """A handler whose module is imported off the start-up path: S3 Select brings pyarrow and DuckDB (about a
    second of start-up and ~100 MB per worker process); with S4_SELECT_ENABLED=false they are never loaded."""
    async def handler(call: Call, resp: falcon.asgi.Response) -> None:
        found = importlib.import_module(module, __package__)
        await getattr(found, name)(call, resp)

    return handler


HANDLERS: dict[str, Handler] = {
    "ListBuckets": buckets.list_buckets,
    "CreateBucket": buckets.create_bucket,
    "HeadBucket": buckets.head_bucket,
    "DeleteBucket": buckets.delete_bucket,
    "GetBucketLocation": buckets.get_bucket_location,
    "PutBucketVersioning": buckets.put_bucket_versioning,
    "GetBucketVersioning": buckets.get_bucket_versioning,
    "PutBucketCors": buckets.put_bucket_cors,
    "GetBucketCors": buckets.get_bucket_cors,
    "DeleteBucketCors": buckets.delete_bucket_cors,
    "PutBucketTagging": buckets.put_bucket_tagging,
    "GetBucketTagging": buckets.get_bucket_tagging,
    "DeleteBucketTagging": buckets.delete_bucket_tagging,
    "PutBucketLifecycleConfiguration": s3_lifecycle.put_bucket_lifecycle,
    "GetBucketLifecycleConfiguration": s3_lifecycle.get_bucket_lifecycle,
    "DeleteBucketLifecycle": s3_lifecycle.delete_bucket_lifecycle,
    "GetBucketAcl": s3_acl.get_acl,
    "PutBucketAcl": s3_acl.put_acl,
    "GetBucketPolicy": s3_policy.get_bucket_policy,
    "PutBucketPolicy": s3_policy.put_bucket_policy,
    "DeleteBucketPolicy": s3_policy.delete_bucket_policy,
    "GetBucketPolicyStatus": s3_policy.get_bucket_policy_status,
    "GetBucketEncryption": sse.get_bucket_encryption,
    "PutBucketEncryption": sse.put_bucket_encryption,
    "DeleteBucketEncryption": sse.delete_bucket_encryption,
    "GetObjectLockConfiguration": s3_object_lock.get_object_lock_configuration,
    "GetBucketOwnershipControls": s3_acl.get_ownership_controls,
    "PutBucketOwnershipControls": s3_acl.put_ownership_controls,
    "DeleteBucketOwnershipControls": s3_acl.delete_ownership_controls,
    "GetPublicAccessBlock": public_access.get_public_access_block,
    "PutPublicAccessBlock": public_access.put_public_access_block,
    "DeletePublicAccessBlock": public_access.delete_public_access_block,
    "GetBucketWebsite": buckets._absent(ErrorCode.NO_SUCH_WEBSITE_CONFIGURATION),
    "GetBucketReplication": buckets._absent(ErrorCode.REPLICATION_CONFIGURATION_NOT_FOUND),
    "PutBucketNotificationConfiguration": s3_notification.put_bucket_notification,
    "GetBucketNotificationConfiguration": s3_notification.get_bucket_notification,
    "ListObjects": buckets.list_objects,
    "ListObjectsV2": buckets.list_objects_v2,
    "ListObjectVersions": buckets.list_object_versions,
    "DeleteObjects": objects.delete_objects,
    "PutObject": objects.put_object,
    "GetObject": objects.get_object,
    "HeadObject": objects.head_object,
    "DeleteObject": objects.delete_object,
    "CopyObject": objects.copy_object,
    "RenameObject": objects.rename_object,
    "PutObjectTagging": objects.put_object_tagging,
    "GetObjectTagging": objects.get_object_tagging,
    "GetObjectAttributes": attributes.get_object_attributes,
    "DeleteObjectTagging": objects.delete_object_tagging,
    "GetObjectAcl": s3_acl.get_acl,
    "PutObjectAcl": s3_acl.put_acl,
    "CreateMultipartUpload": multipart.create_multipart_upload,
    "UploadPart": multipart.upload_part,
    "UploadPartCopy": multipart.upload_part_copy,
    "CompleteMultipartUpload": multipart.complete_multipart_upload,
    "AbortMultipartUpload": multipart.abort_multipart_upload,
    "ListParts": multipart.list_parts,
    "ListMultipartUploads": multipart.list_multipart_uploads,
    "SelectObjectContent": _lazy(".s3.select", "select_object_content"),
    "MultiObjectSQL": _lazy(".s3.select", "multi_object_sql"),
    "PutObjectLockConfiguration": s3_object_lock.put_object_lock_configuration,
    "PutObjectRetention": s3_object_lock.put_object_retention,
    "GetObjectRetention": s3_object_lock.get_object_retention,
    "PutObjectLegalHold": s3_object_lock.put_object_legal_hold,
    "GetObjectLegalHold": s3_object_lock.get_object_legal_hold,
}
#: Operations that name their caller themselves, in the body, and authorize it there: POST object (its form's
#: signature). Only a query-less ``POST /bucket`` routes to it (router.QUERYLESS).
SELF_AUTHORIZING = frozenset({"PostObject"})
HEALTH_PATHS = frozenset({"/health", "/minio/health/live", "/minio/health/ready"})


class RequestIds:
    """16 hex digits like AWS's, unique per process without a system call per request: random prefix + counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4).upper()
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08X}"


class S3Service:
    """The sink behind every path."""

    def __init__(self, engine: Engine, settings: ApiSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.access = AccessControl(engine, settings)
        self.admin = AdminApi(engine, settings, self.access)
        self.metrics = Metrics(engine) if settings.metrics_enabled else None
        self.request_ids = RequestIds()
        self.handlers: dict[str, Handler] = {**HANDLERS, "PostObject": PostObject(self.access, self.lookup_secret,
                                                                                self.with_iam_feed)}
        if settings.select_enabled:
            # Load pyarrow/DuckDB next to serving, not on the first query: start-up stays fast, and the first
            # query neither stalls its worker's event loop nor counts the libraries against its memory limit.
            # Not a daemon: a process that exits during the import (a start-up error) must wait for it, since
            # interpreter shutdown ends a daemon thread inside their C++ code with a forced unwind that their
            # catch-all handlers swallow, and the process aborts ("FATAL: exception not rethrown").
            threading.Thread(target=importlib.import_module, args=(".s3.select", __package__),
                             name="select-preload").start()

    def lookup_secret(self, access_key: str) -> str | None:
        """The legacy key pair, else (IAM on) a live credential of an active user; no argon2 on this path."""
        if hmac.compare_digest(access_key.encode(), self.settings.access_key.encode()):
            return self.settings.secret_key
        if self.settings.iam_enabled and access_key.startswith("S4AK"):
            found = self.engine.secret_for(access_key)
            return found[0] if found is not None else None
        return None

    def authenticate(self, req: falcon.asgi.Request, raw_path: str, query_string: str, headers: dict[str, str],
                     bucket: str, vhost: bool) -> AuthContext | None:
        """The verified signature, or None for an unsigned request (anonymous: only a bucket policy can allow it)."""
        auth_req = AuthRequest(req.method, raw_path, query_string, headers)
        scheme = auth_scheme(auth_req)
        if scheme is None:
            return None
        if scheme.startswith("sigv4"):
            return verify_sigv4(auth_req, self.lookup_secret)
        return verify_sigv2(auth_req, self.lookup_secret, bucket_from_host=bucket if vhost else None)

    async def _authenticate(self, req: falcon.asgi.Request, raw_path: str, query_string: str,
                            headers: dict[str, str], bucket: str, vhost: bool) -> AuthContext | None:
        """``authenticate``, a second time after ``_feed_or_raise`` brought the registry pool's IAM here (what
        ``_handle`` does inline, without a coroutine per request)."""
        try:
            return self.authenticate(req, raw_path, query_string, headers, bucket, vhost)
        except S3Error as exc:
            await self._feed_or_raise(exc)
        return self.authenticate(req, raw_path, query_string, headers, bucket, vhost)

    async def with_iam_feed(self, verify: Callable[[], AuthContext | None]) -> AuthContext | None:
        """``verify()`` again after bringing the registry pool's IAM here, when it named an IAM key this node does
        not know (``_handle``'s signature check; POST object's form signatures too)."""
        try:
            return verify()
        except S3Error as exc:
            await self._feed_or_raise(exc)
        return verify()

    async def _feed_or_raise(self, exc: S3Error) -> None:
        """A node outside the registry pool (several pools) that does not know an IAM access key yet brings the
        registry pool's IAM here (cluster/iam_feed.py: a key created there before this request works here), so the
        caller decides again: InvalidAccessKeyId only for a key the registry does not hold either. Any other
        failure is raised as it is."""
        feed = self.engine.iam_feed
        if feed is None or exc.code is not ErrorCode.INVALID_ACCESS_KEY_ID or not self.settings.iam_enabled \
                or not str(exc.fields.get("AWSAccessKeyId", "")).startswith("S4AK"):
            raise exc
        await feed.refresh()

    async def __call__(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: str) -> None:
        entry = req.scope.get(access_log.SCOPE_KEY)
        if entry is not None:  # the access log is on: its entry (api/body_gate.py) is the request's context
            req.context = entry
        request_id = self.request_ids()
        resp.set_header("x-amz-request-id", request_id)
        resp.set_header("x-amz-id-2", request_id)
        resp.set_header("Server", "S4")
        headers = dict(req.headers)  # ASGI header names arrive lower-case (falcon decodes them once)
        started = time.perf_counter()
        req.context.operation = "unknown"
        req.context.request_id = request_id  # for the access log
        try:
            await self._handle(req, resp, headers, request_id)
        except Exception as exc:  # noqa: BLE001 - the one error boundary (api/errors.py)
            respond_error(req, resp, exc, request_id)
        if self.metrics is not None:
            length = headers.get("content-length", "")
            sent = len(resp.data) if resp.data else 0
            if not sent and resp.stream is not None and req.method != "HEAD":
                sent = int(resp.get_header("Content-Length") or 0)
            self.metrics.observe(req.context.operation, resp.status_code, started, digits_value(length) or 0, sent)

    async def _handle(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, headers: dict[str, str],
                      request_id: str) -> None:
        raw_path = req.scope.get("raw_path", req.path.encode()).decode("latin-1") or "/"
        query_string = req.scope.get("query_string", b"").decode("latin-1")
        if req.path in HEALTH_PATHS and req.method in ("GET", "HEAD"):
            resp.content_type = "application/json"
            draining = self.engine.cluster is not None and self.engine.cluster.is_draining()  # load balancers: out
            if draining:
                resp.status = falcon.HTTP_503
            body = b'{"status":"draining"}' if draining else b'{"status":"ok"}'
            resp.data = body if req.method == "GET" else b""
            req.context.operation = "Health"
            return
        if self.admin.handles(req.path):
            req.context.operation = "Admin"
            await self.admin(req, resp)
            return
        if req.path == "/metrics" and self.metrics is not None and req.method == "GET" and \
                "authorization" not in headers and "X-Amz-Signature" not in query_string:
            req.context.operation = "Metrics"  # signed requests still reach a bucket named "metrics"
            resp.data, resp.content_type = self.metrics.render()
            return
        where = split_target(raw_path, headers.get("host", ""), self.settings.vhost_domains)
        bucket, key = where.bucket, where.key
        req.context.bucket, req.context.key = bucket, key  # for the access log
        query = parse_query(query_string) if query_string else {}
        if req.method == "OPTIONS":
            self._preflight(bucket, headers, resp)
            return
        try:  # CORS headers on every answer, errors too (a denied PUT, a missing key): the browser must read them
            try:  # ``_authenticate`` inline: no coroutine and closure per request for the rare second try
                auth = self.authenticate(req, raw_path, query_string, headers, bucket, where.virtual_host)
            except S3Error as exc:
                await self._feed_or_raise(exc)
                auth = self.authenticate(req, raw_path, query_string, headers, bucket, where.virtual_host)
            req.context.actor = auth.access_key if auth is not None else ""  # the access log writes "-"
            target = route(req.method, bucket, key, query, headers)
            req.context.operation = target.operation or "unknown"
            handler = self.handlers.get(target.operation or "")
            if handler is None:
                if auth is None:  # an anonymous caller learns nothing about what S4 implements (issue 21)
                    raise S3Error(ErrorCode.ACCESS_DENIED)
                raise S3Error(ErrorCode.METHOD_NOT_ALLOWED if target.operation is None else ErrorCode.NOT_IMPLEMENTED)
            who = self.access.principal(auth)
            # PUT-like: one read, not four; GET/HEAD: access control's read is the handler's (s3/bucket_reads.py)
            reads = bucket_reads_for(self.engine, bucket, target.operation or "", key, query)
            facts = RequestFacts(headers, query, client_address(req.scope), req.scope.get("scheme") == "https", auth,
                                 time.time(), reads)
            if target.operation not in SELF_AUTHORIZING:
                self.access.authorize(who, target.operation or "", bucket, key, facts)
            call = Call(self.engine, self.settings, req, req.method, bucket, key, query, headers, auth, request_id,
                        authorize=self.access.guard(who, facts, target.operation or ""), who=who, bucket_reads=reads)
            check_security_headers(target.operation or "", headers)
            check_import_headers(target.operation or "", headers)  # honoured by three operations, refused by the rest
            call.check_framing(target.operation or "")
            if call.has_body:  # what the headers allow, before a byte of the body is asked for (100 Continue)
                await call.check_before_body(target.operation or "")
            elif self.engine.key_reads is None:  # a single node: both settles below do nothing (no coroutine)
                pass
            elif target.operation in BUCKET_CONFIG_READS:
                await self.engine.settle_bucket(bucket)  # a pool: configured through another node moments ago
            elif bucket and target.operation != "CreateBucket":
                await self.engine.settle_missing_bucket(bucket)  # a pool: created through another node moments ago
            await handler(call, resp)
        finally:
            if bucket and "origin" in headers:
                self._cors_headers(bucket, req.method, headers, resp)

    def _cors_rules(self, bucket: str) -> list:  # type: ignore[type-arg]
        try:
            record = self.engine.get_bucket_config(bucket, "cors")
        except S3Error:
            return []
        return cors_from_record(record) if record else []

    def _preflight(self, bucket: str, headers: dict[str, str], resp: falcon.asgi.Response) -> None:
        origin, method = headers.get("origin"), headers.get("access-control-request-method")
        if not origin or not method:  # not a CORS preflight at all: a malformed request (400), as S3 answers
            raise S3Error(ErrorCode.INVALID_REQUEST,
                          "Insufficient information. Origin request header needed." if not origin else
                          "Invalid Access-Control-Request-Method header.")
        wanted = split_header_list(headers.get("access-control-request-headers"))
        rule = match_cors(self._cors_rules(bucket), origin, method, wanted) if bucket else None
        if rule is None:
            raise S3Error(ErrorCode.ACCESS_DENIED, "CORSResponse: This CORS request is not allowed. This is usually "
                          "because the evalution of Origin, request method / Access-Control-Request-Method or "
                          "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")
        for name, value in cors_response_headers(rule, origin, wanted, preflight=True).items():
            resp.set_header(name, value)

    def _cors_headers(self, bucket: str, method: str, headers: dict[str, str], resp: falcon.asgi.Response) -> None:
        """An actual (not preflight) cross-origin request: the matched rule's headers. A request that names
        Access-Control-Request-Method is matched on that method (as RGW and s3-tests do; browsers send it only on
        preflights)."""
        origin = headers["origin"]
        method = headers.get("access-control-request-method") or method
        rule = match_cors(self._cors_rules(bucket), origin, method, [])
        if rule is not None:
            for name, value in cors_response_headers(rule, origin, [], preflight=False).items():
                resp.set_header(name, value)


def build_app(engine: Engine, settings: ApiSettings, wrap: Callable[[Any], Any] | None = None) -> access_log.Asgi:
    """The falcon app behind the body gate (api/body_gate.py: no 100 Continue before a handler reads), which also
    writes the access log (api/access_log.py) when it is on. ``wrap``: middleware between the body gate and the
    app (several pools: api/pool_router.py)."""
    quiet_aborts()  # a GET cut short mid-body is logged once, by the handler (api/errors.py ResponseAborted)
    app = falcon.asgi.App(middleware=[], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = False
    app.resp_options.secure_cookies_by_default = False
    app.add_sink(S3Service(engine, settings), prefix="/")
    return BodyGate(app if wrap is None else wrap(app), access_log.STDERR if settings.access_log else None)
