"""S3 Select / ?sql memory benchmark: a large CSV queried while the server's resident memory is sampled.

    python -m s4.tools.bench_select [--size-mib 1024] [--max-memory 256MB] [--timeout 900] [--dir PATH]
    python -m s4.tools.bench_select --endpoint URL --access-key K --secret-key S [--pid PID] ...

Without ``--endpoint`` it starts its own ``s4-server`` (fresh data directory, ``S4_SELECT_MAX_MEMORY``,
``S4_SELECT_TIMEOUT`` and ``S4_WORKERS`` from the options). It uploads a generated CSV (parts built one at a
time with pyarrow, so the client never holds the whole object) by multipart upload, waits for the server to
settle, then runs

  * SelectObjectContent with a WHERE and aggregates (CSV, FileHeaderInfo USE, RequestProgress on), and
  * ``POST /bucket?sql`` with a WHERE, GROUP BY and aggregates,

sampling the server's RSS (``/proc/<pid>/status`` VmRSS, children included) every 20 ms. Issue 8's bound is
peak RSS - idle RSS < 2 x S4_SELECT_MAX_MEMORY, plus since issue 18 the runtime of the process each query runs in
(``sandbox.RUNTIME_RSS_BYTES``); the table reports both and the ratio, and checks the rows against
the numbers computed while generating. Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from botocore.config import Config

from ..engine.select import sandbox
from .config import parse_size

BUCKET = "bench-select"
KEY = "bench/data.csv"
PART_ROWS = 600_000  # about 60 MiB of CSV per part
REGIONS = np.array(["north", "south", "east", "west", "centre", "islands", "coast", "hills"])
NOTES = np.array([hashlib.sha256(b"%d" % i).hexdigest()[:40] for i in range(97)])
SELECT_SQL = ("SELECT COUNT(*), SUM(CAST(s.amount AS INT)), MAX(CAST(s.id AS INT)) FROM s3object s "
              "WHERE s.status = 'error' AND CAST(s.amount AS INT) > 50000")
GROUP_SQL = ("SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM 'bench/*.csv' WHERE status = 'error' "
             "GROUP BY region ORDER BY region")


@dataclass
class Expected:
    """What the two queries must return, accumulated while the parts are generated."""

    count: int = 0
    amount: int = 0
    max_id: int = -1
    by_region: dict[str, list[int]] = field(default_factory=dict)

    def select_rows(self) -> str:
        return f"{self.count},{self.amount},{self.max_id}\n"

    def sql_rows(self) -> str:
        lines = ["region,n,total"] + [f"{r},{n},{t}" for r, (n, t) in sorted(self.by_region.items()) if n]
        return "\n".join(lines) + "\n"


def csv_parts(target_bytes: int, expected: Expected, part_rows: int = PART_ROWS) -> Iterator[bytes]:
    """CSV text in parts of ``part_rows`` rows (header in the first), until ``target_bytes`` are produced."""
    produced, start = 0, 0
    while produced < target_bytes:
        ids = np.arange(start, start + part_rows, dtype=np.int64)
        amount = (ids * 7919) % 100_000
        error = ids % 10 == 3
        region = REGIONS[ids % len(REGIONS)]
        table = pa.table({"id": ids, "region": region, "amount": amount,
                          "status": np.where(error, "error", "ok"), "note": NOTES[ids % len(NOTES)]})
        out = io.BytesIO()
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=start == 0, quoting_style="none"))
        hit = error & (amount > 50_000)
        expected.count += int(hit.sum())
        expected.amount += int(amount[hit].sum())
        if hit.any():
            expected.max_id = int(ids[hit].max())
        for name in REGIONS:
            mask = error & (region == name)
            n_total = expected.by_region.setdefault(str(name), [0, 0])
            n_total[0] += int(mask.sum())
            n_total[1] += int(amount[mask].sum())
        data = out.getvalue()
        produced += len(data)
        start += part_rows
        yield data


class RssSampler:
    """Peak resident memory (VmRSS, and RssAnon: without mapped library code) of a process and its descendants,
    sampled by a background thread."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, todo = [], [pid]
        while todo:
            current = todo.pop()
            pids.append(current)
            try:
                tasks = list(Path(f"/proc/{current}/task").glob("*/children"))
            except OSError:  # the process exited between being listed and being read
                continue
            for task in tasks:
                try:
                    todo += [int(c) for c in task.read_text().split()]
                except OSError:
                    pass
        return pids

    @classmethod
    def rss(cls, pid: int) -> tuple[int, int]:
        """(VmRSS, RssAnon) in bytes, summed over the process tree."""
        total = anon = 0
        for member in cls._tree(pid):
            try:
                for line in Path(f"/proc/{member}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total, anon

    def _sample(self) -> None:
        total, anon = self.rss(self.pid)
        self.peak, self.peak_anon = max(self.peak, total), max(self.peak_anon, anon)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def idle_rss(pid: int, seconds: float = 2.0, settle_timeout_s: float = 60.0) -> tuple[int, int]:
    """The settled (VmRSS, RssAnon) of the process tree: the smallest samples of the last ``seconds``, once the
    tree has stopped changing (upload buffers released, and a query process that is still starting, such as the
    Select warm spare, has finished its imports). A tree measured mid-start would make any later growth look
    larger by what the start had left to load."""
    window = max(2, int(seconds / 0.1))
    samples: list[tuple[int, int]] = []
    deadline = time.monotonic() + settle_timeout_s
    while True:
        samples.append(RssSampler.rss(pid))
        recent = samples[-window:]
        spread = max(s[0] for s in recent) - min(s[0] for s in recent)
        if len(recent) == window and (spread < SETTLED_SPREAD_BYTES or time.monotonic() > deadline):
            return min(s[0] for s in recent), min(s[1] for s in recent)
        time.sleep(0.1)


#: How little the tree's resident memory may move over the idle window for it to count as settled.
SETTLED_SPREAD_BYTES = 4 * 1024**2


class LocalServer:
    """An ``s4-server`` child with a fresh data directory and the Select limits under test."""

    def __init__(self, data_dir: Path, max_memory: str, timeout_s: int, port: int, workers: int | None) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
        env.update(S4_DATA_DIR=str(data_dir), S4_BIND=f"127.0.0.1:{port}", S4_ACCESS_KEY_ID="bench",
                   S4_SECRET_ACCESS_KEY="bench-secret", S4_SELECT_MAX_MEMORY=max_memory,
                   S4_SELECT_TIMEOUT=str(timeout_s), S4_COMPACTION_ENABLED="false", S4_LIFECYCLE_ENABLED="false")
        if workers is not None:
            env["S4_WORKERS"] = str(workers)
        self.log = open(data_dir.parent / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "s4.tools.server"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s4-server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("s4-server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload(s3: Any, target_bytes: int, expected: Expected) -> tuple[int, float]:
    t0 = time.perf_counter()
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=KEY)["UploadId"]
    parts, size = [], 0
    for number, data in enumerate(csv_parts(target_bytes, expected), start=1):
        etag = s3.upload_part(Bucket=BUCKET, Key=KEY, UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
        size += len(data)
    s3.complete_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return size, time.perf_counter() - t0


def run_select(s3: Any) -> tuple[str, dict[str, int], int]:
    resp = s3.select_object_content(Bucket=BUCKET, Key=KEY, Expression=SELECT_SQL, ExpressionType="SQL",
                                    InputSerialization={"CSV": {"FileHeaderInfo": "USE"}},
                                    OutputSerialization={"CSV": {}}, RequestProgress={"Enabled": True})
    rows, stats, progress = b"", {}, 0
    for event in resp["Payload"]:
        if "Records" in event:
            rows += event["Records"]["Payload"]
        elif "Stats" in event:
            stats = event["Stats"]["Details"]
        elif "Progress" in event:
            progress += 1
    return rows.decode(), stats, progress


def run_sql(endpoint: str, access_key: str, secret_key: str) -> str:
    """``POST /bucket?sql`` signed with SigV4 (payload hash included: the body is small)."""
    body = json.dumps({"sql": GROUP_SQL, "format": "csv", "output": "csv"}).encode()
    host = urlsplit(endpoint).netloc
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/json", "host": host, "x-amz-content-sha256": payload_hash,
               "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", f"/{BUCKET}", "sql=", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, payload_hash])
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    request = urllib.request.Request(f"{endpoint}/{BUCKET}?sql", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=3600) as resp:
        text: str = resp.read().decode()
        return text


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


@dataclass
class Measured:
    name: str
    seconds: float
    idle: int
    peak: int
    anon_growth: int
    status: str

    @property
    def growth(self) -> int:
        return self.peak - self.idle


def measure(name: str, query: Any, pid: int | None, limit: int, want: str) -> Measured:
    """Run one query while sampling the server's RSS; growth is measured from the settled RSS just before."""
    idle, idle_anon = idle_rss(pid) if pid else (0, 0)
    t0 = time.perf_counter()
    if pid:
        with RssSampler(pid) as sampler:
            result, stats, progress = query()
        peak, peak_anon = sampler.peak, sampler.peak_anon
    else:
        (result, stats, progress), peak, peak_anon = query(), 0, 0
    seconds = time.perf_counter() - t0
    status = "ok" if result == want else f"WRONG: {result!r} != {want!r}"
    row = Measured(name, seconds, idle, peak, peak_anon - idle_anon, status)
    print(f"{name}: {seconds:.1f}s idle {mib(idle)} MiB peak {mib(peak)} MiB growth {mib(row.growth)} MiB "
          f"({row.growth / limit:.2f} x limit; anonymous {mib(row.anon_growth)} MiB) rows {status} stats {stats} "
          f"progress events {progress}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s4.tools.bench_select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="CSV size to generate (default 1024)")
    parser.add_argument("--max-memory", default="256MB", help="S4_SELECT_MAX_MEMORY of the started server")
    parser.add_argument("--timeout", type=int, default=900, help="S4_SELECT_TIMEOUT of the started server (s)")
    parser.add_argument("--workers", type=int, help="S4_WORKERS of the started server (default: its own)")
    parser.add_argument("--rounds", type=int, default=2, help="times each query runs (default 2)")
    parser.add_argument("--only", choices=["select", "sql"], help="run one of the two queries")
    parser.add_argument("--dir", help="parent of the server's data directory (default: a temp dir, removed)")
    parser.add_argument("--endpoint", help="use a running server instead of starting one")
    parser.add_argument("--access-key", default="bench")
    parser.add_argument("--secret-key", default="bench-secret")
    parser.add_argument("--pid", type=int, help="server process id to sample (with --endpoint)")
    args = parser.parse_args(argv)
    limit = parse_size("--max-memory", args.max_memory)
    bound = 2 * limit + sandbox.RUNTIME_RSS_BYTES  # each query runs in a process of its own (engine/select/sandbox.py)
    workdir = Path(tempfile.mkdtemp(prefix="s4-bench-select-", dir=args.dir))
    server = None
    try:
        if args.endpoint:
            endpoint, pid = args.endpoint.rstrip("/"), args.pid
        else:
            server = LocalServer(workdir / "data", args.max_memory, args.timeout, _free_port(), args.workers)
            endpoint, pid = server.endpoint, server.proc.pid
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=args.access_key,
                          aws_secret_access_key=args.secret_key, region_name="us-east-1",
                          config=Config(read_timeout=3600, retries={"max_attempts": 1}))
        startup_rss = RssSampler.rss(pid)[0] if pid else 0
        s3.create_bucket(Bucket=BUCKET)
        expected = Expected()
        size, upload_s = upload(s3, args.size_mib * 2**20, expected)
        processes = len(RssSampler._tree(pid)) if pid else 0
        print(f"uploaded {mib(size)} MiB in {upload_s:.1f}s; server RSS at start-up {mib(startup_rss)} MiB "
              f"({processes} processes)", flush=True)
        queries = [("SelectObjectContent WHERE + COUNT/SUM/MAX", lambda: run_select(s3)),
                   ("?sql WHERE + GROUP BY + COUNT/SUM",
                    lambda: (run_sql(endpoint, args.access_key, args.secret_key), {}, 0))]
        if args.only:
            queries = [q for q in queries if q[0].lower().startswith(args.only[:3])]
        rows = []
        for round_number in range(1, args.rounds + 1):
            for name, query in queries:
                rows.append(measure(f"{name} (run {round_number})", query, pid, limit,
                                    expected.select_rows() if name.startswith("Select") else expected.sql_rows()))
        print(f"\nCSV: {mib(size)} MiB ({size:,} bytes); S4_SELECT_MAX_MEMORY = {args.max_memory} "
              f"({mib(limit)} MiB); bound: growth < 2 x limit + a query process's runtime = {mib(bound)} MiB\n")
        print("| query | time (s) | MiB/s | idle RSS (MiB) | peak RSS (MiB) | growth (MiB) | growth / limit | "
              "anon growth (MiB) | rows |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r.name} | {r.seconds:.1f} | {size / r.seconds / 2**20:.0f} | {mib(r.idle)} | {mib(r.peak)} | "
                  f"{mib(r.growth)} | {r.growth / limit:.2f} | {mib(r.anon_growth)} | {r.status} |")
        return 0 if all(r.status == "ok" and (not pid or r.growth < bound) for r in rows) else 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
