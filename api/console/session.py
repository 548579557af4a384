"""Console sign-in and sessions: who the browser is, proven by a signed, httpOnly cookie.

The session is a signed token (HS256 via pyjwt), not server-side state: every HTTP worker process answers any
request without sharing a session table. It names the user and carries the user's IAM ``epoch`` (a password change
or deactivation bumps it, so every older session dies, as admin tokens do) and the session's CSRF token. The cookie
is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` over TLS): page JavaScript never sees it; the CSRF token is put
in the page by the server and checked against the session's copy on every state change.

Sign-in checks credentials through the engine (``authenticate_password`` with IAM on) and the node-wide login
throttle (``throttle_login``); with IAM off the S3 access key and secret are the credentials (their holder is
SuperUser, as on the S3 API).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from s4.engine import Engine, accounts
from s4.engine.iam import IamError
from s4.engine.policy import Principal, root_principal

from ..s3.access import AccessControl
from ..settings import ApiSettings

COOKIE = "s4console"
PRE_COOKIE = "s4console_signin"  # the sign-in form's own CSRF token, before there is a session
SESSION_TTL_S = 12 * 3600
ALGORITHM = "HS256"
KEYS_SUBJECT = "keys:"  # IAM off: the session of the S3 access key's holder


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its principal (for every permission check), display name, role and CSRF token."""

    subject: str
    username: str
    role: str
    principal: Principal
    csrf: str
    record: dict[str, Any] | None  # the IAM user record (None: IAM off, the S3 key pair's holder)

    @property
    def actor(self) -> str:
        """The journal's actor for what this session does (as the admin API writes it)."""
        return f"user:{self.username}" if self.record is not None else self.username

    @property
    def is_super(self) -> bool:
        return self.role == "SuperUser"


def session_key(settings: ApiSettings) -> bytes:
    """The signing key: derived from secrets every worker process has (S4_JWT_SECRET and the S3 secret key), so a
    session signed by one worker verifies in all, and never equal to the admin API's token key (an admin bearer
    token is not a console session, and back)."""
    material = f"{settings.jwt_secret}\0{settings.secret_key}".encode()
    return hmac.new(material, b"s4-console-session-v1", hashlib.sha256).digest()


class Sessions:
    def __init__(self, engine: Engine, settings: ApiSettings, access: AccessControl) -> None:
        self.engine = engine
        self.settings = settings
        self.access = access
        self._key = session_key(settings)
        default = accounts.DEFAULT_ACCOUNT  # the S3 key pair's principal, as AccessControl.principal makes it
        self._root = root_principal(default.id, default.canonical_id, account_name=default.name)

    async def sign_in(self, username: str, password: str, client: str) -> str:
        """A new session token for valid credentials; IamError 401 (or ThrottledError 429) otherwise."""
        if not username or not password:
            raise IamError(400, "username and password are required")
        await self.engine.throttle_login("attempt", username, client)  # checks and counts in one step
        if self.settings.iam_enabled:
            user = await self.engine.authenticate_password(username, password)
            if user is None:
                raise IamError(401, "invalid username or password")
            subject, epoch = str(user["id"]), int(user.get("epoch", 0))
        else:
            ok_key = hmac.compare_digest(username.encode(), self.settings.access_key.encode())
            ok_secret = hmac.compare_digest(password.encode(), self.settings.secret_key.encode())
            if not (ok_key and ok_secret and self.settings.access_key):
                raise IamError(401, "invalid username or password")
            subject, epoch = KEYS_SUBJECT + username, 0
        await self.engine.throttle_login("succeeded", username, client)
        now = int(time.time())
        claims = {"sub": subject, "epoch": epoch, "csrf": secrets.token_urlsafe(24), "iat": now,
                  "exp": now + SESSION_TTL_S}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def resolve(self, token: str | None) -> Session | None:
        """The live session a cookie names, or None (absent, forged, expired, revoked, or its user gone)."""
        if not token:
            return None
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp", "iat"], "verify_iat": False})
        except jwt.InvalidTokenError:
            return None
        subject, epoch, csrf = claims.get("sub"), claims.get("epoch"), claims.get("csrf")
        if not isinstance(subject, str) or not isinstance(epoch, int) or not isinstance(csrf, str) or not csrf:
            return None
        if subject.startswith(KEYS_SUBJECT):
            key = subject[len(KEYS_SUBJECT):]
            if self.settings.iam_enabled or not hmac.compare_digest(key.encode(), self.settings.access_key.encode()):
                return None  # IAM turned on since, or the key pair changed: sign in again
            return Session(subject, key, "SuperUser", self._root, csrf, None)
        if not self.settings.iam_enabled:
            return None
        try:
            user = self.engine.get_user(subject)
        except IamError:
            return None
        if not user.get("active", True) or user.get("epoch", 0) != epoch:
            return None
        return Session(subject, str(user["username"]), str(user["role"]), self.access.user(user), csrf, user)


def check_csrf(expected: str, offered: str | None) -> bool:
    """The token a request offers is the one its session (or the sign-in form's cookie) holds."""
    return bool(expected) and bool(offered) and hmac.compare_digest(expected.encode(), (offered or "").encode())
