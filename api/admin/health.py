"""``GET /api/admin/cluster/health`` (SuperUser): the node's pool and the liveness of each member; and
``GET /api/admin/cluster/repair-status`` (SuperUser): hints, anti-entropy and scrub numbers.

The document comes from the engine's ``ClusterStatus`` port (engine/ports.py), which tools/server.py fills: the
cluster node's heartbeat (cluster/node.py) in cluster mode, forwarded from the supervisor in an HTTP worker, a
one-node document in single mode. This package never imports cluster/.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from s4.engine.jobs.service import for_engine
from s4.engine.ports import SingleNodeStatus

from .call import AdminCall, Result


async def cluster_health(call: AdminCall) -> Result:
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    return 200, await status.health()


async def cluster_repair_status(call: AdminCall) -> Result:
    """Per peer: hints pending, dropped, delivered; the last anti-entropy exchange, what it found and repaired;
    the anti-entropy totals and rebuilds; ``scrub``: this node's scrubber (``scrub_numbers``)."""
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    document = await status.repair_status()
    # Off the event loop: in a worker process the job status is a round trip to the sequencer process.
    document["scrub"] = scrub_numbers(await anyio.to_thread.run_sync(for_engine(call.engine).status, "scrubber"))
    return 200, document


def scrub_numbers(status: dict[str, Any]) -> dict[str, Any]:
    """The scrubber's part of repair-status, from its job report (engine/jobs/service.py ``status("scrubber")``):
    whether a scan runs, and the last finished scan's counts. ``blobs_healed`` is the report's ``done.healed``
    (scrub healing in a cluster counts it there; None while the scrubber reports no such count) and ``progress``
    its ``progress`` (a running scan's share done, once the scrubber publishes one)."""
    last = status.get("last_run") or {}
    examined, done = last.get("examined") or {}, last.get("done") or {}
    return {"running": bool(status.get("running")), "runs": status.get("runs", 0),
            "progress": status.get("progress"), "last_scan_ms": last.get("started_ms"),
            "blobs_examined": examined.get("blobs", 0), "bytes_examined": examined.get("bytes", 0),
            "bad_blobs": done.get("bad_blobs", 0), "blobs_healed": done.get("healed")}
