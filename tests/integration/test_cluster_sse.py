"""Issue 22 in a pool: SSE-S3 objects written through one node read through the others (the nodes derive one master
key from the cluster secret, while each keeps its own sse.key), and a KMS key created through one node encrypts and
decrypts through the others (its kms.* events replicate, its material wrapped under the shared master key)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import running_pool, token, wait_for


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with running_pool(tmp_path) as nodes:
        yield nodes


def _reads(client: Any, key: str, body: bytes) -> bool:
    try:
        return bool(client.get_object(Bucket="sse", Key=key)["Body"].read() == body)
    except ClientError:
        return False


def test_encrypted_objects_and_kms_keys_work_through_every_node(pool: list[ServerProcess]) -> None:
    n = [make_client(node.endpoint) for node in pool]
    n[0].create_bucket(Bucket="sse")
    keys = {(node.data_dir / "sse.key").read_text() for node in pool}
    assert len(keys) == 3  # every node has its own key file; the pool's objects use the shared one
    body = os.urandom(200_000)
    n[0].put_object(Bucket="sse", Key="s3", Body=body, ServerSideEncryption="AES256")
    for client in n[1:]:
        assert client.get_object(Bucket="sse", Key="s3")["Body"].read() == body
    created = requests.post(f"{pool[1].endpoint}/api/admin/kms/keys", json={"key_id": "pool-key"}, timeout=30,
                            headers={"Authorization": f"Bearer {token(pool[1])}"})
    assert created.status_code == 201, created.text

    def put_on_node_3() -> bool:
        try:
            n[2].put_object(Bucket="sse", Key="kms", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId="pool-key")
            return True
        except ClientError:
            return False

    wait_for("the KMS key on node 3", put_on_node_3, pool)
    wait_for("the SSE-KMS object through node 1", lambda: _reads(n[0], "kms", body), pool)
    assert n[1].head_object(Bucket="sse", Key="kms")["SSEKMSKeyId"] == "pool-key"
