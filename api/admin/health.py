"""``GET /api/admin/cluster/health`` (SuperUser): the node's pool and the liveness of each member; and
``GET /api/admin/cluster/repair-status`` (SuperUser): hints, anti-entropy and scrub numbers.

The document comes from the engine's ``ClusterStatus`` port (engine/ports.py), which tools/server.py fills: the
cluster node's heartbeat (cluster/node.py) in cluster mode, forwarded from the supervisor in an HTTP worker, a
one-node document in single mode. This package never imports cluster/.
"""

from __future__ import annotations

from s4.engine.jobs.service import for_engine
from s4.engine.ports import SingleNodeStatus

from .call import AdminCall, Result


async def cluster_health(call: AdminCall) -> Result:
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    return 200, await status.health()


async def cluster_repair_status(call: AdminCall) -> Result:
    """Per peer: hints pending, dropped, delivered; the last anti-entropy exchange, what it found and repaired;
    the anti-entropy totals and rebuilds; ``scrub``: this node's scrubber (engine/jobs/service.py ``scrub_status``:
    the running pass's progress, the last full pass, blobs found bad, healed from replicas and heal failures)."""
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    document = await status.repair_status()
    document["scrub"] = await for_engine(call.engine).scrub_status()  # a worker asks the journal owner
    return 200, document
