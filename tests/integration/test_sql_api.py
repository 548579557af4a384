"""S4's multi-object SQL endpoint (POST /bucket?sql): globs, joins, analytics, output formats, readable errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.server import ServerProcess
from test_select_api import _big_csv, make_client, signed_post


def sql(server: ServerProcess, bucket: str, body: dict[str, Any]) -> Any:
    resp = signed_post(f"{server.endpoint}/{bucket}?sql", json.dumps(body).encode(), "application/json")
    if resp.headers.get("content-type", "").startswith("text/csv"):
        return resp.status_code, list(csv.reader(io.StringIO(resp.text)))
    return resp.status_code, resp.json()


@pytest.fixture
def logs(s3: Any, bucket: str) -> str:
    s3.put_object(Bucket=bucket, Key="logs/data1.csv", Body=b"id,status,value\n1,ERROR,10\n2,OK,20\n")
    s3.put_object(Bucket=bucket, Key="logs/data2.csv", Body=b"id,status,value\n3,ERROR,30\n4,OK,40\n")
    s3.put_object(Bucket=bucket, Key="logs/old/data0.csv", Body=b"id,status,value\n0,OK,5\n")
    s3.put_object(Bucket=bucket, Key="users/u.jsonl", Body=b'{"id": 1, "name": "ann"}\n{"id": 3, "name": "cy"}\n')
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [2, 4], "city": ["Oslo", "Rome"]}), buf)
    s3.put_object(Bucket=bucket, Key="geo/2024/c.parquet", Body=buf.getvalue())
    return bucket


def test_readme_examples(server: ServerProcess, logs: str) -> None:
    status, rows = sql(server, logs, {"sql": "SELECT * FROM 'logs/*.csv' WHERE status = 'ERROR'",
                                      "format": "csv", "output": "json"})
    assert status == 200
    assert sorted(r["id"] for r in rows) == [1, 3] and all(r["status"] == "ERROR" for r in rows)
    status, rows = sql(server, logs, {"sql": "SELECT COUNT(*) as total, AVG(CAST(value AS DOUBLE)) as avg_val "
                                             "FROM 'logs/*.csv'", "format": "csv", "output": "csv"})
    assert (status, rows) == (200, [["total", "avg_val"], ["4", "25.0"]])


def test_double_star_glob_and_parquet(server: ServerProcess, logs: str) -> None:
    status, rows = sql(server, logs, {"sql": "SELECT COUNT(*) AS n FROM 'logs/**/*.csv'", "format": "csv"})
    assert (status, rows) == (200, [{"n": 5}])
    status, rows = sql(server, logs, {"sql": "SELECT city FROM '**/*.parquet' ORDER BY id", "format": "parquet"})
    assert (status, rows) == (200, [{"city": "Oslo"}, {"city": "Rome"}])


def test_join_across_two_globs(server: ServerProcess, logs: str) -> None:
    status, rows = sql(server, logs, {"sql": "SELECT l.id, u.name FROM 'logs/*.csv' l JOIN 'users/*.jsonl' u "
                                             "ON l.id = u.id ORDER BY l.id", "format": "csv"})
    # one format applies to all globs; JSON lines are detected from their content
    assert status == 200, rows
    assert rows == [{"id": 1, "name": "ann"}, {"id": 3, "name": "cy"}]


def test_group_window_cte(server: ServerProcess, logs: str) -> None:
    status, rows = sql(server, logs, {"sql": "SELECT status, SUM(value) AS s FROM 'logs/*.csv' GROUP BY status "
                                             "ORDER BY s DESC", "format": "csv"})
    assert (status, rows) == (200, [{"status": "OK", "s": 60}, {"status": "ERROR", "s": 40}])
    status, rows = sql(server, logs, {"sql": "WITH t AS (SELECT id, value FROM 'logs/*.csv') SELECT id, "
                                             "ROW_NUMBER() OVER (ORDER BY value DESC) AS rk FROM t ORDER BY id",
                                      "format": "csv", "output": "csv"})
    assert (status, rows) == (200, [["id", "rk"], ["1", "4"], ["2", "3"], ["3", "2"], ["4", "1"]])


def test_errors_are_readable_json(server: ServerProcess, logs: str) -> None:
    status, body = sql(server, logs, {"sql": "SELECT * FROM 'nothing/*.csv'", "format": "csv"})
    assert status == 400 and "'nothing/*.csv' matched no objects" in body["error"]
    status, body = sql(server, logs, {"sql": "SELECT nope FROM 'logs/*.csv'", "format": "csv"})
    assert status == 400 and '"nope" not found' in body["error"]
    status, body = sql(server, logs, {"sql": "SELECT * FROM read_csv('/etc/passwd')", "format": "csv"})
    assert status == 400 and "not allowed" in body["error"]
    status, body = sql(server, logs, {"sql": "ATTACH 'x.db'"})
    assert status == 400 and body["error"]


def test_timeout_before_any_row_is_an_error_status(tmp_path: Path) -> None:
    """An aggregate produces nothing until its scan ends, so the status waits: the timeout is a 400 with JSON."""
    proc = ServerProcess(tmp_path / "data", env={"S4_SELECT_TIMEOUT": "3", "S4_WORKERS": "1"}).start()
    try:
        s3 = make_client(proc.endpoint)
        s3.create_bucket(Bucket="limits")
        s3.put_object(Bucket="limits", Key="big.csv", Body=_big_csv(200_000))
        s3.put_object(Bucket="limits", Key="small.csv", Body=b"k,v\na,1\nb,2\n")
        status, body = sql(proc, "limits", {"sql": "WITH t AS MATERIALIZED (SELECT k FROM 'big.csv') "
                                                 "SELECT COUNT(*) AS n FROM t a, t b WHERE a.k <> b.k"})
        assert status == 400 and body["code"] == "QueryTimeout" and "S4_SELECT_TIMEOUT" in body["error"]
        status, rows = sql(proc, "limits", {"sql": "SELECT SUM(v) AS s FROM 'small.csv'"})
        assert (status, rows) == (200, [{"s": 3}])
    finally:
        proc.stop()
