"""Issue 19: large objects on a three-node pool (real s4-server processes on 127.0.0.1/.2/.3). A 64 MiB PUT of fresh
random bytes through node-1 is acknowledged (each replica fetches 16 chunks from the coordinator before it answers)
and reads back byte-exact through the other nodes; several in a row, then two at once through two nodes."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import running_pool

BUCKET = "large"
SIZE = 64 * 1024 * 1024


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with running_pool(tmp_path) as nodes:
        yield nodes


def test_issue19_64_mib_puts_of_fresh_bytes_are_acknowledged_and_read_back_everywhere(
        pool: list[ServerProcess]) -> None:
    clients = [make_client(n.endpoint, retries={"total_max_attempts": 1, "mode": "standard"},
                           read_timeout=120) for n in pool]
    clients[0].create_bucket(Bucket=BUCKET)
    digests: dict[str, str] = {}
    for i in range(2):
        body = os.urandom(SIZE)
        clients[0].put_object(Bucket=BUCKET, Key=f"big-{i}", Body=body)
        digests[f"big-{i}"] = hashlib.sha256(body).hexdigest()
    errors: list[BaseException] = []

    def put(i: int) -> None:
        body = os.urandom(SIZE)
        try:
            clients[i].put_object(Bucket=BUCKET, Key=f"both-{i}", Body=body)
            digests[f"both-{i}"] = hashlib.sha256(body).hexdigest()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for key, digest in digests.items():
        for client in clients[1:]:
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.sha256(got).hexdigest() == digest, key
