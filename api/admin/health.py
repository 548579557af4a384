"""``GET /api/admin/cluster/health`` (SuperUser): the node's pool and the liveness of each member;
``GET /api/admin/cluster/repair-status`` (SuperUser): hints, anti-entropy and scrub numbers; and
``POST``/``DELETE /api/admin/cluster/nodes/{id}/drain`` (SuperUser): drain a node of the pool, or cancel it.

The document comes from the engine's ``ClusterStatus`` port (engine/ports.py), which tools/server.py fills: the
cluster node's heartbeat (cluster/node.py) in cluster mode, forwarded from the supervisor in an HTTP worker, a
one-node document in single mode. This package never imports cluster/.
"""

from __future__ import annotations

from s4.engine.iam import IamError
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


async def drain_node(call: AdminCall) -> Result:
    """Drain node ``id`` (this node or any of its pool; forwarded over the cluster wire): its ``/health`` answers
    503, it hands off hints, read and job leases, and keeps serving as a replica. Unknown id: 404; the node did not
    answer: 503 (docs/operations.md, "Rolling restart and drain")."""
    return await _drain(call, True)


async def undrain_node(call: AdminCall) -> Result:
    """Cancel draining node ``id``."""
    return await _drain(call, False)


async def _drain(call: AdminCall, on: bool) -> Result:
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    node_id = call.params["id"]
    document = await status.health()
    if document.get("mode") != "cluster":
        raise IamError(404, "drain needs a cluster node (S4_MODE=cluster)")
    if node_id not in {n["id"] for n in document.get("nodes", [])}:
        raise IamError(404, f"no node {node_id!r} in this node's pool")
    return 200, await status.drain_node(node_id, on)
