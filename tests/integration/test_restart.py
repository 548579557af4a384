"""A restart in the middle of a client session loses nothing: graceful (SIGTERM) and kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest
from helpers.s3client import make_client
from helpers.server import ServerProcess


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restart_keeps_everything(tmp_path: Path, sig: int) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        s3 = make_client(proc.endpoint)
        s3.create_bucket(Bucket="restart-test")
        bodies = {f"dir/{i}": os.urandom(i * 997) for i in range(40)}
        for key, body in bodies.items():
            s3.put_object(Bucket="restart-test", Key=key, Body=body)
        s3.delete_object(Bucket="restart-test", Key="dir/3")
        del bodies["dir/3"]
        proc.stop(sig)
        proc.start()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="restart-test")["Contents"]]
        assert keys == sorted(bodies)
        for key, body in bodies.items():
            got = s3.get_object(Bucket="restart-test", Key=key)
            data = got["Body"].read()
            assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest(), key
            assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    finally:
        proc.stop()
