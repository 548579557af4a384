"""Issue 20, pools: several pools in one cluster, real processes (docs/architecture/pools.md).

pool-1 (the bucket registry: first by name) is node-1 and node-2 on 127.0.0.1 and .2 (N=2, W=2, R=1); pool-2 is
node-3 on 127.0.0.3 (N=W=R=1, two HTTP workers, so its register steps and lookups go through the supervisor's
channel). Every node has the same S4_CLUSTER_POOLS. A bucket is pinned at CreateBucket (LocationConstraint names a
pool, an unknown one is InvalidLocationConstraint, none is the least used pool by bytes stored); GetBucketLocation
answers the pool through any node; ListBuckets lists every pool's buckets from the registry; a request through a
node of the other pool is forwarded as a whole and lands on the bucket's pool's disks only, and the same bytes come
back through every node; a gateway in front of both pools routes by pool. Every wait is a deadline poll."""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess, free_port
from helpers.server_pool import JWT_SECRET, ROOT_PASSWORD

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
    # us-east-1's legacy 200 for re-creating one's own bucket holds through any node when no other pool is asked for
    assert s3[2].create_bucket(Bucket="in-one")["ResponseMetadata"]["HTTPStatusCode"] == 200

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

    # IAM: the configured credentials (above) work in every pool, and so do IAM users, wherever they were created
    # (docs/architecture/pools.md, "IAM across pools"): the registry pool decides, the other pools follow it
    iam_across_pools(servers)

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

    # the registry pool without a majority (pool-1 is N=2): existing credentials keep working, IAM changes are 503
    iam_without_the_registry(servers)


def test_robust19_every_worker_routes_a_bucket_one_of_them_located_while_the_registry_has_no_majority(
        tmp_path: Path, nodes: list[ServerProcess]) -> None:
    """The once-failing GET of the test above, made certain: pool-2's node runs two HTTP workers, each with its own
    PoolRouter. One request through it locates in-one (one worker remembers it); pool-1 (N=2) then loses node-2,
    so the registry has no majority. Requests on fresh connections land on either worker: every one of them is
    routed (the supervisor's RegisterNames remembers what the registry last named), none is a 503."""
    servers = make_pools(tmp_path)
    for server in servers:
        nodes.append(server.start())
    make_client(servers[0].endpoint, retries={"max_attempts": 1}).create_bucket(
        Bucket="in-one", CreateBucketConfiguration={"LocationConstraint": "pool-1"})
    make_client(servers[0].endpoint, retries={"max_attempts": 1}).put_object(Bucket="in-one", Key="k", Body=b"one")
    assert make_client(servers[2].endpoint, retries={"max_attempts": 1}).get_object(
        Bucket="in-one", Key="k")["Body"].read() == b"one"
    servers[1].kill()
    statuses = []
    for _ in range(12):  # a new client each time: a new connection, accepted by either worker
        client = make_client(servers[2].endpoint, retries={"max_attempts": 1})
        try:
            statuses.append(client.head_object(Bucket="in-one", Key="k")["ResponseMetadata"]["HTTPStatusCode"])
        except ClientError as exc:
            statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        client.close()
    assert statuses == [200] * 12


def test_issue20_adding_a_pool_moves_nothing(tmp_path: Path, nodes: list[ServerProcess]) -> None:
    """docs/operations.md, "Add a pool": a one-pool cluster (S4_POOL_NODES, records from before pools) gets the
    extended S4_CLUSTER_POOLS by a restart, then the new pool's node starts. Existing buckets stay where they were
    (location, bytes on the old pool's disks only, readable through the new pool); new ones may land on the new pool."""
    hosts = ("127.0.0.1", "127.0.0.3")
    grpc = [f"{h}:{free_port(h)}" for h in hosts]
    ports = [free_port(h) for h in hosts]
    base = {"S4_MODE": "cluster", "S4_CLUSTER_NAME": "grow", "S4_REPLICATION_FACTOR": "1", "S4_WRITE_QUORUM": "1",
            "S4_READ_QUORUM": "1", "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET,
            "S4_WORKERS": "1"}
    one = {**base, "S4_NODE_ID": "node-1", "S4_NODE_GRPC_ADDR": grpc[0], "S4_NODE_HTTP_ADDR": f"{hosts[0]}:{ports[0]}",
           "S4_POOL_NAME": "pool-1", "S4_POOL_NODES": f"node-1:{grpc[0]}"}
    old = ServerProcess(tmp_path / "node-1", host=hosts[0], port=ports[0], env=one)
    nodes.append(old.start())
    s3_old = make_client(old.endpoint, retries={"max_attempts": 1})
    s3_old.create_bucket(Bucket="kept")
    data = payload(300 * 1024, b"before the new pool")
    s3_old.put_object(Bucket="kept", Key="k", Body=data)

    # 1. the existing pool learns the new value (a rolling restart); the new pool is not running yet
    pools = f"pool-1=node-1:{grpc[0]};pool-2=node-9:{grpc[1]}"
    old.stop()
    old.extra_env = {**{k: v for k, v in one.items() if k != "S4_POOL_NODES"}, "S4_CLUSTER_POOLS": pools}
    old.start()
    s3_old = make_client(old.endpoint, retries={"max_attempts": 1})
    assert location(s3_old, "kept") == "pool-1"
    s3_old.create_bucket(Bucket="while-growing")  # pool-2's usage is unknown: left out, not failed
    assert location(s3_old, "while-growing") == "pool-1"

    # 2. the new pool's node starts
    new = ServerProcess(tmp_path / "node-9", host=hosts[1], port=ports[1], env={
        **base, "S4_NODE_ID": "node-9", "S4_NODE_GRPC_ADDR": grpc[1], "S4_NODE_HTTP_ADDR": f"{hosts[1]}:{ports[1]}",
        "S4_POOL_NAME": "pool-2", "S4_CLUSTER_POOLS": pools})
    nodes.append(new.start())
    s3_new = make_client(new.endpoint, retries={"max_attempts": 1})
    for client in (s3_old, s3_new):
        assert location(client, "kept") == "pool-1"
        assert client.get_object(Bucket="kept", Key="k")["Body"].read() == data
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["kept", "while-growing"]
    assert holds(old, data) and not holds(new, data)  # nothing moved
    s3_new.create_bucket(Bucket="fresh")  # the least used pool is now the new one
    assert location(s3_old, "fresh") == "pool-2"
    s3_old.put_object(Bucket="fresh", Key="f", Body=payload(100 * 1024, b"fresh"))
    assert holds(new, payload(100 * 1024, b"fresh")) and not holds(old, payload(100 * 1024, b"fresh"))


def admin(server: ServerProcess, method: str, path: str, token: str, **body: object) -> requests.Response:
    return requests.request(method, f"{server.endpoint}/api/admin/{path}", timeout=30, json=body or None,
                            headers={"Authorization": f"Bearer {token}"})


def login(server: ServerProcess) -> str:
    answer = requests.post(f"{server.endpoint}/api/admin/login", timeout=30,
                           json={"username": "root", "password": ROOT_PASSWORD})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def as_user(server: ServerProcess, keys: dict[str, str]) -> object:
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=keys["access_key"], aws_secret_access_key=keys["secret_key"],
                        config=Config(retries={"max_attempts": 1}))


def error_code(call: object) -> str | None:
    try:
        call()  # type: ignore[operator]
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def refused_everywhere(servers: list[ServerProcess], keys: dict[str, str], within_s: float) -> None:
    """Every node answers InvalidAccessKeyId for ``keys`` on both pools' buckets within ``within_s`` (the stated
    bound: S4_IAM_SYNC_SECS + two IAM feed rounds, cluster/iam_feed.py), and keeps refusing it."""
    deadline = time.monotonic() + within_s
    for server in servers:
        client = as_user(server, keys)
        for bucket in ("in-one", "in-two"):
            head = functools.partial(client.head_object, Bucket=bucket, Key="k")  # type: ignore[attr-defined]
            while (code := error_code(head)) != "403" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert code == "403", (server.host, bucket, code)
            put = functools.partial(client.put_object, Bucket=bucket, Key="no", Body=b"x")  # type: ignore[attr-defined]
            assert error_code(put) == "InvalidAccessKeyId"
        client.close()  # type: ignore[attr-defined]


def iam_across_pools(servers: list[ServerProcess]) -> None:
    """A user and its key created through pool-2's node (forwarded to the registry pool) work on both pools'
    buckets through every node at once; a deleted key, then a deleted user, is refused everywhere within the bound."""
    token = login(servers[2])  # a local login: root's record is in every pool (its IAM feed)
    user = admin(servers[2], "POST", "users", token, username="writer", password="user-password-1", role="Writer")
    assert user.status_code in (200, 201), user.text
    user_id = user.json()["id"]
    keys = admin(servers[2], "POST", f"users/{user_id}/credentials", token).json()
    forwarded = '"operation":"Forward:pool-1","method":"POST"'
    deadline = time.monotonic() + 10  # the access log line is written after the answer
    while servers[2].log().count(forwarded) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers[2].log().count(forwarded) == 2  # decided in the registry pool
    taken = admin(servers[0], "POST", "users", login(servers[0]), username="writer", password="user-password-1",
                  role="Writer")
    assert taken.status_code == 409, taken.text  # usernames are unique across the cluster (the registry)
    assert admin(servers[2], "GET", f"users/{user_id}", token).json()["access_key"] == keys["access_key"]
    feed = admin(servers[2], "GET", "cluster/health", token).json()["iam_feed"]  # pool-2 follows pool-1's IAM
    assert feed["registry"] == ["node-1", "node-2"] and feed["rounds"] >= 1
    for server in servers:  # right after the 200s, through every node of both pools, no wait
        client = as_user(server, keys)
        for bucket in ("in-one", "in-two"):
            client.put_object(Bucket=bucket, Key=f"by-user-{server.host}", Body=b"user")  # type: ignore[attr-defined]
            assert client.get_object(  # type: ignore[attr-defined]
                Bucket=bucket, Key=f"by-user-{server.host}")["Body"].read() == b"user"
        client.close()  # type: ignore[attr-defined]

    # a key deleted through pool-2's node: refused on every pool; a new key works everywhere at once
    assert admin(servers[2], "DELETE", f"users/{user_id}/credentials", token).status_code in (200, 204)
    refused_everywhere(servers, keys, within_s=20)
    fresh = admin(servers[2], "POST", f"users/{user_id}/credentials", token).json()
    for server in servers:
        assert as_user(server, fresh).get_object(  # type: ignore[attr-defined]
            Bucket="in-one", Key="k")["Body"].read()[:1000] == payload(300 * 1024, b"pool-1 object")[:1000]
    # the user deleted through a node of the registry pool: its key is refused everywhere too
    assert admin(servers[0], "DELETE", f"users/{user_id}", login(servers[0])).status_code in (200, 204)
    refused_everywhere(servers, fresh, within_s=20)


def iam_without_the_registry(servers: list[ServerProcess]) -> None:
    """pool-1 (N=2) loses node-2: existing credentials keep working through pool-2's node and node-1 (reads),
    an IAM change through either is 503 and nothing changes, and an access key pool-2 does not know is a 503
    there (it cannot ask the registry whether the key exists), never a 200."""
    token = login(servers[2])
    user = admin(servers[2], "POST", "users", token, username="kept", password="user-password-2", role="Writer")
    assert user.status_code in (200, 201), user.text
    keys = admin(servers[2], "POST", f"users/{user.json()['id']}/credentials", token).json()
    assert as_user(servers[2], keys).get_object(Bucket="in-two", Key="k")  # type: ignore[attr-defined]
    servers[1].kill()  # pool-1 (N=2) without a majority
    for server in (servers[2], servers[0]):
        client = as_user(server, keys)
        assert client.get_object(Bucket="in-two", Key="k")["Body"].read() == payload(  # type: ignore[attr-defined]
            200 * 1024, b"pool-2 object")
        assert client.get_object(Bucket="in-one", Key="k")["Body"].read()[:1000] == payload(  # type: ignore[attr-defined]
            300 * 1024, b"pool-1 object")[:1000]
        changed = admin(server, "POST", "users", login(server), username="never", password="user-password-3",
                        role="Reader")
        assert changed.status_code == 503, changed.text
    assert as_user(servers[2], keys).put_object(Bucket="in-two", Key="still", Body=b"w")  # type: ignore[attr-defined]
    unknown = {"access_key": "S4AK" + "Z" * 16, "secret_key": "x" * 40}
    assert error_code(lambda: as_user(servers[2], unknown).get_object(  # type: ignore[attr-defined]
        Bucket="in-two", Key="k")) == "ServiceUnavailable"
