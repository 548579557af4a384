"""``GET /api/admin/cluster/health`` (SuperUser): the node's pool and the liveness of each member.

The document comes from the engine's ``ClusterStatus`` port (engine/ports.py), which tools/server.py fills: the
cluster node's heartbeat (cluster/node.py) in cluster mode, forwarded from the supervisor in an HTTP worker, a
one-node document in single mode. This package never imports cluster/.
"""

from __future__ import annotations

from s4.engine.ports import SingleNodeStatus

from .call import AdminCall, Result


async def cluster_health(call: AdminCall) -> Result:
    status = call.engine.cluster or SingleNodeStatus(call.engine.node_id, None)
    return 200, await status.health()
