"""The scrubber: re-reads every blob the index references and checks its record (``VolumeStore.verify_blob``:
header CRC, length and SHA-256 name against the index, data CRC32C), at a bounded I/O rate so a full scan
spreads over ``S4_SCRUBBER_FULL_SCAN_DAYS``. Bad blobs are reported; healing needs replicas (federation)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..model import BlobLocation
from ..views.env import unpack
from ..views.records import Tx
from .report import RunReport

log = logging.getLogger(__name__)


def scan_rate(total_bytes: int, full_scan_days: float, floor: int = 1 << 20) -> float:
    """Bytes per second that finishes ``total_bytes`` in ``full_scan_days`` (never below ``floor``)."""
    return max(float(floor), total_bytes / max(full_scan_days * 86400.0, 1.0))


def run_scrub(engine: Any, *, rate_bytes_per_s: float | None = None, sleep: Any = time.sleep) -> RunReport:
    """One full scan (blocking). ``rate_bytes_per_s`` None: as fast as the disk allows (operator runs)."""
    report = RunReport("scrubber")
    with engine.views.read() as txn:
        entries = [(digest, unpack(raw)) for digest, raw in Tx(txn, engine.views.dbs).scan("blobs", b"")]
    started = time.monotonic()
    scanned = 0
    for digest, (volume, offset, size, _refs) in entries:
        loc = BlobLocation(digest, volume, offset, size)
        problem = engine.volumes.verify_blob(loc)
        if problem is not None and engine.volumes.verify_blob(_relocated(engine, loc)) is None:
            problem = None  # compaction moved it between the scan and the read
        report.count(report.examined, "blobs")
        report.count(report.examined, "bytes", size)
        if problem is not None:
            report.count(report.done, "bad_blobs")
            report.details.append({"hash": digest.hex(), "volume": volume, "offset": offset, "size": size,
                                   "problem": problem})
            log.error("scrubber: blob %s in %s at %d: %s", digest.hex(), volume, offset, problem)
        scanned += size
        if rate_bytes_per_s:
            ahead = scanned / rate_bytes_per_s - (time.monotonic() - started)
            if ahead > 0:
                sleep(ahead)
    report.finish()
    log.info("scrubber: %s blobs, %s bad, %.1f ms", report.examined.get("blobs", 0),
             report.done.get("bad_blobs", 0), report.duration_ms)
    return report


def _relocated(engine: Any, loc: BlobLocation) -> BlobLocation:
    with engine.views.read() as txn:
        rec = Tx(txn, engine.views.dbs).blob(loc.hash)
    return loc if rec is None else BlobLocation(loc.hash, rec[0], rec[1], rec[2])
