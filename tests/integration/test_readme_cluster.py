"""Issue 19: the README's "Cluster: three nodes on one machine" block, run as written: its three ``s4-server``
commands (their environment exactly, the relative data directories under this test's directory), then its AWS CLI
lines through bash with the block's exported keys: a bucket made through node-1, an object written through node-2,
read back through node-3."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.server import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def cluster_block() -> str:
    text = README.read_text()
    section = text[text.index("## Cluster: three nodes on one machine"):]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "the README's cluster section has no sh block"
    return found.group(1)


def server_commands(block: str) -> list[dict[str, str]]:
    """Each ``... s4-server &`` command (backslash continuations joined) as its environment."""
    joined = block.replace("\\\n", " ")
    envs = []
    for line in joined.splitlines():
        words = shlex.split(line)
        if words[-2:] == ["s4-server", "&"]:
            env = dict(w.split("=", 1) for w in words[:-2])
            assert all(k.startswith("S4_") for k in env), env
            envs.append(env)
    return envs


def client_lines(block: str) -> str:
    return "\n".join(line for line in block.splitlines() if line.startswith(("export ", "aws ", "echo ")))


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for node in started:
        node.stop()


def test_issue19_readme_cluster_quick_start_runs_as_written(tmp_path: Path, nodes: list[ServerProcess]) -> None:
    block = cluster_block()
    envs = server_commands(block)
    assert [e["S4_NODE_ID"] for e in envs] == ["node-1", "node-2", "node-3"]
    for env in envs:
        env["S4_DATA_DIR"] = str(tmp_path / env["S4_DATA_DIR"])  # "./data/node-1" in the directory it runs in
        host, port = env["S4_BIND"].rsplit(":", 1)
        data_dir = Path(env["S4_DATA_DIR"])
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        nodes.append(ServerProcess(data_dir, env=env, host=host, port=int(port)))
    for node in nodes:
        node.start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S4_"))}
    done = subprocess.run(["bash", "-e", "-c", client_lines(block)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=clean)
    logs = "\n".join(n.log()[-2000:] for n in nodes)
    assert done.returncode == 0, done.stdout + done.stderr + logs
    assert done.stdout.splitlines()[-1] == "hello", done.stdout
