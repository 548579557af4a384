"""S3 benchmark: small-object ops/s and latency, large-object bandwidth, multipart, listing.

    python -m s4.tools.bench --endpoint http://127.0.0.1:9000 --access-key K --secret-key S \
        [--concurrency 1,16,64] [--seconds 5] [--large-mib 64] [--list-keys 10000] [--markdown FILE]

Runs against any S3 endpoint (S4 or a peer). Results are printed as a Markdown table; no result is asserted
anywhere -- speed is reported, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from .signer import Signer

SMALL = 4096


@dataclass
class Result:
    name: str
    concurrency: int
    ops: int
    seconds: float
    latencies_ms: list[float]
    bytes_moved: int = 0

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes_moved / self.seconds / 2**20 if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.signer = Signer(access_key, secret_key, region)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                             timeout=aiohttp.ClientTimeout(total=3600), auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: bytes = b"",
                      headers: dict[str, str] | None = None, read: bool = True) -> tuple[int, bytes, Mapping[str, str]]:
        assert self.session is not None
        signed = self.signer.headers(method, self.host, path, query, headers)
        url = self.endpoint + path
        async with self.session.request(method, url, params=query, data=body or None, headers=signed) as resp:
            data = b""
            if read:
                data = await resp.read()
            else:
                async for _ in resp.content.iter_chunked(1 << 20):
                    pass
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status} {data[:200]!r}")
            return resp.status, data, resp.headers.copy()


async def timed_loop(name: str, concurrency: int, seconds: float,
                     op: Callable[[int], Awaitable[int]], max_ops: int | None = None) -> Result:
    """Run ``op(i)`` from ``concurrency`` tasks for ``seconds`` (or ``max_ops`` operations)."""
    latencies: list[float] = []
    moved = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal moved, counter
        while time.perf_counter() < deadline and (max_ops is None or counter < max_ops):
            i = counter
            counter += 1
            t0 = time.perf_counter()
            moved += await op(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, concurrency, len(latencies), time.perf_counter() - start, latencies, moved)


async def small_objects(c: Client, bucket: str, concurrency: int, seconds: float) -> list[Result]:
    body = os.urandom(SMALL)
    prefix = f"small-{concurrency}-{uuid.uuid4().hex[:6]}"

    async def put(i: int) -> int:
        await c.request("PUT", f"/{bucket}/{prefix}/{i}", body=body)
        return SMALL

    put_result = await timed_loop("PUT 4KiB", concurrency, seconds, put)
    written = put_result.ops

    async def get(i: int) -> int:
        await c.request("GET", f"/{bucket}/{prefix}/{i % written}")
        return SMALL

    async def head(i: int) -> int:
        await c.request("HEAD", f"/{bucket}/{prefix}/{i % written}")
        return 0

    async def mixed(i: int) -> int:
        if i % 10 < 7:
            return await get(i)
        await c.request("PUT", f"/{bucket}/{prefix}/{i % written}", body=body)
        return SMALL

    async def delete(i: int) -> int:
        await c.request("DELETE", f"/{bucket}/{prefix}/{i}")
        return 0

    results = [put_result,
               await timed_loop("GET 4KiB", concurrency, seconds, get),
               await timed_loop("HEAD", concurrency, seconds, head),
               await timed_loop("70/30 GET/PUT", concurrency, seconds, mixed)]
    results.append(await timed_loop("DELETE", concurrency, seconds * 10, delete, max_ops=written))
    return results


async def large_objects(c: Client, bucket: str, mib: int, rounds: int) -> list[Result]:
    body = os.urandom(mib * 2**20)

    async def put(i: int) -> int:
        await c.request("PUT", f"/{bucket}/large/{i}", body=body)
        return len(body)

    async def get(i: int) -> int:
        await c.request("GET", f"/{bucket}/large/{i % rounds}", read=False)
        return len(body)

    return [await timed_loop(f"PUT {mib} MiB", 1, 3600, put, max_ops=rounds),
            await timed_loop(f"GET {mib} MiB", 1, 3600, get, max_ops=rounds)]


async def multipart(c: Client, bucket: str, total_mib: int, part_mib: int = 16) -> Result:
    part = os.urandom(part_mib * 2**20)
    key = f"/{bucket}/multipart-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    _, data, _ = await c.request("POST", key, query={"uploads": ""})
    upload_id = data.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
    count = max(1, total_mib // part_mib)

    async def one(n: int) -> tuple[int, str]:
        _, _, headers = await c.request("PUT", key, query={"partNumber": str(n), "uploadId": upload_id}, body=part)
        return n, headers["ETag"]

    etags = await asyncio.gather(*(one(n) for n in range(1, count + 1)))
    xml = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in etags) + "</CompleteMultipartUpload>"
    await c.request("POST", key, query={"uploadId": upload_id}, body=xml.encode())
    elapsed = time.perf_counter() - t0
    return Result(f"multipart {count * part_mib} MiB", 4, 1, elapsed, [elapsed * 1000], count * len(part))


async def listing(c: Client, bucket: str, keys: int) -> Result:
    async def put(i: int) -> int:
        await c.request("PUT", f"/{bucket}/list/{i:08d}", body=b"x")
        return 1

    await timed_loop("fill", 32, 3600, put, max_ops=keys)
    t0 = time.perf_counter()
    token = None
    pages = 0
    while True:
        query = {"list-type": "2", "prefix": "list/", "max-keys": "1000"}
        if token:
            query["continuation-token"] = token
        _, data, _ = await c.request("GET", f"/{bucket}", query=query)
        pages += 1
        if b"<NextContinuationToken>" not in data:
            break
        token = data.split(b"<NextContinuationToken>")[1].split(b"</NextContinuationToken>")[0].decode()
    elapsed = time.perf_counter() - t0
    return Result(f"list {keys} keys", 1, pages, elapsed, [elapsed * 1000])


def table(results: list[Result]) -> str:
    lines = ["| workload | conc | ops | ops/s | MiB/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.concurrency} | {r.ops} | {r.ops_per_s:,.0f} | {r.mib_per_s:,.1f} | "
                     f"{r.pct(0.5):.2f} | {r.pct(0.99):.2f} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    async with Client(args.endpoint, args.access_key, args.secret_key, args.region) as c:
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        await c.request("PUT", f"/{bucket}")
        for conc in [int(x) for x in args.concurrency.split(",")]:
            results.extend(await small_objects(c, bucket, conc, args.seconds))
        if args.large_mib:
            results.extend(await large_objects(c, bucket, args.large_mib, args.large_rounds))
        if args.multipart_mib:
            results.append(await multipart(c, bucket, args.multipart_mib))
        if args.list_keys:
            results.append(await listing(c, bucket, args.list_keys))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--large-mib", type=int, default=64)
    p.add_argument("--large-rounds", type=int, default=4)
    p.add_argument("--multipart-mib", type=int, default=256)
    p.add_argument("--list-keys", type=int, default=10000)
    p.add_argument("--markdown", help="append the table to this file")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    out = table(results)
    sys.stdout.write(out + "\n")
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
