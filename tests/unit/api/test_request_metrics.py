"""RequestMetrics: the same series as prometheus_client's instruments, in one process and across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from s4.api.request_metrics import RequestMetrics

OBSERVATIONS = [("GetObject", 200, 0.0004, 0, 4096), ("GetObject", 404, 0.003, 0, 120),
                ("PutObject", 200, 0.02, 4096, 0), ("PutObject", 200, 75.0, 10, 0), ("GetObject", 200, 0.001, 0, 1)]

# The instruments the series replaced, fed the same observations in another directory: the multi-process
# collector must render both directories identically (this guards the file format and keys we write).
SCRIPT = textwrap.dedent("""
    import json, os, sys
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
    from prometheus_client.multiprocess import MultiProcessCollector
    from s4.api.request_metrics import LATENCY_BUCKETS, RequestMetrics

    ours, theirs = sys.argv[1], sys.argv[2]
    observations = json.loads(sys.argv[3])
    recorder = RequestMetrics(ours)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = theirs
    values.ValueClass = values.get_value_class()
    requests = Counter("s4_requests", "Requests by operation and status", ["operation", "status"], registry=None)
    latency = Histogram("s4_request_duration_seconds", "Request latency by operation", ["operation"],
                        buckets=LATENCY_BUCKETS, registry=None)
    bytes_in = Counter("s4_bytes_received", "Request body bytes", registry=None)
    bytes_out = Counter("s4_bytes_sent", "Response body bytes", registry=None)
    for operation, status, seconds, got, sent in observations:
        recorder.observe(operation, status, seconds, got, sent)
        requests.labels(operation, str(status)).inc()
        latency.labels(operation).observe(seconds)
        bytes_in.inc(got)
        bytes_out.inc(sent)
    for directory in (ours, theirs):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        sys.stdout.write(generate_latest(registry).decode() + "=====\\n")
""")


def test_files_render_exactly_as_the_instruments_did(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ours), str(theirs), json.dumps(OBSERVATIONS)],
                         capture_output=True, text=True, check=True).stdout
    rendered_ours, rendered_theirs, _ = out.split("=====\n")
    assert 's4_requests_total{operation="PutObject",status="200"} 2.0' in rendered_ours
    assert 's4_request_duration_seconds_bucket{le="+Inf",operation="PutObject"} 2.0' in rendered_ours
    assert _families(rendered_ours) == _families(rendered_theirs)  # the order of families follows file order


def _families(text: str) -> dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    return {family.name: (family.type, family.documentation,
                          sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples))
            for family in text_string_to_metric_families(text)}


def test_one_process_collects_its_own_numbers() -> None:
    recorder = RequestMetrics()
    for observation in OBSERVATIONS:
        recorder.observe(*observation)
    registry = CollectorRegistry()
    registry.register(recorder)
    assert registry.get_sample_value("s4_requests_total", {"operation": "GetObject", "status": "200"}) == 2
    assert registry.get_sample_value("s4_requests_total", {"operation": "GetObject", "status": "404"}) == 1
    bucket = {"operation": "GetObject", "le": "0.001"}
    assert registry.get_sample_value("s4_request_duration_seconds_bucket", bucket) == 2  # 0.0004 and 0.001
    assert registry.get_sample_value("s4_request_duration_seconds_count", {"operation": "PutObject"}) == 2
    assert registry.get_sample_value("s4_request_duration_seconds_sum", {"operation": "PutObject"}) == 75.02
    assert registry.get_sample_value("s4_bytes_sent_total") == 4096 + 120 + 1
    assert registry.get_sample_value("s4_bytes_received_total") == 4106
    assert b"s4_requests_total" in generate_latest(registry)


FORK = textwrap.dedent("""
    import os, sys
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from s4.api.request_metrics import RequestMetrics

    recorder = RequestMetrics(sys.argv[1])
    recorder.observe("GetObject", 200, 0.001, 0, 10)
    child = os.fork()
    if child == 0:
        recorder.observe("GetObject", 200, 0.001, 0, 5)  # the child's own files, counting from zero
        os._exit(0)
    os.waitpid(child, 0)
    recorder.observe("GetObject", 200, 0.001, 0, 1)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=sys.argv[1])
    print(registry.get_sample_value("s4_requests_total", {"operation": "GetObject", "status": "200"}),
          registry.get_sample_value("s4_bytes_sent_total"), os.getpid(), child)
""")


def test_a_forked_child_counts_in_files_of_its_own(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", FORK, str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout
    requests, sent, parent, child = out.split()
    assert (float(requests), float(sent)) == (3.0, 16.0)
    names = sorted(p.name for p in tmp_path.glob("*.db"))
    assert names == sorted(f"{kind}_s4requests_{pid}.db" for kind in ("counter", "histogram")
                           for pid in (parent, child))
