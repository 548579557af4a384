"""Login throttling against password guessing: one state per node, whichever worker process answers.

Per (username, client address): after ``free`` failed attempts, exponential back-off answered as 429 with
Retry-After. In multi-process mode the state lives in the sequencer process and workers ask it over their channel
(engine/remote), so spreading guesses over connections to different workers gains nothing.

Check and count are one step (``attempt``): an attempt is counted as a failure *before* the password is verified,
under the lock, and forgotten only when it succeeds. A separate check-then-count let every attempt racing in
before the first failure was counted through (10 parallel guesses passed where 5 should). The client address is
the peer's own, or a forwarded one only from S4_TRUSTED_PROXIES (tools/server.py), so rotating X-Forwarded-For
does not make new clients either.
"""

from __future__ import annotations

import math
import threading
import time

from .iam import IamError


class ThrottledError(IamError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(429, f"too many failed logins; retry in {retry_after_s} s")
        self.retry_after_s = max(1, retry_after_s)


class LoginThrottle:
    ACTIONS = frozenset({"attempt", "succeeded"})

    def __init__(self, free: int = 5, max_wait_s: float = 900.0, max_entries: int = 100_000) -> None:
        self.free = free
        self.max_wait_s = max_wait_s
        self.max_entries = max_entries
        self._state: dict[tuple[str, str], tuple[int, float]] = {}  # -> (failures, locked until)
        self._lock = threading.Lock()  # the channel reader threads of several workers call in concurrently

    def attempt(self, username: str, client: str, now: float | None = None) -> None:
        """Raise ThrottledError while locked out; otherwise count this attempt as failed until it succeeds."""
        now = time.monotonic() if now is None else now
        key = (username.lower(), client)
        with self._lock:
            failures, until = self._state.get(key, (0, 0.0))
            if until > now:
                raise ThrottledError(math.ceil(until - now))
            if len(self._state) >= self.max_entries:
                self._state = {k: v for k, v in self._state.items() if v[1] > now}
            failures += 1
            wait = min(2.0 ** (failures - self.free), self.max_wait_s) if failures >= self.free else 0.0
            self._state[key] = (failures, now + wait)

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._state.pop((username.lower(), client), None)
