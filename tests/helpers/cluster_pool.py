"""Cluster configurations for in-process tests: one pool over loopback addresses, a free gRPC port per node."""

from __future__ import annotations

from typing import Any

from helpers.server import free_port

from s4.cluster.config import ClusterConfig, build_cluster_config

SECRET = "a-long-shared-secret"


def pool_configs(hosts: tuple[str, ...], *, cluster: str = "prod", replication_factor: int = 3,
                 write_quorum: int = 2, read_quorum: int = 2, **extra: Any) -> list[ClusterConfig]:
    """The configuration of each node ``node-1``.. on ``hosts`` (one pool, one shared secret)."""
    pool = ",".join(f"node-{i + 1}:{host}:{free_port(host)}" for i, host in enumerate(hosts))
    return [build_cluster_config(dict(
        mode="cluster", cluster_name=cluster, node_id=f"node-{i + 1}",
        node_grpc_addr=pool.split(",")[i].partition(":")[2], node_http_addr=f"{hosts[i]}:9000", pool_name="pool-1",
        pool_nodes=pool, replication_factor=replication_factor, write_quorum=write_quorum, read_quorum=read_quorum,
        cluster_secret=SECRET, max_clock_offset_s=60.0, **extra))
        for i in range(len(hosts))]
