"""The access-log line and the connection cap arithmetic (issue 18)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from s4.api import access_log
from s4.api.access_log import format_line
from s4.api.app import build_app
from s4.api.http_protocol import connection_cap
from s4.api.settings import ApiSettings
from s4.engine import Engine, EngineOptions
from tests.helpers import inprocess_bench as bench


def test_issue18_line_is_one_json_object_whatever_the_key() -> None:
    key = 'a "b"\n\x00c/ä\\'
    line = format_line(1_700_000_000.25, "10.1.2.3", "AK", "GetObject", "GET", "bkt", key, 206, 12, 0.0015, "RID")
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    doc = json.loads(line)
    assert doc == {"time": "2023-11-14T22:13:20.250Z", "remote": "10.1.2.3", "actor": "AK", "operation": "GetObject",
                   "method": "GET", "bucket": "bkt", "key": key, "status": 206, "bytes": 12, "duration_ms": 1.5,
                   "request_id": "RID"}
    empty = json.loads(format_line(0.0, "", "", "", "", "", "", 400, 0, 0.0, ""))
    assert (empty["remote"], empty["actor"], empty["operation"], empty["request_id"]) == ("-", "-", "-", "-")


def test_issue18_connection_cap_leaves_descriptors_to_the_engine() -> None:
    assert connection_cap(1024, 1_048_576) == 1024
    for nofile in (256, 1024, 4096, 20000):
        cap = connection_cap(100_000, nofile)
        hard = cap + cap // 8 + 8  # connections the cap can hold at most (the pending 503s included)
        assert hard <= nofile - max(128, nofile // 4)
    assert connection_cap(10, 256) == 10


def test_access_log_quote_cache_is_bounded_and_escapes_like_json() -> None:
    """Repeating fields are quoted once and kept in a bounded cache (a stream of distinct bucket names, valid or
    not, must not grow it without limit); what it returns is exactly the JSON quoting."""
    from s4.api import access_log

    access_log._quoted.clear()
    for i in range(access_log._Quoted.LIMIT * 2 + 5):
        line = format_line(0.0, "127.0.0.1", "AK", "GetObject", "GET", f'b"{i}\n', "k", 200, 0, 0.0, "R")
        assert json.loads(line)["bucket"] == f'b"{i}\n'
        assert len(access_log._quoted) <= access_log._Quoted.LIMIT
    long_bucket = "x" * 500
    assert json.loads(format_line(0.0, "", "", "", "", long_bucket, "", 400, 0, 0.0, ""))["bucket"] == long_bucket
    assert long_bucket not in access_log._quoted  # names past the longest valid one are never kept


def test_the_app_fills_the_line_through_its_request_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the log on, the app's request context is the gate's entry (``LoggedRequest``): the line names the
    operation, bucket, key and signer the app found; with it off, falcon's own request class serves and no line is
    written."""
    lines: list[dict[str, object]] = []
    monkeypatch.setattr(access_log, "STDERR", lambda line: lines.append(json.loads(line)))
    signer = bench.Signer(bench.ACCESS, bench.SECRET)
    path = f"/{bench.BUCKET}/some/key"

    async def run(logged: bool) -> int:
        engine = Engine(EngineOptions(data_dir=tmp_path / ("on" if logged else "off")))
        try:
            await engine.create_bucket(bench.BUCKET)
            app = build_app(engine, ApiSettings(access_key=bench.ACCESS, secret_key=bench.SECRET,
                                                access_log=logged))
            headers = signer.headers("PUT", bench.HOST, path, extra={"content-length": "3"})
            return await bench._call(app, "PUT", path, headers, b"abc")
        finally:
            engine.close()

    assert asyncio.run(run(True)) == 200
    assert [(x["operation"], x["bucket"], x["key"], x["actor"], x["status"]) for x in lines] == [
        ("PutObject", bench.BUCKET, "some/key", bench.ACCESS, 200)]
    assert asyncio.run(run(False)) == 200
    assert len(lines) == 1
