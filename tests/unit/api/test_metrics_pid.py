"""Multi-process metrics keyed by a cached process id: one file per process, forks still detected."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, sys
    from s4.api.metrics import multiprocess_enabled
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector

    assert multiprocess_enabled()
    counter = Counter("probe", "probe", registry=None)
    counter.inc()
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(arg) if event == "c_call" and arg is os.getpid else None)
    counter.inc()  # the cached id answers: no getpid system call per increment
    sys.setprofile(None)
    assert not calls, "os.getpid called per increment"
    child = os.fork()
    if child == 0:
        counter.inc(10)  # must land in the child's own file, not the parent's
        os._exit(0)
    os.waitpid(child, 0)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(registry.get_sample_value("probe_total"), os.getpid(), child)
""")


def test_cached_pid_keeps_one_file_per_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    total, parent, child = out.stdout.split()
    assert float(total) == 12.0
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == sorted([f"counter_{parent}.db",
                                                                            f"counter_{child}.db"])
