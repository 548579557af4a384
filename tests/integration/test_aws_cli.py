"""The README's AWS CLI walkthrough, run as written with the real `aws` CLI against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    block = text.split("## Using it with the AWS CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("aws ")]


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_readme_walkthrough(server: ServerProcess, tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c.split()[4] for c in commands] == ["mb", "cp", "ls", "cp", "rm", "rb"]
    (tmp_path / "file.txt").write_text("hello from the README\n")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    outputs = []
    for command in commands:
        command = command.replace("http://localhost:9000", server.endpoint)
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert re.search(r"\d+ file\.txt", outputs[2])
    assert (tmp_path / "downloaded.txt").read_text() == "hello from the README\n"
