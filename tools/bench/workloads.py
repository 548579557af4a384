"""The workloads: closed-loop timed phases against one bucket, each returning :class:`Result` rows.

A failed request is counted in ``Result.errors`` and left out of the latencies; it does not stop the phase, so one
misbehaving server cannot abort a multi-server run.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .client import Client

SMALL = 4096


#: The server under test's CPU seconds so far (set by the runner around each step; None: not measured).
SERVER_CPU: contextvars.ContextVar[Callable[[], float | None] | None] = contextvars.ContextVar("server_cpu",
                                                                                                  default=None)
#: Waits until the server under test has no work left from the phase (None: do not wait); returns the seconds it
#: stayed busy after the last answer (a pool's replicas beyond the write quorum catch up then).
SERVER_DRAIN: contextvars.ContextVar[Callable[[], Awaitable[float | None]] | None] = contextvars.ContextVar(
    "server_drain", default=None)


@dataclass
class Result:
    name: str
    concurrency: int
    ops: int
    seconds: float
    latencies_ms: list[float]
    bytes_moved: int = 0
    unit: str = "ops/s"
    errors: int = 0
    first_error: str = ""
    server_cpu_s: float | None = None  # CPU the server's process tree used during the phase (when measurable)
    drain_s: float | None = None  # seconds the server stayed busy after the phase's last answer (when waited for)

    @property
    def cpu_us_per_op(self) -> float | None:
        return self.server_cpu_s / self.ops * 1e6 if self.server_cpu_s is not None and self.ops else None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes_moved / self.seconds / 2**20 if self.seconds else 0.0

    @property
    def value(self) -> float:
        """The headline figure in ``unit``: MiB/s for bandwidth rows, operations (or keys) per second otherwise."""
        return self.mib_per_s if self.unit == "MiB/s" else self.ops_per_s

    def pct(self, q: float) -> float:
        """Latency percentile ``q`` (0..1) in ms; 0 when nothing succeeded."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_loop(name: str, concurrency: int, seconds: float, op: Callable[[int], Awaitable[int]],
                     max_ops: int | None = None, unit: str = "ops/s") -> Result:
    """Run ``op(i)`` (returning bytes moved) from ``concurrency`` tasks for ``seconds`` or ``max_ops`` calls."""
    latencies: list[float] = []
    moved = errors = counter = 0
    first_error = ""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal moved, counter, errors, first_error
        while time.perf_counter() < deadline and (max_ops is None or counter < max_ops):
            i = counter
            counter += 1
            t0 = time.perf_counter()
            try:
                moved += await op(i)
            except Exception as exc:
                errors += 1
                first_error = first_error or repr(exc)[:300]
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    probe = SERVER_CPU.get()
    cpu_before = probe() if probe is not None else None
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    drain = SERVER_DRAIN.get()
    drained = await drain() if drain is not None else None  # not timed, but its CPU is the phase's
    cpu_after = probe() if probe is not None else None
    used = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Result(name, concurrency, len(latencies), elapsed, latencies, moved, unit, errors, first_error, used,
                  drained)


async def small_objects(c: Client, bucket: str, concurrency: int, seconds: float) -> list[Result]:
    """4 KiB PUT, GET, HEAD, a 70/30 GET/PUT mix, then DELETE of everything the PUT phase wrote."""
    body = os.urandom(SMALL)
    prefix = f"small-{concurrency}-{uuid.uuid4().hex[:8]}"
    put_result = await timed_loop("PUT 4KiB", concurrency, seconds,
                                  lambda i: _put(c, f"/{bucket}/{prefix}/{i}", unique_body(body, i)))
    written = max(put_result.ops + put_result.errors, 1)

    async def get(i: int) -> int:
        await c.request("GET", f"/{bucket}/{prefix}/{i % written}")
        return SMALL

    async def head(i: int) -> int:
        await c.request("HEAD", f"/{bucket}/{prefix}/{i % written}")
        return 0

    async def mixed(i: int) -> int:
        if i % 10 < 7:
            return await get(i)
        return await _put(c, f"/{bucket}/{prefix}/{i % written}", unique_body(body, written + i))

    async def delete(i: int) -> int:
        await c.request("DELETE", f"/{bucket}/{prefix}/{i}")
        return 0

    return [put_result,
            await timed_loop("GET 4KiB", concurrency, seconds, get),
            await timed_loop("HEAD 4KiB", concurrency, seconds, head),
            await timed_loop("70/30 GET/PUT", concurrency, seconds, mixed),
            await timed_loop("DELETE 4KiB", concurrency, seconds * 10, delete, max_ops=written)]


async def _put(c: Client, path: str, body: bytes | bytearray) -> int:
    await c.request("PUT", path, body=body)
    return len(body)


def unique_body(template: bytes, i: int) -> bytes:
    """``template`` with its last 16 bytes replaced by a per-run counter: every PUT stores new bytes.

    Identical bodies would let a deduplicating server (S4 is one) skip the data write and its fsync, which is not
    what a workload of distinct objects costs.
    """
    tail = min(16, len(template))
    return template[: len(template) - tail] + (_RUN_NONCE + i).to_bytes(16, "big")[16 - tail:]


_RUN_NONCE = int.from_bytes(os.urandom(8), "big") << 64
PIECE = 2**20  # S4 stores (and deduplicates) 4 MiB chunks: a counter every 1 MiB makes every chunk new


def stamp_pieces(body: bytearray, i: int) -> bytearray:
    """Overwrite the first 16 bytes of every ``PIECE`` of ``body`` in place with a per-run counter ``i``: a large
    body sent again after ``stamp_pieces(body, i + 1)`` shares no chunk with the last one (``unique_body`` only
    changes the tail, which leaves every chunk but the last deduplicable)."""
    tag = (_RUN_NONCE + i).to_bytes(16, "big")
    for offset in range(0, len(body), PIECE):
        end = min(offset + 16, len(body))
        body[offset:end] = tag[: end - offset]
    return body


async def large_objects(c: Client, bucket: str, mib: int, count: int) -> list[Result]:
    """``count`` sequential PUTs of a ``mib`` MiB object, each one new in every chunk, then as many streamed GETs
    (MiB/s). The body is stamped in place between PUTs (the last PUT was answered, so all of it was sent)."""
    body = bytearray(os.urandom(mib * 2**20))
    prefix = f"large-{uuid.uuid4().hex[:8]}"

    async def get(i: int) -> int:
        await c.request("GET", f"/{bucket}/{prefix}/{i % count}", read=False)
        return len(body)

    return [await timed_loop(f"PUT {mib} MiB", 1, 3600,
                             lambda i: _put(c, f"/{bucket}/{prefix}/{i}", stamp_pieces(body, i)),
                             max_ops=count, unit="MiB/s"),
            await timed_loop(f"GET {mib} MiB", 1, 3600, get, max_ops=count, unit="MiB/s")]


async def multipart(c: Client, bucket: str, total_mib: int, part_mib: int = 16, parallel: int = 4) -> Result:
    """One multipart upload of ``total_mib`` MiB in ``part_mib`` MiB parts, ``parallel`` parts in flight (MiB/s);
    every part new in every chunk (a copy of one random part, stamped per part number)."""
    part = bytearray(os.urandom(part_mib * 2**20))
    count = max(1, total_mib // part_mib)
    name = f"multipart {count * part_mib} MiB"
    key = f"/{bucket}/multipart-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(parallel)

    async def one(n: int, upload_id: str) -> tuple[int, str]:
        async with gate:
            body = stamp_pieces(bytearray(part), n)  # parts are in flight together: each its own copy
            _, _, headers = await c.request("PUT", key, query={"partNumber": str(n), "uploadId": upload_id},
                                            body=body)
        return n, headers["etag"]

    t0 = time.perf_counter()
    try:
        _, data, _ = await c.request("POST", key, query={"uploads": ""})
        upload_id = _between(data, b"UploadId")
        etags = await asyncio.gather(*(one(n, upload_id) for n in range(1, count + 1)))
        xml = "<CompleteMultipartUpload>" + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                                                    for n, e in etags) + "</CompleteMultipartUpload>"
        await c.request("POST", key, query={"uploadId": upload_id}, body=xml.encode())
    except Exception as exc:
        return Result(name, parallel, 0, time.perf_counter() - t0, [], unit="MiB/s", errors=1,
                      first_error=repr(exc)[:300])
    elapsed = time.perf_counter() - t0
    return Result(name, parallel, 1, elapsed, [elapsed * 1000], count * len(part), unit="MiB/s")


def _between(data: bytes, tag: bytes) -> str:
    return data.split(b"<" + tag + b">", 1)[1].split(b"</" + tag + b">", 1)[0].decode()


def list_prefix_name(keys: int) -> str:
    return f"list-{keys}/"


async def fill(c: Client, bucket: str, prefix: str, keys: int, concurrency: int) -> Result:
    """PUT ``keys`` 16-byte objects named ``<prefix><i:08d>``, every body distinct (``unique_body``)."""
    return await timed_loop(f"fill {keys:,} keys", concurrency, 10**9,
                            lambda i: _put(c, f"/{bucket}/{prefix}{i:08d}", unique_body(bytes(16), i)),
                            max_ops=keys)


async def listing(c: Client, bucket: str, prefix: str, keys: int, budget_s: float = 600.0,
                  min_seconds: float = 0.0) -> Result:
    """ListObjectsV2 over ``prefix`` in pages of 1,000: keys/s overall, per-page latency percentiles.

    Whole passes over the prefix repeat until ``min_seconds`` have gone by (at least one pass): one pass over
    10,000 keys is ten requests, short enough for a single scheduler stall of a busy VM (hundreds of ms) to
    decide the figure. Stops after ``budget_s`` seconds (counted as an error, keys/s over what was listed) so
    that one server with a listing that grows with the bucket cannot hold the whole run.
    """
    pages: list[float] = []
    listed = 0
    name = f"LIST {keys:,} keys"
    t0 = time.perf_counter()
    while True:
        try:
            passed = await _list_pass(c, bucket, prefix, pages, t0 + budget_s)
        except Exception as exc:
            return Result(name, 1, listed, time.perf_counter() - t0, pages, unit="keys/s", errors=1,
                          first_error=repr(exc)[:300])
        listed += passed
        elapsed = time.perf_counter() - t0
        if passed != keys:
            late = f" (listing budget of {budget_s:g} s ran out)" if elapsed >= budget_s else ""
            return Result(name, 1, listed, elapsed, pages, unit="keys/s", errors=1,
                          first_error=f"listed {passed} keys, expected {keys}{late}")
        if elapsed >= min_seconds:
            return Result(name, 1, listed, elapsed, pages, unit="keys/s")


async def _list_pass(c: Client, bucket: str, prefix: str, pages: list[float], deadline: float) -> int:
    """One listing of ``prefix`` from the start, page latencies appended to ``pages``; returns the keys seen."""
    listed = 0
    token = ""
    while time.perf_counter() < deadline:
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        if token:
            query["continuation-token"] = token
        p0 = time.perf_counter()
        _, data, _ = await c.request("GET", f"/{bucket}", query=query)
        pages.append((time.perf_counter() - p0) * 1000)
        listed += data.count(b"<Key>")
        if b"<NextContinuationToken>" not in data:
            break
        token = _between(data, b"NextContinuationToken")
    return listed


def preload_key(i: int) -> str:
    return f"preload/{i // 1000:04d}/{i % 1000:03d}"


async def preload(c: Client, bucket: str, count: int, size: int, concurrency: int) -> Result:
    """PUT ``count`` objects of ``size`` bytes (keys spread over prefixes of 1,000) as fast as the server takes."""
    body = os.urandom(size)
    return await timed_loop(f"preload {count:,} objects", concurrency, 10**9,
                            lambda i: _put(c, f"/{bucket}/{preload_key(i)}", unique_body(body, i)), max_ops=count)


async def scale_check(c: Client, bucket: str, stored: int, concurrency: int, seconds: float) -> list[Result]:
    """4 KiB PUT of new keys and GET of random preloaded keys, with ``stored`` objects already in the bucket."""
    body = os.urandom(SMALL)
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    rng = random.Random(concurrency)

    async def get(_: int) -> int:
        _status, data, _headers = await c.request("GET", f"/{bucket}/{preload_key(rng.randrange(stored))}")
        return len(data)

    return [await timed_loop(scale_name("PUT 4KiB", stored), concurrency, seconds,
                             lambda i: _put(c, f"/{bucket}/{prefix}/{i}", unique_body(body, 10**12 + i))),
            await timed_loop(scale_name("GET 4KiB", stored), concurrency, seconds, get)]


def scale_name(base: str, stored: int) -> str:
    return f"{base} ({stored:,} stored)"
