"""The suite's own gates: every warning fails the test that raised it, and any subset of the suite collects.

Warnings are fixed where they arise (a pipe or log file left open, a deprecated call); pyproject.toml's
``filterwarnings`` turns each one into an error, including the ResourceWarnings Python ignores by default and the
ones raised by garbage collection (pytest reports those as PytestUnraisableExceptionWarning).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_issue18_filterwarnings_error_is_configured(pytestconfig: pytest.Config) -> None:
    """The gate lives in pyproject.toml, so a plain ``python -m pytest`` (no ``-W error``) enforces it."""
    assert pytestconfig.getini("filterwarnings")[:1] == ["error"]


@pytest.mark.parametrize("category", [ResourceWarning, DeprecationWarning, RuntimeWarning, UserWarning])
def test_issue18_a_warning_fails_the_test(category: type[Warning]) -> None:
    with pytest.raises(category):
        warnings.warn("raised by the test itself", category, stacklevel=1)


def test_issue18_unit_and_integration_collect_in_one_run() -> None:
    """Test modules used to ``from conftest import make_client``: ``conftest`` is whichever conftest.py pytest loaded
    last, so a run naming the unit tests after the integration tests failed at collection. Helpers live in
    ``tests/helpers`` and are imported from there."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/integration", "tests/unit/engine"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in done.stdout.splitlines()[-1], done.stdout[-3000:]
