"""Issue 18: eighteen settings were accepted and ignored. Each one now either works (S4_NODE_ID, strict_sync = true,
metadata_path naming where the views are) or stops start-up with a message saying it is not supported yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.tools.config import CLUSTER_ONLY, ENV, NOT_SUPPORTED, ConfigError, load_settings

# env var -> a value that is not its default (the cluster settings of part 1 work since issue 19:
# tests/unit/cluster/test_config_cluster.py)
FEDERATION_VALUES = {  # every federation setting works since issue 20 (cluster only); this one stays refused
    "S4_LICENSE_KEY": "your-license-key-here",
}


@pytest.mark.parametrize("name", sorted(FEDERATION_VALUES))
def test_issue18_unsupported_setting_stops_startup(name: str) -> None:
    with pytest.raises(ConfigError, match="not supported yet") as exc:
        load_settings({name: FEDERATION_VALUES[name]})
    assert str(exc.value).startswith(name)


@pytest.mark.parametrize("name", sorted(FEDERATION_VALUES))
def test_issue18_unsupported_setting_at_its_default_is_accepted(name: str) -> None:
    default = ENV[name][2]
    load_settings({name: "" if default is None else str(default)})


def test_issue18_gateway_mode_without_its_settings_stops_startup() -> None:  # issue 20: gateway mode exists
    with pytest.raises(ConfigError, match="S4_MODE=gateway needs S4_NODE_ID, S4_POOL_NAME, S4_POOL_NODES"):
        load_settings({"S4_MODE": "gateway"})


def test_issue18_strict_sync_false_stops_startup_true_works(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[tuning]\nstrict_sync = false\n")
    with pytest.raises(ConfigError, match=r"config.toml tuning.strict_sync: strict_sync = false is not supported yet"):
        load_settings({}, config_path=str(cfg))
    cfg.write_text("[tuning]\nstrict_sync = true\n")
    assert load_settings({}, config_path=str(cfg)).strict_sync is True


def test_issue18_metadata_path_must_name_the_views(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\ndata_path = "/var/lib/s4/volumes"\nmetadata_path = "/var/lib/s4/metadata_db"\n')
    with pytest.raises(ConfigError, match=r"metadata_path: .*not supported yet.*/var/lib/s4/views"):
        load_settings({}, config_path=str(cfg))
    cfg.write_text('[storage]\ndata_path = "/var/lib/s4/volumes"\nmetadata_path = "/var/lib/s4/views"\n')
    load_settings({}, config_path=str(cfg))


def test_issue18_node_id_is_validated() -> None:
    assert load_settings({"S4_NODE_ID": "node-1"}).node_id == "node-1"
    with pytest.raises(ConfigError, match="S4_NODE_ID"):
        load_settings({"S4_NODE_ID": "node 1/../x"})


def test_issue18_every_accepted_setting_is_used_or_refused() -> None:
    """The eighteen: each is either honoured somewhere (S4_NODE_ID, metadata_path) or in NOT_SUPPORTED."""
    ignored_before = {"mode", "cluster_name", "node_grpc_addr", "node_http_addr", "seeds", "pool_name", "pool_nodes",
                      "replication_factor", "write_quorum", "read_quorum", "gc_grace_days",
                      "max_rejoin_downtime_days", "anti_entropy_interval_secs", "hint_ttl_hours", "license_key",
                      "strict_sync"}
    assert ignored_before <= set(NOT_SUPPORTED) | set(CLUSTER_ONLY) | {"mode"}
