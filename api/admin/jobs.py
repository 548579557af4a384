"""Operator triggers for the background jobs: ``/api/admin/{lifecycle,compaction,scrubber}/{run,status}``.

Runs are synchronous: the answer is the run's report (what it examined, did, and how long it took).

Lifecycle acts once per pool (S4_MODE=cluster): a run asked of a node first takes the job's lease (granted if free,
expired or this node's already). If another node holds it, nothing runs and the answer is 409 naming the holder
(run it there, or wait for the lease to expire); if the pool cannot say (no majority), 503 with Retry-After. Dry
runs need no lease. Compaction always runs (its volumes are this node's); its multipart-upload expiry only on the
``multipart_ttl`` lease holder, and the report says when it was skipped (``done.multipart_ttl_skipped``).
"""

from __future__ import annotations

import anyio.to_thread

from s4.engine.errors import ServiceUnavailableError
from s4.engine.iam import IamError
from s4.engine.jobs.scrubber import damaged_blobs
from s4.engine.jobs.service import for_engine

from .call import AdminCall, Result


def _bool(call: AdminCall, name: str) -> bool | None:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise IamError(400, f"{name} must be true or false")


def _number(call: AdminCall, name: str, kind: type, lo: float, hi: float) -> float | int | None:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError as exc:
        raise IamError(400, f"{name} must be a number") from exc
    if not lo <= value <= hi:
        raise IamError(400, f"{name} must be between {lo} and {hi}")
    return value  # type: ignore[no-any-return]


async def run_lifecycle(call: AdminCall) -> Result:
    report = await for_engine(call.engine).lifecycle(dry_run=_bool(call, "dry_run"))
    if not report.get("skipped"):
        return 200, report
    lease = report["lease"]
    if lease.get("reason") != "held":
        reason = str(lease.get("reason"))
        raise ServiceUnavailableError(reason, f"The lifecycle lease could not be taken ({reason}); retry later.")
    return 409, {"error": f"node {lease['holder']} holds the lifecycle lease (term {lease['term']}): run it there, "
                          "or once that node is gone and its lease has expired", **report}


async def run_compaction(call: AdminCall) -> Result:
    threshold = _number(call, "threshold", float, 0.0, 1.0)
    max_volumes = _number(call, "max_volumes", int, 1, 1_000_000)
    return 200, await for_engine(call.engine).compaction(dry_run=_bool(call, "dry_run"), threshold=threshold,
                                                         max_volumes=max_volumes)  # type: ignore[arg-type]


async def run_scrubber(call: AdminCall) -> Result:
    return 200, await for_engine(call.engine).scrubber()


def _status(name: str):  # type: ignore[no-untyped-def]
    async def handler(call: AdminCall) -> Result:
        # Off the event loop: in a worker process the status is a round trip to the sequencer process.
        status = await anyio.to_thread.run_sync(for_engine(call.engine).status, name)
        if name == "scrubber":
            last = status.get("last_run") or {}
            status["bad_blobs"] = last.get("details", [])
            # Marked in the index, found by the scrubber or by a read (any process): reads of these fail.
            status["damaged_blobs"] = await anyio.to_thread.run_sync(damaged_blobs, call.engine)
        return 200, status

    return handler


lifecycle_status = _status("lifecycle")
compaction_status = _status("compaction")
scrubber_status = _status("scrubber")
