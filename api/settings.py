"""What the HTTP layer needs to know about the deployment (built by s4.tools.config; no env parsing here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApiSettings:
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    max_upload_bytes: int = 5 * 1024**3
    vhost_domains: tuple[str, ...] = ("localhost",)
    owner_id: str = "s4"
    owner_name: str = "s4"
    iam_enabled: bool = False  # S4_ROOT_PASSWORD set: IAM credentials, roles and the admin API are on
    jwt_secret: str = ""  # HS256 key for admin tokens (generated per process when S4_JWT_SECRET is unset)
    metrics_enabled: bool = True
    select_enabled: bool = True  # S3 Select and the ?sql endpoint (S4_SELECT_ENABLED)
    select_max_memory: int = 256 * 1024**2  # per query (S4_SELECT_MAX_MEMORY)
    select_timeout_s: float = 60.0  # per query (S4_SELECT_TIMEOUT)
    select_process_memory: int = 1024**3  # this process's share of S4_SELECT_NODE_MEMORY (all running queries)
    access_log: bool = False  # one JSON line per request on stderr (S4_ACCESS_LOG; the server's default is on)
    sse_c_allow_http: bool = False  # SSE-C over plain HTTP (S4_SSE_C_ALLOW_HTTP): refused by default, as AWS does
    pool_name: str = ""  # several pools (S4_CLUSTER_POOLS): this node's pool, a bucket's LocationConstraint here
    default_object_ownership: str = "BucketOwnerEnforced"  # CreateBucket without x-amz-object-ownership
    notify_targets: frozenset[str] = frozenset()  # the webhook target ids an ARN may name (engine/notify/targets.py)
