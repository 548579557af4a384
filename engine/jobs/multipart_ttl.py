"""Abandoned multipart uploads: older than the TTL, they are aborted through the ``multipart.aborted`` event,
which drops their parts' blob references so compaction can reclaim the bytes."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import S3Error
from ..model import Upload
from ..sequencer import Command
from ..views.env import unpack
from ..views.records import Tx
from .report import RunReport

if TYPE_CHECKING:
    from .lease import StopFlag

log = logging.getLogger(__name__)
ACTOR = "system:multipart-ttl"


def expire_uploads(engine: Any, ttl_seconds: float, *, dry_run: bool = False,
                   clock: Any = time.time, report: RunReport | None = None,
                   stop: StopFlag | None = None) -> RunReport:
    """Abort every upload initiated more than ``ttl_seconds`` ago (blocking). A set ``stop`` ends it between two
    aborts (``done.interrupted``): the jobs stopping, or in a pool this node's lease running out."""
    report = report or RunReport("multipart_ttl", dry_run)
    cutoff_ms = int((clock() - ttl_seconds) * 1000)
    with engine.views.read() as txn:
        tx = Tx(txn, engine.views.dbs)
        uploads = [Upload.from_record(unpack(raw)) for _, raw in tx.scan("uploads", b"")]
    report.count(report.examined, "uploads", len(uploads))
    for upload in uploads:
        if upload.initiated_ms > cutoff_ms:
            continue
        if stop is not None and stop.is_set():
            report.count(report.done, "interrupted")
            break
        report.details.append({"action": "abort_upload", "bucket": upload.bucket, "key": upload.key,
                               "upload_id": upload.upload_id})
        if dry_run:
            report.count(report.done, "would_abort_upload")
            continue
        try:
            engine.sequencer.execute_sync(Command("abort_multipart", {
                "bucket": upload.bucket, "key": upload.key, "upload_id": upload.upload_id}, ACTOR))
            report.count(report.done, "abort_upload")
        except S3Error:  # completed or aborted meanwhile
            report.count(report.done, "skipped")
    if report.done:
        log.info("multipart TTL: %s", report.done)
    return report
