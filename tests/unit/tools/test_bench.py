"""tools/bench pieces that need no server binary: medians, ratios, tables, peer configs, the no-op app."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from pathlib import Path

import pytest
from falcon import testing

from s4.tools.bench import noop, report, workloads
from s4.tools.bench.__main__ import int_list, parse, peer_list
from s4.tools.bench.disk import sequential_write
from s4.tools.bench.rss import tree_cpu_seconds, tree_rss
from s4.tools.bench.runner import Options, Outcome, Target, build_steps, ordered, render
from s4.tools.bench.servers import Keys, Server, s4_version, seaweedfs_command, seaweedfs_identities
from s4.tools.bench.workloads import Result, listing, scale_name, timed_loop


def res(name: str, ops: int, seconds: float = 1.0, conc: int = 16, unit: str = "ops/s", moved: int = 0,
        errors: int = 0) -> Result:
    return Result(name, conc, ops, seconds, [float(i) for i in range(1, 101)], moved, unit, errors)


def test_median_and_ratio() -> None:
    assert report.median([3.0, 1.0, 2.0]) == 2.0
    assert report.median([1.0, 4.0]) == 2.5
    assert report.median([]) == 0.0
    assert report.ratio(300.0, 200.0) == "1.50x"
    assert report.ratio(1.0, 0.0) == "n/a" and report.ratio(None, 5.0) == "n/a"


def test_aggregate_takes_medians_per_server_and_row() -> None:
    results = {"S4": [res("PUT 4KiB", 100), res("PUT 4KiB", 300), res("PUT 4KiB", 200)],
               "SeaweedFS": [res("PUT 4KiB", 100), res("PUT 4KiB", 100, errors=2)]}
    agg = report.aggregate(results)
    cells = agg[("PUT 4KiB", 16)]
    assert cells["S4"].value == 200 and cells["S4"].rounds == 3
    assert cells["SeaweedFS"].value == 100 and cells["SeaweedFS"].errors == 2
    assert cells["S4"].p50 == 51.0 and cells["S4"].p99 == 100.0


def test_throughput_table_has_values_and_ratio_columns() -> None:
    results = {"S4": [res("GET 4KiB", 900), res("PUT 64 MiB", 1, 2.0, 1, "MiB/s", 256 * 2**20)],
               "SeaweedFS": [res("GET 4KiB", 300), res("PUT 64 MiB", 1, 1.0, 1, "MiB/s", 64 * 2**20)],
               "noop": [res("GET 4KiB", 1800, errors=1)]}
    table = report.throughput_table(report.aggregate(results), ["S4", "SeaweedFS", "noop"])
    lines = table.splitlines()
    assert lines[0] == "| workload | conc | unit | S4 | SeaweedFS | noop | S4/SeaweedFS | S4/noop |"
    assert lines[1] == "|---|---|---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| GET 4KiB | 16 | ops/s | 900 | 300 | 1,800 (1 err) | 3.00x | 0.50x |"
    assert lines[3] == "| PUT 64 MiB | 1 | MiB/s | 128.0 | 64.0 | – | 2.00x | n/a |"


def test_latency_rss_and_scale_tables() -> None:
    agg = report.aggregate({"S4": [res("PUT 4KiB", 100), res(scale_name("PUT 4KiB", 1000), 90)]})
    assert "| PUT 4KiB | 16 | 51.00 / 100.00 |" in report.latency_table(agg, ["S4"])
    scale = report.scale_table(agg, ["S4"], 1000, scale_name)
    assert scale.splitlines()[-1] == "| PUT 4KiB | 16 | S4 | 100 | 90 | 0.90x |"
    rss = report.rss_table({"S4": {"suite": 300 * 2**20}, "ext": {"suite": None}})
    assert rss.splitlines()[2:] == ["| S4 | 300 |", "| ext | n/a |"]


def test_render_puts_command_disk_and_tables_together(tmp_path: Path) -> None:
    opts = Options(keys=Keys("a", "b"), peers=["noop"], argv=["--peer", "noop"])
    targets = [Target(Server("S4", "http://x", command=[f"S4_DATA_DIR={tmp_path}/s4-data", "s4"]), "b",
                      [res("PUT 4KiB", 10), res("PUT 64 MiB", 1, 1.0, 1, "MiB/s", 64 * 2**20)]),
               Target(Server("noop", "http://y", small_only=True), "b", [res("PUT 4KiB", 20)])]
    outcome = Outcome(
        targets, [res("disk write+fsync", 1, 1.0, 1, "MiB/s", 128 * 2**20)], {"suite": {"S4": 2**20}},
        (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), "now")
    text = render(opts, outcome, str(tmp_path))
    assert "`python -m s4.tools.bench --peer noop`" in text
    assert "S4_DATA_DIR=<work>/s4-data" in text
    assert "median **128.0 MiB/s**" in text and "PUT 64 MiB as a share of it: S4 0.50x" in text
    assert "| PUT 4KiB | 16 | ops/s | 10 | 20 | 0.50x |" in text
    assert "| noop | n/a |" in text


def test_seaweedfs_identities_enable_sigv4_for_the_bench_keys() -> None:
    doc = seaweedfs_identities(Keys("AK", "SK"))
    (identity,) = doc["identities"]  # type: ignore[misc]
    assert identity["credentials"] == [{"accessKey": "AK", "secretKey": "SK"}]
    assert {"Admin", "Read", "Write", "List"} <= set(identity["actions"])


def test_seaweedfs_command_pins_every_port() -> None:
    cmd = seaweedfs_command("weed", Path("/d"), Path("/c.json"), [1, 2, 3, 4, 5, 6, 7, 8])
    assert cmd[:2] == ["weed", "server"]
    for flag in ("-master.port=1", "-master.port.grpc=2", "-volume.port=3", "-volume.port.grpc=4",
                 "-filer.port=5", "-filer.port.grpc=6", "-s3.port=7", "-s3.port.grpc=8", "-s3.config=/c.json",
                 "-dir=/d", "-s3", "-filer"):
        assert flag in cmd


def test_cli_parsing() -> None:
    assert int_list("1,16,64") == [1, 16, 64] and int_list("10000,1_000_000") == [10_000, 1_000_000]
    assert int_list("0") == []
    assert peer_list("all") == ["seaweedfs", "rclone", "noop"]
    assert peer_list("noop,SeaweedFS,noop") == ["noop", "seaweedfs"]
    with pytest.raises(Exception, match="unknown peer minio"):
        peer_list("minio")
    opts, markdown = parse(["--peer", "rclone", "--s4-workers", "2", "--list-keys", "10000,1000000",
                            "--markdown", "out.md"])
    assert opts.peers == ["rclone"] and opts.s4_workers == 2 and opts.rounds == 2
    assert opts.list_keys == [10_000, 1_000_000] and markdown == "out.md" and opts.endpoint is None


def test_rounds_alternate_and_small_only_steps() -> None:
    a, b, c = (Target(Server(n, "http://x"), "b") for n in "abc")
    assert [t.server.name for t in ordered([a, b, c], 0)] == ["a", "b", "c"]
    assert [t.server.name for t in ordered([a, b, c], 1)] == ["c", "b", "a"]
    steps = build_steps(Options(keys=Keys("a", "b"), concurrency=[1, 64], list_keys=[100]))
    assert [(s.label, s.small) for s in steps] == [("4 KiB c=1", True), ("4 KiB c=64", True), ("64 MiB", False),
                                                  ("multipart 256 MiB", False), ("list 100", False)]


def test_timed_loop_counts_errors_without_stopping() -> None:
    async def op(i: int) -> int:
        if i % 2:
            raise RuntimeError("boom")
        return 10

    r = asyncio.run(timed_loop("x", 2, 60, op, max_ops=10))
    assert (r.ops, r.errors, r.bytes_moved) == (5, 5, 50)
    assert "boom" in r.first_error


def test_tree_rss_sums_descendants_only() -> None:
    table = {1: (0, 100), 2: (1, 10), 3: (2, 1), 4: (0, 1000)}
    assert tree_rss([1, 2, 4, 99], table) == {1: 111, 2: 11, 4: 1000, 99: 0}


def test_disk_probe_writes_and_removes_its_file(tmp_path: Path) -> None:
    r = sequential_write(tmp_path, 2, chunk=2**20)
    assert r.bytes_moved == 2 * 2**20 and r.unit == "MiB/s" and r.value > 0
    assert list(tmp_path.iterdir()) == []


def test_noop_app_answers_like_a_tiny_s3() -> None:
    client = testing.TestClient(noop.build_app())
    put = client.simulate_put("/b/k", body=b"x" * 4096)
    assert put.status_code == 200 and put.headers["etag"] == noop.ETAG
    get = client.simulate_get("/b/k")
    assert get.status_code == 200 and len(get.content) == 4096
    assert client.simulate_head("/b/k").headers["content-length"] == "4096"
    assert client.simulate_delete("/b/k").status_code == 204


class FakeLister:
    """Answers ListObjectsV2 with ``pages`` pages of ``per_page`` keys; a request without a token starts over."""

    def __init__(self, pages: int, per_page: int) -> None:
        self.pages, self.per_page, self.calls = pages, per_page, 0

    async def request(self, method: str, path: str, **kw: object) -> tuple[int, bytes, dict[str, str]]:
        query = kw.get("query") or {}
        self.calls = self.calls + 1 if "continuation-token" in query else 1  # type: ignore[operator]
        await asyncio.sleep(0.001)
        keys = b"".join(b"<Contents><Key>k</Key></Contents>" for _ in range(self.per_page))
        more = b"<NextContinuationToken>t%d</NextContinuationToken>" % self.calls if self.calls < self.pages else b""
        return 200, b"<ListBucketResult>" + keys + more + b"</ListBucketResult>", {}


def test_listing_follows_continuation_tokens_and_checks_the_count() -> None:
    ok = asyncio.run(listing(FakeLister(3, 1000), "b", "p/", 3000))  # type: ignore[arg-type]
    assert (ok.ops, len(ok.latencies_ms), ok.errors, ok.unit) == (3000, 3, 0, "keys/s")
    short = asyncio.run(listing(FakeLister(2, 1000), "b", "p/", 3000))  # type: ignore[arg-type]
    assert short.errors == 1 and "listed 2000 keys, expected 3000" in short.first_error


def test_listing_repeats_whole_passes_until_its_minimum_time() -> None:
    result = asyncio.run(listing(FakeLister(3, 1000), "b", "p/", 3000, min_seconds=0.05))  # type: ignore[arg-type]
    passes, rest = divmod(result.ops, 3000)
    assert passes >= 2 and rest == 0 and result.errors == 0
    assert len(result.latencies_ms) == 3 * passes and result.seconds >= 0.05


def test_s4_version_names_the_installed_distribution() -> None:
    """A non-editable install has no git checkout to describe; the report still says which S4 ran."""
    assert s4_version().split()[0] == importlib.metadata.version("s4")


def test_server_cpu_per_operation_is_measured_around_each_timed_phase() -> None:
    readings = iter([10.0, 10.5])  # the server's CPU seconds before and after the phase

    async def run() -> Result:
        token = workloads.SERVER_CPU.set(lambda: next(readings))
        try:
            return await timed_loop("GET 4KiB", 2, 60, lambda i: asyncio.sleep(0, 1), max_ops=1000)
        finally:
            workloads.SERVER_CPU.reset(token)

    r = asyncio.run(run())
    assert r.server_cpu_s == 0.5 and r.cpu_us_per_op == 500.0
    unmeasured = asyncio.run(timed_loop("GET 4KiB", 2, 60, lambda i: asyncio.sleep(0, 1), max_ops=3))
    assert unmeasured.cpu_us_per_op is None
    table = report.cpu_table({"S4": [r, r], "peer": [unmeasured]}, ["S4", "peer"])
    assert table.splitlines()[-1] == "| GET 4KiB | 2 | 500 | – |"


def test_tree_cpu_seconds_counts_this_process_and_its_children() -> None:
    me = tree_cpu_seconds(os.getpid())
    assert me is not None and me > 0
    assert tree_cpu_seconds(2**22 + 12345) is None  # no such process


def test_baseline_table_sets_both_builds_against_each_peer_of_the_run() -> None:
    results = {"S4": [res("GET 4KiB", 900), res("PUT 4KiB", 300)],
               "S4 baseline": [res("GET 4KiB", 1000), res("PUT 4KiB", 200)],
               "SeaweedFS": [res("GET 4KiB", 500), res("PUT 4KiB", 400)]}
    names = ["S4", "S4 baseline", "SeaweedFS"]
    lines = report.baseline_table(report.aggregate(results), "S4", "S4 baseline", names).splitlines()
    assert lines[0] == ("| workload | conc | unit | S4 | S4 baseline | S4/S4 baseline | S4 baseline/SeaweedFS "
                        "| S4/SeaweedFS |")
    assert lines[2] == "| GET 4KiB | 16 | ops/s | 900 | 1,000 | 0.90x | 2.00x | 1.80x |"
    assert lines[3] == "| PUT 4KiB | 16 | ops/s | 300 | 200 | 1.50x | 0.50x | 0.75x |"


def test_baseline_option_starts_a_second_s4_and_the_report_compares_them(tmp_path: Path) -> None:
    opts, _ = parse(["--baseline", "/opt/before/bin/python", "--peer", "noop"])
    assert opts.baseline == "/opt/before/bin/python" and parse([])[0].baseline is None
    targets = [Target(Server("S4", "http://x"), "b", [res("GET 4KiB", 900)]),
               Target(Server("S4 baseline", "http://z"), "b", [res("GET 4KiB", 600)]),
               Target(Server("noop", "http://y", small_only=True), "b", [res("GET 4KiB", 300)])]
    out = render(opts, Outcome(targets, [], {}, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "now"), str(tmp_path))
    assert "### S4 against its baseline" in out
    assert "| GET 4KiB | 16 | ops/s | 900 | 600 | 1.50x | 2.00x | 3.00x |" in out


def test_s4_version_asks_the_interpreter_it_is_given() -> None:
    assert importlib.metadata.version("s4") not in s4_version("/nonexistent/python")  # nothing to ask
    assert importlib.metadata.version("s4") in s4_version()
