"""One error boundary in every process mode (issue 18): a worker's forwarded internal error never reaches the
client, and "cannot commit now" is 503 ServiceUnavailable with Retry-After, never a 500.

The app is the real one (build_app over a real Engine); only the engine's commit port is swapped for what a
worker process has: a RemoteSequencer over a LoopChannel, closed (the supervisor is gone), or a stand-in that
raises exactly what the wire decodes from a bug in the sequencer process.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from falcon import testing

from s4.api.app import build_app
from s4.api.settings import ApiSettings
from s4.engine import Engine, EngineOptions
from s4.engine.errors import ServiceUnavailableError
from s4.engine.remote import LoopChannel, RemoteSequencer
from s4.engine.remote.wire import decode_error, encode_error
from s4.engine.sequencer import Command

ACCESS, SECRET = "boundary-access", "boundary-secret"
HOST = "falconframework.org"


class LeakySequencer:
    """A worker's commit port whose sequencer process hit a bug: the error as the wire delivers it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def execute(self, command: Command) -> Any:
        raise decode_error(encode_error(self.exc))

    def close(self) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(EngineOptions(data_dir=tmp_path / "data"))
    asyncio.run(eng.create_bucket("bkt"))
    yield eng
    eng.close()


def _request(engine: Engine, method: str, path: str, body: bytes = b"") -> testing.Result:
    request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body)
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    client = testing.TestClient(build_app(engine, ApiSettings(access_key=ACCESS, secret_key=SECRET)))
    return client.simulate_request(method, path, headers=dict(request.headers.items()), body=body)


def _swap(engine: Engine, port: Any) -> Any:
    real, engine.sequencer = engine.sequencer, port
    return real


def test_issue18_forwarded_internal_error_text_stays_in_the_log(engine: Engine,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    real = _swap(engine, LeakySequencer(KeyError("/var/lib/s4/secret-path/views")))
    try:
        result = _request(engine, "PUT", "/bkt/k", b"data")
    finally:
        engine.sequencer = real
    assert result.status_code == 500
    root = fromstring(result.content)
    assert root.findtext("Code") == "InternalError"
    assert root.findtext("Message") == "We encountered an internal error. Please try again."
    assert b"secret-path" not in result.content and b"KeyError" not in result.content
    request_id = result.headers["x-amz-request-id"]
    assert root.findtext("RequestId") == request_id
    assert any(request_id in r.getMessage() and "secret-path" in r.getMessage() for r in caplog.records)


def test_issue18_supervisor_gone_is_503_with_retry_after(engine: Engine) -> None:
    ours, theirs = socket.socketpair()
    channel = LoopChannel(ours, name="sequencer")
    theirs.close()
    channel.close()  # what a worker's channel is once the supervisor process is gone
    real = _swap(engine, RemoteSequencer(channel))
    try:
        result = _request(engine, "PUT", "/bkt/k", b"data")
    finally:
        engine.sequencer = real
    assert result.status_code == 503
    assert fromstring(result.content).findtext("Code") == "ServiceUnavailable"
    assert result.headers["retry-after"].isdigit()


def test_issue18_stopped_sequencer_is_503_with_retry_after(engine: Engine) -> None:
    engine.sequencer.close()  # the single-process mode's sequencer (and its group commit) stopped
    result = _request(engine, "PUT", "/bkt/k", b"data")
    assert result.status_code == 503
    assert fromstring(result.content).findtext("Code") == "ServiceUnavailable"
    assert result.headers["retry-after"].isdigit()
    head = _request(engine, "DELETE", "/bkt/k")
    assert (head.status_code, head.headers.get("x-amz-error-code")) == (503, None)


def test_issue18_cannot_commit_crosses_the_process_boundary_as_itself() -> None:
    decoded = decode_error(encode_error(ServiceUnavailableError("journal is closed")))
    assert isinstance(decoded, ServiceUnavailableError)
    assert decoded.headers["Retry-After"].isdigit()
