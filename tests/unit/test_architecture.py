"""The package graph stays one-way (journal <- engine <- api/cluster <- tools) and lmdb stays in the views layer.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter reads the source through the
`.ci/typecheck/s4` tree of links, because it cannot follow the editable install's import hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(root: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["--no-cache"] + (["--config", str(config)] if config else [])
    env = dict(os.environ, PYTHONPATH=str(root / ".ci" / "typecheck"))
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           f"sys.argv = ['lint-imports', *{args!r}]; lint_imports_command()"],
                          cwd=root, env=env, capture_output=True, text=True)


def test_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def test_import_contracts_catch_a_violation(tmp_path: Path) -> None:
    """The gate can fail: a copy of the tree where the journal imports the engine breaks the layers contract."""
    for name in ("journal", "engine", "api", "cluster", "tools"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "journal").unlink()
    journal = tmp_path / "journal"
    journal.mkdir()
    for src in (ROOT / "journal").iterdir():
        if src.suffix == ".py":
            (journal / src.name).write_text(src.read_text())
    (journal / "codec.py").write_text((journal / "codec.py").read_text() + "\nimport s4.engine.model  # noqa\n")
    typecheck = tmp_path / ".ci" / "typecheck" / "s4"
    typecheck.mkdir(parents=True)
    for name in ("journal", "engine", "api", "cluster", "tools"):
        (typecheck / name).symlink_to(tmp_path / name)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "s4.journal.codec -> s4.engine.model" in result.stdout
