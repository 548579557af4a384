"""The scrubber: re-reads every blob the index references and checks its record (``VolumeStore.verify_blob``:
header CRC, length and SHA-256 name against the index, the CRC32C of every block), at a bounded I/O rate so a full
scan spreads over ``S4_SCRUBBER_FULL_SCAN_DAYS``. A bad blob is reported and marked damaged through the journal
(``mark_blob_damaged`` -> ``blob.damaged``): no write deduplicates onto it, and the next PUT of the same bytes
stores a good copy and repoints it (docs/architecture/dedup.md).

In a pool (S4_MODE=cluster) each bad blob is then **healed** (``heal``, the engine's ``BlobRepairPort``: cluster/
scrub_heal.py): a copy fetched from a replica by its SHA-256, verified, written to this node's volumes and the index
repointed to it through the journal (node-local ``blob.moved``). The healed bytes count against the same pacing
as the bytes scanned. Single mode has no replica: the blob stays marked and reported, and reads of it fail.
Progress and heals are counted in a ``ScrubProgress`` (engine/jobs/scrub_progress.py; docs/architecture/
recovery.md, "Scrub healing")."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..model import BlobLocation
from ..sequencer import Command
from ..views.blobs import is_damaged
from ..views.env import unpack
from ..views.records import Tx
from .report import RunReport
from .scrub_progress import ScrubProgress

log = logging.getLogger(__name__)
ACTOR = "system:scrubber"
#: Heals a bad or missing blob from a replica (blocking; the scrubber runs on a thread): True once the index names a
#: verified copy. ``(location found bad, problem)``.
Heal = Callable[[BlobLocation, str], bool]


def scan_rate(total_bytes: int, full_scan_days: float, floor: int = 1 << 20) -> float:
    """Bytes per second that finishes ``total_bytes`` in ``full_scan_days`` (never below ``floor``)."""
    return max(float(floor), total_bytes / max(full_scan_days * 86400.0, 1.0))


def run_scrub(engine: Any, *, rate_bytes_per_s: float | None = None, sleep: Callable[[float], Any] = time.sleep,
              monotonic: Callable[[], float] = time.monotonic, stop: threading.Event | None = None,
              heal: Heal | None = None, progress: ScrubProgress | None = None) -> RunReport:
    """One full scan (blocking). ``rate_bytes_per_s`` None: as fast as the disk allows (operator runs).

    Throttled, after each blob it pauses (``sleep``) until the bytes read so far fit within
    ``rate_bytes_per_s`` x the time elapsed on the ``monotonic`` clock, so I/O stays at the rate on average.
    A set ``stop`` event ends the scan early (``done.interrupted``): a scan spread over days must not hold up a
    shutdown.

    ``heal`` (a pool): called for every bad blob once it is marked; its fetched bytes count against the rate like
    scanned ones. ``progress`` is told of the pass, each blob and each bad one."""
    report = RunReport("scrubber")
    with engine.views.read() as txn:
        entries = [(digest, unpack(raw)) for digest, raw in Tx(txn, engine.views.dbs).scan("blobs", b"")]
    if progress is not None:
        progress.begin_pass(sum(rec[2] for _, rec in entries), throttled=bool(rate_bytes_per_s))
    started = monotonic()
    scanned = 0
    complete = True
    for digest, rec in entries:
        volume, offset, size = rec[:3]
        if stop is not None and stop.is_set():
            report.count(report.done, "interrupted")
            complete = False
            break
        loc = BlobLocation(digest, volume, offset, size)
        problem = engine.volumes.verify_blob(loc)
        if problem is not None:  # re-check against the index as it is now: a long scan sees it change
            now = _relocated(engine, loc)
            if now is None:
                problem = None  # freed (and maybe compacted away) since the scan began
            elif now != loc:  # moved or re-stored since: judge the copy the index names now
                problem, loc = engine.volumes.verify_blob(now), now
                volume, offset = now.volume, now.offset
        report.count(report.examined, "blobs")
        report.count(report.examined, "bytes", size)
        if progress is not None:
            progress.scanned(size)
        if problem is not None:
            report.count(report.done, "bad_blobs")
            detail: dict[str, Any] = {"hash": digest.hex(), "volume": volume, "offset": offset, "size": size,
                                      "problem": problem}
            report.details.append(detail)
            log.error("scrubber: blob %s in %s at %d: %s", digest.hex(), volume, offset, problem)
            if progress is not None:
                progress.found_bad()
            if _mark(engine, loc, problem, report):
                report.count(report.done, "marked_damaged")
            if heal is not None:
                detail["healed"] = _heal(heal, loc, problem, report)
                scanned += size  # the fetched copy's bytes share the pacing with the scan's
        scanned += size
        if rate_bytes_per_s:
            ahead = scanned / rate_bytes_per_s - (monotonic() - started)
            if ahead > 0:
                sleep(ahead)
    report.finish()
    if progress is not None:
        progress.end_pass(complete)
    log.info("scrubber: %s blobs, %s bad, %s healed, %.1f ms", report.examined.get("blobs", 0),
             report.done.get("bad_blobs", 0), report.done.get("healed", 0), report.duration_ms)
    return report


def _heal(heal: Heal, loc: BlobLocation, problem: str, report: RunReport) -> bool:
    """Replace the bad copy from a replica; a failure is reported and left for the next pass (or a read)."""
    try:
        healed = heal(loc, problem)
    except Exception as exc:  # noqa: BLE001 - keep scanning; the next pass tries again
        report.errors.append(f"could not heal blob {loc.hash.hex()}: {type(exc).__name__}: {exc}")
        healed = False
    report.count(report.done, "healed" if healed else "heal_failed")
    return healed


def _mark(engine: Any, loc: BlobLocation, problem: str, report: RunReport) -> bool:
    """Journal the damage (a no-op if already marked); True if this scan marked it."""
    try:
        return bool(engine.sequencer.execute_sync(Command("mark_blob_damaged", {
            "hash": loc.hash, "volume": loc.volume, "offset": loc.offset, "problem": problem}, ACTOR)))
    except Exception as exc:  # noqa: BLE001 - keep scanning; the next scan marks it
        report.errors.append(f"could not mark blob {loc.hash.hex()} damaged: {exc}")
        return False


def _relocated(engine: Any, loc: BlobLocation) -> BlobLocation | None:
    """Where the index puts the blob now (None: no longer referenced)."""
    with engine.views.read() as txn:
        rec = Tx(txn, engine.views.dbs).blob(loc.hash)
    return None if rec is None else BlobLocation(loc.hash, rec[0], rec[1], rec[2])


def damaged_blobs(engine: Any, limit: int = 1000) -> list[dict[str, Any]]:
    """Blobs the index knows to be damaged where they live now (for status); the index is scanned only when the
    volume counters say there are some."""
    with engine.views.read() as txn:
        tx = Tx(txn, engine.views.dbs)
        if not any(unpack(v).get("bad_blobs") for _, v in tx.scan("volumes", b"")):
            return []
        out = []
        for digest, raw in tx.scan("blobs", b""):
            rec = unpack(raw)
            if is_damaged(rec):
                out.append({"hash": digest.hex(), "volume": rec[0], "offset": rec[1], "size": rec[2],
                            "refs": rec[3]})
                if len(out) >= limit:
                    break
        return out
