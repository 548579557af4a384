"""Issue 19: the everyday S3 operations on a three-node pool (real s4-server processes on 127.0.0.1/.2/.3, N=3, W=2,
R=2), each read through a different node than the one that wrote it, with no wait in between: buckets and their
configuration, objects, listings with paging and delimiters, versions and delete markers, tags, copies, a multipart
upload whose parts go through different nodes and which a third completes, and IAM credentials created on one node
used on another. Every read must see the write at once: the write is on W replicas and the read asks R of them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import running_pool, token, wait_for

BUCKET = "everyday"


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with running_pool(tmp_path) as nodes:
        yield nodes


def data(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def listed_keys(client: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
    """Every key and common prefix of a ListObjectsV2 walked two at a time (continuation tokens)."""
    keys: list[str] = []
    prefixes: list[str] = []
    token_: str | None = None
    for _ in range(100):  # bounded
        page = client.list_objects_v2(Bucket=BUCKET, MaxKeys=2, **kwargs,
                                      **({"ContinuationToken": token_} if token_ else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            return keys, prefixes
        token_ = page["NextContinuationToken"]
    raise AssertionError("listing did not end")


def test_issue19_everyday_operations_read_through_another_node_than_their_write(pool: list[ServerProcess]) -> None:
    n = [make_client(node.endpoint) for node in pool]

    n[0].create_bucket(Bucket=BUCKET)
    n[1].head_bucket(Bucket=BUCKET)
    assert BUCKET in [b["Name"] for b in n[2].list_buckets()["Buckets"]] or \
        n[2].head_bucket(Bucket=BUCKET) is not None

    n[1].put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    assert n[2].get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    n[2].put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "storage"}]})
    assert n[0].get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "team", "Value": "storage"}]

    written = {f"{d}/{i}.txt": data(f"{d}/{i}", 100 + 31 * i) for d in ("a", "b", "c") for i in range(3)}
    written["top.txt"] = data("top", 77)
    for i, (key, body) in enumerate(sorted(written.items())):
        n[i % 3].put_object(Bucket=BUCKET, Key=key, Body=body)
        assert n[(i + 1) % 3].get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        assert n[(i + 2) % 3].head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(body)
    for client in n:
        assert listed_keys(client) == (sorted(written), [])
        assert listed_keys(client, Delimiter="/") == (["top.txt"], ["a/", "b/", "c/"])
        assert listed_keys(client, Prefix="b/") == (sorted(k for k in written if k.startswith("b/")), [])

    # versions and delete markers
    first = n[0].put_object(Bucket=BUCKET, Key="v.txt", Body=b"one")["VersionId"]
    second = n[1].put_object(Bucket=BUCKET, Key="v.txt", Body=b"two")["VersionId"]
    assert n[2].get_object(Bucket=BUCKET, Key="v.txt")["Body"].read() == b"two"
    marker = n[2].delete_object(Bucket=BUCKET, Key="v.txt")
    assert marker["DeleteMarker"] is True
    with pytest.raises(n[0].exceptions.NoSuchKey):
        n[0].get_object(Bucket=BUCKET, Key="v.txt")
    assert n[1].get_object(Bucket=BUCKET, Key="v.txt", VersionId=first)["Body"].read() == b"one"
    listed = n[0].list_object_versions(Bucket=BUCKET, Prefix="v.txt")
    assert [v["VersionId"] for v in listed["Versions"]] == [second, first]
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == [marker["VersionId"]]

    # tags and copies
    n[0].put_object_tagging(Bucket=BUCKET, Key="top.txt", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert n[1].get_object_tagging(Bucket=BUCKET, Key="top.txt")["TagSet"] == [{"Key": "k", "Value": "v"}]
    n[1].copy_object(Bucket=BUCKET, Key="copy.txt", CopySource={"Bucket": BUCKET, "Key": "a/2.txt"})
    assert n[2].get_object(Bucket=BUCKET, Key="copy.txt")["Body"].read() == written["a/2.txt"]

    # a conditional write decided on a quorum: the key exists (written through another node), so it is refused
    with pytest.raises(n[2].exceptions.ClientError) as refused:
        n[2].put_object(Bucket=BUCKET, Key="copy.txt", Body=b"x", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    # conditional deletes (issue 25) decided on a quorum as conditional writes are: node-1 checks the ETag of the
    # version node-3 wrote a moment ago, not the older one it holds itself
    old_etag = n[1].put_object(Bucket=BUCKET, Key="cond.txt", Body=b"v1")["ETag"]
    new_etag = n[2].put_object(Bucket=BUCKET, Key="cond.txt", Body=b"v2")["ETag"]
    with pytest.raises(n[0].exceptions.ClientError) as refused:
        n[0].delete_object(Bucket=BUCKET, Key="cond.txt", IfMatch=old_etag)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    result = n[0].delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "cond.txt", "ETag": old_etag}]})
    assert [e["Code"] for e in result["Errors"]] == ["PreconditionFailed"]
    assert n[1].get_object(Bucket=BUCKET, Key="cond.txt")["Body"].read() == b"v2"
    assert n[0].delete_object(Bucket=BUCKET, Key="cond.txt", IfMatch=new_etag)["DeleteMarker"] is True
    with pytest.raises(n[1].exceptions.NoSuchKey):
        n[1].get_object(Bucket=BUCKET, Key="cond.txt")

    # multipart: created through node-1, parts through node-2 and node-3, listed through node-1, completed on node-3
    part = 5 * 1024 * 1024
    body = data("mp-1", part) + data("mp-2", 1234)
    upload = n[0].create_multipart_upload(Bucket=BUCKET, Key="mp.bin")["UploadId"]
    assert [u["UploadId"] for u in n[1].list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])] == [upload]
    e1 = n[1].upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=upload, PartNumber=1, Body=body[:part])["ETag"]
    e2 = n[2].upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=upload, PartNumber=2, Body=body[part:])["ETag"]
    assert [p["PartNumber"] for p in n[0].list_parts(Bucket=BUCKET, Key="mp.bin", UploadId=upload)["Parts"]] == [1, 2]
    n[2].complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert n[0].get_object(Bucket=BUCKET, Key="mp.bin")["Body"].read() == body
    assert n[1].list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    # IAM: a user and its credentials created through node-1 work through node-3 (they replicate as events)
    tok = token(pool[0])
    made = requests.post(f"{pool[0].endpoint}/api/admin/users", headers={"Authorization": f"Bearer {tok}"},
                         json={"username": "alice", "password": "pass-word-1", "role": "Writer"}, timeout=30)
    assert made.status_code == 201, made.text
    keys = requests.post(f"{pool[0].endpoint}/api/admin/users/{made.json()['id']}/credentials",
                         headers={"Authorization": f"Bearer {tok}"}, timeout=30).json()
    alice = boto3.client("s3", endpoint_url=pool[2].endpoint, aws_access_key_id=keys["access_key"],
                         aws_secret_access_key=keys["secret_key"], region_name="us-east-1")

    def alice_reads() -> bool:
        try:
            return bool(alice.get_object(Bucket=BUCKET, Key="top.txt")["Body"].read() == written["top.txt"])
        except alice.exceptions.ClientError:
            return False

    wait_for("alice's credentials work through node-3", alice_reads, pool, deadline_s=20)
