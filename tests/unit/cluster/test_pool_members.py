"""A pool's nodes never change (docs/operations.md, "Add a node"): the CAS store records them on the first start and
a start naming others is refused before anything votes or serves. Replacing a node keeps its id (accepted); a node
moving to another address keeps its id too (accepted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.cluster.buckets_register import CasNode
from s4.cluster.config import ClusterConfig, ClusterConfigError, build_cluster_config
from s4.cluster.peers import PeerPool

SECRET = "a-long-shared-secret"


def config(nodes: list[tuple[str, str]]) -> ClusterConfig:
    pool = ",".join(f"{node}:{addr}" for node, addr in nodes)
    return build_cluster_config(dict(
        mode="cluster", cluster_name="prod", node_id="node-1", node_grpc_addr=nodes[0][1],
        node_http_addr="127.0.0.1:9000", pool_name="pool-1", pool_nodes=pool, replication_factor=len(nodes),
        write_quorum=len(nodes) // 2 + 1, read_quorum=len(nodes) // 2 + 1, cluster_secret=SECRET))


THREE = [("node-1", "127.0.0.1:9100"), ("node-2", "127.0.0.2:9100"), ("node-3", "127.0.0.3:9100")]


def start(cfg: ClusterConfig, data_dir: Path) -> None:
    peers = PeerPool(cfg)
    try:
        CasNode.open(cfg, data_dir, peers).close()
    finally:
        peers.close()


def test_issue20_a_node_added_to_an_existing_pool_is_refused(tmp_path: Path) -> None:
    start(config(THREE), tmp_path)
    four = config([*THREE, ("node-4", "127.0.0.4:9100")])
    with pytest.raises(ClusterConfigError, match=r"^S4_POOL_NODES: pool pool-1 was started with nodes node-1, "
                                                 r"node-2, node-3 and now names node-1, node-2, node-3, node-4"):
        start(four, tmp_path)
    with pytest.raises(ClusterConfigError, match="a pool's nodes never change"):
        start(config(THREE[:2]), tmp_path)  # nor one taken out
    start(config(THREE), tmp_path)  # the recorded pool still opens


def test_issue20_the_same_ids_at_new_addresses_are_the_same_pool(tmp_path: Path) -> None:
    start(config(THREE), tmp_path)
    start(config([("node-1", "127.0.0.1:9200"), ("node-3", "127.0.0.3:9300"), ("node-2", "127.0.0.2:9400")]), tmp_path)
