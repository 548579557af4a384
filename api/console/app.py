"""The console's falcon ASGI app: routing, sessions, CSRF, security headers and the error boundary.

Every response carries a strict Content-Security-Policy (scripts only from this origin, no inline script, no eval),
``X-Frame-Options: DENY`` and ``nosniff``. Every request but the sign-in page and static files needs a live session
(``session.py``); every request that is not GET/HEAD must come from the console's own origin (when the browser
says) and carry the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``), else 403 and
nothing changes. Pages are rendered by jinja2 with
autoescaping on, so a key or bucket name is always text, never markup.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import falcon
import falcon.asgi
import jinja2

from s4.engine import Engine
from s4.engine.errors import ErrorCode, S3Error, client_error
from s4.engine.iam import IamError
from s4.engine.login_throttle import ThrottledError

from ..s3.access import AccessControl
from ..settings import ApiSettings
from .s3bridge import S3Bridge
from .session import COOKIE, PRE_COOKIE, SESSION_TTL_S, Session, Sessions, check_csrf

log = logging.getLogger(__name__)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_FORM_BYTES = 1024 * 1024  # a posted form (rules, tags, names): far below this
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".txt": "text/plain; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass
class ConsoleSettings:
    """What the console needs beyond the API settings: where the S3 API is (share links point there)."""

    s3_port: int
    s3_host: str = "127.0.0.1"
    s3_tls: bool = False


@dataclass
class Page:
    """One console request as a page handler sees it."""

    console: Console
    req: falcon.asgi.Request
    resp: falcon.asgi.Response
    params: dict[str, str]
    session: Session | None
    form: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> Session:
        assert self.session is not None  # routes that need no session never ask
        return self.session

    def arg(self, name: str, default: str = "") -> str:
        value = self.form.get(name, self.req.params.get(name, default))
        if isinstance(value, list):
            value = value[-1] if value else default
        return str(value)

    def args(self, name: str) -> list[str]:
        value = self.form.get(name, self.req.params.get(name, []))
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    @property
    def htmx(self) -> bool:
        return self.req.get_header("HX-Request") == "true"

    def render(self, template: str, status: int = 200, **context: Any) -> None:
        self.resp.status = falcon.code_to_http_status(status)
        self.resp.content_type = "text/html; charset=utf-8"
        self.resp.text = self.console.templates.get_template(template).render(session=self.session, **context)

    def redirect(self, location: str) -> None:
        """After a state change: a full page load (htmx follows HX-Redirect; a plain form, 303 See Other)."""
        if self.htmx:
            self.resp.status = falcon.HTTP_204
            self.resp.set_header("HX-Redirect", location)
        else:
            self.resp.status = falcon.HTTP_303
            self.resp.set_header("Location", location)


PageHandler = Callable[[Page], Awaitable[None]]
# (method, pattern, handler, access): "open" (no session), "user" (any session), "super" (SuperUser session)
Route = tuple[str, re.Pattern[str], PageHandler, str]


class Console:
    """The sink behind every console path."""

    def __init__(self, engine: Engine, settings: ApiSettings, site: ConsoleSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.site = site
        self.access = AccessControl(engine, settings)
        self.sessions = Sessions(engine, settings, self.access)
        self.s3 = S3Bridge(engine, settings, self.access)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("s4.api.console", "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self.static = _load_static()
        self.routes: list[Route] = []
        from . import audit, bucket_settings, charts, objects, pages, sql, uploads, users  # each brings its routes

        for module in (pages, objects, bucket_settings, sql, uploads, users, audit, charts):
            self.routes.extend(module.routes())

    async def __call__(self, req: falcon.asgi.Request, resp: falcon.asgi.Response | None, **_: Any) -> None:
        assert resp is not None  # falcon always passes one to a sink
        _security_headers(resp)
        try:
            await self._dispatch(req, resp)
        except Exception as exc:  # noqa: BLE001 - the console's side of the one error boundary (api/errors.py)
            self._error(req, resp, exc)

    async def _dispatch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        path = req.path.rstrip("/") or "/"
        if path.startswith("/static/") and req.method in SAFE_METHODS:
            self._serve_static(path[len("/static/"):], resp)
            return
        matched = [(method, m, handler, access) for method, rx, handler, access in self.routes
                   if (m := rx.fullmatch(path))]
        if not matched:
            raise IamError(404, "not found")
        route = next((r for r in matched if r[0] == req.method or (r[0] == "GET" and req.method == "HEAD")), None)
        if route is None:
            raise IamError(405, "method not allowed")
        _, m, handler, access = route
        if req.method not in SAFE_METHODS and not _same_origin(req):
            log.info("console: refused %s %s from origin %s", req.method, req.path, req.get_header("Origin"))
            raise IamError(403, "cross-origin request refused")
        session = self.sessions.resolve(req.cookies.get(COOKIE))
        resp.set_header("Cache-Control", "no-store")
        page = Page(self, req, resp, {k: v for k, v in m.groupdict().items()}, session)
        if req.method not in SAFE_METHODS and _is_form(req) and not path.startswith("/api/"):  # /api/: raw bodies
            page.form = await _read_form(req)
        if access != "open":
            if session is None:
                if req.method in SAFE_METHODS:
                    page.redirect("/login")
                    return
                raise IamError(401, "sign in first")
            if req.method not in SAFE_METHODS:
                offered = req.get_header("X-CSRF-Token") or page.arg("csrf_token") or None
                if not check_csrf(session.csrf, offered):
                    log.info("console: refused %s %s without a valid CSRF token (user %s)", req.method, req.path,
                             session.username)
                    raise IamError(403, "missing or invalid CSRF token: reload the page")
            if access == "super" and not session.is_super:
                raise IamError(403, "this page needs the SuperUser role")
        await handler(page)

    def _serve_static(self, name: str, resp: falcon.asgi.Response) -> None:
        found = self.static.get(name)
        if found is None:
            raise IamError(404, "not found")
        resp.content_type, resp.data = found
        resp.set_header("Cache-Control", "public, max-age=3600")

    def _error(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: Exception) -> None:
        if isinstance(exc, IamError):
            status, message = exc.status, exc.message
            if isinstance(exc, ThrottledError):
                resp.set_header("Retry-After", str(exc.retry_after_s))
        else:
            error = client_error(exc)  # S3Error as itself (NoSuchBucket...), cannot-commit as 503, bugs as 500
            if error.code is ErrorCode.INTERNAL_ERROR:
                log.error("console request %s %s failed: %s", req.method, req.path, exc, exc_info=exc)
                error = S3Error(ErrorCode.INTERNAL_ERROR, "internal error")
            for name, value in error.headers.items():
                resp.set_header(name, value)
            status, message = error.status, f"{error.code.name.replace('_', ' ').title()}: {error.message}" \
                if isinstance(exc, S3Error) else error.message
        resp.status = falcon.code_to_http_status(status)
        resp.stream = None
        resp.content_type = "text/html; charset=utf-8"
        session = self.sessions.resolve(req.cookies.get(COOKIE))
        fragment = req.get_header("HX-Request") == "true"
        if fragment:  # htmx: shown in the page's message area, whatever element asked
            resp.set_header("HX-Retarget", "#messages")
            resp.set_header("HX-Reswap", "innerHTML")
        template = "error_fragment.html" if fragment else "error.html"
        resp.text = self.templates.get_template(template).render(session=session, status=status, message=message)

    # -- cookies ----------------------------------------------------------------------------------------------------
    def set_session_cookie(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str) -> None:
        resp.set_cookie(COOKIE, token, max_age=SESSION_TTL_S, path="/", secure=req.scheme == "https",
                        http_only=True, same_site="Strict")

    def clear_session_cookie(self, resp: falcon.asgi.Response) -> None:
        resp.unset_cookie(COOKIE, path="/", same_site="Strict")

    def sign_in_token(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> str:
        """The sign-in form's CSRF token (login CSRF), kept in a cookie of its own until there is a session."""
        token = req.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        resp.set_cookie(PRE_COOKIE, token, max_age=3600, path="/", secure=req.scheme == "https", http_only=True,
                        same_site="Strict")
        return token


def _same_origin(req: falcon.asgi.Request) -> bool:
    """A state change's ``Origin`` (browsers send it on every POST, PUT and DELETE) is the console's own. Cookies
    are shared by every port of a host, so a page served from the S3 port of the same host is same-site for
    SameSite=Strict; this refuses its requests before the CSRF token is even looked at (and its sign-in posts)."""
    origin = req.get_header("Origin")
    if origin is None:  # not a browser, or a browser that sent none: the CSRF token decides
        return True
    return origin.lower() == f"{req.scheme}://{req.get_header('Host') or ''}".lower()


async def _read_form(req: falcon.asgi.Request) -> dict[str, Any]:
    """The posted form, read up to MAX_FORM_BYTES (before any session is checked: a bigger one is refused unread)."""
    if (req.content_length or 0) > MAX_FORM_BYTES:
        raise IamError(413, "form too large")
    raw = await req.bounded_stream.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        raise IamError(413, "form too large")
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=10_000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IamError(400, "the form cannot be read") from exc
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def _is_form(req: falcon.asgi.Request) -> bool:
    return (req.content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _security_headers(resp: falcon.asgi.Response) -> None:
    resp.set_header("Content-Security-Policy", CSP)
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "same-origin")
    resp.set_header("Cross-Origin-Opener-Policy", "same-origin")
    resp.set_header("Server", "S4")


def _load_static() -> dict[str, tuple[str, bytes]]:
    """The vendored files (package data), read once: served by exact name only, with their own types."""
    out: dict[str, tuple[str, bytes]] = {}
    root = resources.files("s4.api.console") / "static"
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (STATIC_TYPES[suffix], entry.read_bytes())
    return out


def build_console_app(engine: Engine, settings: ApiSettings,
                      site: ConsoleSettings) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    """The console's ASGI app, served on its own port (S4_CONSOLE_BIND) by tools/server.py."""
    app = falcon.asgi.App(middleware=[], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = False
    app.resp_options.secure_cookies_by_default = False
    app.add_sink(Console(engine, settings, site), prefix="/")
    return app
