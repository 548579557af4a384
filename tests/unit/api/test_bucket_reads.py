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
        for bucket in ("plain", "configured", "missing"):
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
