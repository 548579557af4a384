"""Issue 18 item 8: S4_SELECT_MAX_MEMORY bounds the whole query, records over 1 MiB are OverMaxRecordSize, the
node budget holds under concurrency, and a CTE named like a catalog view is refused — against a real server.

Memory is asserted, never time: the server's own high-water mark (VmHWM: exact, whatever happened between two
samples) and the sampled peak of its whole process tree (the query processes included) stay below the limit plus
a fixed allowance, with queries that took the old in-process runner to several GB.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EventStreamError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess
from test_select_api import _big_csv, make_client, select, signed_post

from s4.engine.select import sandbox
from s4.tools import bench_select

LIMIT = 64 * 1024**2
#: Allowed growth of the server's process tree during one query: the query's memory, its process's runtime and
#: 300 MB of slack (the issue's "limit + 300 MB"). The old runner grew by 1.4 GB (repeat) and ~1 GB (the bomb).
TREE_BOUND = LIMIT + sandbox.RUNTIME_RSS_BYTES + 300 * 1024**2
#: The HTTP process itself only relays bytes: its high-water mark may not pass its idle size by more than this.
SERVER_BOUND = LIMIT + 300 * 1024**2
CSV = {"CSV": {"FileHeaderInfo": "USE"}}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # one HTTP process whose share of the node budget is exactly one query
    proc = ServerProcess(tmp_path_factory.mktemp("s4-issue18-select") / "data",
                         env={"S4_SELECT_MAX_MEMORY": "64MB", "S4_SELECT_NODE_MEMORY": "64MB", "S4_WORKERS": "1",
                              "S4_SELECT_TIMEOUT": "30", "S4_COMPACTION_ENABLED": "false"}).start()
    s3 = make_client(proc.endpoint)
    s3.create_bucket(Bucket="lim")
    s3.put_object(Bucket="lim", Key="small.csv", Body=b"k,v\na,1\nb,2\n")
    s3.put_object(Bucket="lim", Key="rows.csv", Body=b"k,v\n" + b"".join(b"key%d,%d\n" % (i, i) for i in range(5000)))
    yield proc
    proc.stop()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _status_while_alive(pid: int, field: str) -> int | None:
    """``_status``, or None once the process has exited (a zombie has no memory fields)."""
    try:
        return _status(pid, field)
    except (AssertionError, FileNotFoundError, ProcessLookupError):
        return None


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", exc))


def _bounded_select(proc: ServerProcess, key: str, expression: str, inp: dict[str, Any] | None = None) -> str:
    """Run a query that must fail; returns its error code after checking the server's memory stayed bounded."""
    pid = proc.proc.pid  # type: ignore[union-attr]
    s3 = make_client(proc.endpoint)
    idle, _ = bench_select.idle_rss(pid, seconds=0.5)
    with bench_select.RssSampler(pid, interval_s=0.01) as sampler:
        with pytest.raises((ClientError, EventStreamError)) as info:
            select(s3, "lim", key, expression, inp or CSV)
    assert sampler.peak - idle < TREE_BOUND, (idle, sampler.peak)
    assert _status(pid, "VmHWM") - idle < SERVER_BOUND, (idle, _status(pid, "VmHWM"))
    assert requests.get(proc.endpoint + "/health", timeout=5).status_code == 200
    return _error_code(info.value)


def test_issue18_repeat_huge_is_resource_exhausted_with_bounded_memory(limited: ServerProcess) -> None:
    # DuckDB's memory_limit does not cover scalar strings: this was 4.2 GB in the HTTP process
    assert _bounded_select(limited, "small.csv", "SELECT repeat('x', 700000000) AS s FROM s3object") \
        == "ResourceExhausted"


def test_issue18_many_generated_strings_are_bounded_too(limited: ServerProcess) -> None:
    # each value under 1 MiB, but 2,048 of them per DuckDB vector: ~2 GB outside DuckDB's accounting
    code = _bounded_select(limited, "rows.csv", "SELECT repeat('x', 1000000) AS s FROM s3object")
    assert code == "ResourceExhausted"


def _gzip_bomb(inflated: int) -> bytes:
    """One gzip member of ``inflated`` zero bytes (~1,000:1), compressed a block at a time."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(16 * 1024**2)
    return b"".join([encoder.compress(block) for _ in range(inflated // len(block))] + [encoder.flush()])


def test_issue18_gzip_bomb_stops_early_with_bounded_memory(limited: ServerProcess) -> None:
    bomb = _gzip_bomb(512 * 1024**2)
    assert len(bomb) < 1024**2  # a sub-megabyte object that inflates to 512 MiB in one piece
    make_client(limited.endpoint).put_object(Bucket="lim", Key="bomb.csv.gz", Body=bomb)
    code = _bounded_select(limited, "bomb.csv.gz", "SELECT COUNT(*) FROM s3object",
                           {"CSV": {"FileHeaderInfo": "NONE"}, "CompressionType": "GZIP"})
    assert code == "OverMaxRecordSize"  # the first "record" has no end: it passes 1 MiB and the query stops


def test_issue18_records_over_one_mib_are_over_max_record_size(limited: ServerProcess) -> None:
    s3 = make_client(limited.endpoint)
    with pytest.raises((ClientError, EventStreamError)) as info:  # a result record
        select(s3, "lim", "small.csv", "SELECT repeat('x', 1100000) AS s FROM s3object", CSV)
    assert _error_code(info.value) == "OverMaxRecordSize"
    rows, _ = select(s3, "lim", "small.csv", "SELECT length(repeat('x', 1000000)) AS n FROM s3object", CSV)
    assert rows == b"1000000\n1000000\n"  # just under the limit: fine
    s3.put_object(Bucket="lim", Key="wide.csv", Body=b"k,v\na," + b"x" * (2 * 1024**2) + b"\n")
    with pytest.raises((ClientError, EventStreamError)) as info:  # an input record
        select(s3, "lim", "wide.csv", "SELECT k FROM s3object", CSV)
    assert _error_code(info.value) == "OverMaxRecordSize"
    s3.put_object(Bucket="lim", Key="wide.jsonl", Body=b'{"a": "' + b"x" * (2 * 1024**2) + b'"}\n')
    with pytest.raises((ClientError, EventStreamError)) as info:
        select(s3, "lim", "wide.jsonl", "SELECT * FROM s3object", {"JSON": {"Type": "LINES"}})
    assert _error_code(info.value) == "OverMaxRecordSize"
    resp = signed_post(f"{limited.endpoint}/lim?sql", json.dumps(
        {"sql": "SELECT repeat(k, 1100000) AS s FROM 'small.csv'"}).encode(), "application/json")
    assert resp.status_code == 400 and resp.json()["code"] == "OverMaxRecordSize"


def _children(pid: int) -> list[int]:
    """The server's child processes: in single-process mode, exactly its running query processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _address_space_limit(pid: int) -> int | None:
    """RLIMIT_AS of a process: set in a query process when its job arrives; None (unlimited) for a spare."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise AssertionError(f"no address-space limit line for {pid}")


def _running_queries(pid: int) -> list[int]:
    """The server's query processes that run a query (single-process mode): those with their memory limit set."""
    found = []
    for child in _children(pid):
        try:
            if _address_space_limit(child) is not None:
                found.append(child)
        except OSError:  # exited meanwhile
            continue
    return found


def _spare(pid: int) -> int:
    """The server's one idle query process (the warm spare), once the queries before have ended."""
    deadline = time.monotonic() + 30
    while True:
        children = _children(pid)
        if len(children) == 1 and not _running_queries(pid):
            return children[0]
        assert time.monotonic() < deadline, f"no single spare query process: {children}"
        time.sleep(0.02)


def _post(session: requests.Session, url: str, body: bytes, content_type: str) -> requests.Response:
    """A signed POST whose body is left unread (stream=True): the query keeps running until the response closes.
    Through a session the caller closes after the response, so the streamed connection is closed too."""
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": content_type})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return session.post(url, data=body, headers=dict(request.headers), timeout=30, stream=True)


def test_issue18_concurrent_queries_stay_within_the_node_budget(limited: ServerProcess) -> None:
    pid = limited.proc.pid  # type: ignore[union-attr]
    s3 = make_client(limited.endpoint)
    s3.put_object(Bucket="lim", Key="big.csv", Body=_big_csv(200_000))
    slow = b"""<SelectObjectContentRequest><Expression>WITH t AS MATERIALIZED (SELECT k FROM s3object)
SELECT COUNT(*) FROM t a, t b WHERE a.k &lt;&gt; b.k</Expression><ExpressionType>SQL</ExpressionType>
<InputSerialization><CSV><FileHeaderInfo>USE</FileHeaderInfo></CSV></InputSerialization>
<OutputSerialization><CSV/></OutputSerialization></SelectObjectContentRequest>"""
    session = requests.Session()
    first = _post(session, f"{limited.endpoint}/lim/big.csv?select&select-type=2", slow, "application/xml")
    try:
        assert first.status_code == 200  # bound and running (4e10 row pairs): it holds the whole budget
        assert len(_running_queries(pid)) == 1 and len(_children(pid)) <= 2  # the query's process + the spare
        second = signed_post(f"{limited.endpoint}/lim/small.csv?select&select-type=2", slow, "application/xml")
        assert second.status_code == 503 and "<Code>Busy</Code>" in second.text, second.text
        assert second.headers.get("Retry-After") == "1"
        resp = signed_post(f"{limited.endpoint}/lim?sql", json.dumps({"sql": "SELECT 1 AS one FROM 'small.csv'"})
                           .encode(), "application/json")
        assert resp.status_code == 503 and resp.json()["code"] == "Busy"
    finally:
        first.close()  # the client goes away: its query process is killed and its memory given back
        session.close()
    deadline = time.monotonic() + 30
    while _running_queries(pid):
        assert time.monotonic() < deadline, "the cancelled query's process was not stopped"
        time.sleep(0.02)
    for _ in range(100):  # the reservation is released just after the process is reaped
        try:
            rows, _ = select(s3, "lim", "small.csv", "SELECT COUNT(*) FROM s3object", CSV)
            break
        except ClientError as exc:
            assert _error_code(exc) == "Busy"
            time.sleep(0.05)
    assert rows == b"2\n"
    _spare(pid)  # no query process outlives its query: what is left is the one warm spare


@pytest.mark.parametrize("sql", [
    "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT name, setting FROM pg_settings",
    "SELECT * FROM (WITH pg_class AS (SELECT 1 AS a) SELECT a FROM pg_class) x, pg_class",
])
def test_issue18_cte_named_like_a_catalog_view_is_refused(limited: ServerProcess, sql: str) -> None:
    with pytest.raises(ClientError) as info:
        select(make_client(limited.endpoint), "lim", "small.csv", sql, CSV)
    assert _error_code(info.value) == "UnsupportedSqlOperation"
    resp = signed_post(f"{limited.endpoint}/lim?sql", json.dumps({"sql": sql}).encode(), "application/json")
    assert resp.status_code == 400 and resp.json()["code"] == "UnsupportedSqlOperation"


def test_issue18_next_query_runs_in_the_warm_spare_under_the_memory_bound(limited: ServerProcess) -> None:
    pid = limited.proc.pid  # type: ignore[union-attr]
    s3 = make_client(limited.endpoint)
    select(s3, "lim", "small.csv", "SELECT COUNT(*) FROM s3object", CSV)  # a spare exists after any query
    waiting = _spare(pid)
    assert _address_space_limit(waiting) is None  # it waits without a limit: that comes with its job
    # 5000^3 row triples through a streaming nested-loop join: hours of work in constant memory (a query that
    # materialised a cross product would soon die of its memory limit and race the checks below)
    slow = "SELECT COUNT(*) FROM s3object a, s3object b, s3object c WHERE a.k || b.k || c.k = 'x'"
    body = (f"<SelectObjectContentRequest><Expression>{slow}</Expression><ExpressionType>SQL</ExpressionType>"
            "<InputSerialization><CSV><FileHeaderInfo>USE</FileHeaderInfo></CSV></InputSerialization>"
            "<OutputSerialization><CSV/></OutputSerialization></SelectObjectContentRequest>").encode()
    session = requests.Session()
    running = _post(session, f"{limited.endpoint}/lim/rows.csv?select&select-type=2", body, "application/xml")
    try:
        assert running.status_code == 200
        assert _running_queries(pid) == [waiting]  # the spare serves the query...
        cap = _address_space_limit(waiting)  # as for a process started for the query: what it had mapped when
        assert cap is not None  # the job came (at most what it maps now, running) + the query's memory + headroom
        assert 0 < cap - LIMIT - sandbox.HEADROOM_BYTES
        mapped = _status_while_alive(waiting, "VmSize")  # None: the query already ended (its bound stopped it)
        assert mapped is None or cap - LIMIT - sandbox.HEADROOM_BYTES <= mapped
    finally:
        running.close()
        session.close()
    replacement = _spare(pid)  # ...and a new spare took its place
    assert replacement != waiting
    # the bound holds for a query that runs in a spare: the one that waited there takes the huge repeat
    assert _bounded_select(limited, "small.csv", "SELECT repeat('x', 700000000) AS s FROM s3object") \
        == "ResourceExhausted"
    assert replacement not in _children(pid)  # it ran there (and is gone with its query)
