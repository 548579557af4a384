"""Issue 18 (CPU per write): a single node keeps its views without the pool's last-writer-wins bookkeeping, so a
single node's data directory started in a pool must get it back before it serves (docs/architecture/views.md,
"Flavour"). Real processes: node-1's directory first runs alone (a put, a put deleted), then as node-1 of a 3-node
pool: it logs the rebuild, is marked ``pooled``, holds the tombstone of the deleted version (its tombstone GC
counts it) and serves what it held, and the pool's other nodes catch up from it without the deleted object.
Every wait is a deadline poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess, free_port
from helpers.server_pool import HOSTS, JWT_SECRET, ROOT_PASSWORD, health, make_pool, token, wait_for

BUCKET = "joined"


def _serves(client: Any, key: str, data: bytes) -> bool:
    try:
        return bool(client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchKey"):
            return False
        raise


def _absent(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def test_issue18_a_single_nodes_directory_joins_a_pool_with_its_views_rebuilt(tmp_path: Path,
                                                                             nodes: list[ServerProcess]) -> None:
    data = tmp_path / "node-1"
    alone = ServerProcess(data, host=HOSTS[0], port=free_port(HOSTS[0]),
                          env={"S4_NODE_ID": "node-1", "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET})
    nodes.append(alone.start())
    s3 = make_client(alone.endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="keep", Body=b"kept bytes")
    s3.put_object(Bucket=BUCKET, Key="gone", Body=b"deleted bytes")
    s3.delete_object(Bucket=BUCKET, Key="gone")
    assert alone.stop() == 0
    assert not (data / "pooled").exists()

    pool = make_pool(tmp_path, workers=1)
    assert pool[0].data_dir == data
    for node in pool:
        nodes.append(node.start())
    assert (data / "pooled").exists()
    assert "rebuilding its views from the journal" in pool[0].log()
    tok = token(pool[0])
    assert health(pool[0], tok)["tombstone_gc"]["version_tombstones"] == 1

    clients = [make_client(n.endpoint) for n in pool]
    assert _serves(clients[0], "keep", b"kept bytes") and _absent(clients[0], "gone")
    for i in (1, 2):
        wait_for(f"node-{i + 1} serves node-1's object", lambda i=i: _serves(clients[i], "keep", b"kept bytes"),  # type: ignore[misc]
                 pool)
        assert _absent(clients[i], "gone")
