"""Issue 19: a running cluster node serves the blobs, reads, cas and events areas and runs catch-up (the wiring,
cluster/wiring.py). Three real s4-server processes on 127.0.0.1/.2/.3: a bucket and objects (small and a
multi-chunk one) written through node-1's S3 API read back byte-exact through node-2 and node-3, which pull node-1's
journal and fetch the blobs; node-3 killed with kill -9 while node-1 takes more writes catches up after its
restart (health ``caught_up``, the objects readable there); its data directory opened alone (S4_MODE=single)
passes ``s4-journal verify`` and serves every object. Every wait is a deadline poll."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import health, make_pool, token, wait_for

BUCKET = "replicated"
BIG = 5 * 1024 * 1024 + 12345  # more than one chunk


def body(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size] if size < 4096 else os.urandom(size)


def holds(client: Any, objects: dict[str, bytes]) -> bool:
    """Every object readable through ``client`` with exactly its bytes (False while any is missing)."""
    for key, data in objects.items():
        try:
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchKey"):
                return False
            raise
        assert got == data, f"{key}: {len(got)} bytes read, not the {len(data)} written"
    return True


def put_all(client: Any, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data)


@pytest.mark.parametrize("workers", [1, 2])  # the node in the single process, and in the supervisor
def test_issue19_writes_on_one_node_reach_the_others_by_catch_up_and_a_killed_node_catches_up(
        tmp_path: Path, nodes: list[ServerProcess], workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers)
    for node in pool:
        nodes.append(node.start())
    clients = [make_client(n.endpoint) for n in pool]
    first = {f"small/{i}.txt": body(f"small/{i}", 1000 + 997 * i) for i in range(4)}
    first["big.bin"] = body("big", BIG)
    clients[0].create_bucket(Bucket=BUCKET)
    put_all(clients[0], first)
    for i in (1, 2):
        wait_for(f"node-{i + 1} serves node-1's objects", lambda i=i: holds(clients[i], first), pool)  # type: ignore[misc]
    listed = clients[2].list_objects_v2(Bucket=BUCKET)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == {k: len(v) for k, v in first.items()}

    pool[2].kill_group()  # kill -9
    later = {f"later/{i}": body(f"later/{i}", 2000 + i) for i in range(3)}
    later["later/big.bin"] = body("later-big", BIG)
    put_all(clients[0], later)
    clients[0].delete_object(Bucket=BUCKET, Key="small/0.txt")
    del first["small/0.txt"]
    everything = {**first, **later}

    pool[2].start()
    clients[2] = make_client(pool[2].endpoint)
    tok = token(pool[2])
    wait_for("node-3 caught up", lambda: health(pool[2], tok)["caught_up"] is True, pool)
    wait_for("node-3 serves what node-1 took while it was down", lambda: holds(clients[2], everything), pool)
    with pytest.raises(ClientError) as gone:
        clients[2].head_object(Bucket=BUCKET, Key="small/0.txt")
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert holds(clients[1], everything)

    # Disaster recovery: node-3's data directory alone is a complete S4 data directory.
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    verify = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "verify", "--data-dir",
                             str(pool[2].data_dir)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    alone = ServerProcess(pool[2].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1"})  # its id from the dir
    nodes.append(alone.start())
    assert holds(make_client(alone.endpoint), everything)
