"""Fixtures for the engine's unit tests: engines on temporary data directories, closed at teardown."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s4.engine import Engine, EngineOptions
from s4.engine.views.env import Views


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """``make_engine(**options)``: an Engine on ``tmp_path/data`` (or ``data_dir=``); every one is closed after."""
    engines: list[Engine] = []

    def make(data_dir: Path | None = None, commit_path: Any = None, **options: Any) -> Engine:
        engine = Engine(EngineOptions(data_dir or tmp_path / "data", **options), commit_path)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        try:
            engine.close()
        except Exception:  # already closed by the test
            pass


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@pytest.fixture
def views() -> Iterator[Views]:
    """A views environment (LMDB, no fsync) in a temporary directory of its own, closed after the test."""
    with tempfile.TemporaryDirectory() as tmp:
        opened = Views(Path(tmp) / "views", sync=False)
        try:
            yield opened
        finally:
            opened.close()
