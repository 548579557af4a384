"""Integration fixtures: one real server per session, boto3 clients, a fresh bucket per test."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.netns import Partition, private_network  # noqa: E402
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


@pytest.fixture
def own_network() -> Iterator[None]:
    """The test in a network namespace of its own (tests/helpers/netns.py). Request it first (``usefixtures``), so
    it is torn down after the test's nodes."""
    with private_network():
        yield


@pytest.fixture
def partitions() -> Iterator[list[Partition]]:
    """The partitions a test made, healed at its end whatever happened (the namespace takes them with it anyway)."""
    made: list[Partition] = []
    yield made
    for partition in made:
        partition.heal()
        assert not partition.active()
