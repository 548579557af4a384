"""Integration fixtures: one real server per session, boto3 clients, a fresh bucket per test."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.s3client import make_client  # noqa: E402
from helpers.server import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("s4") / "data").start()
    yield proc
    code = proc.stop()
    if code not in (0, None, -15):
        print(proc.log())


@pytest.fixture(scope="session")
def s3(server: ServerProcess) -> Any:
    return make_client(server.endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def nodes() -> Iterator[list[ServerProcess]]:
    """Servers a test started (the cluster tests' nodes): stopped at its end, whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for node in started:
        node.stop()
