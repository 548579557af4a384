"""A bucket policy in a pool (issue 21): it is bucket configuration (a ``bucket.config_set`` event of kind
``policy``), so it replicates, and every node enforces it: set through one node, read and applied on the others.
Access control reads the policy from the views on every request, so no node keeps serving a policy it no longer
holds, and the node that took a change enforces it on the very next request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import running_pool, wait_for

BUCKET = "pooled-policy"


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with running_pool(tmp_path) as nodes:
        yield nodes


def test_bucket_policy_replicates_and_applies_on_every_node(pool: list[ServerProcess]) -> None:
    first, second, third = (make_client(n.endpoint) for n in pool)
    first.create_bucket(Bucket=BUCKET)
    first.put_object(Bucket=BUCKET, Key="open/k", Body=b"shared")
    doc = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/open/*"}]})
    for node in pool:  # every node has answered for the bucket without a policy before it gets one
        assert requests.get(f"{node.endpoint}/{BUCKET}/open/k", timeout=30).status_code == 403
    first.put_bucket_policy(Bucket=BUCKET, Policy=doc)
    # the node that took the write enforces it on the very next request; the others once they applied the event
    assert requests.get(f"{pool[0].endpoint}/{BUCKET}/open/k", timeout=30).status_code == 200
    assert second.get_bucket_policy(Bucket=BUCKET)["Policy"] == doc  # a config read settles from R replicas
    for node in pool:
        url = f"{node.endpoint}/{BUCKET}/open/k"
        wait_for(f"anonymous GET allowed on {node.host}",
                 lambda url=url: requests.get(url, timeout=30).status_code == 200, pool)
        assert requests.get(url, timeout=30).content == b"shared"
    moved = doc.replace(f"{BUCKET}/open/*", f"{BUCKET}/elsewhere/*")
    second.put_bucket_policy(Bucket=BUCKET, Policy=moved)  # a policy replaced: no node keeps serving the old one
    assert requests.get(f"{pool[1].endpoint}/{BUCKET}/open/k", timeout=30).status_code == 403
    for node in pool:
        url = f"{node.endpoint}/{BUCKET}/open/k"
        wait_for(f"the replaced policy applied on {node.host}",
                 lambda url=url: requests.get(url, timeout=30).status_code == 403, pool)
    third.put_bucket_policy(Bucket=BUCKET, Policy=doc)
    assert requests.get(f"{pool[2].endpoint}/{BUCKET}/open/k", timeout=30).status_code == 200
    for node in pool:
        url = f"{node.endpoint}/{BUCKET}/open/k"
        wait_for(f"anonymous GET allowed again on {node.host}",
                 lambda url=url: requests.get(url, timeout=30).status_code == 200, pool)
    third.delete_bucket_policy(Bucket=BUCKET)
    assert requests.get(f"{pool[2].endpoint}/{BUCKET}/open/k", timeout=30).status_code == 403
    for node in pool:
        url = f"{node.endpoint}/{BUCKET}/open/k"
        wait_for(f"anonymous GET refused again on {node.host}",
                 lambda url=url: requests.get(url, timeout=30).status_code == 403, pool)
