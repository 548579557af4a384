"""Issue 20, gateway mode: a gateway (S4_MODE=gateway, 127.0.0.4) in front of a real 3-node pool serves S3 and the
admin API by forwarding every request to a live node, holds no volume file (nothing at all in its data directory),
keeps serving with one node killed (W=2), and answers 503 ServiceUnavailable with Retry-After when no node is
reachable. Real processes; every wait is a deadline poll."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import ROOT_PASSWORD, make_pool, states, token, wait_for

GATEWAY_HOST = "127.0.0.4"
MiB = 1024 * 1024


def gateway_for(tmp: Path, pool: list[ServerProcess], **extra: str) -> ServerProcess:
    """A gateway for ``pool``: the pool's cluster name, pool name and S4_POOL_NODES; the cluster key derived from
    the same S3 secret as the nodes' (the helper's S4_SECRET_ACCESS_KEY)."""
    env = pool[0].extra_env
    return ServerProcess(tmp / "gateway", host=GATEWAY_HOST, env={
        "S4_MODE": "gateway", "S4_CLUSTER_NAME": env["S4_CLUSTER_NAME"], "S4_NODE_ID": "gw-1",
        "S4_POOL_NAME": env["S4_POOL_NAME"], "S4_POOL_NODES": env["S4_POOL_NODES"], **extra})


def admin_get(endpoint: str, path: str, tok: str) -> requests.Response:
    return requests.get(f"{endpoint}{path}", headers={"Authorization": f"Bearer {tok}"}, timeout=60)


def payload(size: int, seed: bytes) -> bytes:
    """Deterministic bytes that differ everywhere (no dedup shortcut on the way)."""
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 128
    return bytes(out[:size])


def test_gateway_serves_reads_and_writes_and_holds_no_volume_file(tmp_path: Path, nodes: list[ServerProcess]) -> None:
    pool = make_pool(tmp_path, workers=1)
    for node in pool:
        nodes.append(node.start())
    gateway = gateway_for(tmp_path, pool)
    nodes.append(gateway.start())

    # admin through the gateway: login is forwarded to a node; the cluster health is the gateway's own document
    tok = token(gateway)
    all_alive = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}

    def gateway_health() -> dict[str, Any]:
        resp = admin_get(gateway.endpoint, "/api/admin/cluster/health", tok)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    wait_for("the gateway to see the 3 nodes alive", lambda: states(gateway_health()) == all_alive, nodes)
    doc = gateway_health()
    assert doc["mode"] == "gateway" and doc["node_id"] == "gw-1" and doc["cluster"] == "itest"
    assert doc["pools"] == [{"name": "pool-1", "nodes": ["node-1", "node-2", "node-3"]}]
    assert {n["http_addr"] for n in doc["nodes"]} == {f"{n.host}:{n.port}" for n in pool}
    assert doc["via"]["mode"] == "cluster"  # the node that checked the token
    assert admin_get(gateway.endpoint, "/api/admin/cluster/health", "not-a-token").status_code == 401
    users = admin_get(gateway.endpoint, "/api/admin/users", tok)
    assert users.status_code == 200 and any(u["username"] == "root" for u in users.json()["users"]), users.text

    s3 = make_client(gateway.endpoint, retries={"max_attempts": 1})
    s3.create_bucket(Bucket="gw-bucket")
    small = b"hello through the gateway"
    s3.put_object(Bucket="gw-bucket", Key="small.txt", Body=small)
    big = payload(64 * MiB + 123, b"single")
    s3.put_object(Bucket="gw-bucket", Key="dir/big.bin", Body=big)
    parts = payload(40 * MiB + 7, b"multipart")
    s3.upload_fileobj(io.BytesIO(parts), "gw-bucket", "multi.bin",
                      Config=TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                                            max_concurrency=4))
    assert s3.get_object(Bucket="gw-bucket", Key="small.txt")["Body"].read() == small
    got = s3.get_object(Bucket="gw-bucket", Key="dir/big.bin")
    assert got["ContentLength"] == len(big) and got["Body"].read() == big
    ranged = s3.get_object(Bucket="gw-bucket", Key="dir/big.bin", Range="bytes=1000-1999")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206 and ranged["Body"].read() == big[1000:2000]
    assert s3.get_object(Bucket="gw-bucket", Key="multi.bin")["Body"].read() == parts
    head = s3.head_object(Bucket="gw-bucket", Key="multi.bin")
    assert head["ContentLength"] == len(parts) and head["ETag"].endswith('-6"')
    listed = s3.list_objects_v2(Bucket="gw-bucket")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/big.bin", "multi.bin", "small.txt"]
    assert s3.list_objects_v2(Bucket="gw-bucket", Prefix="dir/", Delimiter="/")["KeyCount"] == 1
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "gw-bucket", "Key": "small.txt"}, ExpiresIn=300)
    assert requests.get(url, timeout=30).content == small
    assert requests.get(url.replace("Signature=", "Signature=0"), timeout=30).status_code == 403
    s3.put_object(Bucket="gw-bucket", Key="doomed", Body=b"x")
    s3.delete_object(Bucket="gw-bucket", Key="doomed")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="gw-bucket", Key="doomed")

    # the same objects read back through a pool node directly
    direct = make_client(pool[1].endpoint)
    assert direct.get_object(Bucket="gw-bucket", Key="small.txt")["Body"].read() == small
    assert hashlib.sha256(direct.get_object(Bucket="gw-bucket", Key="dir/big.bin")["Body"].read()).digest() == \
        hashlib.sha256(big).digest()
    assert direct.get_object(Bucket="gw-bucket", Key="multi.bin")["Body"].read() == parts

    # one node killed: the gateway keeps serving at once (a refused connection fails over; W=2 of 3 remain)
    pool[0].kill()
    for _ in range(3):  # within the 3 s before node-1 is suspect, round robin puts it first for one of these
        assert s3.get_object(Bucket="gw-bucket", Key="small.txt")["Body"].read() == small
    failovers = re.search(r'^s4_gateway_failovers_total\{node="node-1"\} (\S+)$',
                          requests.get(f"{gateway.endpoint}/metrics", timeout=30).text, re.M)
    assert failovers and float(failovers.group(1)) >= 1
    for i in range(6):
        body = f"after the kill {i}".encode()
        s3.put_object(Bucket="gw-bucket", Key=f"after/{i}", Body=body)
        assert s3.get_object(Bucket="gw-bucket", Key=f"after/{i}")["Body"].read() == body
    wait_for("the gateway to see node-1 dead", lambda: states(gateway_health())["node-1"] == "dead", nodes)
    metrics = requests.get(f"{gateway.endpoint}/metrics", timeout=30).text
    assert re.search(r'^s4_gateway_node_up\{node="node-1"\} 0\.0$', metrics, re.M), metrics
    assert re.search(r'^s4_gateway_node_up\{node="node-2"\} 1\.0$', metrics, re.M), metrics
    assert s3.get_object(Bucket="gw-bucket", Key="small.txt")["Body"].read() == small

    # no node reachable: 503 ServiceUnavailable with Retry-After, never a 500
    pool[1].kill()
    pool[2].kill()
    resp = requests.get(f"{gateway.endpoint}/gw-bucket/small.txt", timeout=30)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1", resp.text
    assert "<Code>ServiceUnavailable</Code>" in resp.text
    admin = admin_get(gateway.endpoint, "/api/admin/users", tok)
    assert admin.status_code == 503 and admin.headers["Retry-After"] == "1" and "error" in admin.json()
    assert requests.get(f"{gateway.endpoint}/health", timeout=30).status_code == 200

    # the gateway stored nothing: its data directory was never even made
    assert not list(gateway.data_dir.rglob("*.vol"))
    assert not gateway.data_dir.exists() or not list(gateway.data_dir.rglob("*"))
    assert gateway.stop() == 0
    assert ROOT_PASSWORD not in gateway.log()


def test_gateway_with_impossible_settings_exits_2_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(S4_MODE="gateway", S4_NODE_ID="gw-1", S4_POOL_NAME="pool-1", S4_POOL_NODES="node-1:127.0.0.1:1",
               S4_SECRET_ACCESS_KEY="s3-secret", S4_NODE_GRPC_ADDR="127.0.0.4:7000", S4_BIND=f"{GATEWAY_HOST}:1")
    done = subprocess.run([sys.executable, "-m", "s4.tools.server"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "S4_NODE_GRPC_ADDR: not used by a gateway" in done.stderr, done.stderr
