"""SelectObjectContent through boto3 (CSV, JSON, Parquet), the README's curl example, and the query limits."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import uvicorn
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from helpers.s3client import make_client  # noqa: E402  (closed with the server: helpers/server.py)
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port

from s4.api.app import build_app
from s4.api.s3 import select as select_api
from s4.api.settings import ApiSettings
from s4.engine import Engine, EngineOptions
from s4.engine.select import sandbox
from s4.tools import bench_select

EMPLOYEES = b'name,salary,dept\nAlice,120000,eng\nBob,90000,ops\n"Smith, J",150000,"r&d ""x"""\n'


def select(s3: Any, bucket: str, key: str, expression: str, inp: dict[str, Any], out: dict[str, Any] | None = None,
           **extra: Any) -> tuple[bytes, dict[str, int]]:
    resp = s3.select_object_content(Bucket=bucket, Key=key, Expression=expression, ExpressionType="SQL",
                                    InputSerialization=inp, OutputSerialization=out or {"CSV": {}}, **extra)
    records, stats = b"", {}
    # An error event raises mid-stream: close the connection here rather than leave it to the garbage collector.
    with closing(resp["Payload"]) as payload:
        for event in payload:
            if "Records" in event:
                records += event["Records"]["Payload"]
            elif "Stats" in event:
                stats = event["Stats"]["Details"]
    return records, stats


def test_csv_use_header_and_stats(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e.csv", Body=EMPLOYEES)
    rows, stats = select(s3, bucket, "e.csv", "SELECT name, salary FROM s3object WHERE CAST(salary AS INT) > 100000",
                         {"CSV": {"FileHeaderInfo": "USE"}})
    assert rows == b'Alice,120000\n"Smith, J",150000\n'
    assert stats == {"BytesScanned": len(EMPLOYEES), "BytesProcessed": len(EMPLOYEES), "BytesReturned": len(rows)}


def test_csv_ignore_and_none_positional(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e.csv", Body=EMPLOYEES)
    rows, _ = select(s3, bucket, "e.csv", "SELECT s._1, s._3 FROM s3object s", {"CSV": {"FileHeaderInfo": "IGNORE"}})
    assert rows == b'Alice,eng\nBob,ops\n"Smith, J","r&d ""x"""\n'
    rows, _ = select(s3, bucket, "e.csv", "SELECT _1 FROM s3object LIMIT 2", {"CSV": {"FileHeaderInfo": "NONE"}})
    assert rows == b"name\nAlice\n"


def test_csv_custom_delimiters_comments_and_json_output(s3: Any, bucket: str) -> None:
    body = b"#comment\na|b\n1|x\n#skip\n2|'y|z'\n"
    s3.put_object(Bucket=bucket, Key="p.txt", Body=body)
    rows, _ = select(s3, bucket, "p.txt", "SELECT a, b FROM s3object",
                     {"CSV": {"FileHeaderInfo": "USE", "FieldDelimiter": "|", "QuoteCharacter": "'",
                              "Comments": "#"}},
                     {"JSON": {"RecordDelimiter": ";"}})
    assert rows == b'{"a":"1","b":"x"};{"a":"2","b":"y|z"};'
    rows, _ = select(s3, bucket, "p.txt", "SELECT a FROM s3object",
                     {"CSV": {"FileHeaderInfo": "USE", "FieldDelimiter": "|", "QuoteCharacter": "'",
                              "Comments": "#"}},
                     {"CSV": {"QuoteFields": "ALWAYS", "RecordDelimiter": ";"}})
    assert rows == b'"1";"2";'


def test_csv_gzip_and_bzip2(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e.csv.gz", Body=gzip.compress(EMPLOYEES))
    rows, stats = select(s3, bucket, "e.csv.gz", "SELECT COUNT(*) FROM s3object",
                         {"CSV": {"FileHeaderInfo": "USE"}, "CompressionType": "GZIP"})
    assert rows == b"3\n"
    assert stats["BytesProcessed"] == len(EMPLOYEES) and stats["BytesScanned"] == len(gzip.compress(EMPLOYEES))
    s3.put_object(Bucket=bucket, Key="e.csv.bz2", Body=bz2.compress(EMPLOYEES))
    rows, _ = select(s3, bucket, "e.csv.bz2", "SELECT MAX(CAST(salary AS INT)) FROM s3object",
                     {"CSV": {"FileHeaderInfo": "USE"}, "CompressionType": "BZIP2"})
    assert rows == b"150000\n"


def test_json_lines_and_document_nested(s3: Any, bucket: str) -> None:
    lines = b'{"id": 1, "user": {"name": "ann"}, "n": 5}\n{"id": 2, "user": {"name": "bo"}, "n": 7}\n'
    s3.put_object(Bucket=bucket, Key="l.json", Body=lines)
    rows, _ = select(s3, bucket, "l.json", "SELECT s.id, s.user.name FROM s3object s WHERE s.n > 5",
                     {"JSON": {"Type": "LINES"}}, {"JSON": {}})
    assert [json.loads(r) for r in rows.splitlines()] == [{"id": 2, "name": "bo"}]
    doc = {"data": {"items": [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "c", "v": 3}]}}
    s3.put_object(Bucket=bucket, Key="d.json", Body=json.dumps(doc, indent=2).encode())
    rows, _ = select(s3, bucket, "d.json", "SELECT s.k FROM s3object[*].data.items s WHERE s.v >= 2",
                     {"JSON": {"Type": "DOCUMENT"}}, {"CSV": {}})
    assert rows == b"b\nc\n"


def test_parquet_with_pruning(s3: Any, bucket: str) -> None:
    pad = [os.urandom(100).hex() for _ in range(10000)]  # incompressible: most of the file
    table = pa.table({"a": list(range(10000)), "b": [f"v{i}" for i in range(10000)], "pad": pad})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1000)
    data = buf.getvalue()
    s3.put_object(Bucket=bucket, Key="t.parquet", Body=data)
    rows, stats = select(s3, bucket, "t.parquet", "SELECT b FROM s3object WHERE a BETWEEN 9998 AND 9999",
                         {"Parquet": {}}, {"JSON": {}})
    assert rows == b'{"b":"v9998"}\n{"b":"v9999"}\n'
    assert stats["BytesScanned"] < len(data) // 4  # the "pad" column and skipped row groups are never read


def test_sql_errors_are_s3_errors(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e.csv", Body=EMPLOYEES)
    for expression, code in [("SELECT nope FROM s3object", "EvaluatorBindingDoesNotExist"),
                             ("SELECT * FROM read_csv('/etc/passwd')", "UnsupportedSqlOperation"),
                             ("SELEC x", "ParseUnexpectedToken")]:
        with pytest.raises(ClientError) as info:
            select(s3, bucket, "e.csv", expression, {"CSV": {"FileHeaderInfo": "USE"}})
        assert info.value.response["Error"]["Code"] == code


def signed_post(url: str, body: bytes, content_type: str) -> requests.Response:
    """The README's curl commands plus the SigV4 signature every S4 request needs."""
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": content_type})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return requests.post(url, data=body, headers=dict(request.headers), timeout=30)


README_SELECT = b"""<?xml version="1.0" encoding="UTF-8"?>
<SelectObjectContentRequest>
<Expression>SELECT name, salary FROM s3object WHERE CAST(salary AS INT) > 100000</Expression>
<ExpressionType>SQL</ExpressionType>
<InputSerialization>
<CSV><FileHeaderInfo>USE</FileHeaderInfo></CSV>
</InputSerialization>
<OutputSerialization>
<CSV/>
</OutputSerialization>
</SelectObjectContentRequest>"""


def test_readme_curl_select(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="employees.csv", Body=EMPLOYEES)
    resp = signed_post(f"{server.endpoint}/{bucket}/employees.csv?select&select-type=2", README_SELECT,
                       "application/xml")
    assert resp.status_code == 200
    buffer = EventStreamBuffer()
    buffer.add_data(resp.content)
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages] == ["Records", "Stats", "End"]
    assert messages[0].payload == b'Alice,120000\n"Smith, J",150000\n'


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # 3 s, one HTTP process: a cold process's first query (DuckDB and pyarrow start-up) on a loaded 2-core box
    # must not be what times out
    proc = ServerProcess(tmp_path_factory.mktemp("s4-limited") / "data",
                         env={"S4_SELECT_TIMEOUT": "3", "S4_SELECT_MAX_MEMORY": "32MB", "S4_WORKERS": "1"}).start()
    yield proc
    proc.stop()


def _big_csv(rows: int) -> bytes:
    return b"k,v\n" + b"".join(b"key%d,%d\n" % (i, i) for i in range(rows))


# 4e10 row pairs in a nested loop: never ends within 3 s, in little memory (a query that builds large strings
# instead would meet the memory limit first, now that the limit counts every allocation of the query)
SLOW_SUM = "WITH t AS MATERIALIZED (SELECT k FROM s3object) SELECT COUNT(*) FROM t a, t b WHERE a.k <> b.k"


def test_timeout_fails_cleanly_and_server_stays_healthy(limited: ServerProcess) -> None:
    s3 = make_client(limited.endpoint)
    s3.create_bucket(Bucket="limits")
    s3.put_object(Bucket="limits", Key="big.csv", Body=_big_csv(200_000))
    s3.put_object(Bucket="limits", Key="e.csv", Body=EMPLOYEES)
    with pytest.raises((ClientError, EventStreamError)) as info:
        select(s3, "limits", "big.csv", SLOW_SUM, {"CSV": {"FileHeaderInfo": "USE"}})
    # An error event once the 200 and the event stream have started (the usual case: binding takes
    # milliseconds), an HTTP error if the timeout struck first; the same code and message either way.
    assert info.value.response["Error"]["Code"] == "QueryTimeout"
    assert "S4_SELECT_TIMEOUT" in info.value.response["Error"]["Message"]
    rows, _ = select(s3, "limits", "e.csv", "SELECT COUNT(*) FROM s3object", {"CSV": {"FileHeaderInfo": "USE"}})
    assert rows == b"3\n"
    assert requests.get(limited.endpoint + "/health", timeout=5).status_code == 200


def test_memory_limit_fails_cleanly(limited: ServerProcess) -> None:
    s3 = make_client(limited.endpoint)
    s3.create_bucket(Bucket="memory")
    s3.put_object(Bucket="memory", Key="big.csv", Body=_big_csv(200_000))
    with pytest.raises((ClientError, EventStreamError)) as info:
        select(s3, "memory", "big.csv", "SELECT k || REPEAT('x', 1000) AS w, COUNT(*) FROM s3object GROUP BY w "
               "ORDER BY w", {"CSV": {"FileHeaderInfo": "USE"}})
    assert "ResourceExhausted" in str(info.value) or "QueryTimeout" in str(info.value)
    assert requests.get(limited.endpoint + "/health", timeout=5).status_code == 200


def test_disabled_select_is_not_implemented(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"S4_SELECT_ENABLED": "false"}).start()
    try:
        s3 = make_client(proc.endpoint)
        s3.create_bucket(Bucket="off")
        s3.put_object(Bucket="off", Key="e.csv", Body=EMPLOYEES)
        with pytest.raises(ClientError) as info:
            select(s3, "off", "e.csv", "SELECT * FROM s3object", {"CSV": {}})
        assert info.value.response["Error"]["Code"] == "NotImplemented"
        assert "S4_SELECT_ENABLED" in info.value.response["Error"]["Message"]
    finally:
        proc.stop()


# -- ScanRange: the records whose first byte lies in [Start, End]

RANGED = b"id,v\n1,a\n2,b\n3,c\n4,d\n"  # records start at 0 (header), 5, 9, 13 and 17; 21 bytes


@pytest.mark.parametrize(("scan_range", "expected"), [
    ({"Start": 5, "End": 12}, b"1,a\n2,b\n"),  # exactly the bytes of two records
    ({"Start": 6, "End": 13}, b"2,b\n3,c\n"),  # record 1 began before Start; record 3 begins at End
    ({"Start": 9}, b"2,b\n3,c\n4,d\n"),  # to the end of the object
    ({"End": 8}, b"3,c\n4,d\n"),  # the last 8 bytes: from byte 13
    ({"Start": 0, "End": 4}, b""),  # only the header starts in the range
    ({"Start": 0, "End": 5}, b"1,a\n"),
    ({"Start": 18}, b""),  # no record starts at or after 18
    ({"Start": 500}, b""),
])
def test_scan_range_csv_with_header(s3: Any, bucket: str, scan_range: dict[str, int], expected: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="r.csv", Body=RANGED)
    rows, _ = select(s3, bucket, "r.csv", "SELECT id, v FROM s3object", {"CSV": {"FileHeaderInfo": "USE"}},
                     ScanRange=scan_range)
    assert rows == expected


def test_scan_range_csv_positional_and_custom_delimiter(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r.csv", Body=RANGED)
    rows, _ = select(s3, bucket, "r.csv", "SELECT _1, _2 FROM s3object", {"CSV": {"FileHeaderInfo": "NONE"}},
                     ScanRange={"Start": 0, "End": 5})
    assert rows == b"id,v\n1,a\n"  # without a header the first line is a record
    rows, _ = select(s3, bucket, "r.csv", "SELECT _2 FROM s3object", {"CSV": {"FileHeaderInfo": "IGNORE"}},
                     ScanRange={"Start": 10, "End": 20})
    assert rows == b"c\nd\n"
    s3.put_object(Bucket=bucket, Key="semi.csv", Body=b"id,v;1,a;2,b;3,c;")  # records start at 0, 5, 9, 13
    rows, _ = select(s3, bucket, "semi.csv", "SELECT v FROM s3object",
                     {"CSV": {"FileHeaderInfo": "USE", "RecordDelimiter": ";"}}, ScanRange={"Start": 6})
    assert rows == b"b\nc\n"


def test_scan_range_json_lines(s3: Any, bucket: str) -> None:
    lines = [b'{"n": %d, "s": "%s"}\n' % (i, b"x" * i) for i in range(1, 6)]
    body = b"".join(lines)
    starts = [sum(len(line) for line in lines[:i]) for i in range(len(lines))]
    s3.put_object(Bucket=bucket, Key="r.jsonl", Body=body)

    def ns(scan_range: dict[str, int]) -> list[int]:
        rows, _ = select(s3, bucket, "r.jsonl", "SELECT s.n FROM s3object s", {"JSON": {"Type": "LINES"}},
                         {"JSON": {}}, ScanRange=scan_range)
        return [json.loads(r)["n"] for r in rows.splitlines()]

    assert ns({"Start": starts[1], "End": starts[3]}) == [2, 3, 4]
    assert ns({"Start": starts[1] + 1, "End": starts[3] - 1}) == [3]
    assert ns({"Start": starts[4] + 1}) == []
    assert ns({"End": len(body) - starts[3]}) == [4, 5]


def test_scan_range_refused_where_s3_refuses_it(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r.csv.gz", Body=gzip.compress(RANGED))
    with pytest.raises(ClientError) as info:
        select(s3, bucket, "r.csv.gz", "SELECT * FROM s3object",
               {"CSV": {"FileHeaderInfo": "USE"}, "CompressionType": "GZIP"}, ScanRange={"Start": 0, "End": 9})
    assert info.value.response["Error"]["Code"] == "UnsupportedScanRangeInput"
    s3.put_object(Bucket=bucket, Key="r.csv", Body=RANGED)
    with pytest.raises(ClientError) as info:
        select(s3, bucket, "r.csv", "SELECT * FROM s3object", {"CSV": {}}, ScanRange={"Start": 9, "End": 5})
    assert info.value.response["Error"]["Code"] == "InvalidRequest"


# -- Progress and Cont events

def events(s3: Any, bucket: str, key: str, expression: str, inp: dict[str, Any], **extra: Any) -> list[Any]:
    resp = s3.select_object_content(Bucket=bucket, Key=key, Expression=expression, ExpressionType="SQL",
                                    InputSerialization=inp, OutputSerialization={"CSV": {}}, **extra)
    with closing(resp["Payload"]) as payload:  # closed even when an error event raises mid-stream
        return list(payload)


def test_progress_events_only_when_requested(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e.csv", Body=EMPLOYEES)
    query = "SELECT name FROM s3object WHERE CAST(salary AS INT) > 100000"
    seen = events(s3, bucket, "e.csv", query, {"CSV": {"FileHeaderInfo": "USE"}}, RequestProgress={"Enabled": True})
    progress = [e["Progress"]["Details"] for e in seen if "Progress" in e]
    stats = next(e["Stats"]["Details"] for e in seen if "Stats" in e)
    returned = len(b'Alice\n"Smith, J"\n')
    assert progress and progress[-1] == stats == {"BytesScanned": len(EMPLOYEES), "BytesProcessed": len(EMPLOYEES),
                                                   "BytesReturned": returned}
    assert [next(iter(e)) for e in seen][-3:] == ["Progress", "Stats", "End"]
    seen = events(s3, bucket, "e.csv", query, {"CSV": {"FileHeaderInfo": "USE"}}, RequestProgress={"Enabled": False})
    assert not [e for e in seen if "Progress" in e]


@pytest.fixture
def quick_keepalive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An in-process server whose Select sends Cont (and Progress) every 20 ms instead of every 5 s."""
    monkeypatch.setattr(select_api, "KEEPALIVE_S", 0.02)
    engine = Engine(EngineOptions(data_dir=tmp_path / "data"))
    app = build_app(engine, ApiSettings(access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield make_client(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(30)
        engine.close()


def test_cont_and_progress_during_a_long_scan(quick_keepalive: Any) -> None:
    s3 = quick_keepalive
    s3.create_bucket(Bucket="slow")
    body = _big_csv(100_000)
    s3.put_object(Bucket="slow", Key="big.csv", Body=body)
    query = "SELECT k FROM s3object WHERE LENGTH(REPEAT(k, 1000)) < 0"  # no record: a scan of keep-alives only
    seen = events(s3, "slow", "big.csv", query, {"CSV": {"FileHeaderInfo": "USE"}}, RequestProgress={"Enabled": True})
    kinds = [next(iter(e)) for e in seen]
    assert "Records" not in kinds
    assert kinds.count("Cont") >= 1 and kinds.count("Progress") >= 2
    assert kinds[-3:] == ["Progress", "Stats", "End"]
    details = [e["Progress"]["Details"] for e in seen if "Progress" in e]
    assert all(d["BytesReturned"] == 0 for d in details)
    scanned = [d["BytesScanned"] for d in details]
    assert scanned == sorted(scanned) and scanned[-1] == len(body) == details[-1]["BytesProcessed"]
    kinds = [next(iter(e)) for e in events(s3, "slow", "big.csv", query, {"CSV": {"FileHeaderInfo": "USE"}})]
    assert "Cont" in kinds and "Progress" not in kinds


# -- memory: a CSV much larger than S4_SELECT_MAX_MEMORY, scanned while the server's RSS is sampled

@pytest.mark.slow
def test_memory_growth_stays_under_twice_the_limit(tmp_path: Path) -> None:
    limit = 32 * 1024**2
    # one HTTP process, so the warm-up query below warms the process that serves the measured ones
    proc = ServerProcess(tmp_path / "data", env={"S4_SELECT_MAX_MEMORY": "32MB", "S4_SELECT_TIMEOUT": "600",
                                                 "S4_COMPACTION_ENABLED": "false", "S4_WORKERS": "1"}).start()
    try:
        s3 = make_client(proc.endpoint)
        s3.create_bucket(Bucket="mem")
        expected = bench_select.Expected()
        upload_id = s3.create_multipart_upload(Bucket="mem", Key="m.csv")["UploadId"]
        parts = []
        for number, data in enumerate(bench_select.csv_parts(40 * 2**20, expected, part_rows=150_000), start=1):
            etag = s3.upload_part(Bucket="mem", Key="m.csv", UploadId=upload_id, PartNumber=number, Body=data)
            parts.append({"PartNumber": number, "ETag": etag["ETag"]})
        s3.complete_multipart_upload(Bucket="mem", Key="m.csv", UploadId=upload_id, MultipartUpload={"Parts": parts})
        inp = {"CSV": {"FileHeaderInfo": "USE"}}
        # The first query pays one-time costs (DuckDB/pyarrow code paged in, thread pools, allocator arenas);
        # the bound is on what a query adds to the server as it then idles (docs/performance.md has both).
        rows, _ = select(s3, "mem", "m.csv", bench_select.SELECT_SQL, inp)
        assert rows.decode() == expected.select_rows()
        pid = proc.proc.pid  # type: ignore[union-attr]
        for _ in range(2):
            idle, _ = bench_select.idle_rss(pid, seconds=1.0)
            with bench_select.RssSampler(pid, interval_s=0.01) as sampler:
                rows, stats = select(s3, "mem", "m.csv", bench_select.SELECT_SQL, inp)
            assert rows.decode() == expected.select_rows()
            assert stats["BytesScanned"] > limit  # the object does not fit in the limit
            # the query runs in a process of its own (engine/select/sandbox.py), whose runtime comes on top
            assert sampler.peak - idle < 2 * limit + sandbox.RUNTIME_RSS_BYTES, (idle, sampler.peak)
    finally:
        proc.stop()
