"""A server process whose wall clock runs ahead or behind: libfaketime preloaded as ``faketime`` would do it.

Shared by the cluster fault tests (clock skew between nodes), the Jepsen-style history test and the object-lock
tests (retention that has run out). Needs the ``faketime`` package (``.ci/run`` installs it).
"""
from __future__ import annotations

import subprocess


def faketime_env(offset_s: int) -> dict[str, str]:
    """The environment that makes a process's wall clock run ``offset_s`` ahead (behind when negative): libfaketime,
    as ``faketime`` would preload it (its own answer for the library's path, not a path of this machine)."""
    shown = subprocess.run(["faketime", "-m", "-f", "+0", "/bin/sh", "-c", 'printf %s "$LD_PRELOAD"'],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "faketime" in shown.stdout, shown.stdout + shown.stderr
    # Only the wall clock moves, as on a host whose NTP is off: deadlines and timers run on the monotonic clock. (A
    # faked monotonic clock would also break Python's timed lock waits: libfaketime 0.9.10 does not wrap the
    # sem_clockwait they use, so each would wait the offset longer. What it breaks instead, time.sleep's absolute
    # clock_nanosleep, the server does not use on this path.)
    # FAKETIME_CACHE_DURATION: libfaketime re-parses FAKETIME every 10 s by default, from whichever thread asks the
    # time, in a static buffer that threads share (a data race fixed upstream in wolfcw/libfaketime#547): a node
    # died of SIGSEGV in sscanf here. Parsed once, at load, it never races.
    # S4_SELECT_ENABLED=false: with the library preloaded, a node died of SIGBUS (about one start in ten on a
    # loaded box) while its select-preload thread imported numpy/pyarrow and the loop thread imported pydantic;
    # without that thread the two imports never overlap. These processes are about clocks, not queries.
    # PYTHONFAULTHANDLER: should the preloaded library still crash the process, its log shows where.
    return {"LD_PRELOAD": shown.stdout, "FAKETIME": f"{offset_s:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_CACHE_DURATION": "1000000000", "S4_SELECT_ENABLED": "false", "PYTHONFAULTHANDLER": "1"}
