"""engine/timeline.py: with S4_TIMELINE every process appends its steps to one file (monotonic time, pid, step);
without it nothing is written. tools/bench/put_timeline.py lays one PUT out from those lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from s4.tools.bench.put_timeline import summary

SCRIPT = "from s4.engine import timeline; timeline.mark('a.step', 'node-2 ab12'); timeline.mark('b.step')"


def run(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env}, check=True)


def test_marks_of_several_processes_land_in_one_file_in_time_order(tmp_path: Path) -> None:
    log = tmp_path / "timeline.log"
    before = time.monotonic()
    run({"S4_TIMELINE": str(log)})
    run({"S4_TIMELINE": str(log)})
    after = time.monotonic()
    rows = [line.split(" ", 3) for line in log.read_text().splitlines()]
    assert [r[2] for r in rows] == ["a.step", "b.step", "a.step", "b.step"]
    assert rows[0][3] == "node-2 ab12" and rows[1][3] == ""
    times = [float(r[0]) for r in rows]
    assert before <= times[0] <= times[1] <= times[2] <= times[3] <= after  # one clock across processes
    assert rows[0][1] == rows[1][1] != rows[2][1]  # each line names its process


def test_nothing_is_written_without_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "S4_TIMELINE"}
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


def test_the_summary_splits_a_put_into_its_tail() -> None:
    lines = ["100.000 1 client.first_byte ", "100.300 2 ingest.last_byte 67108864", "100.310 2 ingest.end 67108864",
             "100.320 3 commit.begin 1", "100.340 3 commit.durable ", "100.390 3 push.acked node-2 ab12",
             "100.400 3 commit.replicated ", "100.405 1 client.answer 200"]
    line = summary([x.split(" ", 3) for x in lines], {}, 100.0, 0.9)
    assert "total=405" in line and "commit=20" in line and "pushes_after_commit=50" in line
    assert "apply=10" in line and "tail_after_ingest_last=105" in line and "cpu=900" in line
