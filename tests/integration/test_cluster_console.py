"""Issue 23 in a pool: every node serves the web console on its own address (S4_CONSOLE_BIND), and what one node's
console does is what S3 sees through the others at once, because the console goes through the same engine calls and
permission checks as S3 (api/console/s3bridge.py), and those commit through the pool's replicated path."""

from __future__ import annotations

import uuid
from pathlib import Path

from helpers.console import sign_in
from helpers.s3client import make_client
from helpers.server import free_port
from helpers.server_pool import HOSTS, running_pool


def test_issue23_every_pool_node_serves_the_console_over_the_pools_state(tmp_path: Path) -> None:
    consoles = {i: f"{HOSTS[i]}:{free_port(HOSTS[i])}" for i in range(3)}
    with running_pool(tmp_path, overrides={i: {"S4_CONSOLE_BIND": addr} for i, addr in consoles.items()}) as nodes:
        bucket = f"pool-console-{uuid.uuid4().hex[:8]}"
        on_node3 = sign_in(f"http://{consoles[2]}")  # root of the pool's shared IAM (S4_ROOT_PASSWORD)
        made = on_node3.post("/buckets", {"name": bucket})
        assert made.status_code == 303, made.text
        s3 = make_client(nodes[0].endpoint)
        s3.head_bucket(Bucket=bucket)  # created through node-3's console, seen through node-1's S3 API
        s3.put_object(Bucket=bucket, Key="written-through-node-1.txt", Body=b"pool")
        on_node2 = sign_in(f"http://{consoles[1]}")
        listing = on_node2.get(f"/buckets/{bucket}")
        assert listing.status_code == 200, listing.text
        assert "written-through-node-1.txt" in listing.text
