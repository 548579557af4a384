"""The login throttle: check and count are one step (issue 18, item 10)."""

from __future__ import annotations

import threading

import pytest

from s4.engine.login_throttle import LoginThrottle, ThrottledError


def test_issue18_attempts_are_counted_before_verification() -> None:
    throttle = LoginThrottle(free=5)
    for _ in range(5):
        throttle.attempt("Root", "10.0.0.1", now=100.0)  # five guesses in flight, none answered yet
    with pytest.raises(ThrottledError) as err:
        throttle.attempt("root", "10.0.0.1", now=100.0)
    assert err.value.status == 429 and err.value.retry_after_s == 1
    throttle.attempt("root", "10.0.0.2", now=100.0)  # another client, another count
    throttle.attempt("root", "10.0.0.1", now=101.5)  # after the wait: one more, then a longer wait
    with pytest.raises(ThrottledError) as err:
        throttle.attempt("root", "10.0.0.1", now=101.5)
    assert err.value.retry_after_s == 2


def test_issue18_success_forgets_the_attempts() -> None:
    throttle = LoginThrottle(free=5)
    for _ in range(4):
        throttle.attempt("root", "c", now=0.0)
    throttle.attempt("root", "c", now=0.0)  # the fifth attempt is allowed (and locks the next) ...
    throttle.succeeded("root", "c")  # ... and its right password clears everything
    for _ in range(5):
        throttle.attempt("root", "c", now=0.0)


def test_issue18_racing_threads_get_exactly_the_free_attempts() -> None:
    throttle = LoginThrottle(free=5)
    barrier = threading.Barrier(16)
    allowed: list[bool] = []

    def race() -> None:
        barrier.wait(30)
        try:
            throttle.attempt("root", "c", now=0.0)
        except ThrottledError:
            allowed.append(False)
        else:
            allowed.append(True)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(allowed) == [False] * 11 + [True] * 5
