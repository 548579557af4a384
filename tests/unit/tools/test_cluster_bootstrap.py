"""``s4-admin cluster bootstrap`` (tools/cluster_bootstrap.py): asks for --yes, refuses beside a running server,
removes the node's data and feed store, keeps its identity, keys and the name register's acceptor state."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.engine.datadir import DataDirLock
from s4.tools.admin_cli import main


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    data = tmp_path / "node-3"
    for sub in ("journal", "views", "volumes", "cluster/feed.lmdb", "cluster/cas.lmdb"):
        (data / sub).mkdir(parents=True)
        (data / sub / "data").write_bytes(b"x")
    (data / "node_id").write_text("node-3")
    (data / "iam.key").write_text("key")
    return data


def test_bootstrap_needs_yes_and_changes_nothing_without(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "bootstrap", "--data-dir", str(node_dir)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert (node_dir / "journal" / "data").exists() and (node_dir / "cluster" / "feed.lmdb").exists()


def test_bootstrap_refuses_beside_a_running_server(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = DataDirLock.acquire(node_dir)
    try:
        assert main(["cluster", "bootstrap", "--data-dir", str(node_dir), "--yes"]) == 1
    finally:
        lock.release()
    assert "stop the server first" in capsys.readouterr().err
    assert (node_dir / "journal" / "data").exists()


def test_bootstrap_empties_the_data_and_keeps_identity_keys_and_acceptor(node_dir: Path) -> None:
    assert main(["cluster", "bootstrap", "--data-dir", str(node_dir), "--yes"]) == 0
    for gone in ("journal", "views", "volumes", "cluster/feed.lmdb"):
        assert not (node_dir / gone).exists(), gone
    assert (node_dir / "node_id").read_text() == "node-3" and (node_dir / "iam.key").exists()
    assert (node_dir / "cluster" / "cas.lmdb" / "data").exists()


def test_bootstrap_refuses_a_directory_that_is_no_node(tmp_path: Path) -> None:
    assert main(["cluster", "bootstrap", "--data-dir", str(tmp_path / "nothing"), "--yes"]) == 2
    assert not (tmp_path / "nothing").exists()
