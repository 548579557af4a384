"""Issue 20, scrub healing with real processes: a flipped byte in one replica's blob never reaches a client, and the
node heals it from a replica (cluster/scrub_heal.py).

Three s4-server processes on 127.0.0.1/.2/.3. Three objects written through node-1 reach every node; then one byte
of each object's bytes is flipped in node-3's volume files, behind its back (bit rot). Through node-3 (the damaged
one) and through the others, GET, Range GET and HEAD of the first two answer exactly the written bytes: node-3's
reads fail over (fetch a verified copy from a replica, repoint its index, read the healed copy; through an HTTP
worker with S4_WORKERS=2, via the supervisor). The third object is not read there: the scrubber, triggered through
the admin API, finds it bad and heals it. Then node-3's data directory alone (S4_MODE=single, its own process)
passes ``s4-journal verify`` (the bad records are unreferenced bytes now), serves every object byte-exact, and its
scrubber finds nothing bad and lists no damaged blob. Every wait is a deadline poll.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from helpers.admin_api import admin_call
from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import JWT_SECRET, ROOT_PASSWORD, make_pool, token, wait_for
from test_cluster_catch_up import BUCKET, holds

SMALL = 100 * 1024  # read whole inline by the API (engine.read_small)
STREAMED = 1024 * 1024 + 4321  # streamed piece by piece (engine.read_object)


def flip_everywhere(data_dir: Path, body: bytes, at: int) -> int:
    """Flip byte ``at`` of ``body`` wherever its bytes lie in the node's volume files; returns how many copies."""
    marker = body[:64]
    flipped = 0
    for path in sorted((data_dir / "volumes").glob("*.vol")):
        content = path.read_bytes()
        start = content.find(marker)
        while start != -1:
            with open(path, "r+b") as f:
                f.seek(start + at)
                f.write(bytes([content[start + at] ^ 0x01]))
            flipped += 1
            start = content.find(marker, start + 1)
    return flipped


def metric(node: ServerProcess, name: str) -> float:
    text = requests.get(f"{node.endpoint}/metrics", timeout=30).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


@pytest.mark.parametrize("workers", [1, 2])  # the node in one process; HTTP workers reading through the supervisor
def test_issue20_a_flipped_byte_in_one_replica_reads_stay_correct_and_the_scrubber_heals_it(
        tmp_path: Path, nodes: list[ServerProcess], workers: int) -> None:
    pool = make_pool(tmp_path, workers=workers)
    for node in pool:
        nodes.append(node.start())
    clients = [make_client(n.endpoint) for n in pool]
    objects = {"read-small": os.urandom(SMALL), "read-streamed": os.urandom(STREAMED),
               "scrubbed": os.urandom(SMALL + 1)}
    clients[0].create_bucket(Bucket=BUCKET)
    for key, data in objects.items():
        clients[0].put_object(Bucket=BUCKET, Key=key, Body=data)
    for i in (1, 2):
        wait_for(f"node-{i + 1} holds every object", lambda i=i: holds(clients[i], objects), pool)  # type: ignore[misc]

    for key, data in objects.items():  # bit rot on node-3 only
        assert flip_everywhere(pool[2].data_dir, data, len(data) // 2) >= 1, key

    # Reads through the damaged node, then the others: the first read of each object on node-3 meets the flipped
    # byte (a range read, served inline, for one; a whole streamed GET for the other) and fails over
    for key, range_first in (("read-small", True), ("read-streamed", False)):
        data = objects[key]
        lo, hi = len(data) // 2 - 10, len(data) // 2 + 10
        whole, part = (None, data), (f"bytes={lo}-{hi}", data[lo:hi + 1])
        for client in (clients[2], clients[0], clients[1]):
            for rng, expected in ((part, whole) if range_first else (whole, part)):
                got = client.get_object(Bucket=BUCKET, Key=key, **({"Range": rng} if rng else {}))["Body"].read()
                assert got == expected, (key, rng)
            head = client.head_object(Bucket=BUCKET, Key=key)
            assert head["ContentLength"] == len(data), key
    assert metric(pool[2], "s4_cluster_scrub_read_failovers_total") == 2
    assert metric(pool[2], "s4_cluster_scrub_blobs_healed_total") == 2

    # The scrubber heals what no read touched
    tok = token(pool[2])
    report = admin_call(pool[2], "POST", "/api/admin/scrubber/run", tok)
    assert report["done"].get("bad_blobs") == 1 and report["done"].get("healed") == 1, report
    assert [d["healed"] for d in report["details"]] == [True], report
    assert metric(pool[2], "s4_cluster_scrub_blobs_healed_total") == 3
    assert metric(pool[2], "s4_cluster_scrub_heal_failures_total") == 0
    assert metric(pool[2], "s4_scrub_last_full_pass_timestamp_seconds") > 0
    status = admin_call(pool[2], "GET", "/api/admin/scrubber/status", tok)
    assert status["damaged_blobs"] == [], status
    repair = admin_call(pool[2], "GET", "/api/admin/cluster/repair-status", tok)["scrub"]  # the operator's summary
    assert repair["healing"] is True and repair["last_full_pass_ms"] is not None, repair
    assert (repair["totals"]["blobs_healed"], repair["totals"]["heal_failures"]) == (3, 0), repair
    again = admin_call(pool[2], "POST", "/api/admin/scrubber/run", tok)
    assert again["done"].get("bad_blobs", 0) == 0, again
    for client in clients:
        assert holds(client, objects)

    # Node-3's data directory alone: healed for good, nothing referenced is bad
    assert pool[2].stop(timeout_s=20) == 0, pool[2].log()[-4000:]
    verify = subprocess.run([sys.executable, "-m", "s4.tools.journal_cli", "verify", "--data-dir",
                             str(pool[2].data_dir)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    alone = ServerProcess(pool[2].data_dir, env={"S4_MODE": "single", "S4_WORKERS": "1",
                                                 "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET})
    nodes.append(alone.start())
    assert holds(make_client(alone.endpoint), objects)
    tok = token(alone)
    assert admin_call(alone, "POST", "/api/admin/scrubber/run", tok)["done"].get("bad_blobs", 0) == 0
    assert admin_call(alone, "GET", "/api/admin/scrubber/status", tok)["damaged_blobs"] == []
