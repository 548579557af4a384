"""Settings from the spec's environment variables and ``config.toml``: env wins over file, file over defaults.

Unknown or malformed settings stop start-up with a message naming the setting (``ConfigError``). Names, defaults
and the size format (GB/G, MB/M, KB/K or bytes) follow the product README.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s4.cluster.config import ClusterConfigError, build_cluster_config, build_gateway_config
from s4.engine.datadir import NODE_ID_RE


class ConfigError(ValueError):
    """A setting that is unknown or cannot be parsed; the message names it."""


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(name: str, value: str) -> int:
    m = _SIZE_RE.match(value)
    if m is None:
        raise ConfigError(f"{name}: {value!r} is not a size (use e.g. 5GB, 100MB, 1024KB or a byte count)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean (true, false, 1, 0)")


def parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not an integer") from exc


def parse_object_ownership(name: str, value: str) -> str:
    if value not in ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"):
        raise ConfigError(f"{name}: {value!r} is not BucketOwnerEnforced, BucketOwnerPreferred or ObjectWriter")
    return value


def parse_float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a number") from exc


def _text(name: str, value: str) -> str:
    return value


def parse_console_bind(name: str, value: Any) -> str:
    """The web console's host:port, or ``off`` (api/console, docs/operations.md "Web console")."""
    text = str(value).strip()
    if text.lower() == "off":
        return "off"
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: {text!r} is not host:port or off")
    return text


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def parse_log_level(name: str, value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def parse_proxies(name: str, value: Any) -> tuple[str, ...]:
    """Addresses or CIDR networks (comma-separated, or a TOML list) whose forwarding headers are believed; ``*``
    trusts every peer (only for a port that nothing but the proxy can reach)."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR network") from exc
        out.append(item)
    return tuple(out)


def _toml_text(name: str, value: Any) -> str:
    """A string from config.toml; the message never echoes the value (it may be a password or key)."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string")
    return value


def _toml_pools(name: str, value: Any) -> str:
    """``[cluster.cluster_pools]``: a table of pool name -> list of id:host:port, as S4_CLUSTER_POOLS's string."""
    if isinstance(value, dict):
        return ";".join(f"{pool}={_toml_list(f'{name}.{pool}', nodes)}" for pool, nodes in value.items())
    return _toml_text(name, value)


def _toml_list(name: str, value: Any) -> str:
    """A list of strings, or one comma-separated string, from config.toml; kept comma-separated like the env var."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return _toml_text(name, value)


# env var -> (settings field, parser, default)
ENV: dict[str, tuple[str, Callable[[str, str], Any], Any]] = {
    "S4_BIND": ("bind", _text, "127.0.0.1:9000"),
    "S4_ROOT_USERNAME": ("root_username", _text, "root"),
    "S4_ROOT_PASSWORD": ("root_password", _text, None),
    "S4_JWT_SECRET": ("jwt_secret", _text, None),
    "S4_ACCESS_KEY_ID": ("access_key", _text, None),
    "S4_SECRET_ACCESS_KEY": ("secret_key", _text, None),
    "S4_DATA_DIR": ("data_dir", _text, None),
    "S4_MAX_UPLOAD_SIZE": ("max_upload_bytes", parse_size, 5 * 1024**3),
    "S4_TLS_CERT": ("tls_cert", _text, None),
    "S4_TLS_KEY": ("tls_key", _text, None),
    "S4_VOLUME_SIZE": ("volume_size_bytes", parse_size, 1024**3),
    "S4_DISK_RESERVE": ("disk_reserve_bytes", parse_size, None),  # None: 1% of the filesystem, <= 256 MiB
    "S4_WORKERS": ("workers", parse_int, None),
    "S4_REGION": ("region", _text, "us-east-1"),
    "S4_DOMAIN": ("domains", _text, "localhost"),
    "S4_LIFECYCLE_ENABLED": ("lifecycle_enabled", parse_bool, True),
    "S4_LIFECYCLE_INTERVAL_HOURS": ("lifecycle_interval_hours", parse_float, 24.0),
    "S4_LIFECYCLE_DRY_RUN": ("lifecycle_dry_run", parse_bool, False),
    "S4_COMPACTION_ENABLED": ("compaction_enabled", parse_bool, True),
    "S4_COMPACTION_INTERVAL_HOURS": ("compaction_interval_hours", parse_float, 1.0),
    "S4_COMPACTION_THRESHOLD": ("compaction_threshold", parse_float, 0.3),
    "S4_COMPACTION_DRY_RUN": ("compaction_dry_run", parse_bool, False),
    "S4_COMPACTION_FULL_TIME": ("compaction_full_time", _text, "02:00"),
    "S4_MULTIPART_UPLOAD_TTL_HOURS": ("multipart_ttl_hours", parse_float, 24.0),
    "S4_COMPACTION_MULTIPART_TTL_SECS": ("multipart_ttl_secs_override", parse_int, None),
    "S4_METRICS_ENABLED": ("metrics_enabled", parse_bool, True),
    "S4_SELECT_ENABLED": ("select_enabled", parse_bool, True),
    "S4_SELECT_MAX_MEMORY": ("select_max_memory", parse_size, 256 * 1024**2),
    "S4_SELECT_TIMEOUT": ("select_timeout_s", parse_int, 60),
    "S4_SELECT_NODE_MEMORY": ("select_node_memory", parse_size, 1024**3),
    "S4_MODE": ("mode", _text, "single"),
    "S4_CLUSTER_NAME": ("cluster_name", _text, "default"),
    "S4_NODE_ID": ("node_id", _text, None),
    "S4_NODE_GRPC_ADDR": ("node_grpc_addr", _text, None),
    "S4_NODE_HTTP_ADDR": ("node_http_addr", _text, None),
    "S4_SEEDS": ("seeds", _text, None),
    "S4_POOL_NAME": ("pool_name", _text, None),
    "S4_POOL_NODES": ("pool_nodes", _text, None),
    "S4_CLUSTER_POOLS": ("cluster_pools", _text, None),  # None: the node's pool alone (docs/architecture/pools.md)
    "S4_REPLICATION_FACTOR": ("replication_factor", parse_int, 3),
    "S4_WRITE_QUORUM": ("write_quorum", parse_int, 2),
    "S4_READ_QUORUM": ("read_quorum", parse_int, 2),
    "S4_GC_GRACE_DAYS": ("gc_grace_days", parse_float, 7.0),
    "S4_MAX_REJOIN_DOWNTIME_DAYS": ("max_rejoin_downtime_days", parse_float, 3.0),
    "S4_IAM_SYNC_SECS": ("iam_sync_s", parse_float, 1.0),  # several pools: the registry's IAM feed (iam_feed.py)
    "S4_ANTI_ENTROPY_INTERVAL_SECS": ("anti_entropy_interval_secs", parse_int, 600),
    "S4_SCRUBBER_FULL_SCAN_DAYS": ("scrubber_full_scan_days", parse_float, 30.0),
    "S4_HINT_TTL_HOURS": ("hint_ttl_hours", parse_float, 3.0),
    "S4_CLUSTER_SECRET": ("cluster_secret", _text, None),  # None: derived from S4_SECRET_ACCESS_KEY (cluster/auth.py)
    "S4_MAX_CLOCK_OFFSET": ("max_clock_offset_s", parse_float, 60.0),
    "S4_JOB_LEASE_SECS": ("job_lease_s", parse_float, 60.0),  # lifecycle/multipart expiry lease (cluster/job_lease.py)
    # a pool node asks for read leases while its reads looked for them within this long (cluster/read_leases.py)
    "S4_READ_LEASE_IDLE_SECS": ("read_lease_idle_s", parse_float, 30.0),
    # Merkle anti-entropy's rate (cluster/anti_entropy.py, docs/operations.md "Anti-entropy")
    "S4_ANTI_ENTROPY_RATE_KEYS": ("anti_entropy_rate_keys", parse_float, 1000.0),
    "S4_ANTI_ENTROPY_RATE_BYTES": ("anti_entropy_rate_bytes", parse_size, 32 * 1024**2),
    "S4_CATCH_UP": ("catch_up", parse_bool, True),  # diagnostics only: off proves anti-entropy alone
    "S4_LICENSE_KEY": ("license_key", _text, None),
    # connection limits and timeouts, per HTTP worker process (api/http_protocol.py, docs/operations.md)
    "S4_MAX_HEADER_SIZE": ("max_header_bytes", parse_size, 16 * 1024),
    "S4_HEADER_TIMEOUT_SECS": ("header_timeout_s", parse_float, 30.0),
    "S4_BODY_TIMEOUT_SECS": ("body_timeout_s", parse_float, 30.0),
    "S4_MAX_CONNECTIONS": ("max_connections", parse_int, 1024),
    "S4_TRUSTED_PROXIES": ("trusted_proxies", parse_proxies, ()),
    "S4_ACCESS_LOG": ("access_log", parse_bool, True),
    "S4_MALLOC_TUNING": ("malloc_tuning", parse_bool, True),  # tools/malloc_tuning.py
    "S4_LOG_LEVEL": ("log_level", parse_log_level, "info"),  # the default of s4-server's --log-level
    # a new bucket's object ownership when CreateBucket names none (api/s3/acl.py, docs/operations.md "ACLs")
    "S4_DEFAULT_OBJECT_OWNERSHIP": ("default_object_ownership", parse_object_ownership, "BucketOwnerEnforced"),
    # SSE-C over plain HTTP: refused as AWS does unless allowed (test rigs; docs/operations.md "Encryption")
    "S4_SSE_C_ALLOW_HTTP": ("sse_c_allow_http", parse_bool, False),
    # the web console's own port, or off (api/console, docs/operations.md "Web console")
    "S4_CONSOLE_BIND": ("console_bind", parse_console_bind, "127.0.0.1:3000"),
    # bucket notifications (engine/notify, docs/operations.md "Bucket notifications"); the targets themselves are
    # S4_NOTIFY_WEBHOOK_ENDPOINT_<ID> / S4_NOTIFY_WEBHOOK_AUTH_TOKEN_<ID> (NOTIFY_PREFIXES) or [notify.webhook.<ID>]
    "S4_NOTIFY_MAX_ATTEMPTS": ("notify_max_attempts", parse_int, 10),
    "S4_NOTIFY_BACKOFF_MAX_SECS": ("notify_backoff_max_s", parse_float, 60.0),
    "S4_NOTIFY_TIMEOUT_SECS": ("notify_timeout_s", parse_float, 10.0),
}
#: env var prefix -> field of a webhook target, the rest of the name being the target's id
NOTIFY_PREFIXES = {"S4_NOTIFY_WEBHOOK_ENDPOINT_": "endpoint", "S4_NOTIFY_WEBHOOK_AUTH_TOKEN_": "auth_token"}
_TARGET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Settings of the spec that S4 cannot honour yet. Each is accepted at its default only (or empty, where it has none);
# any other value stops start-up saying so, instead of being silently ignored (issue 18). field -> what is missing.
NOT_SUPPORTED: dict[str, str] = {
    "license_key": "Enterprise Edition features are not supported yet (S4 has no licensed features)",
    "strict_sync": "strict_sync = false is not supported yet: S4 always fsyncs before it acknowledges a write",
}
# Settings only a cluster node reads (cluster/config.py validates them): with S4_MODE=single each must stay at its
# default, so a node meant to join a pool never starts alone by mistake with its cluster settings ignored.
CLUSTER_ONLY: tuple[str, ...] = (
    "cluster_name", "node_grpc_addr", "node_http_addr", "seeds", "pool_name", "pool_nodes", "replication_factor",
    "write_quorum", "read_quorum", "hint_ttl_hours", "cluster_secret", "max_clock_offset_s", "job_lease_s")
CLUSTER_ONLY += ("anti_entropy_interval_secs", "anti_entropy_rate_keys", "anti_entropy_rate_bytes", "catch_up",
                 "gc_grace_days", "max_rejoin_downtime_days", "cluster_pools")
CLUSTER_ONLY += ("iam_sync_s", "read_lease_idle_s")
# Settings a gateway (S4_MODE=gateway) does not read: it stores nothing, runs no background job, serves no gRPC and
# verifies no credential (the nodes do). Each must stay at its default, so a node's configuration reused for a
# gateway by mistake stops start-up instead of running without what it asked for (docs/operations.md, Gateway).
GATEWAY_UNUSED: tuple[str, ...] = (
                  "node_grpc_addr", "node_http_addr", "seeds", "replication_factor", "write_quorum", "read_quorum",
                  "hint_ttl_hours", "job_lease_s", "root_password", "jwt_secret", "volume_size_bytes",
                  "disk_reserve_bytes", "max_upload_bytes", "lifecycle_enabled", "lifecycle_interval_hours",
                  "lifecycle_dry_run", "compaction_enabled", "compaction_interval_hours", "compaction_threshold",
                  "compaction_dry_run", "compaction_full_time", "multipart_ttl_hours", "multipart_ttl_secs_override",
                  "select_enabled", "select_max_memory", "select_timeout_s", "select_node_memory",
                  "scrubber_full_scan_days", "anti_entropy_interval_secs",
                  "anti_entropy_rate_keys", "anti_entropy_rate_bytes", "catch_up", "gc_grace_days",
                  "max_rejoin_downtime_days", "iam_sync_s")
GATEWAY_UNUSED += ("default_object_ownership",)  # the nodes create the buckets
GATEWAY_UNUSED += ("read_lease_idle_s",)  # a gateway reads nothing itself: the nodes hold the read leases
GATEWAY_UNUSED += ("console_bind",)  # the console serves a node's engine; a gateway has none
#: Values of GATEWAY_UNUSED settings that say what a gateway does anyway (S4_CONSOLE_BIND=off: no console), so an
#: environment shared with the nodes, or one that turns the console off everywhere, starts a gateway too.
GATEWAY_ALSO_ACCEPTED: dict[str, Any] = {"console_bind": "off"}
# config.toml (section, key) -> settings field, parser
TOML: dict[tuple[str, str], tuple[str, Callable[[str, Any], Any]]] = {
    ("server", "bind"): ("bind", lambda n, v: str(v)),
    ("server", "workers"): ("workers", lambda n, v: parse_int(n, str(v))),
    ("server", "region"): ("region", lambda n, v: str(v)),
    ("storage", "data_path"): ("data_path", lambda n, v: str(v)),
    ("storage", "metadata_path"): ("metadata_path", lambda n, v: str(v)),
    ("storage", "data_dir"): ("data_dir", lambda n, v: str(v)),
    ("tuning", "volume_size_mb"): ("volume_size_bytes", lambda n, v: parse_int(n, str(v)) * 1024**2),
    ("tuning", "disk_reserve"): ("disk_reserve_bytes", lambda n, v: parse_size(n, str(v))),
    ("tuning", "strict_sync"): ("strict_sync", lambda n, v: parse_bool(n, str(v))),
    ("tuning", "max_upload_size"): ("max_upload_bytes", lambda n, v: parse_size(n, str(v))),
    ("server", "max_header_size"): ("max_header_bytes", lambda n, v: parse_size(n, str(v))),
    ("server", "header_timeout_secs"): ("header_timeout_s", lambda n, v: parse_float(n, str(v))),
    ("server", "body_timeout_secs"): ("body_timeout_s", lambda n, v: parse_float(n, str(v))),
    ("server", "max_connections"): ("max_connections", lambda n, v: parse_int(n, str(v))),
    ("server", "trusted_proxies"): ("trusted_proxies", parse_proxies),
    ("server", "access_log"): ("access_log", lambda n, v: parse_bool(n, str(v))),
    ("server", "default_object_ownership"): ("default_object_ownership",
                                             lambda n, v: parse_object_ownership(n, str(v))),
    ("server", "sse_c_allow_http"): ("sse_c_allow_http", lambda n, v: parse_bool(n, str(v))),
    ("server", "malloc_tuning"): ("malloc_tuning", lambda n, v: parse_bool(n, str(v))),
    ("server", "console_bind"): ("console_bind", parse_console_bind),
    # IAM (S4 names; the spec's file example has no such section): S4_ROOT_USERNAME, S4_ROOT_PASSWORD and
    # S4_JWT_SECRET override them. A file holding secrets should be readable by the server's user only.
    ("iam", "root_username"): ("root_username", _toml_text),
    ("iam", "root_password"): ("root_password", _toml_text),
    ("iam", "jwt_secret"): ("jwt_secret", _toml_text),
    # [cluster]: the S4_* cluster settings, lower-case without the prefix (docs/operations.md, Cluster settings)
    ("cluster", "mode"): ("mode", _toml_text),
    **{("cluster", fld): (fld, _toml_text) for fld in ("cluster_name", "node_id", "node_grpc_addr",
                                                       "node_http_addr", "pool_name", "cluster_secret")},
    ("cluster", "seeds"): ("seeds", _toml_list),
    ("cluster", "pool_nodes"): ("pool_nodes", _toml_list),
    ("cluster", "cluster_pools"): ("cluster_pools", _toml_pools),
    **{("cluster", fld): (fld, lambda n, v: parse_int(n, str(v)))
       for fld in ("replication_factor", "write_quorum", "read_quorum")},
    ("cluster", "hint_ttl_hours"): ("hint_ttl_hours", lambda n, v: parse_float(n, str(v))),
    ("cluster", "max_clock_offset"): ("max_clock_offset_s", lambda n, v: parse_float(n, str(v))),
    ("cluster", "job_lease_secs"): ("job_lease_s", lambda n, v: parse_float(n, str(v))),
    ("cluster", "anti_entropy_interval_secs"): ("anti_entropy_interval_secs", lambda n, v: parse_int(n, str(v))),
    ("cluster", "anti_entropy_rate_keys"): ("anti_entropy_rate_keys", lambda n, v: parse_float(n, str(v))),
    ("cluster", "anti_entropy_rate_bytes"): ("anti_entropy_rate_bytes", lambda n, v: parse_size(n, str(v))),
    ("cluster", "catch_up"): ("catch_up", lambda n, v: parse_bool(n, str(v))),
    ("cluster", "gc_grace_days"): ("gc_grace_days", lambda n, v: parse_float(n, str(v))),
    ("cluster", "max_rejoin_downtime_days"): ("max_rejoin_downtime_days", lambda n, v: parse_float(n, str(v))),
    ("cluster", "iam_sync_secs"): ("iam_sync_s", lambda n, v: parse_float(n, str(v))),
    ("cluster", "read_lease_idle_secs"): ("read_lease_idle_s", lambda n, v: parse_float(n, str(v))),
    ("notify", "webhook"): ("notify_webhooks", lambda n, v: _toml_webhooks(n, v)),
    ("notify", "max_attempts"): ("notify_max_attempts", lambda n, v: parse_int(n, str(v))),
    ("notify", "backoff_max_secs"): ("notify_backoff_max_s", lambda n, v: parse_float(n, str(v))),
    ("notify", "timeout_secs"): ("notify_timeout_s", lambda n, v: parse_float(n, str(v))),
}


def _toml_webhooks(name: str, value: Any) -> dict[str, dict[str, str]]:
    """``[notify.webhook.<ID>]`` tables, each with ``endpoint`` and optional ``auth_token``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be tables [notify.webhook.<ID>]")
    out: dict[str, dict[str, str]] = {}
    for target, table in value.items():
        if not isinstance(table, dict) or set(table) - {"endpoint", "auth_token"}:
            raise ConfigError(f"{name}.{target}: only endpoint and auth_token may be set")
        out[target] = {k: _toml_text(f"{name}.{target}.{k}", v) for k, v in table.items()}
    return out


def _notify_targets(settings: Settings, env: Mapping[str, str]) -> None:
    """``settings.notify_targets``: id -> {endpoint, auth_token}, from config.toml then the env (which wins)."""
    targets = {k: dict(v) for k, v in (settings.values.get("notify_webhooks") or {}).items()}
    for name, value in env.items():
        for prefix, fld in NOTIFY_PREFIXES.items():
            if name.startswith(prefix):
                targets.setdefault(name[len(prefix):], {})[fld] = value
    for target, doc in targets.items():
        if not _TARGET_ID_RE.match(target):
            raise ConfigError(f"notify target {target!r}: an id is 1-64 letters, digits, '_' or '-'")
        endpoint = doc.get("endpoint", "")
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"S4_NOTIFY_WEBHOOK_ENDPOINT_{target}: {endpoint!r} is not an http(s) URL")
    if settings.values["notify_max_attempts"] < 1:
        raise ConfigError("S4_NOTIFY_MAX_ATTEMPTS: must be at least 1")
    if targets and settings.values["mode"] == "gateway":
        raise ConfigError(f"S4_NOTIFY_WEBHOOK_ENDPOINT_{next(iter(targets))}: a gateway delivers no notifications "
                          "(the nodes do, from their journals); unset it")
    settings.values["notify_targets"] = targets


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> "env:NAME" | "file:section.key" | "default"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = str(self.values["bind"]).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"S4_BIND: {self.values['bind']!r} is not host:port")
        return host.strip("[]"), int(port)

    @property
    def console_host_port(self) -> tuple[str, int] | None:
        """The web console's address; None when S4_CONSOLE_BIND is off."""
        bind = str(self.values.get("console_bind", "off"))
        if bind == "off":
            return None
        host, _, port = bind.rpartition(":")
        return host.strip("[]"), int(port)


def load_settings(env: Mapping[str, str] | None = None, config_path: str | None = None) -> Settings:
    """Defaults, then config.toml, then env; validates everything it reads."""
    env = os.environ if env is None else env
    settings = Settings()
    for fld, _, default in ENV.values():
        settings.values[fld] = default
        settings.sources[fld] = "default"
    settings.values.update(data_path=None, metadata_path=None, strict_sync=True)
    if config_path:
        try:
            doc = tomllib.loads(Path(config_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {config_path}: {exc}") from exc
        for section, table in doc.items():
            if not isinstance(table, dict):
                raise ConfigError(f"config.toml: {section!r} must be a [section]")
            for key, value in table.items():
                entry = TOML.get((section, key))
                if entry is None:
                    raise ConfigError(f"config.toml: unknown setting {section}.{key}")
                fld, parser = entry
                settings.values[fld] = parser(f"config.toml {section}.{key}", value)
                settings.sources[fld] = f"file:{section}.{key}"
    for name, value in env.items():
        if name.startswith(tuple(NOTIFY_PREFIXES)):
            continue  # a webhook target (_notify_targets)
        if name.startswith("S4_") and name not in ENV and name not in ("S4_CRASHPOINT", "S4_TIMELINE"):
            # (test and measuring aids read by the code they drive: engine/timeline.py)
            raise ConfigError(f"unknown setting {name} (see the README for the supported S4_* variables)")
        if name in ENV:
            fld, parser, _ = ENV[name]
            settings.values[fld] = parser(name, value)
            settings.sources[fld] = f"env:{name}"
    if settings.values["mode"] not in ("single", "cluster", "gateway"):
        raise ConfigError(f"{_setting_name(settings, 'mode')}: {settings.values['mode']!r} must be single, cluster "
                          "or gateway")
    _refuse_unsupported(settings)
    _notify_targets(settings, env)
    _check_cluster(settings)
    if not 0.0 < settings.values["compaction_threshold"] < 1.0:
        raise ConfigError("S4_COMPACTION_THRESHOLD: must be between 0 and 1")
    for fld, env_name in (("header_timeout_s", "S4_HEADER_TIMEOUT_SECS"), ("body_timeout_s", "S4_BODY_TIMEOUT_SECS")):
        if not settings.values[fld] > 0:
            raise ConfigError(f"{env_name}: must be a positive number of seconds")
    if settings.values["max_connections"] < 1:
        raise ConfigError("S4_MAX_CONNECTIONS: must be at least 1")
    if settings.values["max_header_bytes"] < 1024:
        raise ConfigError("S4_MAX_HEADER_SIZE: must be at least 1KB")
    if bool(settings.values["tls_cert"]) != bool(settings.values["tls_key"]):
        raise ConfigError("S4_TLS_CERT and S4_TLS_KEY must be set together")
    settings.host_port  # noqa: B018 - validates S4_BIND
    _check_console_port(settings)
    return settings


def _check_console_port(settings: Settings) -> None:
    """The console's port is not S3's: one of the two would fail to bind (and which one depends on the mode)."""
    console = settings.console_host_port
    if console is None or settings.values["mode"] == "gateway":  # a gateway serves no console
        return
    (host, port), (console_host, console_port) = settings.host_port, console
    wildcard = ("0.0.0.0", "::", "")
    if port == console_port and port != 0 and (host == console_host or host in wildcard or console_host in wildcard):
        raise ConfigError(f"{_setting_name(settings, 'console_bind')}: {settings.values['console_bind']!r} is the S3 "
                          f"port ({_setting_name(settings, 'bind')}); give the console a port of its own, or off")


def _setting_name(settings: Settings, fld: str) -> str:
    source = settings.sources.get(fld, "")
    if source.startswith("env:"):
        return source[4:]
    return f"config.toml {source[5:]}" if source.startswith("file:") else fld


def _refuse_unsupported(settings: Settings) -> None:
    """Stop start-up on a setting S4 would otherwise accept and ignore (see NOT_SUPPORTED)."""
    defaults = {fld: default for fld, _, default in ENV.values()} | {"strict_sync": True}
    for fld, why in NOT_SUPPORTED.items():
        value, default = settings.values.get(fld), defaults[fld]
        if value != default and not (default is None and value == ""):
            raise ConfigError(f"{_setting_name(settings, fld)}: {why}; unset it (default: {default!r})")
    node_id = settings.values.get("node_id")
    if node_id and not NODE_ID_RE.match(node_id):
        raise ConfigError(f"S4_NODE_ID: {node_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    metadata_path = settings.values.get("metadata_path")
    if metadata_path:
        views = resolve_data_dir(settings) / "views"
        if Path(metadata_path) != views:
            raise ConfigError(f"config.toml storage.metadata_path: a metadata directory of its own is not supported "
                              f"yet: S4 keeps its metadata (LMDB views) in <data dir>/views, here {views}; remove "
                              "the key or set it to that path")


def _check_cluster(settings: Settings) -> None:
    """S4_MODE: single must not carry cluster settings, cluster builds ``settings.cluster``, gateway
    ``settings.gateway`` (and must not carry a node's settings)."""
    mode = settings.values["mode"]
    settings.values["cluster"] = None
    settings.values["gateway"] = None
    defaults = {fld: default for fld, _, default in ENV.values()}
    if mode == "gateway":
        for fld in GATEWAY_UNUSED:
            value, default = settings.values.get(fld), defaults.get(fld)
            if value != default and not (default is None and value == "") and \
                    (fld not in GATEWAY_ALSO_ACCEPTED or value != GATEWAY_ALSO_ACCEPTED[fld]):
                raise ConfigError(f"{_setting_name(settings, fld)}: not used by a gateway (S4_MODE=gateway stores "
                                  "nothing and forwards every request to the pool's nodes); unset it")
        if settings.values["workers"] not in (None, 1):
            raise ConfigError(f"{_setting_name(settings, 'workers')}: a gateway runs one process (it forwards and "
                              "shares nothing between processes); unset it or set 1")
    if mode == "single":
        for fld in CLUSTER_ONLY:
            value, default = settings.values[fld], defaults[fld]
            if value != default and not (default is None and value == ""):
                raise ConfigError(f"{_setting_name(settings, fld)}: only used with S4_MODE=cluster; unset it "
                                  f"(default: {'unset' if default is None else repr(default)})")
        return
    env_names = {fld: env for env, (fld, _, _) in ENV.items()}

    def name_of(fld: str) -> str:
        return env_names.get(fld, fld) if settings.sources.get(fld, "default") == "default" else \
            _setting_name(settings, fld)

    try:
        if mode == "gateway":
            settings.values["gateway"] = build_gateway_config(settings.values, name_of)
        else:
            settings.values["cluster"] = build_cluster_config(settings.values, name_of)
    except ClusterConfigError as exc:
        raise ConfigError(str(exc)) from None


def resolve_data_dir(settings: Settings) -> Path:
    if settings.values.get("data_dir"):
        return Path(settings.values["data_dir"])
    if settings.values.get("data_path"):
        return Path(settings.values["data_path"]).parent
    return Path(tempfile.gettempdir()) / "s4-data"


DEV_CREDENTIALS = "dev-credentials.json"


def dev_credentials(data_dir: Path) -> tuple[str, str]:
    """Generated keys for a server started without S4_ACCESS_KEY_ID: kept in the data dir across restarts."""
    path = data_dir / DEV_CREDENTIALS
    if path.exists():
        doc = json.loads(path.read_text())
        return doc["access_key"], doc["secret_key"]
    access, secret = "S4DEV" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"access_key": access, "secret_key": secret}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return access, secret
