"""Fixtures shared by the cluster unit tests' listing modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_key_reads import IDS, Pool


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """Three in-process replicas that all hold ``a`` (version 1); a module defining its own ``pool`` overrides it."""
    pool = Pool(tmp_path)
    try:
        pool.give(pool.put("a", 1), IDS)
        yield pool
    finally:
        pool.close()
