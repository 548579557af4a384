"""Issue 20, pools: several pools in one cluster, real processes (docs/architecture/pools.md).

pool-1 (the bucket registry: first by name) is node-1 and node-2 on 127.0.0.1 and .2 (N=2, W=2, R=1); pool-2 is
node-3 on 127.0.0.3 (N=W=R=1, two HTTP workers, so its register steps and lookups go through the supervisor's
channel). Every node has the same S4_CLUSTER_POOLS. A bucket is pinned at CreateBucket (LocationConstraint names a
pool, an unknown one is InvalidLocationConstraint, none is the least used pool by bytes stored); GetBucketLocation
answers the pool through any node; ListBuckets lists every pool's buckets from the registry; a request through a
node of the other pool is forwarded as a whole and lands on the bucket's pool's disks only, and the same bytes come
back through every node; a gateway in front of both pools routes by pool. Every wait is a deadline poll."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess, free_port
from test_cluster_node import JWT_SECRET, ROOT_PASSWORD

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
POOL_OF = ("pool-1", "pool-1", "pool-2")
QUORUMS = {"pool-1": ("2", "2", "1"), "pool-2": ("1", "1", "1")}


def pools_env(grpc: list[str], index: int, **extra: str) -> dict[str, str]:
    pools = ";".join(f"{pool}={','.join(f'node-{i + 1}:{grpc[i]}' for i in range(3) if POOL_OF[i] == pool)}"
                     for pool in ("pool-2", "pool-1"))  # any order: the registry is the first by name
    n, w, r = QUORUMS[POOL_OF[index]]
    return {"S4_MODE": "cluster", "S4_CLUSTER_NAME": "pools", "S4_NODE_ID": f"node-{index + 1}",
            "S4_NODE_GRPC_ADDR": grpc[index], "S4_POOL_NAME": POOL_OF[index], "S4_CLUSTER_POOLS": pools,
            "S4_REPLICATION_FACTOR": n, "S4_WRITE_QUORUM": w, "S4_READ_QUORUM": r,
            "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET, **extra}


def make_pools(tmp: Path) -> list[ServerProcess]:
    grpc = [f"{h}:{free_port(h)}" for h in HOSTS]
    servers = []
    for i, host in enumerate(HOSTS):
        port = free_port(host)
        servers.append(ServerProcess(tmp / f"node-{i + 1}", host=host, port=port, env=pools_env(
            grpc, i, S4_NODE_HTTP_ADDR=f"{host}:{port}", S4_WORKERS="2" if i == 2 else "1")))
    return servers


def payload(size: int, seed: bytes) -> bytes:
    out, block = bytearray(), seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def holds(node: ServerProcess, data: bytes) -> bool:
    """Whether any file of the node's data directory holds ``data`` (a slice of it: volumes store it whole)."""
    needle = data[1000:1064]
    return any(needle in path.read_bytes() for path in node.data_dir.rglob("*") if path.is_file())


def location(s3: object, bucket: str) -> str | None:
    return s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]  # type: ignore[attr-defined, no-any-return]


def test_issue20_buckets_pinned_to_pools_and_served_through_any_node(tmp_path: Path,
                                                                      nodes: list[ServerProcess]) -> None:
    servers = make_pools(tmp_path)
    for server in servers:
        nodes.append(server.start())
    s3 = [make_client(n.endpoint, retries={"max_attempts": 1}) for n in servers]

    # LocationConstraint names the pool: created through a node of the other pool, pinned where it names
    s3[2].create_bucket(Bucket="in-one", CreateBucketConfiguration={"LocationConstraint": "pool-1"})
    s3[0].create_bucket(Bucket="in-two", CreateBucketConfiguration={"LocationConstraint": "pool-2"})
    for client in s3:
        assert location(client, "in-one") == "pool-1" and location(client, "in-two") == "pool-2"
    with pytest.raises(ClientError) as unknown:
        s3[2].create_bucket(Bucket="nowhere", CreateBucketConfiguration={"LocationConstraint": "pool-9"})
    assert unknown.value.response["Error"]["Code"] == "InvalidLocationConstraint"
    assert unknown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    for client in s3:
        with pytest.raises(ClientError) as missing:
            client.head_bucket(Bucket="nowhere")
        assert missing.value.response["Error"]["Code"] in ("404", "NoSuchBucket")
    with pytest.raises(ClientError) as taken:  # one name, one bucket, whatever pool holds it
        s3[2].create_bucket(Bucket="in-one", CreateBucketConfiguration={"LocationConstraint": "pool-2"})
    assert taken.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"

    # a write through pool-2's node lands on pool-1's disks only; every node reads the same bytes
    data = payload(300 * 1024, b"pool-1 object")
    s3[2].put_object(Bucket="in-one", Key="k", Body=data)
    assert holds(servers[0], data) and holds(servers[1], data) and not holds(servers[2], data)
    data2 = payload(200 * 1024, b"pool-2 object")
    s3[1].put_object(Bucket="in-two", Key="k", Body=data2)
    assert holds(servers[2], data2) and not holds(servers[0], data2) and not holds(servers[1], data2)
    for client in s3:
        assert client.get_object(Bucket="in-one", Key="k")["Body"].read() == data
        assert client.get_object(Bucket="in-two", Key="k")["Body"].read() == data2
        listed = client.list_objects_v2(Bucket="in-one")
        assert [o["Key"] for o in listed["Contents"]] == ["k"]

    # no LocationConstraint: the least used pool by bytes stored (pool-1 holds more now)
    more = payload(600 * 1024, b"more in pool-1")
    s3[0].put_object(Bucket="in-one", Key="big", Body=more)
    s3[0].create_bucket(Bucket="anywhere")
    assert location(s3[0], "anywhere") == "pool-2" and location(s3[2], "anywhere") == "pool-2"
    s3[0].put_object(Bucket="anywhere", Key="x", Body=b"small")

    # ListBuckets through any node: every pool's buckets, from the registry, in name order, with creation dates
    for client in s3:
        listed = client.list_buckets()["Buckets"]
        assert [b["Name"] for b in listed] == ["anywhere", "in-one", "in-two"]
        assert all(b["CreationDate"].year >= 2024 for b in listed)
    paged = s3[2].list_buckets(MaxBuckets=2)
    assert [b["Name"] for b in paged["Buckets"]] == ["anywhere", "in-one"]
    rest = s3[2].list_buckets(MaxBuckets=2, ContinuationToken=paged["ContinuationToken"])
    assert [b["Name"] for b in rest["Buckets"]] == ["in-two"] and "ContinuationToken" not in rest
    assert s3[2].get_object(Bucket="anywhere", Key="x")["Body"].read() == b"small"

    # a gateway in front of both pools routes a bucket's requests to its pool once a node's answer named it
    gateway = ServerProcess(tmp_path / "gateway", host="127.0.0.4", env={
        "S4_MODE": "gateway", "S4_CLUSTER_NAME": "pools", "S4_NODE_ID": "gw-1",
        "S4_CLUSTER_POOLS": servers[0].extra_env["S4_CLUSTER_POOLS"]})
    nodes.append(gateway.start())
    gw = make_client(gateway.endpoint, retries={"max_attempts": 1})
    assert gw.get_object(Bucket="in-one", Key="k")["Body"].read() == data  # learns: in-one is pool-1's
    forwarded_before = servers[2].log().count('"operation":"Forward:pool-1"')
    for _ in range(6):
        assert gw.get_object(Bucket="in-one", Key="k")["Body"].read() == data
    assert servers[2].log().count('"operation":"Forward:pool-1"') == forwarded_before  # straight to pool-1
    gw.put_object(Bucket="in-two", Key="gw", Body=b"through the gateway")
    assert s3[0].get_object(Bucket="in-two", Key="gw")["Body"].read() == b"through the gateway"
    assert not [p for p in gateway.data_dir.rglob("*") if p.is_file()]  # the gateway stores nothing

    # delete through the other pool: the bucket's pool deletes it and the name is free for the cluster again
    s3[2].delete_object(Bucket="anywhere", Key="x")
    s3[1].delete_bucket(Bucket="anywhere")
    s3[2].create_bucket(Bucket="anywhere", CreateBucketConfiguration={"LocationConstraint": "pool-1"})
    assert location(s3[2], "anywhere") == "pool-1"
