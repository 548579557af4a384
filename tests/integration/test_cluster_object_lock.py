"""Issue 22 on a three-node pool (real s4-server processes on 127.0.0.1/.2/.3, N=3, W=2, R=2): Object Lock state is
replicated like every other fact. A bucket created with Object Lock on one node, a version retained through a
second, a legal hold set through the third: every node refuses to remove the version, and the multipart CRC
composite written through one node is what another answers on HEAD."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import running_pool

from s4.engine.checksums import checksum_of, composite_checksum

MiB = 1024 * 1024


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with running_pool(tmp_path) as nodes:
        yield nodes


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


def test_object_lock_is_replicated_and_every_node_refuses_the_removal(pool: list[ServerProcess]) -> None:
    n: list[Any] = [make_client(node.endpoint) for node in pool]
    n[0].create_bucket(Bucket="worm", ObjectLockEnabledForBucket=True)
    with pytest.raises(ClientError) as err:
        n[1].put_bucket_versioning(Bucket="worm", VersioningConfiguration={"Status": "Suspended"})
    assert _code(err) == "InvalidBucketState"
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).replace(microsecond=0)
    version = n[1].put_object(Bucket="worm", Key="k", Body=b"kept", ObjectLockMode="COMPLIANCE",
                              ObjectLockRetainUntilDate=until)["VersionId"]
    n[2].put_object_legal_hold(Bucket="worm", Key="k", VersionId=version, LegalHold={"Status": "ON"})
    for client in n:
        head = client.head_object(Bucket="worm", Key="k", VersionId=version)
        assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == (
            "COMPLIANCE", until, "ON")
        with pytest.raises(ClientError) as err:
            client.delete_object(Bucket="worm", Key="k", VersionId=version, BypassGovernanceRetention=True)
        assert _code(err) == "AccessDenied"
    assert n[0].get_object(Bucket="worm", Key="k", VersionId=version)["Body"].read() == b"kept"


def test_multipart_composite_checksum_read_through_another_node(pool: list[ServerProcess]) -> None:
    n: list[Any] = [make_client(node.endpoint) for node in pool]
    n[0].create_bucket(Bucket="sums")
    bodies = [b"a" * (5 * MiB), b"tail"]
    up = n[0].create_multipart_upload(Bucket="sums", Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        answer = n[number].upload_part(Bucket="sums", Key="mp", UploadId=up, PartNumber=number, Body=body,
                                       ChecksumAlgorithm="CRC32")
        parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumCRC32": answer["ChecksumCRC32"]})
    n[2].complete_multipart_upload(Bucket="sums", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    expected = composite_checksum("CRC32", [checksum_of("CRC32", b) for b in bodies])
    for client in n:
        head = client.head_object(Bucket="sums", Key="mp", ChecksumMode="ENABLED")
        assert (head["ChecksumCRC32"], head["ChecksumType"]) == (expected, "COMPOSITE")
