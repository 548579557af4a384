"""Admin bearer tokens (HS256 JWTs). (Login throttling is node-wide state: s4.engine.login_throttle.)

A token names the user (``sub``) and carries the user's ``epoch``; the projector bumps the epoch on a password
change or deactivation, so every older token stops verifying without any token list to keep.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import jwt

from s4.engine.iam import IamError
from s4.engine.login_throttle import LoginThrottle, ThrottledError

__all__ = ["LoginThrottle", "ThrottledError", "TokenIssuer", "rfc3339"]

TOKEN_TTL_S = 24 * 3600
ALGORITHM = "HS256"


def rfc3339(ms_or_s: float, *, ms: bool = True) -> str:
    seconds = ms_or_s / 1000 if ms else ms_or_s
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenIssuer:
    """Issues and checks tokens; ``verify`` answers 401 for anything not a live token of an active user."""

    def __init__(self, secret: str, ttl_s: int = TOKEN_TTL_S) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, user: dict[str, Any], now: float | None = None) -> tuple[str, int]:
        now = int(now if now is not None else time.time())
        exp = now + self.ttl_s
        claims = {"sub": user["id"], "epoch": user.get("epoch", 0), "iat": now, "exp": exp}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), exp

    def claims(self, token: str) -> dict[str, Any]:
        try:
            # iat is not checked against this clock: a token issued by a node whose clock runs ahead (up to
            # S4_MAX_CLOCK_OFFSET in a pool), or by this node before it restarted with its clock set back, is not
            # "issued in the future"; exp still bounds it
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp", "iat"], "verify_iat": False})
        except jwt.ExpiredSignatureError as exc:
            raise IamError(401, "token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise IamError(401, "invalid token") from exc
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("epoch"), int):
            raise IamError(401, "invalid token")
        return claims
