"""The request path's edge after its CPU cuts (issue 18's performance bar): the body gate, which also writes the
access log, and the peer address read from the scope must behave exactly as the layers they replaced."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import falcon.asgi
import pytest

from s4.api.access_log import SCOPE_KEY
from s4.api.body_gate import BodyGate
from s4.api.s3.access import client_address


def _scope(headers: list[tuple[bytes, bytes]], client: Any = ("10.0.0.7", 5000)) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
            "path": "/b/k", "raw_path": b"/b/k", "query_string": b"", "root_path": "", "headers": headers,
            "client": client, "server": ("127.0.0.1", 9000)}


@pytest.mark.parametrize("client", [("10.0.0.7", 5000), ("127.0.0.1", 1), None])
@pytest.mark.parametrize("forwarding", [[], [(b"x-forwarded-for", b"9.9.9.9")],
                                        [(b"x-forwarded-for", b"10.0.0.7, 9.9.9.9")], [(b"x-real-ip", b"8.8.8.8")],
                                        [(b"forwarded", b"for=7.7.7.7")]])
def test_remote_addr_is_falcons_without_its_access_route(client: Any, forwarding: list[tuple[bytes, bytes]]) -> None:
    scope = _scope([(b"host", b"localhost"), *forwarding], client)
    assert client_address(scope) == falcon.asgi.Request(scope, None).remote_addr


def test_client_address_survives_a_forwarded_header_falcon_cannot_parse() -> None:
    """falcon's ``remote_addr`` raises on this header (the admin API and POST object used it: a 500)."""
    scope = _scope([(b"host", b"localhost"), (b"forwarded", b'for="[abc]:x"')])
    with pytest.raises(ValueError):
        falcon.asgi.Request(scope, None).remote_addr  # noqa: B018
    assert client_address(scope) == "10.0.0.7"


def _run(gate: BodyGate, headers: list[tuple[bytes, bytes]], app_reads_body: bool, fail: bool = False
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Drive ``gate`` around a fake app; returns what reached the server's send, the log lines, and how many
    times the server's receive was called."""
    sent: list[dict[str, Any]] = []
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"abc", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], recv: Any, snd: Any) -> None:
        first = await recv()
        assert first == {"type": "http.request", "body": b"", "more_body": True}  # never the server's
        entry = scope.get(SCOPE_KEY)
        if entry is not None:
            entry.operation, entry.bucket, entry.key, entry.actor = "PutObject", "b", "k", "AK"
        if app_reads_body:
            assert (await recv())["body"] == b"abc"
        if fail:
            raise RuntimeError("boom")
        await snd({"type": "http.response.start", "status": 200,
                   "headers": [(b"x-amz-request-id", b"RID1"), (b"connection", b"keep-alive")]})
        await snd({"type": "http.response.body", "body": b"hello", "more_body": True})
        await snd({"type": "http.response.body", "body": b"!", "more_body": False})

    gate.app = app
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        asyncio.run(gate(_scope(headers), receive, send))
    return sent, lines, received


lines: list[dict[str, Any]] = []


@pytest.mark.parametrize("logged", [False, True])
@pytest.mark.parametrize("expect", [False, True])
@pytest.mark.parametrize("reads", [False, True])
def test_body_gate_with_and_without_the_access_log(logged: bool, expect: bool, reads: bool) -> None:
    """The same messages reach the server with the log on or off; ``Connection: close`` replaces the app's only
    when a ``100 Continue`` is still withheld (expected, body never asked for); the line has status, bytes and the
    request id from the response."""
    lines.clear()
    gate = BodyGate(None, (lambda line: lines.append(json.loads(line))) if logged else None)  # type: ignore[arg-type]
    headers = [(b"host", b"localhost")] + ([(b"expect", b"100-Continue ")] if expect else [])
    sent, logged_lines, received = _run(gate, headers, reads)
    assert received == (1 if reads else 0)
    start = sent[0]
    closing = expect and not reads
    assert start["headers"] == ([(b"x-amz-request-id", b"RID1"), (b"connection", b"close")] if closing else
                                [(b"x-amz-request-id", b"RID1"), (b"connection", b"keep-alive")])
    assert [m.get("body") for m in sent[1:]] == [b"hello", b"!"]
    if logged:
        (line,) = logged_lines
        assert (line["status"], line["bytes"], line["request_id"], line["operation"], line["remote"],
                line["actor"], line["method"]) == (200, 6, "RID1", "PutObject", "10.0.0.7", "AK", "PUT")
    else:
        assert logged_lines == []


def test_body_gate_logs_a_failed_request() -> None:
    lines.clear()
    gate = BodyGate(None, lambda line: lines.append(json.loads(line)))  # type: ignore[arg-type]
    sent, logged_lines, _ = _run(gate, [(b"host", b"localhost")], False, fail=True)
    assert sent == [] and [(x["status"], x["bytes"], x["request_id"]) for x in logged_lines] == [(0, 0, "-")]
