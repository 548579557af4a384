"""tools/bench_commit: both modes run their PUTs to the end (the tool reads the first and last back) and report CPU
per PUT for each process."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_bench_commit_reports_both_modes() -> None:
    done = subprocess.run([sys.executable, "-m", "s4.tools.bench_commit", "--puts", "40", "--concurrency", "4",
                           "--rounds", "1"], capture_output=True, text=True, timeout=120, check=True)
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:7]]
            for line in done.stdout.splitlines() if line.startswith("| remote") or line.startswith("| local")}
    assert set(rows) == {"remote", "local"}
    total, worker, supervisor, _, rate = rows["remote"]
    assert worker > 0 and supervisor >= 0 and total == pytest.approx(worker + supervisor, abs=2) and rate > 0
    assert rows["local"][2] == 0 and rows["local"][0] > 0  # one process: nothing is counted for a supervisor
