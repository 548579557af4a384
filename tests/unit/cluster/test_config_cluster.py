"""Issue 19: the cluster's settings. The spec's quick start works as written; every impossible setting stops start-up
naming the setting (tools/config.py's ConfigError, as for every other setting); W + R <= N starts with a warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from s4.cluster.auth import derive_key
from s4.cluster.config import Address, ClusterConfig, PoolNode
from s4.tools.config import ConfigError, load_settings

POOL = "node-1:127.0.0.1:9100,node-2:127.0.0.2:9100,node-3:127.0.0.3:9100"


def quick_start(**overrides: str) -> dict[str, str]:
    """The spec's quick start for node 1, on 127.0.0.x."""
    env = dict(S4_MODE="cluster", S4_NODE_ID="node-1", S4_NODE_GRPC_ADDR="127.0.0.1:9100",
               S4_NODE_HTTP_ADDR="127.0.0.1:9000", S4_SEEDS="127.0.0.1:9100,127.0.0.2:9100,127.0.0.3:9100",
               S4_POOL_NAME="pool-1", S4_POOL_NODES=POOL, S4_ACCESS_KEY_ID="myaccesskey",
               S4_SECRET_ACCESS_KEY="mysecretkey")
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def cluster(**overrides: str) -> ClusterConfig:
    config = load_settings(quick_start(**overrides)).cluster
    assert isinstance(config, ClusterConfig)
    return config


def refused(match: str, **overrides: str) -> str:
    with pytest.raises(ConfigError, match=match) as exc:
        load_settings(quick_start(**overrides))
    return str(exc.value)


def test_issue19_spec_quick_start_builds_the_pool() -> None:
    config = cluster()
    assert config.node_id == "node-1" and config.cluster_name == "default" and config.pool_name == "pool-1"
    assert config.pool == tuple(PoolNode(f"node-{i}", Address(f"127.0.0.{i}", 9100)) for i in (1, 2, 3))
    assert [p.node_id for p in config.peers] == ["node-2", "node-3"]
    assert (config.replication_factor, config.write_quorum, config.read_quorum) == (3, 2, 2)
    assert config.hint_ttl_hours == 3.0 and config.max_clock_offset_s == 60.0
    assert config.grpc_addr == Address("127.0.0.1", 9100) and config.http_addr == "127.0.0.1:9000"
    assert len(config.seeds) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.write_quorum = 1  # type: ignore[misc]


def test_issue19_single_mode_has_no_cluster_config() -> None:
    assert load_settings({}).cluster is None
    assert load_settings({"S4_MODE": "single"}).mode == "single"


def test_issue20_gateway_mode_needs_its_settings() -> None:  # issue 19 refused it as "later"; issue 20 built it
    with pytest.raises(ConfigError, match=r"^S4_MODE=gateway needs S4_NODE_ID, S4_POOL_NAME, S4_POOL_NODES"):
        load_settings({"S4_MODE": "gateway"})


def test_issue19_unknown_mode_refused() -> None:
    with pytest.raises(ConfigError, match=r"^S4_MODE: 'leader' must be single, cluster or gateway"):
        load_settings({"S4_MODE": "leader"})


@pytest.mark.parametrize("name", ["S4_NODE_ID", "S4_NODE_GRPC_ADDR", "S4_NODE_HTTP_ADDR", "S4_POOL_NAME",
                                  "S4_POOL_NODES"])
def test_issue19_cluster_mode_needs_its_settings(name: str) -> None:
    message = refused(r"^S4_MODE=cluster needs", **{name: "<unset>"})
    assert name in message


@pytest.mark.parametrize(("name", "value"), [
    ("S4_SEEDS", "127.0.0.1:9100"), ("S4_POOL_NODES", POOL), ("S4_POOL_NAME", "pool-1"), ("S4_WRITE_QUORUM", "1"),
    ("S4_REPLICATION_FACTOR", "5"), ("S4_READ_QUORUM", "3"), ("S4_HINT_TTL_HOURS", "0"), ("S4_CLUSTER_NAME", "prod"),
    ("S4_NODE_GRPC_ADDR", "127.0.0.1:9100"), ("S4_NODE_HTTP_ADDR", "127.0.0.1:9000"),
    ("S4_CLUSTER_SECRET", "x" * 32), ("S4_MAX_CLOCK_OFFSET", "5"),
])
def test_issue19_cluster_setting_in_single_mode_refused(name: str, value: str) -> None:
    """A node meant for a pool must not start alone with its cluster settings silently ignored."""
    with pytest.raises(ConfigError, match=rf"^{name}: only used with S4_MODE=cluster"):
        load_settings({name: value})


def test_issue19_cluster_setting_at_its_default_in_single_mode_accepted() -> None:
    load_settings({"S4_CLUSTER_NAME": "default", "S4_REPLICATION_FACTOR": "3", "S4_HINT_TTL_HOURS": "3",
                   "S4_SEEDS": ""})


@pytest.mark.parametrize(("overrides", "match"), [
    ({"S4_WRITE_QUORUM": "4"}, r"^S4_WRITE_QUORUM: 4 must be between 1 and the replication factor"),
    ({"S4_READ_QUORUM": "4"}, r"^S4_READ_QUORUM: 4 must be between 1 and the replication factor"),
    ({"S4_WRITE_QUORUM": "0"}, r"^S4_WRITE_QUORUM: 0 must be between 1"),
    ({"S4_READ_QUORUM": "-1"}, r"^S4_READ_QUORUM: -1 must be between 1"),
    ({"S4_REPLICATION_FACTOR": "4"}, r"^S4_REPLICATION_FACTOR: 4 copies need at least 4 nodes; S4_POOL_NODES has 3"),
    ({"S4_REPLICATION_FACTOR": "0"}, r"^S4_REPLICATION_FACTOR: 0 must be at least 1"),
    ({"S4_NODE_ID": "node-4"}, r"^S4_POOL_NODES: this node \(S4_NODE_ID=node-4\) is not in its pool"),
    ({"S4_POOL_NODES": POOL + ",node-2:127.0.0.4:9100"}, r"^S4_POOL_NODES: duplicate node id node-2"),
    ({"S4_POOL_NODES": POOL + ",node-4:127.0.0.3:9100"}, r"^S4_POOL_NODES: duplicate address 127.0.0.3:9100"),
    ({"S4_POOL_NODES": "node-1:127.0.0.1"}, r"^S4_POOL_NODES: in 'node-1:127.0.0.1': '127.0.0.1' is not host:port"),
    ({"S4_POOL_NODES": "node-1:127.0.0.1:x"}, r"^S4_POOL_NODES: .*is not host:port"),
    ({"S4_POOL_NODES": "node-1:127.0.0.1:70000"}, r"^S4_POOL_NODES: .*is not host:port"),
    ({"S4_POOL_NODES": "127.0.0.1:9100"}, r"^S4_POOL_NODES: .*is not host:port"),
    ({"S4_POOL_NODES": "node 1:127.0.0.1:9100"}, r"^S4_POOL_NODES: 'node 1:127.0.0.1:9100' is not id:host:port"),
    ({"S4_POOL_NODES": POOL + ","}, r"^S4_POOL_NODES: .* has an empty entry"),
    ({"S4_POOL_NODES": "node-1:::1:9100"}, r"^S4_POOL_NODES: .*IPv6 address in brackets"),
    ({"S4_NODE_GRPC_ADDR": "127.0.0.1:9200"}, r"^S4_NODE_GRPC_ADDR: 127.0.0.1:9200 differs from this node's entry"),
    ({"S4_NODE_GRPC_ADDR": "127.0.0.9:9100"}, r"^S4_NODE_GRPC_ADDR: 127.0.0.9:9100 differs"),
    ({"S4_NODE_GRPC_ADDR": "nowhere"}, r"^S4_NODE_GRPC_ADDR: 'nowhere' is not host:port"),
    ({"S4_NODE_HTTP_ADDR": "127.0.0.1"}, r"^S4_NODE_HTTP_ADDR: '127.0.0.1' is not host:port"),
    ({"S4_SEEDS": "127.0.0.1:9100,,127.0.0.2:9100"}, r"^S4_SEEDS: .* has an empty entry"),
    ({"S4_SEEDS": "127.0.0.1"}, r"^S4_SEEDS: '127.0.0.1' is not host:port"),
    ({"S4_CLUSTER_NAME": "prod/eu"}, r"^S4_CLUSTER_NAME: 'prod/eu' must be 1-64 letters"),
    ({"S4_POOL_NAME": "pool 1"}, r"^S4_POOL_NAME: 'pool 1' must be 1-64 letters"),
    ({"S4_HINT_TTL_HOURS": "-1"}, r"^S4_HINT_TTL_HOURS: -1.0 must be 0 \(no hints\) or a positive number"),
    ({"S4_HINT_TTL_HOURS": "nan"}, r"^S4_HINT_TTL_HOURS: nan must be 0"),
    ({"S4_MAX_CLOCK_OFFSET": "0"}, r"^S4_MAX_CLOCK_OFFSET: 0.0 must be a positive number of seconds"),
    ({"S4_MAX_CLOCK_OFFSET": "inf"}, r"^S4_MAX_CLOCK_OFFSET: inf must be a positive"),
    ({"S4_CLUSTER_SECRET": "short"}, r"^S4_CLUSTER_SECRET: must be at least 16 characters"),
    ({"S4_SECRET_ACCESS_KEY": "<unset>", "S4_ACCESS_KEY_ID": "<unset>"},
     r"^S4_CLUSTER_SECRET: unset, and S4_SECRET_ACCESS_KEY is unset too"),
    ({"S4_GC_GRACE_DAYS": "0"}, r"^S4_GC_GRACE_DAYS: 0.0 must be a positive number of days"),
    ({"S4_MAX_REJOIN_DOWNTIME_DAYS": "nan"}, r"^S4_MAX_REJOIN_DOWNTIME_DAYS: nan must be a positive"),
    ({"S4_GC_GRACE_DAYS": "3"}, r"^S4_GC_GRACE_DAYS: 3.0 days must be longer than S4_MAX_REJOIN_DOWNTIME_DAYS=3.0"),
    ({"S4_MAX_REJOIN_DOWNTIME_DAYS": "0.1"},
     r"^S4_MAX_REJOIN_DOWNTIME_DAYS: 0.1 days must be longer than S4_HINT_TTL_HOURS=3.0 hours"),
    ({"S4_HINT_TTL_HOURS": "72"}, r"^S4_MAX_REJOIN_DOWNTIME_DAYS: 3.0 days must be longer than S4_HINT_TTL_HOURS"),
])
def test_issue19_impossible_cluster_setting_stops_startup(overrides: dict[str, str], match: str) -> None:
    refused(match, **overrides)


def test_issue19_wildcard_grpc_bind_keeps_the_pool_address() -> None:
    """Listening on all interfaces is fine as long as the port is the one the peers dial."""
    assert cluster(S4_NODE_GRPC_ADDR="0.0.0.0:9100").grpc_addr == Address("0.0.0.0", 9100)
    refused(r"^S4_NODE_GRPC_ADDR: 0.0.0.0:9101 differs", S4_NODE_GRPC_ADDR="0.0.0.0:9101")


def test_issue19_ipv6_pool_entries() -> None:
    config = cluster(S4_POOL_NODES="node-1:[::1]:9100,node-2:[::1]:9101", S4_NODE_GRPC_ADDR="[::1]:9100",
                     S4_REPLICATION_FACTOR="2", S4_WRITE_QUORUM="2", S4_READ_QUORUM="1")
    assert config.pool[1] == PoolNode("node-2", Address("::1", 9101)) and str(config.pool[1].grpc) == "[::1]:9101"


@pytest.mark.parametrize(("n", "w", "r"), [(3, 1, 2), (3, 2, 1), (3, 1, 1), (2, 1, 1), (1, 1, 1), (2, 2, 1)])
def test_issue19_weak_quorums_start_with_a_stale_read_warning(n: int, w: int, r: int) -> None:
    """W and R count over the pool's three nodes (every write goes to all of them), whatever N says."""
    config = cluster(S4_REPLICATION_FACTOR=str(n), S4_WRITE_QUORUM=str(w), S4_READ_QUORUM=str(r),
                     S4_CLUSTER_SECRET="s" * 16)
    assert config.warnings == (f"S4_WRITE_QUORUM={w} + S4_READ_QUORUM={r} <= 3 nodes in the pool: a read "
                               "quorum may miss the latest write, so reads may be stale",)


def test_issue20_a_pool_larger_than_n_warns_when_its_quorums_miss() -> None:
    """A fourth node added to a pool with N=3, W=2, R=2: every write still goes to all four, a write acknowledged by
    two and a read of the other two do not meet. Before, the check compared W + R with N and said nothing."""
    config = cluster(S4_POOL_NODES=POOL + ",node-4:127.0.0.4:9100", S4_CLUSTER_SECRET="s" * 16)
    assert config.warnings == ("S4_WRITE_QUORUM=2 + S4_READ_QUORUM=2 <= 4 nodes in the pool: a read "
                               "quorum may miss the latest write, so reads may be stale",)
    assert cluster(S4_POOL_NODES=POOL + ",node-4:127.0.0.4:9100", S4_CLUSTER_SECRET="s" * 16,
                   S4_WRITE_QUORUM="3").warnings == ()


@pytest.mark.parametrize(("n", "w", "r"), [(3, 2, 2), (3, 3, 1), (3, 1, 3), (2, 2, 2)])
def test_issue19_overlapping_quorums_start_without_warning(n: int, w: int, r: int) -> None:
    config = cluster(S4_REPLICATION_FACTOR=str(n), S4_WRITE_QUORUM=str(w), S4_READ_QUORUM=str(r),
                     S4_CLUSTER_SECRET="s" * 16)
    assert config.warnings == ()


def test_issue19_key_from_cluster_secret_or_derived_from_s3_secret_with_warning() -> None:
    derived = cluster()
    assert derived.key_derived_from_s3_secret and derived.key == derive_key("mysecretkey", "default",
                                                                            from_s3_secret=True)
    assert any("S4_CLUSTER_SECRET is unset" in w for w in derived.warnings)
    explicit = cluster(S4_CLUSTER_SECRET="a-long-shared-secret")
    assert not explicit.key_derived_from_s3_secret and explicit.warnings == ()
    assert explicit.key == derive_key("a-long-shared-secret", "default", from_s3_secret=False)
    assert str(explicit.key) not in repr(explicit)  # the key never lands in a log line


def test_issue19_cluster_section_of_config_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[cluster]\nmode = "cluster"\ncluster_name = "prod"\nnode_id = "node-2"\n'
                   'node_grpc_addr = "127.0.0.2:9100"\nnode_http_addr = "127.0.0.2:9000"\npool_name = "pool-1"\n'
                   f'pool_nodes = {POOL.split(",")!r}\nseeds = "127.0.0.1:9100"\nreplication_factor = 3\n'
                   'write_quorum = 3\nread_quorum = 1\nhint_ttl_hours = 0.5\nmax_clock_offset = 10\n'
                   'cluster_secret = "0123456789abcdef"\n'.replace("'", '"'))
    config = load_settings({}, config_path=str(cfg)).cluster
    assert isinstance(config, ClusterConfig)
    assert (config.cluster_name, config.node_id, config.write_quorum, config.read_quorum) == ("prod", "node-2", 3, 1)
    assert config.hint_ttl_hours == 0.5 and config.max_clock_offset_s == 10.0 and len(config.pool) == 3
    assert config.key == derive_key("0123456789abcdef", "prod", from_s3_secret=False)
    cfg.write_text(cfg.read_text().replace("write_quorum = 3", "write_quorum = 5"))
    with pytest.raises(ConfigError, match=r"^config.toml cluster.write_quorum: 5 must be between 1"):
        load_settings({}, config_path=str(cfg))
    # env wins over the file, and is then the name in the message
    with pytest.raises(ConfigError, match=r"^S4_WRITE_QUORUM: 7 must be between 1"):
        load_settings({"S4_WRITE_QUORUM": "7"}, config_path=str(cfg))


def test_anti_entropy_settings_reach_the_cluster_config() -> None:
    config = cluster(S4_ANTI_ENTROPY_INTERVAL_SECS="30", S4_ANTI_ENTROPY_RATE_KEYS="50",
                     S4_ANTI_ENTROPY_RATE_BYTES="1MB", S4_CATCH_UP="off")
    ae = config.anti_entropy
    assert (ae.interval_s, ae.keys_per_s, ae.bytes_per_s, ae.catch_up) == (30, 50, 1024 * 1024, False)
    default = cluster().anti_entropy
    assert (default.interval_s, default.catch_up, default.gc_grace_days) == (600, True, 7.0)


def test_anti_entropy_impossible_settings_stop_startup() -> None:
    refused("S4_ANTI_ENTROPY_INTERVAL_SECS", S4_ANTI_ENTROPY_INTERVAL_SECS="-1")
    refused("S4_ANTI_ENTROPY_RATE_KEYS", S4_ANTI_ENTROPY_RATE_KEYS="-5")
    with pytest.raises(ConfigError, match="S4_ANTI_ENTROPY_INTERVAL_SECS: only used with S4_MODE=cluster"):
        load_settings({"S4_ANTI_ENTROPY_INTERVAL_SECS": "30"})


def test_issue20_tombstone_windows_in_order_and_in_fractions() -> None:
    """hint TTL < max rejoin downtime < GC grace, converted to one unit; fractions work (tests use seconds)."""
    config = cluster()
    assert (config.gc_grace_days, config.max_rejoin_downtime_days) == (7.0, 3.0)
    config = cluster(S4_HINT_TTL_HOURS="0.0001", S4_MAX_REJOIN_DOWNTIME_DAYS="0.00002", S4_GC_GRACE_DAYS="0.00003")
    assert config.max_rejoin_downtime_days * 86400 == pytest.approx(1.728)
    assert cluster(S4_HINT_TTL_HOURS="0", S4_MAX_REJOIN_DOWNTIME_DAYS="0.00001",
                   S4_GC_GRACE_DAYS="0.00002").hint_ttl_hours == 0
    refused(r"^S4_GC_GRACE_DAYS: 1e-05 days must be longer", S4_HINT_TTL_HOURS="0",
            S4_MAX_REJOIN_DOWNTIME_DAYS="0.00002", S4_GC_GRACE_DAYS="0.00001")


def test_issue19_read_lease_idle_time_reaches_the_cluster_config_and_is_bounded(tmp_path: Path) -> None:
    """S4_READ_LEASE_IDLE_SECS (cluster/read_leases.py ``ReadLeases.wanted``): how long after its last read a node
    still asks for read leases; 30 s by default, 1..86400 s, cluster mode only, also as config.toml's
    ``read_lease_idle_secs``."""
    assert cluster().read_lease_idle_s == 30.0
    assert cluster(S4_READ_LEASE_IDLE_SECS="5").read_lease_idle_s == 5.0
    for bad in ("0", "0.5", "86401", "nan"):
        refused(r"^S4_READ_LEASE_IDLE_SECS: .* must be between 1 and 86400 seconds", S4_READ_LEASE_IDLE_SECS=bad)
    with pytest.raises(ConfigError, match=r"^S4_READ_LEASE_IDLE_SECS: only used with S4_MODE=cluster"):
        load_settings({"S4_READ_LEASE_IDLE_SECS": "10"})
    cfg = tmp_path / "config.toml"
    cfg.write_text("[cluster]\nread_lease_idle_secs = 12\n")
    config = load_settings(quick_start(), config_path=str(cfg)).cluster
    assert config is not None and config.read_lease_idle_s == 12.0
