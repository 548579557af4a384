"""Admin bearer tokens (HS256 JWTs) and login throttling.

A token names the user (``sub``) and carries the user's ``epoch``; the projector bumps the epoch on a password
change or deactivation, so every older token stops verifying without any token list to keep.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import jwt

from s4.engine.iam import IamError

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
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp", "iat"]})
        except jwt.ExpiredSignatureError as exc:
            raise IamError(401, "token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise IamError(401, "invalid token") from exc
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("epoch"), int):
            raise IamError(401, "invalid token")
        return claims


class LoginThrottle:
    """Per (username, client address): after ``free`` consecutive failures, exponential back-off (429)."""

    def __init__(self, free: int = 5, max_wait_s: float = 900.0, max_entries: int = 100_000) -> None:
        self.free = free
        self.max_wait_s = max_wait_s
        self.max_entries = max_entries
        self._state: dict[tuple[str, str], tuple[int, float]] = {}  # -> (failures, locked until)

    def check(self, username: str, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        _, until = self._state.get((username.lower(), client), (0, 0.0))
        if until > now:
            raise ThrottledError(math.ceil(until - now))

    def failed(self, username: str, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._state) >= self.max_entries:
            self._state = {k: v for k, v in self._state.items() if v[1] > now}
        key = (username.lower(), client)
        failures = self._state.get(key, (0, 0.0))[0] + 1
        wait = min(2.0 ** (failures - self.free), self.max_wait_s) if failures >= self.free else 0.0
        self._state[key] = (failures, now + wait)

    def succeeded(self, username: str, client: str) -> None:
        self._state.pop((username.lower(), client), None)


class ThrottledError(IamError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(429, f"too many failed logins; retry in {retry_after_s} s")
        self.retry_after_s = max(1, retry_after_s)
