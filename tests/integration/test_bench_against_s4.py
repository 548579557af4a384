"""The benchmark's own HTTP client against the real server: its signatures verify, its framing holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

from s4.tools.bench import workloads
from s4.tools.bench.client import Client, S3Error


def test_bench_client_round_trips_through_s4(server: ServerProcess, s3: Any, bucket: str) -> None:
    key = "dir/a b+c%d/é"

    async def go() -> dict[str, Any]:
        async with Client(server.endpoint, ACCESS_KEY, SECRET_KEY) as c:
            seen: dict[str, Any] = {}
            _, _, headers = await c.request("PUT", f"/{bucket}/{key}", body=b"hello")
            seen["etag"] = headers["etag"]
            seen["get"] = (await c.request("GET", f"/{bucket}/{key}"))[1]
            status, body, headers = await c.request("HEAD", f"/{bucket}/{key}")
            seen["head"] = (status, body, headers["content-length"])
            listed = (await c.request("GET", f"/{bucket}", query={"list-type": "2", "prefix": "dir/a b"}))[1]
            seen["listed"] = listed.count(b"<Key>")
            with pytest.raises(S3Error, match="404"):
                await c.request("GET", f"/{bucket}/missing")
            seen["multipart"] = await workloads.multipart(c, bucket, 10, part_mib=5, parallel=2)
            await c.request("DELETE", f"/{bucket}/{key}")
            return seen

    seen = asyncio.run(go())
    assert seen["etag"] == '"5d41402abc4b2a76b9719d911017c592"'
    assert seen["get"] == b"hello" and seen["head"] == (200, b"", "5") and seen["listed"] == 1
    result = seen["multipart"]
    assert (result.ops, result.errors, result.bytes_moved) == (1, 0, 10 * 2**20), result.first_error
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("multipart-")
    assert s3.head_object(Bucket=bucket, Key=keys[0])["ContentLength"] == 10 * 2**20
