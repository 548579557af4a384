"""Issue 20, pools: S4_CLUSTER_POOLS names every pool of the cluster (docs/architecture/pools.md, "Topology").
S4_POOL_NODES stays the one-pool short form; impossible topologies stop start-up naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.cluster.config import Address, ClusterConfig, GatewayConfig, PoolNode, PoolSpec
from s4.tools.config import ConfigError, load_settings

POOLS = ("pool-b=node-4:127.0.0.4:9100;"
         "pool-a=node-1:127.0.0.1:9100,node-2:127.0.0.2:9100,node-3:127.0.0.3:9100")


def node_env(**overrides: str) -> dict[str, str]:
    env = dict(S4_MODE="cluster", S4_NODE_ID="node-4", S4_NODE_GRPC_ADDR="127.0.0.4:9100",
               S4_NODE_HTTP_ADDR="127.0.0.4:9000", S4_POOL_NAME="pool-b", S4_CLUSTER_POOLS=POOLS,
               S4_REPLICATION_FACTOR="1", S4_WRITE_QUORUM="1", S4_READ_QUORUM="1",
               S4_ACCESS_KEY_ID="myaccesskey", S4_SECRET_ACCESS_KEY="mysecretkey")
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def test_issue20_cluster_pools_gives_every_pool_in_name_order() -> None:
    config = load_settings(node_env()).cluster
    assert isinstance(config, ClusterConfig)
    assert [p.name for p in config.pools] == ["pool-a", "pool-b"]
    assert config.pool == (PoolNode("node-4", Address("127.0.0.4", 9100)),)
    assert config.registry_pool.name == "pool-a"  # the first by name, not the first written
    assert [p.name for p in config.other_pools] == ["pool-a"]
    assert config.pool_of_node("node-2") == config.pools[0] and config.pool_of_node("gw") is None
    assert [p.node_id for p in config.peers] == []


def test_issue20_pool_nodes_alone_is_the_one_pool_short_form() -> None:
    env = node_env(S4_CLUSTER_POOLS="<unset>", S4_POOL_NODES="node-4:127.0.0.4:9100")
    config = load_settings(env).cluster
    assert isinstance(config, ClusterConfig)
    assert config.pools == (PoolSpec("pool-b", config.pool),) and config.registry_pool.name == "pool-b"
    assert config.other_pools == ()


def test_issue20_pool_nodes_must_agree_with_cluster_pools() -> None:
    assert load_settings(node_env(S4_POOL_NODES="node-4:127.0.0.4:9100")).cluster is not None
    with pytest.raises(ConfigError, match=r"^S4_POOL_NODES: differs from pool pool-b's entry in S4_CLUSTER_POOLS"):
        load_settings(node_env(S4_POOL_NODES="node-4:127.0.0.4:9101"))


@pytest.mark.parametrize(("pools", "match"), [
    ("pool-a=node-1:127.0.0.1:9100;pool-a=node-4:127.0.0.4:9100", "duplicate pool pool-a"),
    ("pool-a=node-4:127.0.0.1:9100;pool-b=node-4:127.0.0.4:9100", "node id node-4 is in pool pool-a and pool pool-b"),
    ("pool-a=node-1:127.0.0.4:9100;pool-b=node-4:127.0.0.4:9100",
     "address 127.0.0.4:9100 is in pool pool-a and pool pool-b"),
    ("node-1:127.0.0.1:9100", "is not name=id:host:port"),
    ("pool a=node-4:127.0.0.4:9100", "is not name=id:host:port"),
    ("pool-b=node-4:127.0.0.4", "pool pool-b: in 'node-4:127.0.0.4'"),
    ("pool-b=", "pool pool-b: names no node"),
])
def test_issue20_cluster_pools_refused(pools: str, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"^S4_CLUSTER_POOLS: .*{match}"):
        load_settings(node_env(S4_CLUSTER_POOLS=pools))


def test_issue20_this_node_must_be_in_its_pool_of_cluster_pools() -> None:
    with pytest.raises(ConfigError, match=r"^S4_POOL_NAME: 'pool-c' is not a pool of S4_CLUSTER_POOLS"):
        load_settings(node_env(S4_POOL_NAME="pool-c"))
    with pytest.raises(ConfigError, match=r"^S4_POOL_NODES: this node \(S4_NODE_ID=node-1\) is not in its pool"):
        load_settings(node_env(S4_NODE_ID="node-1", S4_NODE_GRPC_ADDR="127.0.0.1:9100"))


def test_issue20_cluster_pools_from_config_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[cluster]\nmode = "cluster"\nnode_id = "node-4"\nnode_grpc_addr = "127.0.0.4:9100"\n'
                    'node_http_addr = "127.0.0.4:9000"\npool_name = "pool-b"\nreplication_factor = 1\n'
                    'write_quorum = 1\nread_quorum = 1\n[cluster.cluster_pools]\n'
                    '"pool-a" = ["node-1:127.0.0.1:9100", "node-2:127.0.0.2:9100"]\n'
                    '"pool-b" = ["node-4:127.0.0.4:9100"]\n')
    config = load_settings({"S4_SECRET_ACCESS_KEY": "mysecretkey", "S4_ACCESS_KEY_ID": "k"}, str(path)).cluster
    assert isinstance(config, ClusterConfig)
    assert [(p.name, len(p.nodes)) for p in config.pools] == [("pool-a", 2), ("pool-b", 1)]


def test_issue20_cluster_pools_refused_in_single_mode() -> None:
    with pytest.raises(ConfigError, match="S4_CLUSTER_POOLS"):
        load_settings({"S4_CLUSTER_POOLS": POOLS})


def test_issue20_gateway_fronts_every_pool_of_cluster_pools() -> None:
    env = dict(S4_MODE="gateway", S4_NODE_ID="gw-1", S4_CLUSTER_POOLS=POOLS, S4_SECRET_ACCESS_KEY="mysecretkey",
               S4_ACCESS_KEY_ID="k")
    config = load_settings(env).gateway
    assert isinstance(config, GatewayConfig)
    assert [p.name for p in config.pools] == ["pool-a", "pool-b"]
    with pytest.raises(ConfigError, match="is a node of the pool"):
        load_settings({**env, "S4_NODE_ID": "node-2"})
    with pytest.raises(ConfigError, match="not both"):
        load_settings({**env, "S4_POOL_NAME": "pool-a", "S4_POOL_NODES": "node-1:127.0.0.1:9100"})
