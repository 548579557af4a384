"""SelectObjectContent through boto3 (CSV, JSON, Parquet), the README's curl example, and the query limits."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess


def make_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1")

EMPLOYEES = b'name,salary,dept\nAlice,120000,eng\nBob,90000,ops\n"Smith, J",150000,"r&d ""x"""\n'


def select(s3: Any, bucket: str, key: str, expression: str, inp: dict[str, Any], out: dict[str, Any] | None = None,
           **extra: Any) -> tuple[bytes, dict[str, int]]:
    resp = s3.select_object_content(Bucket=bucket, Key=key, Expression=expression, ExpressionType="SQL",
                                    InputSerialization=inp, OutputSerialization=out or {"CSV": {}}, **extra)
    records, stats = b"", {}
    for event in resp["Payload"]:
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
    proc = ServerProcess(tmp_path_factory.mktemp("s4-limited") / "data",
                         env={"S4_SELECT_TIMEOUT": "1", "S4_SELECT_MAX_MEMORY": "32MB"}).start()
    yield proc
    proc.stop()


def _big_csv(rows: int) -> bytes:
    return b"k,v\n" + b"".join(b"key%d,%d\n" % (i, i) for i in range(rows))


def test_timeout_fails_cleanly_and_server_stays_healthy(limited: ServerProcess) -> None:
    s3 = make_client(limited.endpoint)
    s3.create_bucket(Bucket="limits")
    s3.put_object(Bucket="limits", Key="big.csv", Body=_big_csv(200_000))
    with pytest.raises((ClientError, EventStreamError)) as info:
        select(s3, "limits", "big.csv", "SELECT SUM(LENGTH(REPEAT(k, 20000))) FROM s3object",
               {"CSV": {"FileHeaderInfo": "USE"}})
    assert "QueryTimeout" in str(info.value)
    rows, _ = select(s3, "limits", "big.csv", "SELECT COUNT(*) FROM s3object", {"CSV": {"FileHeaderInfo": "USE"}})
    assert rows == b"200000\n"
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
