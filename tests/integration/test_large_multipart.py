"""A 5 GiB-class object assembled with multipart (UploadPartCopy of a 5 MiB source, 1,024 parts).

The parts share the source's chunks, so the object costs no extra disk; the test checks the S3 semantics at that
size: the multipart ETag over 1,024 parts, Content-Length, ranged reads anywhere in the object, partNumber reads,
and that the data directory did not grow by the object's size.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
PARTS = 1024


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


@pytest.mark.slow
def test_five_gib_multipart_object(server: Any, s3: Any, bucket: str) -> None:
    part = os.urandom(5 * MiB)
    s3.put_object(Bucket=bucket, Key="part-source", Body=part)
    before = tree_bytes(server.data_dir)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="huge.bin")["UploadId"]
    etags = []
    for n in range(1, PARTS + 1):
        res = s3.upload_part_copy(Bucket=bucket, Key="huge.bin", UploadId=upload, PartNumber=n,
                                  CopySource={"Bucket": bucket, "Key": "part-source"})
        etags.append(res["CopyPartResult"]["ETag"])
    done = s3.complete_multipart_upload(Bucket=bucket, Key="huge.bin", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    part_md5 = hashlib.md5(part).digest()
    assert done["ETag"] == f'"{hashlib.md5(part_md5 * PARTS).hexdigest()}-{PARTS}"'
    head = s3.head_object(Bucket=bucket, Key="huge.bin")
    assert head["ContentLength"] == PARTS * len(part) == 5 * 1024 * MiB
    for offset in (0, 5 * MiB - 3, 2**32 + 17, PARTS * len(part) - 100):
        got = s3.get_object(Bucket=bucket, Key="huge.bin", Range=f"bytes={offset}-{offset + 99}")["Body"].read()
        expected = bytes(part[(offset + i) % len(part)] for i in range(min(100, PARTS * len(part) - offset)))
        assert got == expected, offset
    one = s3.get_object(Bucket=bucket, Key="huge.bin", PartNumber=700)
    assert one["ContentLength"] == len(part) and one["PartsCount"] == PARTS
    assert hashlib.md5(one["Body"].read()).digest() == part_md5
    assert tree_bytes(server.data_dir) - before < 64 * MiB  # chunks are shared, not copied
