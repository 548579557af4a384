"""Turning per-round :class:`Result` rows into Markdown: medians per server, S4/peer ratios, latencies, memory."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .workloads import Result

Row = tuple[str, int]


@dataclass(frozen=True)
class Cell:
    """One server's median figures for one workload over the rounds that ran it."""

    value: float
    p50: float
    p99: float
    errors: int
    rounds: int
    unit: str
    drain: float | None = None  # median seconds the server stayed busy after the phase (None: not waited for)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else 0.0


def aggregate(results: Mapping[str, Sequence[Result]]) -> dict[Row, dict[str, Cell]]:
    """(workload, concurrency) -> server -> medians, rows in the order they first appear."""
    grouped: dict[Row, dict[str, list[Result]]] = {}
    for server, rows in results.items():
        for r in rows:
            grouped.setdefault((r.name, r.concurrency), {}).setdefault(server, []).append(r)
    out: dict[Row, dict[str, Cell]] = {}
    for row, by_server in grouped.items():
        out[row] = {server: Cell(median(r.value for r in rs), median(r.pct(0.5) for r in rs),
                                 median(r.pct(0.99) for r in rs), sum(r.errors for r in rs), len(rs), rs[0].unit,
                                 _median_drain(rs))
                    for server, rs in by_server.items()}
    return out


def _median_drain(rows: Sequence[Result]) -> float | None:
    drains = [r.drain_s for r in rows if r.drain_s is not None]
    return median(drains) if drains else None


def ratio(a: float | None, b: float | None) -> str:
    """``a/b`` as ``1.23x``; ``n/a`` when either side is missing or zero."""
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def fmt_value(value: float, unit: str) -> str:
    return f"{value:,.1f}" if unit == "MiB/s" else f"{value:,.0f}"


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    text = fmt_value(cell.value, cell.unit)
    return f"{text} ({cell.errors} err)" if cell.errors else text


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right_from: int) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def throughput_table(agg: Mapping[Row, Mapping[str, Cell]], servers: Sequence[str], base: str = "S4") -> str:
    """Median headline figure per server, then ``base``/peer ratios (above 1 means ``base`` is faster)."""
    peers = [s for s in servers if s != base]
    header = ["workload", "conc", "unit", *servers, *(f"{base}/{p}" for p in peers)]
    rows = []
    for (name, conc), cells in agg.items():
        unit = next(iter(cells.values())).unit
        mine = cells.get(base)
        rows.append([name, str(conc), unit, *(_cell_text(cells.get(s)) for s in servers),
                     *(ratio(mine.value if mine else None, cells[p].value if p in cells else None) for p in peers)])
    return _table(header, rows, 3)


def latency_table(agg: Mapping[Row, Mapping[str, Cell]], servers: Sequence[str]) -> str:
    """Median p50 / p99 latency (ms) per server; for listings the latency of one page."""
    header = ["workload", "conc", *(f"{s} p50 / p99 ms" for s in servers)]
    rows = []
    for (name, conc), cells in agg.items():
        rows.append([name, str(conc), *(f"{cells[s].p50:.2f} / {cells[s].p99:.2f}" if s in cells else "–"
                                        for s in servers)])
    return _table(header, rows, 2)


def cpu_table(results: Mapping[str, Sequence[Result]], servers: Sequence[str]) -> str:
    """Median CPU µs the server's process tree spent per operation, per workload; "–" where not measured."""
    grouped: dict[Row, dict[str, list[float]]] = {}
    for server, rows in results.items():
        for r in rows:
            by_server = grouped.setdefault((r.name, r.concurrency), {})
            if r.cpu_us_per_op is not None:
                by_server.setdefault(server, []).append(r.cpu_us_per_op)
    rows_out = [[name, str(conc), *(f"{median(cells[s]):,.0f}" if cells.get(s) else "–" for s in servers)]
                for (name, conc), cells in grouped.items()]
    return _table(["workload", "conc", *(f"{s} µs/op" for s in servers)], rows_out, 2)


def rss_table(peaks: Mapping[str, Mapping[str, int | None]]) -> str:
    """Peak RSS (MiB) of each server's process tree, one column per measuring point."""
    points = list(dict.fromkeys(p for by_point in peaks.values() for p in by_point))
    rows = [[server, *(f"{peak / 2**20:,.0f}" if (peak := by_point.get(p)) else "n/a" for p in points)]
            for server, by_point in peaks.items()]
    return _table(["server", *(f"peak RSS MiB ({p})" for p in points)], rows, 1)


def scale_table(agg: Mapping[Row, Mapping[str, Cell]], servers: Sequence[str], stored: int,
                scaled_name: Callable[[str, int], str]) -> str:
    """4 KiB PUT/GET ops/s with ``stored`` objects preloaded next to the empty-store figure, and their ratio."""
    rows = []
    for (name, conc), cells in agg.items():
        if name not in ("PUT 4KiB", "GET 4KiB"):
            continue
        full = agg.get((scaled_name(name, stored), conc), {})
        for s in servers:
            if s in cells and s in full:
                rows.append([name, str(conc), s, fmt_value(cells[s].value, "ops/s"),
                             fmt_value(full[s].value, "ops/s"), ratio(full[s].value, cells[s].value)])
    return _table(["workload", "conc", "server", "empty store ops/s", f"{stored:,} stored ops/s", "stored/empty"],
                  rows, 3)


def errors_summary(results: Mapping[str, Sequence[Result]]) -> list[str]:
    """One line per (server, workload) that had failed requests, with the first error seen."""
    lines = []
    for server, rows in results.items():
        for r in rows:
            if r.errors:
                lines.append(f"- {server} / {r.name} c={r.concurrency}: {r.errors} failed; first: {r.first_error}")
    return lines


def baseline_table(agg: Mapping[Row, Mapping[str, Cell]], current: str, baseline: str,
                   servers: Sequence[str]) -> str:
    """Per workload: this build against the baseline build, then each build against every other server measured in
    the same run (a before/after whose ratios do not depend on how fast the box was in another run)."""
    peers = [s for s in servers if s not in (current, baseline)]
    header = ["workload", "conc", "unit", current, baseline, f"{current}/{baseline}",
              *(f"{name}/{p}" for p in peers for name in (baseline, current))]
    rows = []
    for (name, conc), cells in agg.items():
        now, before = cells.get(current), cells.get(baseline)
        if now is None or before is None:
            continue
        rows.append([name, str(conc), now.unit, _cell_text(now), _cell_text(before), ratio(now.value, before.value),
                     *(ratio(c.value, cells[p].value if p in cells else None) for p in peers for c in (before, now))])
    return _table(header, rows, 3)


def pool_bars(large_mib: int) -> dict[str, float]:
    """Issue 19's bar for a 3-node pool on a 2-core box: the least pool/single throughput ratio per workload."""
    return {"PUT 4KiB": 0.4, "GET 4KiB": 0.6, f"PUT {large_mib} MiB": 0.5}


def pool_table(agg: Mapping[Row, Mapping[str, Cell]], single: str, pool: str, bars: Mapping[str, float]) -> str:
    """Every workload both ran: single and pool figures, pool/single, and where the issue sets one, the bar and
    whether the ratio meets it; then how long each stayed busy after the phase (a pool: replicas catching up)."""
    rows = []
    for (name, conc), cells in agg.items():
        one, many = cells.get(single), cells.get(pool)
        if one is None or many is None:
            continue
        bar = bars.get(name)
        verdict = "" if bar is None or not one.value else ("yes" if many.value / one.value >= bar else "**no**")
        rows.append([name, str(conc), one.unit, _cell_text(one), _cell_text(many), ratio(many.value, one.value),
                     "–" if bar is None else f">= {bar:.1f}x", verdict, f"{_drain_text(one)} / {_drain_text(many)}"])
    return _table(["workload", "conc", "unit", single, pool, "pool/single", "bar", "meets",
                   "busy after, s (single / pool)"], rows, 3)


def _drain_text(cell: Cell) -> str:
    return "–" if cell.drain is None else f"{cell.drain:.1f}"
