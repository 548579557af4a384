"""The cluster's configuration, validated once at start-up and frozen.

``build_cluster_config`` turns the raw settings (tools/config.py reads them from S4_* variables and config.toml's
``[cluster]`` section) into a ``ClusterConfig``. An impossible combination stops start-up with a
``ClusterConfigError`` naming the setting, so a pool never runs with a quorum it cannot reach or an address its
peers cannot dial. A legal but weak combination (W + R <= N) starts with a warning in ``ClusterConfig.warnings``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .auth import derive_key

#: Node ids, pool and cluster names: they travel in gRPC metadata and name directories, so a conservative alphabet.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_SECRET_CHARS = 16

#: settings field -> env var, for messages when the caller names nothing else
ENV_NAMES = {
    "mode": "S4_MODE", "cluster_name": "S4_CLUSTER_NAME", "node_id": "S4_NODE_ID",
    "node_grpc_addr": "S4_NODE_GRPC_ADDR", "node_http_addr": "S4_NODE_HTTP_ADDR", "seeds": "S4_SEEDS",
    "pool_name": "S4_POOL_NAME", "pool_nodes": "S4_POOL_NODES", "replication_factor": "S4_REPLICATION_FACTOR",
    "write_quorum": "S4_WRITE_QUORUM", "read_quorum": "S4_READ_QUORUM", "hint_ttl_hours": "S4_HINT_TTL_HOURS",
    "cluster_secret": "S4_CLUSTER_SECRET", "max_clock_offset_s": "S4_MAX_CLOCK_OFFSET",
    "job_lease_s": "S4_JOB_LEASE_SECS", "read_lease_idle_s": "S4_READ_LEASE_IDLE_SECS",
    "anti_entropy_interval_secs": "S4_ANTI_ENTROPY_INTERVAL_SECS",
    "anti_entropy_rate_keys": "S4_ANTI_ENTROPY_RATE_KEYS", "anti_entropy_rate_bytes": "S4_ANTI_ENTROPY_RATE_BYTES",
    "catch_up": "S4_CATCH_UP",
    "gc_grace_days": "S4_GC_GRACE_DAYS", "max_rejoin_downtime_days": "S4_MAX_REJOIN_DOWNTIME_DAYS",
    "secret_key": "S4_SECRET_ACCESS_KEY", "cluster_pools": "S4_CLUSTER_POOLS",
    "iam_sync_s": "S4_IAM_SYNC_SECS",
}
REQUIRED = ("node_id", "node_grpc_addr", "node_http_addr", "pool_name", "pool_nodes")
#: S4_CLUSTER_POOLS: pools separated by ';', each ``name=`` and its S4_POOL_NODES-style list
POOL_SEPARATOR = ";"


class ClusterConfigError(ValueError):
    """An impossible cluster setting; the message starts with the setting's name."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PoolNode:
    node_id: str
    grpc: Address


@dataclass(frozen=True)
class AntiEntropyConfig:
    """Merkle anti-entropy (cluster/anti_entropy.py) and the journal catch-up switch."""

    interval_s: float = 600.0  # S4_ANTI_ENTROPY_INTERVAL_SECS; 0: no anti-entropy
    keys_per_s: float = 1000.0  # S4_ANTI_ENTROPY_RATE_KEYS; 0: unlimited
    bytes_per_s: float = 32 * 1024 * 1024  # S4_ANTI_ENTROPY_RATE_BYTES; 0: unlimited
    gc_grace_days: float = 7.0  # S4_GC_GRACE_DAYS: tombstones older than this are not shipped
    catch_up: bool = True  # S4_CATCH_UP=off: diagnostics only (proves anti-entropy alone)


@dataclass(frozen=True)
class ClusterConfig:
    cluster_name: str
    node_id: str
    grpc_addr: Address  # where this node's gRPC server listens
    http_addr: str  # the S3 address this node advertises to the others
    seeds: tuple[Address, ...]
    pool_name: str
    pool: tuple[PoolNode, ...]  # in S4_POOL_NODES order, this node included
    replication_factor: int
    write_quorum: int
    read_quorum: int
    hint_ttl_hours: float  # 0: no hints
    max_clock_offset_s: float
    key: bytes = field(repr=False)  # the inter-node MAC key (cluster/auth.py), never printed
    key_derived_from_s3_secret: bool = False
    warnings: tuple[str, ...] = ()
    job_lease_s: float = 60.0  # a pool-wide background job's lease (cluster/job_lease.py)
    anti_entropy: AntiEntropyConfig = field(default_factory=lambda: AntiEntropyConfig())
    gc_grace_days: float = 7.0  # tombstones are kept at least this long (docs/architecture/tombstones.md)
    max_rejoin_downtime_days: float = 3.0  # away longer (and the pool moved on): bootstrap afresh
    #: every pool of the cluster (S4_CLUSTER_POOLS), in name order, this node's included; () = this pool alone
    cluster_pools: tuple[PoolSpec, ...] = ()
    #: several pools, a node outside the registry pool: a round of the registry's IAM feed this often
    #: (cluster/iam_feed.py; docs/architecture/pools.md, "IAM across pools")
    iam_sync_s: float = 1.0
    #: a node asks its peers for read leases while one of its reads looked for them within this long
    #: (cluster/read_leases.py; docs/architecture/replication.md, "Local reads under read leases")
    read_lease_idle_s: float = 30.0

    @property
    def pools(self) -> tuple[PoolSpec, ...]:
        """Every pool of the cluster in name order (this node's pool alone without S4_CLUSTER_POOLS)."""
        return self.cluster_pools or (PoolSpec(self.pool_name, self.pool),)

    @property
    def registry_pool(self) -> PoolSpec:
        """The pool whose name register holds the cluster's bucket names: the first by name (docs/architecture/
        pools.md, "The cluster-wide bucket registry"), so every node agrees without coordination."""
        return self.pools[0]

    @property
    def other_pools(self) -> tuple[PoolSpec, ...]:
        return tuple(p for p in self.pools if p.name != self.pool_name)

    def pool_of_node(self, node_id: str) -> PoolSpec | None:
        return next((p for p in self.pools if any(n.node_id == node_id for n in p.nodes)), None)

    @property
    def peers(self) -> tuple[PoolNode, ...]:
        """The other members of this node's pool."""
        return tuple(n for n in self.pool if n.node_id != self.node_id)

    def member(self, node_id: str) -> PoolNode | None:
        return next((n for n in self.pool if n.node_id == node_id), None)


def build_cluster_config(values: Mapping[str, Any], name_of: Callable[[str], str] | None = None) -> ClusterConfig:
    """Validate the cluster settings (settings field -> value) into a ClusterConfig.

    ``name_of`` names a field for messages (the env var or the config.toml key it came from)."""
    name = name_of or (lambda fld: ENV_NAMES.get(fld, fld))

    def fail(fld: str, why: str) -> ClusterConfigError:
        return ClusterConfigError(f"{name(fld)}: {why}")

    if values.get("mode") != "cluster":
        raise fail("mode", f"{values.get('mode')!r}: a cluster configuration needs S4_MODE=cluster")
    pools = parse_cluster_pools(values.get("cluster_pools"), lambda why: fail("cluster_pools", why))
    missing = [fld for fld in REQUIRED if not values.get(fld) and not (fld == "pool_nodes" and pools)]
    if missing:
        raise ClusterConfigError(f"S4_MODE=cluster needs {', '.join(name(f) for f in missing)} (see docs/operations.md,"
                                 " Cluster settings)")
    cluster_name = str(values.get("cluster_name") or "")
    for fld, text in (("cluster_name", cluster_name), ("node_id", values["node_id"]), ("pool_name",
                                                                                       values["pool_name"])):
        if not NAME_RE.match(str(text)):
            raise fail(fld, f"{text!r} must be 1-64 letters, digits, '.', '_' or '-'")
    node_id = str(values["node_id"])
    grpc_addr = parse_address(str(values["node_grpc_addr"]), lambda why: fail("node_grpc_addr", why))
    http_addr = str(values["node_http_addr"])
    parse_address(http_addr, lambda why: fail("node_http_addr", why))
    seeds = tuple(parse_address(s, lambda why: fail("seeds", why))
                  for s in _items(values.get("seeds"), lambda why: fail("seeds", why)))
    pool = _own_pool(values, pools, fail, name)

    me = next((n for n in pool if n.node_id == node_id), None)
    if me is None:
        raise fail("pool_nodes", f"this node ({name('node_id')}={node_id}) is not in its pool "
                                 f"({', '.join(n.node_id for n in pool)})")
    if me.grpc.port != grpc_addr.port or (me.grpc.host != grpc_addr.host and not _wildcard(grpc_addr.host)):
        raise fail("node_grpc_addr", f"{grpc_addr} differs from this node's entry in {name('pool_nodes')} "
                                     f"({node_id}:{me.grpc}): the peers would dial an address nobody serves")

    n, w, r = (_int(values, fld, fail) for fld in ("replication_factor", "write_quorum", "read_quorum"))
    if n < 1:
        raise fail("replication_factor", f"{n} must be at least 1")
    if n > len(pool):
        raise fail("replication_factor", f"{n} copies need at least {n} nodes; {name('pool_nodes')} has {len(pool)}")
    for fld, q in (("write_quorum", w), ("read_quorum", r)):
        if not 1 <= q <= n:
            raise fail(fld, f"{q} must be between 1 and the replication factor ({name('replication_factor')}={n})")
    hint_ttl = float(values.get("hint_ttl_hours", 3.0))
    if not hint_ttl >= 0:  # also refuses NaN
        raise fail("hint_ttl_hours", f"{hint_ttl} must be 0 (no hints) or a positive number of hours")
    offset = float(values.get("max_clock_offset_s", 60.0))
    if not 0 < offset < float("inf"):
        raise fail("max_clock_offset_s", f"{offset} must be a positive number of seconds")
    lease = float(values.get("job_lease_s", 60.0))
    if not 1 <= lease <= 86400:  # also refuses NaN
        raise fail("job_lease_s", f"{lease} must be between 1 and 86400 seconds")
    idle = float(values.get("read_lease_idle_s", 30.0))
    if not 1 <= idle <= 86400:  # also refuses NaN
        raise fail("read_lease_idle_s", f"{idle} must be between 1 and 86400 seconds")
    anti_entropy = _anti_entropy(values, fail)
    iam_sync = float(values.get("iam_sync_s", 1.0))
    if not 0.05 <= iam_sync <= 3600:  # also refuses NaN
        raise fail("iam_sync_s", f"{iam_sync} must be between 0.05 and 3600 seconds")
    grace, rejoin = _tombstone_windows(values, hint_ttl, fail, name)

    warnings = []
    if w + r <= len(pool):
        # Every write goes to every node of the pool (pools replicate among themselves, no placement within one),
        # so W and R are counted over the pool's nodes: they intersect only when W + R exceeds its size, not N.
        warnings.append(f"{name('write_quorum')}={w} + {name('read_quorum')}={r} <= {len(pool)} nodes in the pool:"
                        " a read quorum may miss the latest write, so reads may be stale")
    key, secret = _cluster_key(values, cluster_name, name, fail, warnings)
    return ClusterConfig(cluster_name=cluster_name, node_id=node_id, grpc_addr=grpc_addr, http_addr=http_addr,
                         seeds=seeds, pool_name=str(values["pool_name"]), pool=pool, replication_factor=n,
                         write_quorum=w, read_quorum=r, hint_ttl_hours=hint_ttl, max_clock_offset_s=offset, key=key,
                         key_derived_from_s3_secret=not secret, warnings=tuple(warnings), job_lease_s=lease,
                         anti_entropy=anti_entropy, gc_grace_days=grace, max_rejoin_downtime_days=rejoin,
                         cluster_pools=pools, iam_sync_s=iam_sync, read_lease_idle_s=idle)


def _own_pool(values: Mapping[str, Any], pools: tuple[PoolSpec, ...], fail: Callable[[str, str], Exception],
              name: Callable[[str], str]) -> tuple[PoolNode, ...]:
    """This node's pool: S4_POOL_NODES, or its entry in S4_CLUSTER_POOLS (both set: they must agree)."""
    pool_name = str(values["pool_name"])
    own = None if values.get("pool_nodes") is None else parse_pool_nodes(values["pool_nodes"],
                                                                         lambda why: fail("pool_nodes", why))
    if not pools:
        assert own is not None
        return own
    spec = next((p for p in pools if p.name == pool_name), None)
    if spec is None:
        raise fail("pool_name", f"{pool_name!r} is not a pool of {name('cluster_pools')} "
                                f"({', '.join(p.name for p in pools)})")
    if own is not None and own != spec.nodes:
        raise fail("pool_nodes", f"differs from pool {pool_name}'s entry in {name('cluster_pools')}; set one of "
                                 "them (S4_POOL_NODES is the one-pool short form)")
    return spec.nodes


def _pool_failure(fail: Callable[[str], Exception], pool_name: str) -> Callable[[str], Exception]:
    """``fail`` with the pool named, for the errors of one pool's node list."""
    return lambda why: fail(f"pool {pool_name}: {why}")


def parse_cluster_pools(value: Any, fail: Callable[[str], Exception]) -> tuple[PoolSpec, ...]:
    """``name=id:host:port,...;name=...`` (config.toml: a table of lists, joined to that form by tools/config.py)
    into pools in name order: pool names, node ids and addresses unique across the cluster. () when unset."""
    if not value:
        return ()
    pools: list[PoolSpec] = []
    for entry in str(value).split(POOL_SEPARATOR):
        entry = entry.strip()
        pool_name, sep, nodes = entry.partition("=")
        pool_name = pool_name.strip()
        if not sep or not NAME_RE.match(pool_name):
            raise fail(f"{entry!r} is not name=id:host:port,... (pool names: 1-64 letters, digits, '.', '_' or '-';"
                       " pools separated by ';')")
        pools.append(PoolSpec(pool_name, parse_pool_nodes(nodes, _pool_failure(fail, pool_name))))
    names = [p.name for p in pools]
    dup = next((k for i, k in enumerate(names) if k in names[:i]), None)
    if dup is not None:
        raise fail(f"duplicate pool {dup}")
    for what, keys in (("node id", [(n.node_id, p.name) for p in pools for n in p.nodes]),
                       ("address", [(str(n.grpc), p.name) for p in pools for n in p.nodes])):
        seen: dict[str, str] = {}
        for key, pool_name in keys:
            if key in seen:
                raise fail(f"{what} {key} is in pool {seen[key]} and pool {pool_name}: node ids and addresses are "
                           "unique across the cluster")
            seen[key] = pool_name
    return tuple(sorted(pools, key=lambda p: p.name))


def _anti_entropy(values: Mapping[str, Any], fail: Callable[[str, str], Exception]) -> AntiEntropyConfig:
    interval = float(values.get("anti_entropy_interval_secs", 600))
    if not 0 <= interval <= 30 * 86400:
        raise fail("anti_entropy_interval_secs", f"{interval} must be 0 (off) or up to 30 days in seconds")
    rates = {}
    for fld, default in (("anti_entropy_rate_keys", 1000.0), ("anti_entropy_rate_bytes", 32 * 1024 * 1024)):
        rates[fld] = float(values.get(fld, default))
        if not 0 <= rates[fld] < float("inf"):
            raise fail(fld, f"{rates[fld]} must be 0 (unlimited) or a positive rate")
    return AntiEntropyConfig(interval_s=interval, keys_per_s=rates["anti_entropy_rate_keys"],
                             bytes_per_s=rates["anti_entropy_rate_bytes"],
                             gc_grace_days=float(values.get("gc_grace_days", 7.0)),
                             catch_up=bool(values.get("catch_up", True)))


def _tombstone_windows(values: Mapping[str, Any], hint_ttl_hours: float, fail: Callable[[str, str], Exception],
                       name: Callable[[str], str]) -> tuple[float, float]:
    """S4_GC_GRACE_DAYS and S4_MAX_REJOIN_DOWNTIME_DAYS, checked against the hint TTL: hint TTL < max rejoin downtime
    < GC grace (docs/architecture/tombstones.md, "Why the order"). Fractions are allowed (tests use seconds)."""
    grace = float(values.get("gc_grace_days", 7.0))
    rejoin = float(values.get("max_rejoin_downtime_days", 3.0))
    for fld, value in (("gc_grace_days", grace), ("max_rejoin_downtime_days", rejoin)):
        if not 0 < value < float("inf"):  # also refuses NaN
            raise fail(fld, f"{value} must be a positive number of days")
    if not hint_ttl_hours / 24 < rejoin:
        raise fail("max_rejoin_downtime_days", f"{rejoin} days must be longer than {name('hint_ttl_hours')}="
                                               f"{hint_ttl_hours} hours: hint TTL < max rejoin downtime < GC grace")
    if not rejoin < grace:
        raise fail("gc_grace_days", f"{grace} days must be longer than {name('max_rejoin_downtime_days')}={rejoin} "
                                    "days: hint TTL < max rejoin downtime < GC grace")
    return grace, rejoin


def _cluster_key(values: Mapping[str, Any], cluster_name: str, name: Callable[[str], str],
                 fail: Callable[[str, str], ClusterConfigError], warnings: list[str]) -> tuple[bytes, str]:
    """The inter-node key (and the cluster secret it came from, "" when derived from the S3 secret)."""
    secret = str(values.get("cluster_secret") or "")
    if secret:
        if len(secret) < MIN_SECRET_CHARS:
            raise fail("cluster_secret", f"must be at least {MIN_SECRET_CHARS} characters (a random string, the same"
                                         " on every node)")
        return derive_key(secret, cluster_name, from_s3_secret=False), secret
    s3_secret = values.get("secret_key") or ""
    if not s3_secret:
        raise fail("cluster_secret", f"unset, and {name('secret_key')} is unset too: nodes need a shared secret to"
                                     " authenticate each other (generated credentials differ per node)")
    warnings.append(f"{name('cluster_secret')} is unset: inter-node calls are authenticated with a key derived "
                    f"from {name('secret_key')} and the cluster name; set a separate secret so that knowing "
                    "the S3 secret does not let a machine join the cluster")
    return derive_key(s3_secret, cluster_name, from_s3_secret=True), ""


@dataclass(frozen=True)
class PoolSpec:
    """A pool as a gateway knows it: its name and its nodes (S4_POOL_NAME, S4_POOL_NODES)."""

    name: str
    nodes: tuple[PoolNode, ...]


@dataclass(frozen=True)
class GatewayConfig:
    """S4_MODE=gateway: no data, no gRPC server; it pings the pool's nodes and forwards S3 and admin requests to
    them (docs/architecture/gateway.md)."""

    cluster_name: str
    gateway_id: str  # S4_NODE_ID: names the gateway in its Pings (the nodes' logs); never a pool member's id
    pools: tuple[PoolSpec, ...]
    max_clock_offset_s: float
    key: bytes = field(repr=False)
    key_derived_from_s3_secret: bool = False
    warnings: tuple[str, ...] = ()


GATEWAY_REQUIRED = ("node_id", "pool_name", "pool_nodes")


def build_gateway_config(values: Mapping[str, Any], name_of: Callable[[str], str] | None = None) -> GatewayConfig:
    """Validate a gateway's settings (the subset of a node's it reads; tools/config.py refuses the others)."""
    name = name_of or (lambda fld: ENV_NAMES.get(fld, fld))

    def fail(fld: str, why: str) -> ClusterConfigError:
        return ClusterConfigError(f"{name(fld)}: {why}")

    if values.get("mode") != "gateway":
        raise fail("mode", f"{values.get('mode')!r}: a gateway configuration needs S4_MODE=gateway")
    pools = parse_cluster_pools(values.get("cluster_pools"), lambda why: fail("cluster_pools", why))
    missing = [] if pools else [fld for fld in GATEWAY_REQUIRED if not values.get(fld)]
    if pools and not values.get("node_id"):
        missing = ["node_id"]
    if missing:
        raise ClusterConfigError(f"S4_MODE=gateway needs {', '.join(name(f) for f in missing)} (see "
                                 "docs/operations.md, Gateway)")
    cluster_name = str(values.get("cluster_name") or "")
    for fld, text in (("cluster_name", cluster_name), ("node_id", values["node_id"]),
                      ("pool_name", values.get("pool_name"))):
        if text is not None and not NAME_RE.match(str(text)):
            raise fail(fld, f"{text!r} must be 1-64 letters, digits, '.', '_' or '-'")
    gateway_id = str(values["node_id"])
    if pools and values.get("pool_nodes"):
        raise fail("pool_nodes", f"set {name('cluster_pools')} or {name('pool_name')} and {name('pool_nodes')} "
                                 "(the one-pool short form), not both")
    if not pools:
        pools = (PoolSpec(str(values["pool_name"]),
                          parse_pool_nodes(values["pool_nodes"], lambda why: fail("pool_nodes", why))),)
    if any(n.node_id == gateway_id for p in pools for n in p.nodes):
        raise fail("node_id", f"{gateway_id!r} is a node of the pool ({name('pool_nodes')}): a gateway is no pool "
                              "member; give it an id of its own")
    offset = float(values.get("max_clock_offset_s", 60.0))
    if not 0 < offset < float("inf"):
        raise fail("max_clock_offset_s", f"{offset} must be a positive number of seconds")
    warnings: list[str] = []
    key, secret = _cluster_key(values, cluster_name, name, fail, warnings)
    return GatewayConfig(cluster_name=cluster_name, gateway_id=gateway_id,
                         pools=pools, max_clock_offset_s=offset, key=key,
                         key_derived_from_s3_secret=not secret, warnings=tuple(warnings))


def parse_address(text: str, fail: Callable[[str], Exception]) -> Address:
    """``host:port`` or ``[v6]:port``."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise fail(f"{text!r}: write an IPv6 address in brackets, [addr]:port")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " ,/[]"):
        raise fail(f"{text!r} is not host:port")
    return Address(host, int(port))


def parse_pool_nodes(value: Any, fail: Callable[[str], Exception]) -> tuple[PoolNode, ...]:
    """``id:host:grpcport,...`` (a TOML list of such entries works too); ids and addresses unique."""
    nodes: list[PoolNode] = []
    for entry in _items(value, fail):
        node_id, sep, addr = entry.partition(":")
        if not sep or not NAME_RE.match(node_id):
            raise fail(f"{entry!r} is not id:host:port (ids: 1-64 letters, digits, '.', '_' or '-')")
        nodes.append(PoolNode(node_id, parse_address(addr, _in_entry(entry, fail))))
    if not nodes:
        raise fail("names no node")
    for what, keys in (("node id", [n.node_id for n in nodes]), ("address", [str(n.grpc) for n in nodes])):
        dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if dup is not None:
            raise fail(f"duplicate {what} {dup}")
    return tuple(nodes)


def _in_entry(entry: str, fail: Callable[[str], Exception]) -> Callable[[str], Exception]:
    return lambda why: fail(f"in {entry!r}: {why}")


def _items(value: Any, fail: Callable[[str], Exception]) -> list[str]:
    if not value:
        return []
    raw = value if isinstance(value, list | tuple) else str(value).split(",")
    items = [str(v).strip() for v in raw]
    if any(not v for v in items):
        raise fail(f"{value!r} has an empty entry")
    return items


def _int(values: Mapping[str, Any], fld: str, fail: Callable[[str, str], Exception]) -> int:
    value = values.get(fld)
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(fld, f"{value!r} is not an integer")
    return value


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")
