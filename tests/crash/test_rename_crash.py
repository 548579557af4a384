"""kill -9 a real server right after a prefix-rename request is on the wire, many times.

After each restart the prefix must be wholly renamed or wholly not, and every object must read back byte-exact
under exactly one name.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess  # noqa: E402

pytestmark = pytest.mark.crash
ROUNDS = 20
OBJECTS = 60


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1")


def send_rename(port: int, bucket: str, src: str, dst: str) -> socket.socket:
    """Sign and write a RenameObject request; return the socket without reading the answer."""
    url = f"http://127.0.0.1:{port}/{bucket}/{dst}?renameObject"
    request = AWSRequest(method="PUT", url=url, headers={"x-amz-rename-source": f"/{bucket}/{src}",
                                                         "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    head = [f"PUT /{bucket}/{dst}?renameObject HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in prepared.headers.items() if k.lower() != "host"]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def test_prefix_rename_survives_kill_9(tmp_path: Path) -> None:
    rng = random.Random(1234)
    proc = ServerProcess(tmp_path / "data").start()
    try:
        s3 = client(proc.endpoint)
        s3.create_bucket(Bucket="crash")
        expected: dict[str, bytes] = {}
        for i in range(OBJECTS):
            data = rng.randbytes(rng.randrange(0, 3000))
            name = f"{i % 5}/{i:04d}"
            s3.put_object(Bucket="crash", Key=f"left/{name}", Body=data)
            expected[name] = hashlib.sha256(data).digest()
        side = "left"
        outcomes = {"renamed": 0, "not renamed": 0}
        for _ in range(ROUNDS):
            other = "right" if side == "left" else "left"
            sock = send_rename(proc.port, "crash", f"{side}/", f"{other}/")
            time.sleep(rng.choice([0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005]))
            proc.kill()
            sock.close()
            proc.start()
            s3 = client(proc.endpoint)
            listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="crash")
                      for o in p.get("Contents", [])]
            tops = {k.split("/", 1)[0] for k in listed}
            assert len(tops) == 1, f"rename half-applied: {sorted(tops)}"
            now = tops.pop()
            outcomes["renamed" if now != side else "not renamed"] += 1
            side = now
            assert sorted(listed) == sorted(f"{side}/{name}" for name in expected)
            for name, digest in expected.items():
                data = s3.get_object(Bucket="crash", Key=f"{side}/{name}")["Body"].read()
                assert hashlib.sha256(data).digest() == digest, name
        print("outcomes:", outcomes)
    finally:
        proc.stop()
