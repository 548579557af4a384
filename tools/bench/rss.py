"""Peak resident memory of each server's process tree, sampled from a background thread.

On Linux one pass over ``/proc`` per tick serves every watched tree (so the sampler costs the benchmark client
little), and the root process's own ``VmHWM`` (the kernel's exact peak) is folded in when a peak is read, which
makes the figure exact for single-process servers. Elsewhere psutil is used when installed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PROC = Path("/proc")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, rss bytes) for every process, from /proc/<pid>/stat."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds used so far by ``root`` and its live descendants (Linux /proc); None elsewhere.

    CPU per operation is the benchmark's one figure that a loaded machine hardly moves: throughput falls when other
    work takes the cores, the CPU each request costs the server does not."""
    return trees_cpu_seconds([root])


def trees_cpu_seconds(roots: Sequence[int]) -> float | None:
    """:func:`tree_cpu_seconds` summed over several roots (a pool's nodes) from one pass over /proc; None unless
    every root is alive."""
    if not PROC.exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    usage: dict[int, int] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        usage[pid] = int(fields[11]) + int(fields[12])
    if not roots or any(root not in usage for root in roots):
        return None
    total, stack, seen = 0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += usage.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / ticks


async def wait_idle(roots: Sequence[int], *, window: float = 0.5, idle_cores: float = 0.1,
                    cap: float = 60.0) -> float | None:
    """Wait until the trees under ``roots`` use less than ``idle_cores`` of a core over ``window`` seconds (at most
    ``cap`` seconds); return how long they stayed busy (0 when idle at once), None when not measurable.

    A pool acknowledges a write once W of its N replicas hold it; the others catch up after the answer. Without this
    wait that work would land in the next phase (another workload, or another server's turn), so the benchmark
    waits it out between phases and reports how long it took."""
    start = time.perf_counter()
    before = trees_cpu_seconds(roots)
    if before is None:
        return None
    opened = start  # when the current window began: the busy time is everything before the first idle window
    while True:
        await asyncio.sleep(window)
        now, closed = trees_cpu_seconds(roots), time.perf_counter()
        if now is None:
            return None
        if now - before < idle_cores * (closed - opened) or closed - start >= cap:
            return opened - start
        before, opened = now, closed


def tree_rss(roots: Iterable[int], table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Summed RSS of each root and all its descendants, given a ``_proc_table()``-shaped table."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    for root in roots:
        total, stack, seen = 0, [root], set()
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            total += table[pid][1]
            stack.extend(children.get(pid, ()))
        out[root] = total
    return out


def _psutil_rss(roots: Iterable[int]) -> dict[int, int]:
    import psutil

    out: dict[int, int] = {}
    for root in roots:
        try:
            proc = psutil.Process(root)
            members = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
        out[root] = total
    return out


def hwm(pid: int) -> int:
    """The kernel's peak RSS (VmHWM) of one process in bytes; 0 when unavailable."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the watched process trees every ``interval`` seconds and keeps each tree's peak."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._roots: dict[str, tuple[int, ...]] = {}
        self._peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def watch(self, name: str, *pids: int) -> None:
        """Sample the trees under ``pids`` as one server (their RSS summed): several for a pool's nodes."""
        self._roots[name] = pids

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sample(self) -> None:
        roots = dict(self._roots)
        every = [pid for pids in roots.values() for pid in pids]
        if PROC.is_dir():
            by_pid = tree_rss(every, _proc_table())
        else:
            try:
                by_pid = _psutil_rss(every)
            except ImportError:
                return
        for name, pids in roots.items():
            self._peaks[name] = max(self._peaks.get(name, 0), sum(by_pid.get(pid, 0) for pid in pids))

    def peaks(self) -> dict[str, int]:
        """Peak bytes per watched name so far (sampled tree sum, or a single root's VmHWM when larger)."""
        self.sample()
        return {name: max(self._peaks.get(name, 0), hwm(pids[0]) if len(pids) == 1 else 0)
                for name, pids in self._roots.items()}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
