"""grpclib's server log, at levels an operator reads right: a peer call that ran out of time is not a server error.

grpclib logs every handler that ends in ``asyncio.TimeoutError`` with ``log.exception('Timeout occurred')``
(ERROR, with a traceback) and every call whose deadline passed or whose client went away at INFO. Between the
nodes of a pool both are ordinary: calls carry short deadlines, and during a partition or while a peer restarts
many of them expire (docs/architecture/replication.md: each one is a failed vote or a failed copy, counted and
retried by the caller). ``quiet_deadlines`` installs a filter on the ``grpclib.server`` logger that:

* turns "Timeout occurred" into one WARNING line naming the exception, without the traceback;
* lowers "Deadline exceeded" and "Request was cancelled" to DEBUG;
* leaves everything else as grpclib logged it: "Application error", "Server error", "Failed to handle
  cancellation" stay ERROR with their tracebacks (real faults are never hidden).
"""

from __future__ import annotations

import logging

GRPCLIB_SERVER = "grpclib.server"
TO_DEBUG = ("Deadline exceeded", "Request was cancelled")
TIMEOUT = "Timeout occurred"


class DeadlineLevels(logging.Filter):
    """Rewrites the level of grpclib's deadline records (see the module docstring); drops a record whose new level
    the logger does not log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message == TIMEOUT and record.levelno >= logging.ERROR:
            error = record.exc_info[1] if record.exc_info else None
            record.msg = "Timeout occurred in an inter-node call handler (%s): the caller counts it as a failed call"
            record.args = (repr(error) if error is not None else "asyncio.TimeoutError",)
            record.exc_info, record.exc_text = None, None
            return self._relevel(record, logging.WARNING)
        if message.startswith(TO_DEBUG) and record.levelno == logging.INFO:
            return self._relevel(record, logging.DEBUG)
        return True

    @staticmethod
    def _relevel(record: logging.LogRecord, level: int) -> bool:
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return logging.getLogger(record.name).isEnabledFor(level)


_FILTER = DeadlineLevels()


def quiet_deadlines(logger: logging.Logger | None = None) -> None:
    """Install the filter on grpclib's server logger (idempotent): called once by a cluster node's set-up."""
    target = logger or logging.getLogger(GRPCLIB_SERVER)
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)
