"""`pip install .` (not editable) ships every package of the source tree: pyproject.toml lists them by hand, so a
new subpackage missing from the list installs a server that cannot import it (engine/policy once did)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("journal", "engine", "api", "cluster", "tools")


def test_every_source_package_is_listed_for_installation() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    present = {"s4." + ".".join(init.parent.relative_to(ROOT).parts)
               for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")}
    assert present - listed == set(), "packages missing from [tool.setuptools] packages in pyproject.toml"
    assert listed - present == set(), "listed packages that no longer exist"
