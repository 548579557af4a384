"""Bucket notifications and the admin event stream on real servers, with a real HTTP receiver on 127.0.0.1.

- one message per matching change, none for filtered keys, with the target's bearer token;
- the receiver down, the server killed with kill -9 and restarted: every event arrives once it is back (no gap);
- the event stream (GET /api/admin/events) resumed after a disconnect from the last seq: no gap, no repeat.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD, admin_call, root_token
from helpers.s3client import make_client
from helpers.server import ServerProcess, free_port

START_TIMEOUT_S = 120.0
TOKEN = "hook-secret-token"


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps every POSTed message; ``stop``/``start`` take it down and back."""

    def __init__(self, port: int | None = None, delay_s: float = 0.0, refuse_first: int = 0) -> None:
        self.port = port or free_port()
        self.delay_s = delay_s  # a slow receiver: each answer waits this long
        self.refuse_first = refuse_first  # the first POSTs are answered 503 (and not kept)
        self.messages: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(owner.delay_s)
                with owner._lock:
                    refused = owner.refuse_first > 0
                    owner.refuse_first -= 1
                    if not refused:
                        owner.messages.append(json.loads(body))
                        owner.auth.append(self.headers.get("Authorization", ""))
                self.send_response(503 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def records(self, bucket: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(r["eventName"], r["s3"]["object"]["key"]) for m in self.messages for r in m["Records"]
                    if r["s3"]["bucket"]["name"] == bucket]


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def notify_env(receiver: Receiver, iam: bool = True, **extra: str) -> dict[str, str]:
    """The receiver as webhook target ``hook``; with ``iam`` the admin API is on (root password: slow to start)."""
    env = {"S4_NOTIFY_WEBHOOK_ENDPOINT_hook": receiver.url, "S4_NOTIFY_WEBHOOK_AUTH_TOKEN_hook": TOKEN, **extra}
    return {**env, "S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": "j" * 32} if iam else env


def queue_config(prefix: str = "", suffix: str = "", events: tuple[str, ...] = ("s3:ObjectCreated:*",
                                                                                 "s3:ObjectRemoved:*")) -> Any:
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
    conf: dict[str, Any] = {"Id": "q1", "QueueArn": "arn:s4:sqs::hook:webhook", "Events": list(events)}
    if rules:
        conf["Filter"] = {"Key": {"FilterRules": rules}}
    return {"QueueConfigurations": [conf]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("notify") / "data",
                         env=notify_env(receiver, S4_WORKERS="2")).start(START_TIMEOUT_S)
    yield proc
    proc.stop()


def new_bucket(s3: Any) -> str:
    name = f"ntf-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def test_one_message_per_matching_change_and_none_for_filtered_keys(srv: ServerProcess, receiver: Receiver) -> None:
    s3 = make_client(srv.endpoint)
    bucket = new_bucket(s3)
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration=queue_config("photos/", ".jpg"))
    got = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert got == [{"Id": "q1", "QueueArn": "arn:s4:sqs::hook:webhook",
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "photos/"},
                                                       {"Name": "suffix", "Value": ".jpg"}]}}}]
    s3.put_object(Bucket=bucket, Key="photos/red flower.jpg", Body=b"a" * 10)
    s3.put_object(Bucket=bucket, Key="photos/skip.png", Body=b"b")
    s3.put_object(Bucket=bucket, Key="other/skip.jpg", Body=b"c")
    s3.copy_object(Bucket=bucket, Key="photos/copy.jpg", CopySource={"Bucket": bucket, "Key": "other/skip.jpg"})
    s3.delete_object(Bucket=bucket, Key="photos/red flower.jpg")
    signed = s3.generate_presigned_post(bucket, "photos/form.jpg", ExpiresIn=600)  # a browser form upload
    form = [(name, (None, value)) for name, value in signed["fields"].items()] + [("file", ("f.jpg", b"e", None))]
    assert requests.post(signed["url"], files=form, timeout=60).status_code == 204
    s3.put_object(Bucket=bucket, Key="photos/last.jpg", Body=b"d")  # the last: once here, the rest came before
    wait_for(lambda: ("ObjectCreated:Put", "photos/last.jpg") in receiver.records(bucket), "the last message")
    assert receiver.records(bucket) == [("ObjectCreated:Put", "photos/red+flower.jpg"),
                                        ("ObjectCreated:Copy", "photos/copy.jpg"),
                                        ("ObjectRemoved:Delete", "photos/red+flower.jpg"),
                                        ("ObjectCreated:Post", "photos/form.jpg"),
                                        ("ObjectCreated:Put", "photos/last.jpg")]
    first = next(m["Records"][0] for m in receiver.messages if m["Records"][0]["s3"]["bucket"]["name"] == bucket)
    assert first["eventVersion"] == "2.1" and first["s3"]["object"]["size"] == 10
    assert first["s3"]["object"]["eTag"] == "e09c80c42fda55f9d992e59ca6b3307d"
    assert first["s3"]["configurationId"] == "q1" and first["userIdentity"]["principalId"]
    assert set(receiver.auth) == {f"Bearer {TOKEN}"}


def test_every_kind_of_change_has_its_event_name(srv: ServerProcess, receiver: Receiver) -> None:
    s3 = make_client(srv.endpoint)
    bucket = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_ownership_controls(  # ACLs on, so the object ACL change below is accepted
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=queue_config(events=(
        "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectRemoved:*", "s3:ObjectTagging:*",
        "s3:ObjectRenamed:*")))
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")  # ObjectCreated:Put is not selected
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"p" * 100)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    s3.put_object_tagging(Bucket=bucket, Key="big", Tagging={"TagSet": [{"Key": "a", "Value": "1"}]})
    s3.put_object_acl(Bucket=bucket, Key="big", ACL="private")  # not a tagging change: no message
    s3.delete_object_tagging(Bucket=bucket, Key="big")
    s3.delete_object(Bucket=bucket, Key="big")  # a delete marker
    version = s3.put_object(Bucket=bucket, Key="gone", Body=b"y")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="gone", VersionId=version)
    s3.rename_object(Bucket=bucket, Key="moved", RenameSource=f"/{bucket}/plain")
    wait_for(lambda: ("ObjectRenamed:Rename", "moved") in receiver.records(bucket), "the rename")
    assert receiver.records(bucket) == [
        ("ObjectCreated:CompleteMultipartUpload", "big"), ("ObjectTagging:Put", "big"),
        ("ObjectTagging:Delete", "big"), ("ObjectRemoved:DeleteMarkerCreated", "big"),
        ("ObjectRemoved:Delete", "gone"), ("ObjectRenamed:Rename", "moved")]
    by_name = {r["eventName"]: r["s3"]["object"] for m in receiver.messages for r in m["Records"]
               if r["s3"]["bucket"]["name"] == bucket}
    assert by_name["ObjectRemoved:Delete"]["versionId"] == version
    assert by_name["ObjectCreated:CompleteMultipartUpload"]["eTag"].endswith("-1")
    assert by_name["ObjectRenamed:Rename"]["s4SourceKey"] == "plain"


def test_an_unknown_arn_and_malformed_xml_are_refused_and_change_nothing(srv: ServerProcess) -> None:
    s3 = make_client(srv.endpoint)
    bucket = new_bucket(s3)
    bad = {"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::nobody:webhook", "Events": ["s3:ObjectCreated:*"]}]}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=bad)
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"
    bad_event = {"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:Nothing:*"]}]}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=bad_event)
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"
    assert s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations") is None
    s3.meta.events.register("before-sign.s3.PutBucketNotificationConfiguration",
                            lambda request, **kw: setattr(request, "data", b"<NotificationConfiguration><Queue"))
    try:
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=queue_config())
        assert exc.value.response["Error"]["Code"] == "MalformedXML"
    finally:
        s3.meta.events.unregister("before-sign.s3.PutBucketNotificationConfiguration")


def _read_stream(srv: ServerProcess, token: str, after: int, bucket: str, want: int) -> list[dict[str, Any]]:
    """Read ``want`` events of the long-lived stream, then drop the connection (a client going away)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("GET", f"/api/admin/events?after={after}&bucket={bucket}&type=object.*",
                     headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-ndjson"
        out: list[dict[str, Any]] = []
        try:
            while len(out) < want:
                line = resp.readline()
                assert line, "the stream ended"
                if line.strip():
                    out.append(json.loads(line))
        finally:
            resp.close()
        return out
    finally:
        conn.close()


def test_the_event_stream_resumes_after_a_disconnect_without_gaps(srv: ServerProcess) -> None:
    s3 = make_client(srv.endpoint)
    bucket = new_bucket(s3)
    token = root_token(srv)
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    first = _read_stream(srv, token, 0, bucket, 3)  # disconnects with two events unread
    for i in range(5, 8):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    rest = _read_stream(srv, token, first[-1]["seq"], bucket, 5)  # two old, three written after the disconnect
    events = first + rest
    assert [e["payload"]["key"] for e in events] == [f"k{i}" for i in range(8)]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 8
    assert all(e["type"] == "object.version_put" and e["payload"]["bucket"] == bucket for e in events)
    wait_for(lambda: srv.log().count("admin event stream for user:root ended (client gone)") >= 2,
             "both streams noticed their client went away")  # (uvicorn's send is silent after a disconnect)
    with pytest.raises(urllib.error.HTTPError) as exc:  # SuperUser only
        admin_call(srv, "GET", "/api/admin/events?follow=false")
    assert exc.value.code == 401
    exc.value.close()


def test_the_event_stream_redacts_secrets(srv: ServerProcess) -> None:
    token = root_token(srv)
    user = admin_call(srv, "POST", "/api/admin/users", token, {"username": f"u{uuid.uuid4().hex[:6]}",
                                                               "password": "password-123456", "role": "Writer"})
    admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("GET", "/api/admin/events?follow=false&type=user.*,credential.*",
                     headers={"Authorization": f"Bearer {token}"})
        with conn.getresponse() as resp:
            body = resp.read().decode()
    finally:
        conn.close()
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert any(e["type"] == "credential.created" for e in lines)
    for e in lines:
        for fld in ("secret_key", "password_hash"):
            if fld in e["payload"]:
                assert e["payload"][fld] == "<redacted>"


def test_parked_messages_are_listed_and_retried(tmp_path: Path) -> None:
    down = Receiver()  # not started: every POST fails
    proc = ServerProcess(tmp_path / "data", env=notify_env(down, S4_WORKERS="1", S4_NOTIFY_MAX_ATTEMPTS="2",
                                                           S4_NOTIFY_BACKOFF_MAX_SECS="0.1")).start(START_TIMEOUT_S)
    try:
        s3 = make_client(proc.endpoint)
        bucket = new_bucket(s3)
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=queue_config())
        s3.put_object(Bucket=bucket, Key="p1", Body=b"x")
        token = root_token(proc)
        wait_for(lambda: len(admin_call(proc, "GET", "/api/admin/notify/parked", token)["parked"]) == 1, "parked")
        (parked,) = admin_call(proc, "GET", "/api/admin/notify/parked", token)["parked"]
        assert parked["target"] == "hook" and parked["attempts"] == 2 and parked["error"]
        metrics = urllib_text(proc.endpoint + "/metrics")
        assert 's4_notify_parked_messages{target="hook"} 1.0' in metrics
        down.start()
        try:
            assert admin_call(proc, "POST", "/api/admin/notify/parked/retry", token, {})["retrying"] == 1
            wait_for(lambda: down.records(bucket) == [("ObjectCreated:Put", "p1")], "the retried message")
            wait_for(lambda: not admin_call(proc, "GET", "/api/admin/notify/parked", token)["parked"], "unparked")
            down.stop()
            s3.put_object(Bucket=bucket, Key="p2", Body=b"y")  # parked again (the receiver is down), then dropped
            wait_for(lambda: len(admin_call(proc, "GET", "/api/admin/notify/parked", token)["parked"]) == 1, "p2")
            assert admin_call(proc, "POST", "/api/admin/notify/parked/discard", token, {})["discarded"] == 1
            assert admin_call(proc, "GET", "/api/admin/notify/parked", token)["parked"] == []
        finally:
            down.stop()
    finally:
        proc.stop()


def urllib_text(url: str) -> str:
    import urllib.request
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


def test_every_event_arrives_after_kill_9_and_restart_with_the_receiver_down(tmp_path: Path) -> None:
    late = Receiver()  # down until the end
    env = notify_env(late, iam=False, S4_WORKERS="1", S4_NOTIFY_MAX_ATTEMPTS="100000",
                     S4_NOTIFY_BACKOFF_MAX_SECS="0.2")
    proc = ServerProcess(tmp_path / "data", env=env).start(START_TIMEOUT_S)
    try:
        s3 = make_client(proc.endpoint)
        bucket = new_bucket(s3)
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=queue_config())
        keys = [f"obj-{i}" for i in range(12)]
        for key in keys[:8]:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        proc.kill_group()  # kill -9, the receiver still down
        proc.start(START_TIMEOUT_S)
        s3 = make_client(proc.endpoint)
        for key in keys[8:]:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        late.start()
        try:
            wait_for(lambda: {k for _, k in late.records(bucket)} >= set(keys), "every event", timeout_s=120)
            created = [k for name, k in late.records(bucket) if name == "ObjectCreated:Put"]
            first_seen = list(dict.fromkeys(created))
            assert first_seen == keys  # in journal order (a resend after the kill may repeat some: at-least-once)
        finally:
            late.stop()
    finally:
        proc.stop()


def test_a_kill_9_in_the_middle_of_delivering_loses_nothing(tmp_path: Path) -> None:
    # The first message is refused three times (0.5 + 1 + 2 s of backoff): meanwhile every object is written, so
    # the rest go out as one batch of events read, at 0.2 s each, and the kill lands in the middle of that batch.
    slow = Receiver(delay_s=0.2, refuse_first=3).start()
    proc = ServerProcess(tmp_path / "data", env=notify_env(slow, iam=False, S4_WORKERS="1",
                                                           S4_NOTIFY_BACKOFF_MAX_SECS="2")).start(START_TIMEOUT_S)
    try:
        s3 = make_client(proc.endpoint)
        bucket = new_bucket(s3)
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=queue_config())
        keys = [f"k-{i:02d}" for i in range(30)]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        wait_for(lambda: len(slow.records(bucket)) >= 5, "delivery under way")
        proc.kill_group()
        assert len(slow.records(bucket)) < len(keys), "everything went out before the kill: make the receiver slower"
        proc.start(START_TIMEOUT_S)
        wait_for(lambda: {k for _, k in slow.records(bucket)} >= set(keys), "every event after the restart",
                 timeout_s=120)
        assert list(dict.fromkeys(k for _, k in slow.records(bucket))) == keys  # no gap, in order; resends allowed
    finally:
        proc.stop()
        slow.stop()
