"""Issue 18, items 6 and 10 and the access log, against real server processes with raw sockets.

Connection limits and timeouts (api/http_protocol.py), the login throttle behind forwarding headers and under
parallel attempts (engine/login_throttle.py), the access log (api/access_log.py). Timeouts are set short through
the environment; every wait is a bounded socket timeout or deadline poll, and the asserts are on outcomes
(closed, status, bytes), never on elapsed time.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess
from integration.conftest import make_client

BASE_ENV = {"S4_WORKERS": "1", "S4_SELECT_ENABLED": "false"}
ROOT_PASSWORD = "password12345"
WAIT_S = 30.0  # upper bound of any single wait; a passing test finishes each far sooner
_OPEN: list[socket.socket] = []  # raw sockets of the running test, closed when it ends (pass or fail)


@pytest.fixture(autouse=True)
def _close_raw_sockets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@contextmanager
def running(tmp_path: Path, env: dict[str, str] | None = None, nofile: int | None = None) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / f"data-{uuid.uuid4().hex[:6]}", env={**BASE_ENV, **(env or {})},
                         nofile=nofile).start()
    try:
        yield proc
    finally:
        if proc.stop() not in (0, None, -15):
            print(proc.log())


def connect(server: ServerProcess, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _OPEN.append(sock)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", server.port))
    return sock


def response(sock: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    resp = http.client.HTTPResponse(sock, method=method)
    try:
        resp.begin()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        resp.close()  # its file object over the socket; the socket itself stays the test's


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset); socket.timeout (a test failure) otherwise."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def xml_code(body: bytes) -> str:
    text = body.decode()
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def health(server: ServerProcess) -> int:
    return requests.get(server.endpoint + "/health", timeout=WAIT_S).status_code


def presigned(server: ServerProcess, method: str, bucket: str, key: str) -> tuple[str, str]:
    """(path?query, host) of a presigned URL, for raw requests."""
    client = make_client(server.endpoint)
    url = client.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)
    client.close()
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}", parts.netloc


# -- item 6: header size, header and body timeouts ---------------------------------------------------------------
def test_issue18_oversized_header_answered_and_others_served(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        for size in (64 * 1024, 4 * 1024 * 1024):  # in one read, and over many reads
            sock = connect(server)
            head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
            sender = threading.Thread(target=lambda s=sock, h=head: _send_quietly(s, h))
            sender.start()
            status, headers, body = response(sock)
            sender.join(WAIT_S)
            assert status == 400 and xml_code(body) == "RequestHeaderSectionTooLarge"
            assert headers["connection"] == "close" and headers["x-amz-request-id"] in body.decode()
            sock.close()
            assert health(server) == 200
        # many small headers add up the same way; a normal-sized head is served
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: bbbbbbbbbbbbbbbb\r\n" * 2000 + b"\r\n")
        status, _, body = response(sock)
        assert status == 400 and xml_code(body) == "RequestHeaderSectionTooLarge"
        # a head over the limit whose last read is short: measured over every read it spans
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"d" * 17000)
        time.sleep(0.2)  # let the first part arrive as a read of its own (either way the answer must be 400)
        sock.sendall(b"d\r\n\r\n")
        status, _, body = response(sock)
        assert status == 400 and xml_code(body) == "RequestHeaderSectionTooLarge"
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"c" * 8000 + b"\r\n\r\n")
        assert response(sock)[0] == 200


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server may close before taking the rest: its answer is what the test checks


def test_issue18_idle_and_half_sent_heads_time_out(tmp_path: Path) -> None:
    with running(tmp_path, {"S4_HEADER_TIMEOUT_SECS": "0.5"}) as server:
        idle = connect(server)
        assert closed_by_server(idle)  # nothing sent: closed without an answer
        half = connect(server)
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        status, _, body = response(half)
        assert status == 400 and xml_code(body) == "RequestTimeout"
        keep = connect(server)  # a keep-alive connection: the next request's head is timed from its first byte
        keep.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(keep)[0] == 200
        keep.sendall(b"GET /health HT")
        status, _, body = response(keep)
        assert status == 400 and xml_code(body) == "RequestTimeout"
        assert health(server) == 200


def test_issue18_stalled_body_answers_request_timeout(tmp_path: Path) -> None:
    with running(tmp_path, {"S4_BODY_TIMEOUT_SECS": "0.5"}) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="stall")
        target, host = presigned(server, "put_object", "stall", "k")
        sock = connect(server)
        sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n".encode()
                     + b"x" * 70000)
        status, headers, body = response(sock)
        assert status == 400 and xml_code(body) == "RequestTimeout", body
        assert headers["connection"] == "close"
        assert closed_by_server(sock)
        with pytest.raises(ClientError) as err:  # nothing of the partial body was stored
            s3.head_object(Bucket="stall", Key="k")
        assert err.value.response["Error"]["Code"] == "404"
        s3.put_object(Bucket="stall", Key="k", Body=b"y" * 100000)  # a client that keeps sending is fine
        assert s3.get_object(Bucket="stall", Key="k")["Body"].read() == b"y" * 100000


def test_issue18_unread_response_is_aborted(tmp_path: Path) -> None:
    """A client that stops reading a response is cut off after the body timeout (it held a descriptor forever)."""
    with running(tmp_path, {"S4_BODY_TIMEOUT_SECS": "0.5"}) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="slow")
        s3.put_object(Bucket="slow", Key="big", Body=b"z" * (16 * 1024 * 1024))
        target, host = presigned(server, "get_object", "slow", "big")
        sock = connect(server, rcvbuf=4096)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert sock.recv(12) == b"HTTP/1.1 200"
        deadline = time.monotonic() + WAIT_S
        while _tcp_state(sock) == 1 and time.monotonic() < deadline:  # 1: ESTABLISHED
            time.sleep(0.05)
        assert _tcp_state(sock) != 1
        received = 12
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 16 * 1024 * 1024
        assert health(server) == 200


def _bytes_read(server: ServerProcess) -> int:
    """Bytes the server's processes passed through read system calls so far (``rchar``: page cache or disk)."""
    assert server.proc is not None
    pids = [server.proc.pid]
    pids += [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                total += int(line.split()[1])
    return total


def test_an_aborted_get_stops_reading_the_object(tmp_path: Path) -> None:
    """A client that goes away after the first megabyte of a 128 MiB GET: the server stops reading the object
    (it read all of it for nothing, so aborted downloads multiplied the disk's load), and serves the next GET."""
    size = 128 * 1024 * 1024
    with running(tmp_path) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="gone")
        s3.put_object(Bucket="gone", Key="big", Body=b"g" * size)
        target, host = presigned(server, "get_object", "gone", "big")
        before = _bytes_read(server)
        sock = connect(server)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = 0
        while received < 1024 * 1024:
            chunk = sock.recv(1 << 16)
            assert chunk, "the server closed the connection before the first megabyte"
            received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, as a killed client
        sock.close()
        deadline, last, still_since = time.monotonic() + WAIT_S, -1, time.monotonic()
        while time.monotonic() < deadline:  # until the server's reads settle (1 s without growth)
            now = _bytes_read(server)
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= 1.0:
                break
            time.sleep(0.1)
        assert last - before < size // 4, f"the server read {last - before} bytes of a {size}-byte object"
        assert s3.get_object(Bucket="gone", Key="big", Range="bytes=0-9")["Body"].read() == b"g" * 10


def _tcp_state(sock: socket.socket) -> int:
    return int(struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0])


# -- item 6: the connection cap and descriptors -----------------------------------------------------------------
def test_issue18_over_the_connection_cap_is_a_clear_503(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    with running(tmp_path, {"S4_MAX_CONNECTIONS": "3", "S4_BODY_TIMEOUT_SECS": "120"}) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="cap")
        s3.put_object(Bucket="cap", Key="big", Body=b"q" * size)
        s3.close()  # its pooled keep-alive connection would otherwise count (it would be evicted first, too)
        target, host = presigned(server, "get_object", "cap", "big")
        busy = []
        for _ in range(3):  # three downloads in progress: their responses have begun and cannot finish unread
            sock = connect(server, rcvbuf=4096)
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert sock.recv(12) == b"HTTP/1.1 200"
            busy.append(sock)
        extra = connect(server)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = response(extra)
        assert status == 503 and xml_code(body) == "ServiceUnavailable" and headers["retry-after"] == "1"
        for sock in busy:  # the existing ones finish, every byte
            received = 12
            sock.settimeout(WAIT_S)
            while b"\r\n\r\n" not in (head := sock.recv(4096, socket.MSG_PEEK)):
                assert head
            received = 0
            sock.recv(len(head.split(b"\r\n\r\n", 1)[0]) + 4)
            while received < size and (chunk := sock.recv(1 << 20)):
                received += len(chunk)
            assert received == size
            sock.close()
        assert health(server) == 200


def test_issue18_hundreds_of_idle_sockets_do_not_break_a_get(tmp_path: Path) -> None:
    """With 256 descriptors, 400 idle connections used to leave none for the next GET (500 or no answer)."""
    with running(tmp_path, nofile=256) as server:
        s3 = make_client(server.endpoint, connect_timeout=WAIT_S, read_timeout=WAIT_S, retries={"max_attempts": 1})
        s3.create_bucket(Bucket="fds")
        s3.put_object(Bucket="fds", Key="k", Body=b"payload")
        s3.close()
        idle = []
        try:
            for _ in range(400):
                idle.append(connect(server))
            fresh = make_client(server.endpoint, connect_timeout=WAIT_S, read_timeout=WAIT_S,
                                retries={"max_attempts": 1})
            assert fresh.get_object(Bucket="fds", Key="k")["Body"].read() == b"payload"
            fresh.put_object(Bucket="fds", Key="k2", Body=b"more")
            assert fresh.get_object(Bucket="fds", Key="k2")["Body"].read() == b"more"
        finally:
            for sock in idle:
                sock.close()
        assert health(server) == 200


# -- item 10: the login throttle --------------------------------------------------------------------------------
def _login(server: ServerProcess, username: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return requests.post(f"{server.endpoint}/api/admin/login", json={"username": username, "password": "wrong-pw-1"},
                         headers=headers, timeout=WAIT_S).status_code


IAM_ENV = {"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789"}


def test_issue18_forwarded_for_is_ignored_unless_trusted(tmp_path: Path) -> None:
    with running(tmp_path, IAM_ENV) as server:
        codes = [_login(server, "victim", forwarded=f"10.0.0.{i}") for i in range(6)]
        assert codes == [401] * 5 + [429]  # a new X-Forwarded-For per guess is still the same client
    with running(tmp_path, {**IAM_ENV, "S4_TRUSTED_PROXIES": "127.0.0.0/8"}) as server:
        codes = [_login(server, "victim", forwarded=f"10.0.0.{i}") for i in range(6)]
        assert codes == [401] * 6  # from a trusted proxy, each forwarded address is its own client
        assert [_login(server, "victim", forwarded="10.9.9.9") for _ in range(6)] == [401] * 5 + [429]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_issue18_parallel_logins_allow_exactly_the_limit(tmp_path: Path, workers: str) -> None:
    """Twelve guesses in flight at once (connected first, then sent in one burst, so they all arrive well within
    the first lock's second): exactly five are verified, whichever worker process each lands on."""
    with running(tmp_path, {**IAM_ENV, "S4_WORKERS": workers}) as server:
        wait_for_workers(server, int(workers))  # a worker still starting would take its share a second late
        body = json.dumps({"username": "root", "password": "wrong-pw-1"}).encode()
        request = (f"POST /api/admin/login HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        socks = [connect(server) for _ in range(12)]
        for sock in socks:
            sock.sendall(request)
        codes = sorted(response(sock, "POST")[0] for sock in socks)
        for sock in socks:
            sock.close()
        assert codes == [401] * 5 + [429] * 7


def wait_for_workers(server: ServerProcess, count: int) -> None:
    """Until ``count`` worker processes answer: request ids start with a prefix of their own per process."""
    prefixes: set[str] = set()
    deadline = time.monotonic() + WAIT_S
    while len(prefixes) < count and time.monotonic() < deadline:
        prefixes.add(requests.get(server.endpoint + "/health", timeout=WAIT_S).headers["x-amz-request-id"][:8])
    assert len(prefixes) == count


# -- the access log -----------------------------------------------------------------------------------------------
def _access_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith('{"time":')]


def test_issue18_access_log_lines_without_secrets(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="logged")
        key = 'dir/ä "quoted"\nkey.txt'
        put = s3.put_object(Bucket="logged", Key=key, Body=b"0123456789")
        got = s3.get_object(Bucket="logged", Key=key)
        assert got["Body"].read() == b"0123456789"
        signatures = []
        for presigner, marker in ((make_client(server.endpoint, signature_version="s3v4"), "X-Amz-Signature="),
                                  (s3, "Signature=")):  # SigV4 and SigV2 query signatures
            url = presigner.generate_presigned_url("get_object", Params={"Bucket": "logged", "Key": key},
                                                   ExpiresIn=600)
            signatures.append(unquote(url.split(marker, 1)[1].split("&", 1)[0]))
            assert requests.get(url, timeout=WAIT_S).content == b"0123456789"
        assert requests.get(server.endpoint + "/logged/nothing", timeout=WAIT_S).status_code == 403
        sock = connect(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        refused_status, refused_headers, _ = response(sock)
        server.stop()
        log = server.log()
    lines = _access_lines(log)
    fields = ["time", "remote", "actor", "operation", "method", "bucket", "key", "status", "bytes", "duration_ms",
              "request_id"]
    assert lines and all(list(line) == fields for line in lines)
    by_id = {line["request_id"]: line for line in lines}
    put_line = by_id[put["ResponseMetadata"]["RequestId"]]
    assert put_line["operation"] == "PutObject" and put_line["status"] == 200 and put_line["method"] == "PUT"
    assert (put_line["bucket"], put_line["key"], put_line["actor"]) == ("logged", key, ACCESS_KEY)
    assert put_line["remote"] == "127.0.0.1" and put_line["duration_ms"] >= 0
    get_line = by_id[got["ResponseMetadata"]["RequestId"]]
    assert (get_line["operation"], get_line["status"], get_line["bytes"]) == ("GetObject", 200, 10)
    assert sum(line["operation"] == "GetObject" and line["actor"] == ACCESS_KEY and line["key"] == key
               for line in lines) == 3  # and the two presigned ones
    assert any(line["status"] == 403 and line["actor"] == "-" and line["key"] == "nothing" for line in lines)
    refused = by_id[refused_headers["x-amz-request-id"]]
    assert refused_status == refused["status"] == 400 and refused["operation"] == "RequestHeaderSectionTooLarge"
    access_text = "\n".join(line for line in log.splitlines() if line.startswith('{"time":'))
    for secret in (*signatures, "X-Amz-Signature", "X-Amz-Credential", SECRET_KEY, "AWS4-HMAC-SHA256", "Signature"):
        assert secret not in access_text


def test_issue18_access_log_can_be_switched_off(tmp_path: Path) -> None:
    with running(tmp_path, {"S4_ACCESS_LOG": "false"}) as server:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket="quiet")
        s3.put_object(Bucket="quiet", Key="k", Body=b"1")
        assert health(server) == 200
        server.stop()
        assert _access_lines(server.log()) == []


def test_issue18_access_log_from_worker_processes(tmp_path: Path) -> None:
    with running(tmp_path, {"S4_WORKERS": "2"}) as server:
        s3 = make_client(server.endpoint, retries={"max_attempts": 1})
        s3.create_bucket(Bucket="multi")
        ids = {s3.put_object(Bucket="multi", Key=f"k{i}", Body=b"x")["ResponseMetadata"]["RequestId"]
               for i in range(10)}
        server.stop()
        lines = _access_lines(server.log())
    assert ids <= {line["request_id"] for line in lines if line["operation"] == "PutObject"}
