"""Issue 20, gateway mode: S4_MODE=gateway's settings. It needs its id, its pool's name and nodes, and the cluster
key (a secret, or derived from the S3 secret like the nodes'); a node's settings (storage, background jobs, gRPC,
quorums, IAM seeding) stop start-up naming the setting, since a gateway would run without them."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.cluster.auth import derive_key
from s4.tools.config import ConfigError, load_settings

BASE = {"S4_MODE": "gateway", "S4_CLUSTER_NAME": "prod", "S4_NODE_ID": "gw-1", "S4_POOL_NAME": "pool-1",
        "S4_POOL_NODES": "node-1:10.0.0.1:7000,node-2:10.0.0.2:7000", "S4_CLUSTER_SECRET": "a-long-shared-secret"}


def test_issue20_gateway_settings_build_its_config() -> None:
    settings = load_settings(BASE)
    gateway = settings.gateway
    assert settings.cluster is None and gateway.gateway_id == "gw-1" and gateway.cluster_name == "prod"
    assert [(p.name, [n.node_id for n in p.nodes]) for p in gateway.pools] == [("pool-1", ["node-1", "node-2"])]
    assert gateway.key == derive_key("a-long-shared-secret", "prod", from_s3_secret=False) and not gateway.warnings
    derived = load_settings({**{k: v for k, v in BASE.items() if k != "S4_CLUSTER_SECRET"},
                             "S4_SECRET_ACCESS_KEY": "s3-secret"}).gateway
    assert derived.key == derive_key("s3-secret", "prod", from_s3_secret=True) and derived.key_derived_from_s3_secret
    assert load_settings({**BASE, "S4_WORKERS": "1"}).gateway is not None
    assert load_settings({**BASE, "S4_CONSOLE_BIND": "off"}).gateway is not None  # what a gateway does anyway
    assert load_settings({}).gateway is None


def test_issue20_gateway_from_config_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[cluster]\nmode = "gateway"\nnode_id = "gw-2"\npool_name = "pool-1"\n'
                   'pool_nodes = ["node-1:10.0.0.1:7000"]\ncluster_secret = "a-long-shared-secret"\n')
    assert load_settings({}, config_path=str(cfg)).gateway.gateway_id == "gw-2"


@pytest.mark.parametrize(("drop", "named"), [("S4_NODE_ID", "S4_NODE_ID"), ("S4_POOL_NAME", "S4_POOL_NAME"),
                                             ("S4_POOL_NODES", "S4_POOL_NODES")])
def test_issue20_gateway_needs_id_pool_name_and_nodes(drop: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"^S4_MODE=gateway needs {named} "):
        load_settings({k: v for k, v in BASE.items() if k != drop})


@pytest.mark.parametrize(("extra", "match"), [
    ({"S4_NODE_ID": "node-2"}, r"^S4_NODE_ID: 'node-2' is a node of the pool"),
    ({"S4_POOL_NODES": "node-1:10.0.0.1"}, r"^S4_POOL_NODES: "),
    ({"S4_CLUSTER_SECRET": "short"}, r"^S4_CLUSTER_SECRET: must be at least 16"),
    ({"S4_CLUSTER_SECRET": ""}, r"^S4_CLUSTER_SECRET: unset, and S4_SECRET_ACCESS_KEY is unset too"),
    ({"S4_WORKERS": "4"}, r"^S4_WORKERS: a gateway runs one process"),
    ({"S4_NODE_GRPC_ADDR": "10.0.0.9:7000"}, r"^S4_NODE_GRPC_ADDR: not used by a gateway"),
    ({"S4_NODE_HTTP_ADDR": "10.0.0.9:9000"}, r"^S4_NODE_HTTP_ADDR: not used by a gateway"),
    ({"S4_SEEDS": "10.0.0.1:7000"}, r"^S4_SEEDS: not used by a gateway"),
    ({"S4_WRITE_QUORUM": "1"}, r"^S4_WRITE_QUORUM: not used by a gateway"),
    ({"S4_VOLUME_SIZE": "2GB"}, r"^S4_VOLUME_SIZE: not used by a gateway"),
    ({"S4_ROOT_PASSWORD": "password12345"}, r"^S4_ROOT_PASSWORD: not used by a gateway"),
    ({"S4_COMPACTION_ENABLED": "false"}, r"^S4_COMPACTION_ENABLED: not used by a gateway"),
    ({"S4_CONSOLE_BIND": "127.0.0.1:3001"}, r"^S4_CONSOLE_BIND: not used by a gateway"),
])
def test_issue20_impossible_gateway_settings_stop_startup_naming_the_setting(extra: dict[str, str],
                                                                             match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings({**BASE, **extra})
