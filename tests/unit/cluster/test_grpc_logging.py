"""Issue 19: grpclib logs an inter-node call handler that ran out of time as ERROR with a traceback ("Timeout
occurred") and an expired deadline at INFO: noise in every node's log during a partition. After
``quiet_deadlines`` the timeout is one WARNING line, expired deadlines are DEBUG, and real faults ("Application
error", "Server error") stay ERROR with their tracebacks. The records are made the way grpclib/server.py makes them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from s4.cluster.grpc_logging import DeadlineLevels, quiet_deadlines

log = logging.getLogger("grpclib.server")


def grpclib_records() -> None:
    """What grpclib.server logs for: a handler's own timeout, an expired deadline, a cancelled call, a bug."""
    try:
        raise TimeoutError()
    except TimeoutError:
        log.exception("Timeout occurred")
    log.info("Deadline exceeded")
    log.info("Request was cancelled: %s", "stream reset")
    try:
        raise ValueError("a real fault")
    except ValueError:
        log.exception("Application error")


@pytest.fixture
def quieted() -> Iterator[None]:
    quiet_deadlines()
    quiet_deadlines()  # idempotent
    try:
        assert sum(isinstance(f, DeadlineLevels) for f in log.filters) == 1
        yield
    finally:
        for f in [f for f in log.filters if isinstance(f, DeadlineLevels)]:
            log.removeFilter(f)


def test_issue19_grpclib_deadline_expiries_are_not_logged_as_errors(caplog: pytest.LogCaptureFixture,
                                                                    quieted: None) -> None:
    caplog.set_level(logging.INFO, logger="grpclib.server")
    grpclib_records()
    seen = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert seen[0][0] == "WARNING" and seen[0][1].startswith("Timeout occurred in an inter-node call handler")
    assert "TimeoutError" in seen[0][1] and not seen[0][2]
    assert seen[1:] == [("ERROR", "Application error", True)]  # DEBUG ones dropped at INFO; the fault stays


def test_issue19_expired_deadlines_are_still_there_at_debug(caplog: pytest.LogCaptureFixture, quieted: None) -> None:
    caplog.set_level(logging.DEBUG, logger="grpclib.server")
    grpclib_records()
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels[1:] == [("DEBUG", "Deadline exceeded"), ("DEBUG", "Request was cancelled"),
                          ("ERROR", "Application error")]
