"""Issue 19, ListParts in a pool is a quorum read: a part acknowledged through another node is listed through a node
that holds the upload but not (yet) the part.

The defect: ListParts settled the upload on R replicas only when this node did not hold the upload at all
(``settle_missing_upload``); a node holding the upload but lagging on a part (a write is on W replicas, not all)
answered without it. ``test_cluster_everyday.py`` lists parts right after uploading them through other nodes and
failed now and then once replication got faster (the replica beyond the quorum had not applied the part yet).

Made deterministic with nftables in a private network namespace (as tests/integration/test_cluster_faults.py):
node-2's calls to node-1's gRPC port are dropped, so a part uploaded through node-2 reaches node-3 (the quorum) and
never node-1 directly, while node-1 still reaches both peers. Needs root and ``nft``; skipped otherwise.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers.netns import NFT, grpc_port
from helpers.server import ServerProcess
from helpers.server_pool import start_alive, wait_for
from test_cluster_faults import PROBLEM, fault_pool, no_retries

pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM)), pytest.mark.usefixtures("own_network")]

BUCKET = "parts"
_TABLES = itertools.count()


@pytest.fixture
def one_way_cut() -> Iterator[list[str]]:
    """nftables tables of this test's own, deleted whatever happens."""
    tables: list[str] = []
    yield tables
    for table in tables:
        subprocess.run([NFT, "delete", "table", "inet", table], capture_output=True, timeout=30)


def drop_calls(tables: list[str], caller: ServerProcess, callee: ServerProcess) -> None:
    """Drop every packet ``caller`` sends to ``callee``'s gRPC port (its calls hang until their deadline)."""
    table = f"s4lp_{next(_TABLES)}"
    rules = f"""
table inet {table} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        ip saddr {caller.host} ip daddr {callee.host} tcp dport {grpc_port(callee)} drop
    }}
}}
"""
    done = subprocess.run([NFT, "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + rules
    tables.append(table)


def has_bucket(client: object) -> bool:
    try:
        client.head_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    except ClientError:
        return False
    return True


def part_numbers(client: object, key: str, upload: str) -> list[int]:
    listed = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload)  # type: ignore[attr-defined]
    return [p["PartNumber"] for p in listed.get("Parts", [])]


def test_issue19_list_parts_through_a_node_lagging_on_a_part_lists_it(
        tmp_path: Path, nodes: list[ServerProcess], one_way_cut: list[str]) -> None:
    pool = fault_pool(tmp_path)
    start_alive(pool, nodes)
    clients = [no_retries(n.endpoint) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    wait_for("every node holds the bucket", lambda: all(has_bucket(c) for c in clients), pool)
    upload = clients[0].create_multipart_upload(Bucket=BUCKET, Key="mp.bin")["UploadId"]
    wait_for("every node lists the upload", lambda: all(
        [u["UploadId"] for u in c.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])] == [upload]
        for c in clients), pool)

    drop_calls(one_way_cut, pool[1], pool[0])  # node-2 can no longer reach node-1; everything else flows
    clients[1].upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=upload, PartNumber=1, Body=b"p" * 1234)
    # node-1 holds the upload but not the part: only a quorum read (with repair) lists it
    assert part_numbers(clients[0], "mp.bin", upload) == [1]
    assert part_numbers(clients[2], "mp.bin", upload) == [1]
