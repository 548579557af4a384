"""The request's bucket read once (api/s3/bucket_reads.py): the same answers as the engine's one-transaction-each
reads, from one transaction until the body is read, and from the views again after it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from s4.api.s3 import sse
from s4.api.s3.access import POLICY_KIND
from s4.api.s3.bucket_reads import ENCRYPTION_KIND, BucketReads, kinds_for
from s4.engine import Engine, EngineOptions
from s4.engine.accounts import Account


class CountingEngine:
    """The engine's reads, counted (each one is a read transaction of its own)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.engine, name)


def _engine(tmp_path: Path) -> Engine:
    engine = Engine(EngineOptions(data_dir=tmp_path / "data"))
    asyncio.run(engine.create_bucket("plain"))
    asyncio.run(engine.create_bucket("configured", account=Account("acct-7", "seven")))
    asyncio.run(engine.set_bucket_config("configured", ENCRYPTION_KIND, {"a": "AES256"}))
    asyncio.run(engine.set_bucket_config("configured", "ownership", "BucketOwnerPreferred"))
    return engine


def test_bucket_reads_answers_as_the_engine_does_from_one_transaction(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        for bucket in ("plain", "configured", "missing", "x" * 300, "x" * 600):  # long names: the generic read
            counted = CountingEngine(engine)
            reads = BucketReads(counted, bucket, (POLICY_KIND, ENCRYPTION_KIND))  # type: ignore[arg-type]
            assert reads.account() == engine.bucket_account(bucket)
            assert (reads.account(), reads.config(POLICY_KIND)) == engine.bucket_guard(bucket, POLICY_KIND)
            assert reads.config(ENCRYPTION_KIND) == engine.bucket_config_if_any(bucket, ENCRYPTION_KIND)
            assert counted.calls == ["bucket_reads"]  # every question above: one read transaction
            # a kind the operation did not name is read as before, on its own
            assert reads.config("ownership") == engine.bucket_config_if_any(bucket, "ownership")
            assert counted.calls == ["bucket_reads", "bucket_config_if_any"]
        assert BucketReads(engine, "configured", (POLICY_KIND,)).account() == "acct-7"
    finally:
        engine.close()


def test_bucket_reads_asks_the_views_again_once_the_body_is_read(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        reads = BucketReads(engine, "plain", (POLICY_KIND, ENCRYPTION_KIND))
        assert reads.config(ENCRYPTION_KIND) is None
        reads.forget()  # the request starts reading its body; the default encryption changes meanwhile
        asyncio.run(engine.set_bucket_config("plain", ENCRYPTION_KIND, {"a": "AES256"}))
        assert reads.config(ENCRYPTION_KIND) == {"a": "AES256"}
        asyncio.run(engine.delete_bucket("plain"))
        assert reads.account() is None
    finally:
        engine.close()


def test_bucket_reads_kinds_are_the_configurations_their_readers_ask_for() -> None:
    assert ENCRYPTION_KIND == sse.CONFIG_KIND  # sse.for_write asks call.bucket_config(CONFIG_KIND)
    for operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        assert kinds_for(operation) == (POLICY_KIND, ENCRYPTION_KIND)
    assert kinds_for("GetObject") is None  # asks once (access control): no snapshot to build


# -- a GET/HEAD's one read transaction (ObjectReads, Engine.open_version_guarded) ------------------------------------
def _outcome(fn: Any) -> Any:
    """What a read answers: its value, or its error's code, fields and headers."""
    from s4.engine.errors import S3Error

    try:
        return fn()
    except S3Error as exc:
        return ("error", exc.code, exc.fields, exc.headers, exc.resource)


def _object_states(tmp_path: Path) -> tuple[Engine, list[tuple[str, str, str | None]]]:
    """An engine holding every state a GET meets: an object, a missing key, a missing bucket, a delete marker over
    versions, a version asked by id (present, absent, malformed), another account's bucket with its ownership."""
    from tests.helpers.engine_io import put

    engine = _engine(tmp_path)
    asyncio.run(put(engine, "plain", "k", b"hello"))
    asyncio.run(put(engine, "configured", "k", b"other account"))
    asyncio.run(engine.create_bucket("versioned"))
    asyncio.run(engine.set_bucket_config("versioned", "versioning", "Enabled"))
    first = asyncio.run(put(engine, "versioned", "v", b"one"))
    asyncio.run(put(engine, "versioned", "v", b"two"))
    asyncio.run(engine.delete_object("versioned", "v"))
    asks = [("plain", "k", None), ("plain", "nope", None), ("missing", "k", None), ("configured", "k", None),
            ("versioned", "v", None), ("versioned", "v", first.version_id), ("versioned", "v", "null"),
            ("versioned", "v", "not-a-version"), ("plain", "k", first.version_id)]
    return engine, asks


def test_open_version_guarded_answers_as_the_separate_reads_do(tmp_path: Path) -> None:
    """One transaction, the same answers: the owner and configs of ``bucket_reads`` and what ``open_version``
    returns or raises (its error kept, not raised), for every state a GET meets."""
    from s4.engine import OpenVersion

    engine, asks = _object_states(tmp_path)
    try:
        kinds = (POLICY_KIND, "ownership")
        for bucket, key, version_id in asks:
            guarded = engine.open_version_guarded(bucket, key, version_id, kinds)
            assert (guarded.account, guarded.configs) == engine.bucket_reads(bucket, kinds)
            separate = _outcome(lambda b=bucket, k=key, v=version_id: engine.open_version(b, k, v))

            def opened(g: Any = guarded) -> Any:
                if isinstance(g.opened, OpenVersion):
                    return g.opened
                raise g.opened

            assert _outcome(opened) == separate, (bucket, key, version_id)
    finally:
        engine.close()


def test_object_reads_give_access_control_and_the_handler_one_snapshot(tmp_path: Path) -> None:
    """``ObjectReads``: access control's questions and the handler's version from one engine read; the handler's
    version once (a second ask, or another object, reads the views); a pool's node (``key_reads`` set) gets none."""
    from s4.api.s3.bucket_reads import ObjectReads, for_request

    engine, asks = _object_states(tmp_path)
    try:
        for bucket, key, version_id in asks:
            counted = CountingEngine(engine)
            reads = ObjectReads(counted, bucket, key, version_id)  # type: ignore[arg-type]
            assert (reads.account(), reads.config(POLICY_KIND), reads.config("ownership")) == \
                engine.bucket_guard_and(bucket, POLICY_KIND, "ownership")
            assert _outcome(lambda r=reads, k=key, v=version_id: r.open_version(k, v)) == \
                _outcome(lambda b=bucket, k=key, v=version_id: engine.open_version(b, k, v))
            assert counted.calls == ["open_version_guarded"]
            again = _outcome(lambda r=reads, k=key, v=version_id: r.open_version(k, v))  # the views again
            assert again == _outcome(lambda b=bucket, k=key, v=version_id: engine.open_version(b, k, v))
            assert counted.calls == ["open_version_guarded", "open_version"]
        query = {"versionId": "x"}
        made = for_request(engine, "plain", "GetObject", "k", query)
        assert isinstance(made, ObjectReads) and made._version_id == "x"
        assert isinstance(for_request(engine, "plain", "HeadObject", "k", {}), ObjectReads)
        assert for_request(engine, "plain", "GetObjectTagging", "k", {}) is None
        assert for_request(engine, "", "GetObject", "k", {}) is None
        engine.key_reads = object()  # type: ignore[assignment]  # a pool: the handler settles, then reads
        try:
            assert for_request(engine, "plain", "GetObject", "k", {}) is None
        finally:
            engine.key_reads = None
    finally:
        engine.close()


def test_get_and_head_answer_the_same_through_one_snapshot_as_through_two_reads(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Through the app, signed and anonymous: every status, header and body of a GET or HEAD is the same with the
    shared snapshot (``ObjectReads``) as with access control and the handler reading apart (the snapshot turned
    off), for every state a GET meets, a public bucket policy (anonymous reads allowed, and NoSuchKey only for
    who may list) and a private bucket (AccessDenied; NoSuchBucket to anyone)."""
    import json

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from falcon import testing

    from s4.api import app as app_module
    from s4.api.settings import ApiSettings

    engine, asks = _object_states(tmp_path)
    asyncio.run(engine.create_bucket("public"))
    from tests.helpers.engine_io import put

    asyncio.run(put(engine, "public", "k", b"for everyone"))
    asyncio.run(engine.set_bucket_config("public", POLICY_KIND, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
         "Resource": ["arn:aws:s3:::public", "arn:aws:s3:::public/*"]}]})))
    asks += [("public", "k", None), ("public", "nope", None)]
    access, secret, host = "snap-access", "snap-secret", "falconframework.org"  # falcon testing's host
    client = testing.TestClient(app_module.build_app(engine, ApiSettings(access_key=access, secret_key=secret)))
    real = app_module.bucket_reads_for

    def answers() -> list[Any]:
        out = []
        for bucket, key, version_id in asks:
            for method in ("GET", "HEAD"):
                query = f"?versionId={version_id}" if version_id else ""
                for signed in (True, False):
                    request = AWSRequest(method=method, url=f"http://{host}/{bucket}/{key}{query}")
                    if signed:
                        S3SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(request)
                    got = client.simulate_request(method, f"/{bucket}/{key}", query_string=query[1:],
                                                  headers=dict(request.headers.items()))
                    headers = {n: v for n, v in got.headers.items() if n not in ("x-amz-request-id", "x-amz-id-2")}
                    body = got.content.replace(got.headers.get("x-amz-request-id", "").encode(), b"RID")
                    out.append((bucket, key, version_id, method, signed, got.status_code, headers, body))
        return out

    try:
        shared = answers()
        monkeypatch.setattr(app_module, "bucket_reads_for", lambda engine, bucket, operation, key, query: real(
            engine, bucket, operation) if operation not in ("GetObject", "HeadObject") else None)
        apart = answers()
        assert shared == apart
        statuses = {(b, k, m, s): status for b, k, v, m, s, status, _, _ in shared if v is None}
        assert statuses["plain", "k", "GET", True] == 200 and statuses["plain", "k", "GET", False] == 403
        assert statuses["public", "k", "GET", False] == 200 and statuses["public", "nope", "GET", False] == 404
        assert statuses["missing", "k", "GET", False] == 404 and statuses["versioned", "v", "GET", True] == 404
    finally:
        engine.close()
