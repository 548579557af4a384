"""Issue 18: a restart re-activated a deactivated root and reset its password from the environment, undoing an
API rotation. S4_ROOT_PASSWORD now seeds the root user once; ``s4-admin reset-root`` is the offline recovery."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from s4.engine import Engine, EngineOptions
from s4.tools import admin_cli
from s4.tools.config import load_settings
from s4.tools.server import _prepare_iam

ENV_PASSWORD = "password12345"


def start(data_dir: Path) -> Engine:
    """What s4-server does at every start with IAM on."""
    engine = Engine(EngineOptions(data_dir))
    _prepare_iam(engine, load_settings({"S4_ROOT_PASSWORD": ENV_PASSWORD, "S4_JWT_SECRET": "x" * 32}))
    return engine


def login(engine: Engine, password: str) -> dict | None:
    return asyncio.run(engine.authenticate_password("root", password))


def test_issue18_restart_keeps_a_deactivated_root_and_its_rotated_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = start(data_dir)
    try:
        root = engine.get_user_by_name("root")
        assert root is not None and login(engine, ENV_PASSWORD) is not None
        asyncio.run(engine.update_user(root["id"], password="rotated-by-api", is_active=False))
    finally:
        engine.close()
    engine = start(data_dir)  # the environment still says password12345
    try:
        root = engine.get_user_by_name("root")
        assert root is not None and root["active"] is False
        assert not engine._verify(root["password_hash"], ENV_PASSWORD)
        assert engine._verify(root["password_hash"], "rotated-by-api")
        assert login(engine, ENV_PASSWORD) is None
    finally:
        engine.close()


def test_issue18_reset_root_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    engine = start(data_dir)
    root = engine.get_user_by_name("root")
    assert root is not None
    asyncio.run(engine.update_user(root["id"], password="forgotten-one", is_active=False))

    monkeypatch.setattr("sys.stdin", io.StringIO("recovered-pass\n"))
    argv = ["reset-root", "--data-dir", str(data_dir), "--password-stdin"]
    assert admin_cli.main(argv) == 1  # the server (this engine) holds the data directory
    assert "in use by another S4 process" in capsys.readouterr().err
    engine.close()

    monkeypatch.setattr("sys.stdin", io.StringIO("recovered-pass\n"))
    assert admin_cli.main(argv) == 0
    engine = start(data_dir)
    try:
        assert login(engine, "recovered-pass") is not None  # active again, with the new password
        assert login(engine, "forgotten-one") is None
    finally:
        engine.close()
