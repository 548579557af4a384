"""tools/bench --cluster pieces that need no server: the pool's environment, its liveness check, the pool/single
table against issue 19's bar, CPU and RSS summed over several process trees, the option and the report section."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from s4.tools.bench import report, workloads
from s4.tools.bench.__main__ import parse
from s4.tools.bench.rss import RssSampler, tree_cpu_seconds, trees_cpu_seconds, wait_idle
from s4.tools.bench.runner import Options, Outcome, Target, render
from s4.tools.bench.servers import POOL_CLUSTER, Keys, Server, all_alive, pool_env
from s4.tools.bench.workloads import Result

GRPC = ["127.0.0.1:7001", "127.0.0.2:7002", "127.0.0.3:7003"]
HTTP = ["127.0.0.1:8001", "127.0.0.2:8002", "127.0.0.3:8003"]


def res(name: str, value: float, conc: int = 16, unit: str = "ops/s", drain: float | None = None) -> Result:
    moved = int(value * 2**20) if unit == "MiB/s" else 0
    return Result(name, conc, int(value) if unit == "ops/s" else 1, 1.0, [1.0], moved, unit, drain_s=drain)


def test_pool_env_gives_each_node_its_own_addresses_and_the_same_pool() -> None:
    envs = [pool_env(GRPC, HTTP, i, 2, "pw") for i in range(3)]
    for i, env in enumerate(envs):
        assert env["S4_MODE"] == "cluster" and env["S4_CLUSTER_NAME"] == POOL_CLUSTER
        assert env["S4_NODE_ID"] == f"node-{i + 1}"
        assert env["S4_NODE_GRPC_ADDR"] == GRPC[i]
        assert env["S4_NODE_HTTP_ADDR"] == env["S4_BIND"] == HTTP[i]
        assert env["S4_WORKERS"] == "2" and env["S4_ROOT_PASSWORD"] == "pw" and env["S4_JWT_SECRET"]
    shared = ("S4_SEEDS", "S4_POOL_NAME", "S4_POOL_NODES", "S4_CLUSTER_NAME", "S4_JWT_SECRET")
    assert all(env[k] == envs[0][k] for env in envs for k in shared)
    assert envs[0]["S4_SEEDS"] == ",".join(GRPC)
    assert envs[0]["S4_POOL_NODES"] == "node-1:127.0.0.1:7001,node-2:127.0.0.2:7002,node-3:127.0.0.3:7003"
    assert "S4_WORKERS" not in pool_env(GRPC, HTTP, 0, None, "pw")  # the server's default then


def test_all_alive_needs_every_node_of_the_pool_alive() -> None:
    alive = {"nodes": [{"id": f"node-{i}", "state": "alive"} for i in (1, 2, 3)]}
    assert all_alive(alive, 3)
    assert not all_alive(alive, 4)  # one node not known yet
    suspect = {"nodes": [*alive["nodes"][:2], {"id": "node-3", "state": "suspect"}]}
    assert not all_alive(suspect, 3)
    assert not all_alive({}, 3) and not all_alive({"nodes": "x"}, 3)


def test_pool_table_ratios_and_verdicts_against_the_bar() -> None:
    results = {"S4": [res("PUT 4KiB", 1000), res("GET 4KiB", 1000), res("HEAD 4KiB", 1000),
                      res("PUT 64 MiB", 100.0, 1, "MiB/s")],
               "pool": [res("PUT 4KiB", 400, drain=2.5), res("GET 4KiB", 500), res("HEAD 4KiB", 900),
                        res("PUT 64 MiB", 60.0, 1, "MiB/s")]}
    lines = report.pool_table(report.aggregate(results), "S4", "pool", report.pool_bars(64)).splitlines()
    assert lines[0] == ("| workload | conc | unit | S4 | pool | pool/single | bar | meets | busy after, s (single / "
                        "pool) |")
    # the bar is inclusive; the pool kept replicating 2.5 s after its last answer
    assert lines[2] == "| PUT 4KiB | 16 | ops/s | 1,000 | 400 | 0.40x | >= 0.4x | yes | – / 2.5 |"
    assert lines[3] == "| GET 4KiB | 16 | ops/s | 1,000 | 500 | 0.50x | >= 0.6x | **no** | – / – |"
    assert lines[4] == "| HEAD 4KiB | 16 | ops/s | 1,000 | 900 | 0.90x | – |  | – / – |"  # no bar set for it
    assert lines[5] == "| PUT 64 MiB | 1 | MiB/s | 100.0 | 60.0 | 0.60x | >= 0.5x | yes | – / – |"


def test_pool_bars_follow_the_large_object_size() -> None:
    assert report.pool_bars(16) == {"PUT 4KiB": 0.4, "GET 4KiB": 0.6, "PUT 16 MiB": 0.5}


def test_cpu_of_several_trees_is_their_sum_and_none_when_one_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        both = trees_cpu_seconds([os.getpid(), child.pid])
        assert both is not None
        assert trees_cpu_seconds([os.getpid(), os.getpid()]) is not None  # a process met twice counts once
        assert trees_cpu_seconds([]) is None
        assert trees_cpu_seconds([os.getpid(), 2**22 + 12345]) is None  # a node that died: not measured
        assert tree_cpu_seconds(child.pid) is not None
    finally:
        child.communicate(b"")


def test_rss_sampler_sums_the_trees_of_one_watched_name() -> None:
    sampler = RssSampler()
    sampler.watch("one", os.getpid())
    sampler.watch("both", os.getpid(), os.getpid())  # same tree twice: twice its RSS (a sum, not a max)
    sampler.sample()  # one pass over /proc serves both names
    assert sampler._peaks["one"] > 0 and sampler._peaks["both"] == 2 * sampler._peaks["one"]
    assert set(sampler.peaks()) == {"one", "both"}


def test_server_pids_and_stop_cover_every_node() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
             for _ in range(3)]
    server = Server("pool", "http://x", procs[0], members=procs[1:], nodes=["http://a", "http://b", "http://c"])
    assert server.pids == [p.pid for p in procs]
    server.stop(timeout=10)
    assert all(p.poll() is not None for p in procs)
    assert Server("S4", "http://x").pids == []


def test_cluster_option_and_its_report_section(tmp_path: Path) -> None:
    opts, _ = parse(["--cluster", "3", "--large-mib", "64"])
    assert opts.cluster == 3
    assert parse([])[0].cluster == 0
    opts = Options(keys=Keys("a", "b"), cluster=3, argv=["--cluster", "3"])
    targets = [Target(Server("S4", "http://x"), "b", [res("PUT 4KiB", 1000), res("GET 4KiB", 1000)]),
               Target(Server("S4 pool (3 nodes)", "http://y", nodes=["http://y", "http://z", "http://w"]), "b",
                      [res("PUT 4KiB", 300), res("GET 4KiB", 900)])]
    outcome = Outcome(targets, [], {"suite": {"S4": 2**20, "S4 pool (3 nodes)": 3 * 2**20}}, (1.0, 1.0, 1.0),
                      (1.0, 1.0, 1.0), "now")
    text = render(opts, outcome, str(tmp_path))
    assert "### S4 pool (3 nodes) against one node" in text
    assert "| PUT 4KiB | 16 | ops/s | 1,000 | 300 | 0.30x | >= 0.4x | **no** |" in text
    assert "| GET 4KiB | 16 | ops/s | 1,000 | 900 | 0.90x | >= 0.6x | yes |" in text
    single_only = Outcome(targets[:1], [], {"suite": {"S4": 2**20}}, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), "now")
    assert "against one node" not in render(Options(keys=Keys("a", "b")), single_only, str(tmp_path))


def test_wait_idle_returns_at_once_for_an_idle_tree_and_none_for_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        # a child blocked on its stdin uses no CPU: idle within the first window
        assert asyncio.run(wait_idle([child.pid], window=0.05, idle_cores=0.5, cap=5.0)) == 0.0
    finally:
        child.communicate(b"")
    assert asyncio.run(wait_idle([2**22 + 12345], window=0.05)) is None


def test_wait_idle_stops_at_its_cap_for_a_tree_that_stays_busy() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # never below 0 cores: only the cap (a few windows) ends the wait, the windows before the last one busy
        busy = asyncio.run(wait_idle([child.pid], window=0.05, idle_cores=0.0, cap=0.12))
        assert busy is not None and busy > 0
    finally:
        child.kill()
        child.wait()


def test_timed_loop_waits_for_the_drain_and_records_it() -> None:
    calls: list[str] = []

    async def drain() -> float:
        calls.append("drain")
        return 1.5

    async def op(i: int) -> int:
        calls.append("op")
        return 1

    async def main() -> Result:
        token = workloads.SERVER_DRAIN.set(drain)
        try:
            return await workloads.timed_loop("PUT 4KiB", 1, 10.0, op, max_ops=3)
        finally:
            workloads.SERVER_DRAIN.reset(token)

    result = asyncio.run(main())
    assert calls == ["op", "op", "op", "drain"] and result.drain_s == 1.5
    assert report.aggregate({"S4": [result]})[("PUT 4KiB", 1)]["S4"].drain == 1.5
    assert asyncio.run(workloads.timed_loop("x", 1, 10.0, op, max_ops=1)).drain_s is None  # no drain set


def test_large_bodies_share_no_chunk_between_puts() -> None:
    """S4 deduplicates 4 MiB chunks: a large PUT of the same body again (or the same body but its tail) stored
    nothing new, so the 64 MiB PUT figure measured dedup, and a pool's replicas fetched no blob."""
    size, chunk = 9 * workloads.PIECE + 123, 4 * 2**20
    body = bytearray(os.urandom(size))
    first = bytes(workloads.stamp_pieces(body, 0))
    second = bytes(workloads.stamp_pieces(body, 1))
    assert len(first) == len(second) == size
    for start in range(0, size, chunk):
        assert first[start:start + chunk] != second[start:start + chunk]
    assert all(first[o + 16:o + workloads.PIECE] == second[o + 16:o + workloads.PIECE] for o in range(0, size,
                                                                                                   workloads.PIECE))
    tiny = workloads.stamp_pieces(bytearray(b"abc"), 5)  # shorter than the tag: truncated, length kept
    assert len(tiny) == 3
