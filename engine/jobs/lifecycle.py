"""The lifecycle job: evaluates every bucket's rules against its versions and uploads and acts through
commands only (``lifecycle_expire``, which re-checks and then applies DeleteObject's semantics, and
``abort_multipart``), so every effect is a journal event. The clock is injected: tests move it by days."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import lifecycle as rules_mod
from ..errors import S3Error
from ..sequencer import Command
from ..views import namespace, upload_index
from ..views.records import Tx
from .report import RunReport

if TYPE_CHECKING:
    from .lease import StopFlag

log = logging.getLogger(__name__)
ACTOR = "system:lifecycle"
Clock = Callable[[], float]  # seconds since the epoch


def _plan(tx: Tx, now_ms: int, report: RunReport) -> list[rules_mod.Action]:
    actions: list[rules_mod.Action] = []
    for bucket in tx.buckets():
        rules = rules_mod.enabled_rules(tx.bucket_config(bucket.name, "lifecycle"))
        if not rules:
            continue
        report.count(report.examined, "buckets")
        for key_bytes, oid in namespace.iter_from(tx.txn, tx.dbs["ns"], bucket.root, b"", True):
            versions = [rec for _, rec in tx.versions(oid)]
            report.count(report.examined, "keys")
            report.count(report.examined, "versions", len(versions))
            actions.extend(rules_mod.evaluate_key(bucket.name, key_bytes.decode(), versions, rules, now_ms))
        for _, upload_id in upload_index.walk(tx, bucket.root, b"", True):
            upload = tx.upload(upload_id)
            if upload is None:
                continue
            report.count(report.examined, "uploads")
            rule_id = rules_mod.upload_due(rules, upload.key, upload.initiated_ms, now_ms)
            if rule_id is not None:
                actions.append(rules_mod.Action("abort_upload", bucket.name, upload.key, upload_id, rule_id))
    return actions


def run_lifecycle(engine: Any, *, dry_run: bool = False, clock: Clock = time.time,
                  stop: StopFlag | None = None) -> RunReport:
    """One pass over every bucket with an enabled rule (blocking: call from a worker thread). A set ``stop``
    ends it between two actions (``done.interrupted``); the next pass plans the rest again. In a pool ``stop`` is
    also set once this node's lifecycle lease runs out (engine/jobs/lease.py)."""
    report = RunReport("lifecycle", dry_run)
    now_ms = int(clock() * 1000)
    with engine.views.read() as txn:
        actions = _plan(Tx(txn, engine.views.dbs), now_ms, report)
    for action in actions:
        if stop is not None and stop.is_set():
            report.count(report.done, "interrupted")
            break
        report.details.append(action.to_dict())
        if dry_run:
            report.count(report.done, f"would_{action.kind}")
            continue
        try:
            if action.kind == "abort_upload":
                engine.sequencer.execute_sync(Command("abort_multipart", {
                    "bucket": action.bucket, "key": action.key, "upload_id": action.version_id}, ACTOR))
                result: Any = True
            else:
                result = engine.sequencer.execute_sync(Command("lifecycle_expire", {
                    "bucket": action.bucket, "key": action.key, "version_id": action.version_id,
                    "kind": action.kind}, ACTOR))
        except S3Error as exc:  # the bucket or upload went away meanwhile
            report.count(report.done, "skipped")
            report.errors.append(f"{action.kind} {action.bucket}/{action.key}: {exc.code.aws_code}")
            continue
        report.count(report.done, action.kind if result is not None else "skipped")
    report.finish()
    log.info("lifecycle run%s: examined %s, did %s in %.1f ms", " (dry run)" if dry_run else "",
             report.examined, report.done, report.duration_ms)
    return report
