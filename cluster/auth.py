"""Inter-node authentication: who may call a node's gRPC service.

Every call carries four metadata headers: the caller's cluster name, its node id, a timestamp (ms since the epoch)
and an HMAC-SHA256 over all three plus the gRPC method, keyed with the cluster key. The server refuses (gRPC
``UNAUTHENTICATED``) a call without them, from another cluster, with a MAC made with another key, with a timestamp
more than S4_MAX_CLOCK_OFFSET away from its own clock, or from a node outside its pool -- except for the methods
named guest methods (``Ping``): a gateway (S4_MODE=gateway) holds the cluster key but is no pool member, and pings
the nodes it forwards to (docs/architecture/gateway.md); a guest's Ping is answered and changes nothing. Nodes of
the cluster's other pools (S4_CLUSTER_POOLS) may also call ``CasPrepare``/``CasAccept`` on the registry pool's nodes:
they propose bucket names to the cluster-wide registry (docs/architecture/pools.md).

Why this is enough here, and what it does not do (docs/architecture/replication.md, "Wire and authentication"):
it proves the caller holds the cluster key and binds the proof to one method and a time window, so a node of
another cluster or with another secret cannot call in, and a captured header set cannot be reused for another
method or after the window. Within the window a replay of a whole call is possible; every RPC is idempotent by
design (events are applied last-writer-wins, blobs are content-addressed, CASPaxos acceptors ignore old ballots),
so a replay changes nothing. The bodies are neither signed nor encrypted: against an attacker on the network
path, run the inter-node traffic over a private network or a VPN until TLS on the gRPC port exists.

The key is derived with HKDF-SHA256 (the ``cryptography`` package) from S4_CLUSTER_SECRET, or, when that is unset,
from the S3 secret key; the cluster name is in HKDF's ``info``, so one secret gives every cluster its own key.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

H_CLUSTER = "x-s4-cluster"
H_NODE = "x-s4-node"
H_TIME = "x-s4-time"
H_MAC = "x-s4-mac"
KEY_BYTES = 32
_MAC_LABEL = b"s4-cluster-auth-v1"


def derive_key(secret: str, cluster_name: str, *, from_s3_secret: bool) -> bytes:
    """The cluster key: HKDF-SHA256 of the secret, salted by its origin, with the cluster name as context."""
    salt = b"s4-cluster-key-from-s3-secret-v1" if from_s3_secret else b"s4-cluster-key-v1"
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"s4 cluster " + cluster_name.encode())
    return hkdf.derive(secret.encode())


def iam_key(cluster_key: bytes) -> bytes:
    """The Fernet key a pool's nodes encrypt S3 secrets with (engine/keyring.py), derived from the cluster key
    with its own HKDF context, so it never equals the key that authenticates calls."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"s4 iam keyring")
    return base64.urlsafe_b64encode(hkdf.derive(cluster_key))


def sse_key(cluster_key: bytes) -> bytes:
    """The SSE master key a pool's nodes wrap SSE-S3 data keys with (engine/crypto/keys.py), derived from the
    cluster key with its own HKDF context."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"s4 sse master key")
    return hkdf.derive(cluster_key)


def compute_mac(key: bytes, cluster: str, node_id: str, method: str, time_ms: int) -> str:
    """Hex HMAC-SHA256 over the length-prefixed fields (no field can be shifted into its neighbour)."""
    mac = hmac.new(key, _MAC_LABEL, sha256)
    for part in (cluster.encode(), node_id.encode(), method.encode(), str(time_ms).encode()):
        mac.update(len(part).to_bytes(4, "big") + part)
    return mac.hexdigest()


@dataclass(frozen=True)
class Signer:
    """The caller's side: the headers for one call."""

    cluster: str
    node_id: str
    key: bytes = field(repr=False)
    clock: Callable[[], float] = time.time

    def headers(self, method: str) -> list[tuple[str, str]]:
        now_ms = int(self.clock() * 1000)
        return [(H_CLUSTER, self.cluster), (H_NODE, self.node_id), (H_TIME, str(now_ms)),
                (H_MAC, compute_mac(self.key, self.cluster, self.node_id, method, now_ms))]


class AuthError(Exception):
    """A refused call; the message says why, for the log and for the caller."""


@dataclass(frozen=True)
class Verifier:
    """The server's side: checks one call's headers and returns the authenticated caller's node id."""

    cluster: str
    key: bytes = field(repr=False)
    members: Collection[str]  # node ids allowed to call (this node's pool)
    max_clock_offset_s: float
    clock: Callable[[], float] = time.time
    guest_methods: Collection[str] = ()  # methods a key holder outside the pool may call (a gateway's Ping)
    cluster_nodes: Collection[str] = ()  # nodes of the cluster's other pools (S4_CLUSTER_POOLS) ...
    cluster_methods: Collection[str] = ()  # ... and what they may call here (the registry's CasPrepare/CasAccept)

    def verify(self, metadata: Mapping[str, Any], method: str) -> str:
        values = {h: metadata.get(h) for h in (H_CLUSTER, H_NODE, H_TIME, H_MAC)}
        missing = [h for h, v in values.items() if not v or not isinstance(v, str)]
        if missing:
            raise AuthError(f"no S4 cluster credentials (missing {', '.join(missing)}): not an S4 node of this "
                            "cluster")
        cluster, node, stamp, mac = (str(values[h]) for h in (H_CLUSTER, H_NODE, H_TIME, H_MAC))
        if cluster != self.cluster:
            raise AuthError(f"caller {node!r} belongs to cluster {cluster!r}, this node to {self.cluster!r} "
                            "(S4_CLUSTER_NAME differs)")
        if not stamp.isdigit():
            raise AuthError(f"caller {node!r} sent a malformed timestamp")
        expected = compute_mac(self.key, cluster, node, method, int(stamp))
        if not hmac.compare_digest(expected, mac):
            raise AuthError(f"caller {node!r} is not authenticated: its MAC does not match this node's key "
                            "(S4_CLUSTER_SECRET, or the S3 secret it is derived from, differs)")
        offset = int(stamp) / 1000 - self.clock()
        if abs(offset) > self.max_clock_offset_s:
            raise AuthError(f"caller {node!r}'s clock is {offset:+.1f}s from this node's, beyond "
                            f"S4_MAX_CLOCK_OFFSET={self.max_clock_offset_s:g}s (fix NTP on one of them)")
        if node not in self.members and method not in self.guest_methods \
                and not (node in self.cluster_nodes and method in self.cluster_methods):
            raise AuthError(f"caller {node!r} holds the cluster key but is not in this node's pool (S4_POOL_NODES)")
        return node
