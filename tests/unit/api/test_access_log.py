"""The access-log line and the connection cap arithmetic (issue 18)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
    """With the log on, the app's request context is the gate's entry (``S3Service`` takes it from the scope): the
    line names the operation, bucket, key and signer the app found; with it off, no line is written."""
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


_text = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(["", "-", 'a"b', "\\", "\n\x00", "ä€😀"])
_rows = st.tuples(st.integers(0, 4_102_444_800_000), _text, _text, _text, _text,
                  _text | st.text(min_size=64, max_size=300), _text, st.integers(0, 1200), st.integers(0, 1 << 40),
                  st.integers(0, 10**10), _text)


def _as_line(row: Any) -> str:
    """``format_line`` of a row: its integer ms and µs as the float seconds that name the same ms and µs."""
    if isinstance(row, str):
        return row
    ms, *fields, duration_us, request_id = row
    return format_line((ms + 0.5) / 1000, *fields, duration_us / 1e6, request_id)


@settings(max_examples=150, deadline=None)
@given(st.lists(_rows | _text.map(lambda s: s + "\n"), max_size=20))
@example([(1_700_000_000_250, "10.1.2.3", "AK", "GetObject", "GET", "bkt", 'a "b"\n\x00c/ä\\', 200, 12, 1500, "RID"),
          (1_700_000_000_999, "", "", "", "", "b" * 64, "", 999, 0, 999_999, ""), "a line\n",
          (1_699_999_999_000, "::1", "S4AK", "PutObject", "PUT", "bkt", "k", 1000, 1 << 40, 10**10, "R")])
def test_rows_format_to_the_same_bytes_as_format_line(rows: list[Any]) -> None:
    """The flush's batch formatter (``format_rows``) gives exactly ``format_line``'s bytes, for hostile strings
    (quotes, backslashes, control characters, non-ASCII, long bucket names), times in any order across seconds,
    any status and size, and lines already formatted kept as they are, in order."""
    access_log._clock.__init__()  # type: ignore[misc]  # format_line starts with no second cached
    expected = [_as_line(row) for row in rows]
    assert access_log.format_rows(rows) == expected
    assert access_log.format_rows(rows) == expected  # again, from the caches the first call filled


def test_segment_cache_is_bounded() -> None:
    access_log._segments.clear()
    for i in range(access_log._Segments.LIMIT * 2 + 5):
        line = access_log.format_rows([(0, f"10.0.{i}", "AK", "GetObject", "GET", "b", "k", 200, 0, 0, "R")])[0]
        assert json.loads(line)["remote"] == f"10.0.{i}"
        assert len(access_log._segments) <= access_log._Segments.LIMIT
    access_log.format_rows([(0, "", "", "", "", "x" * 64, "", 200, 0, 0, "")])
    assert not any(fields[4] == "x" * 64 for fields in access_log._segments)


class _Stderr:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _row(i: int, key: str = "k") -> tuple[Any, ...]:
    return (1_700_000_000_000 + i * 143, "10.0.0.1", "AK", "GetObject", "GET", "bkt", key, 200, i, 1000, f"R{i}")


def test_line_buffer_formats_rows_in_its_flush_in_pieces_of_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows and formatted lines come out in order, as ``format_line`` writes them, in writes of whole lines of at
    most ``PIPE_BUF`` characters (a longer line alone); without an event loop each is written at once."""
    err = _Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    buffer = access_log.LineBuffer()
    buffer.add(_row(0))
    assert err.writes == [_as_line(_row(0))]
    rows: list[Any] = [_row(i, "x" * (i * 97 % 1500)) for i in range(1, 40)]
    rows.insert(5, '{"time":"a line given formatted"}\n')
    rows.insert(9, _row(99, "\n" * 1000))  # 6,000 characters escaped: a piece of its own

    async def buffered() -> None:
        for row in rows:
            buffer.add(row)
        assert len(err.writes) == 1, "nothing written before the flush"
        await asyncio.sleep(access_log.LineBuffer.FLUSH_S * 3)

    asyncio.run(buffered())
    assert "".join(err.writes[1:]) == "".join(_as_line(row) for row in rows)
    for piece in err.writes[1:]:
        assert piece.endswith("\n")
        assert len(piece) <= access_log.LineBuffer.PIPE_BUF or piece.count("\n") == 1
    assert len(err.writes) > 3


def test_line_buffer_flushes_every_max_rows_under_load(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    buffer = access_log.LineBuffer()

    async def burst() -> None:
        for i in range(access_log.LineBuffer.MAX_ROWS - 1):
            buffer.add(_row(i))
        assert err.writes == []
        buffer.add(_row(access_log.LineBuffer.MAX_ROWS))
        assert err.writes, "a full buffer is written without waiting for the timer"

    asyncio.run(burst())
    assert "".join(err.writes).count("\n") == access_log.LineBuffer.MAX_ROWS


@pytest.mark.parametrize("lines", [[], ["a\n"], ["a\n"] * 3, ["x" * 5000 + "\n"], ["a" * 4095 + "\n", "b\n"]])
def test_pieces_are_whole_lines_within_the_limit(lines: list[str]) -> None:
    got = access_log.pieces(lines, 4096)
    assert "".join(got) == "".join(lines)
    assert all(len(p) <= 4096 or p.count("\n") == 1 for p in got)
