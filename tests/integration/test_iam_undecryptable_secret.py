"""Issue 19, a credential whose stored secret this node cannot decrypt (engine/keyring.py KeyringError: a pool node
with another S4_CLUSTER_SECRET, a data directory moved without its iam.key) is a key the server cannot use: S3
requests signed with it get 403 InvalidAccessKeyId with a message naming the cause, never a 500, and the node logs
one line saying what to fix. The admin API (JWT, no stored secret decrypted) keeps working."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.fernet import Fernet
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.server import ServerProcess, track_client


@pytest.mark.parametrize("workers", ["1", "2"])  # decrypted in the one process, and in an HTTP worker
def test_issue19_undecryptable_credential_secret_is_403_invalid_access_key_not_500(
        tmp_path: Path, nodes: list[ServerProcess], workers: str) -> None:
    env = {"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "test-jwt-secret-0123456789abcdef",
           "S4_WORKERS": workers}
    node = ServerProcess(tmp_path / "data", env=env)
    nodes.append(node.start())
    token = root_token(node)
    user = admin_call(node, "POST", "/api/admin/users", token,
                      {"username": "alice", "password": "alice-password", "role": "Writer"})
    keys = admin_call(node, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    client = track_client(node.endpoint, boto3.client(
        "s3", endpoint_url=node.endpoint, aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"], region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"})))
    client.list_buckets()  # usable while the node has the key it was encrypted with
    node.stop()

    (node.data_dir / "iam.key").write_bytes(Fernet.generate_key())  # another key: the stored secret is unreadable
    node.start()
    for _ in range(2):
        with pytest.raises(ClientError) as refused:
            client.list_buckets()
        response = refused.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 403, response
        assert response["Error"]["Code"] == "InvalidAccessKeyId"
        assert "cannot be decrypted" in response["Error"]["Message"]
    log = node.log()
    assert f"S3 access key {keys['access_key']} cannot be used" in log and "S4_CLUSTER_SECRET" in log, log[-3000:]
    assert "InternalError" not in log and "Traceback" not in log, log[-3000:]
    # the admin API still answers (it never decrypts a stored secret)
    token = root_token(node)
    resp = requests.get(f"{node.endpoint}/api/admin/users/{user['id']}", headers={"Authorization": f"Bearer {token}"},
                        timeout=30)
    assert resp.status_code == 200 and resp.json()["access_key"] == keys["access_key"], resp.text
