"""Compaction: copy the live blobs out of mostly-dead volumes, journal the moves, delete the old files.

One pass (``run_compaction``), blocking, on a worker thread:

  1. delete the files of volumes already retired in the views (a crash between retire and unlink);
  2. scan the blob index: live bytes (data + record headers and block tables) and blobs per volume;
  3. candidates: every volume file except the newest of each worker process (an active volume, still being appended
     to) whose dead fraction ``1 - live / file size`` is at least the threshold; most-dead first, at most
     ``max_volumes``. Using the file size counts unreferenced garbage (crashed writes, copies a crash left
     behind) as dead, so no space is orphaned;
  4. per candidate: read each live blob, check its block checksums and SHA-256 (a damaged one is marked,
     ``blob.damaged``, and the volume kept), append it (a v2 record) to the active volume; per batch, the
     ``move_blobs`` command fsyncs the new volume (sequencer step 3) and journals ``blob.moved`` for each blob
     that still lives at the old place (freed or moved meanwhile: skipped, the copy is garbage);
  5. ``retire_volume`` journals ``volume.retired`` only if the volume's live bytes are now 0 (a concurrent
     write that resurrected a blob there keeps it for a later pass); then ``VolumeStore.retire`` unlinks it.

Every step is idempotent and ordered so a kill -9 anywhere loses nothing: bytes are durable before a move is
journalled, a move is journalled before the retire, the retire before the unlink. See
docs/architecture/compaction.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..model import BlobLocation
from ..sequencer import Command
from ..space import is_disk_full
from ..views.env import unpack
from ..views.records import Tx
from ..volumes.record import DamagedBlob, record_bytes
from ..volumes.store import NAME_RE
from .report import RunReport

if TYPE_CHECKING:
    from .lease import StopFlag

log = logging.getLogger(__name__)
ACTOR = "system:compaction"
BATCH_BYTES = 32 * 1024 * 1024
COPY_SLACK_BYTES = 1024 * 1024  # journal records and LMDB pages of the moves, beyond the copies themselves


def _newest_per_worker(names: list[str]) -> set[str]:
    newest: dict[str, str] = {}
    for name in names:
        m = NAME_RE.match(name)
        if m and (m.group(1) not in newest or name > newest[m.group(1)]):
            newest[m.group(1)] = name
    return set(newest.values())


def _scan(engine: Any) -> tuple[dict[str, list[tuple[bytes, int, int]]], dict[str, dict[str, Any]]]:
    blobs: dict[str, list[tuple[bytes, int, int]]] = defaultdict(list)
    with engine.views.read() as txn:
        tx = Tx(txn, engine.views.dbs)
        for digest, raw in tx.scan("blobs", b""):
            volume, offset, size = unpack(raw)[:3]
            blobs[volume].append((digest, offset, size))
        stats = {k.decode(): unpack(v) for k, v in tx.scan("volumes", b"")}
    return blobs, stats


def analyse(engine: Any, threshold: float) -> tuple[list[dict[str, Any]], dict[str, list[tuple[bytes, int, int]]],
                                                    list[str]]:
    """(volume rows, blobs per volume, retired files still on disk)."""
    store = engine.volumes
    names = store.volume_names()
    blobs, stats = _scan(engine)
    # the newest of each worker and this process's active one are still appended to; pinned ones hold bytes an
    # event will reference shortly (a replica's staged blobs), which a compaction would drop as unreferenced
    skip = _newest_per_worker(names) | {store.active} | set(getattr(engine, "pinned_volumes", set)())
    rows, leftovers = [], []
    for name in names:
        if stats.get(name, {}).get("retired"):
            leftovers.append(name)
            continue
        if name in skip:
            continue
        try:
            size = (store.directory / name).stat().st_size
        except FileNotFoundError:
            continue
        live = sum(record_bytes(s) for _, _, s in blobs.get(name, ()))
        dead_fraction = 1.0 - live / size if size else 1.0
        rows.append({"volume": name, "size": size, "live": live, "blobs": len(blobs.get(name, ())),
                     "dead_fraction": round(dead_fraction, 4), "selected": size > 0 and dead_fraction >= threshold
                     and dead_fraction > 0, "unsealed": "size" not in stats.get(name, {})})
    return rows, blobs, leftovers


def _compact_volume(engine: Any, name: str, blobs: list[tuple[bytes, int, int]], report: RunReport,
                    stop: threading.Event | None = None) -> bool:
    store = engine.volumes
    moves: list[list[Any]] = []
    targets: set[str] = set()
    pending = 0

    def flush() -> None:
        nonlocal pending
        if moves:
            moved = engine.sequencer.execute_sync(Command("move_blobs", {"moves": list(moves)}, ACTOR,
                                                          tuple(targets)))
            report.count(report.done, "blobs_moved", moved)
            report.count(report.done, "blobs_skipped", len(moves) - moved)
        moves.clear()
        targets.clear()
        pending = 0

    try:
        for digest, offset, size in sorted(blobs, key=lambda b: b[1]):
            if stop is not None and stop.is_set():  # journal what is copied; the next pass finishes the volume
                flush()
                return False
            loc = BlobLocation(digest, name, offset, size)
            try:
                data = store.read_blob(loc, 0, size)  # checked against the record's block checksums
                if hashlib.sha256(data).digest() != digest:
                    raise DamagedBlob("content does not match its SHA-256 name")
            except DamagedBlob as exc:
                report.errors.append(f"{name}@{offset}: blob {digest.hex()} is damaged ({exc.problem}); volume kept "
                                     "until the blob is stored again or freed")
                engine.sequencer.execute_sync(Command("mark_blob_damaged", {
                    "hash": digest, "volume": name, "offset": offset, "problem": exc.problem}, ACTOR))
                return False
            except OSError as exc:
                report.errors.append(f"{name}@{offset}: {exc}")
                return False
            loc = store.append(data, digest)
            moves.append([digest, name, offset, loc.volume, loc.offset])
            targets.add(loc.volume)
            report.count(report.done, "bytes_copied", size)
            pending += size
            if pending >= BATCH_BYTES:
                flush()
        flush()
        return _retire(engine, name, report)
    except Exception as exc:
        if not is_disk_full(exc, getattr(engine, "space", None)):
            raise
        # The moves journalled so far stand; copies not journalled are garbage in the target (dead once sealed).
        report.errors.append(f"{name}: the disk filled up while copying its live blobs; volume kept, pass goes on")
        return False


def _room_to_copy(engine: Any, row: dict[str, Any], report: RunReport) -> bool:
    """Copying a volume's live blobs needs that much free space (the reserve may be used: compaction frees space);
    a volume that does not fit is skipped and the report says why. Volumes with nothing live need no room."""
    space = getattr(engine, "space", None)
    if space is None or row["live"] == 0:
        return True
    free = space.free_bytes(fresh=True)
    if free >= row["live"] + COPY_SLACK_BYTES:
        return True
    report.count(report.done, "volumes_skipped_no_space")
    report.errors.append(f"{row['volume']}: copying its {row['live']} live bytes needs {row['live'] + COPY_SLACK_BYTES}"
                         f" bytes free, {free} are; skipped (delete more data or add space, then run again)")
    return False


def _seal_strays(engine: Any, rows: list[dict[str, Any]], report: RunReport) -> None:
    """Seal volumes no writer appends to whose seal never committed (killed, or failed on a full disk), so their
    garbage counts as dead in the ``volumes`` view too."""
    for row in rows:
        if not row["unsealed"]:
            continue
        try:
            engine.sequencer.execute_sync(Command("seal_volume", {"volume": row["volume"], "size": row["size"]},
                                                  ACTOR))
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            report.errors.append(f"{row['volume']}: could not record its seal, the disk is full")
            return
        report.count(report.done, "volumes_sealed")


def _retire(engine: Any, name: str, report: RunReport) -> bool:
    if not engine.sequencer.execute_sync(Command("retire_volume", {"volume": name}, ACTOR)):
        report.count(report.done, "volumes_still_referenced")
        return False
    size = _file_size(engine, name)
    if engine.volumes.retire(name):
        report.count(report.done, "volumes_deleted")
        report.count(report.done, "bytes_reclaimed", size)
    return True


def _file_size(engine: Any, name: str) -> int:
    try:
        return int((engine.volumes.directory / name).stat().st_size)
    except FileNotFoundError:
        return 0


def run_compaction(engine: Any, *, threshold: float = 0.3, max_volumes: int | None = None,
                   dry_run: bool = False, multipart_ttl_seconds: float | None = None,
                   clock: Any = None, stop: threading.Event | None = None,
                   multipart_stop: StopFlag | None = None) -> RunReport:
    """One compaction pass (blocking); see the module docstring. A set ``stop`` ends it early, at a point
    as safe as any kill (``done.interrupted``). The multipart-upload expiry first (None: not this time; in a pool
    only the lease holder runs it), ending early once ``multipart_stop`` is set."""
    report = RunReport("compaction", dry_run)
    if multipart_ttl_seconds is not None:
        from .multipart_ttl import expire_uploads

        kwargs = {"clock": clock} if clock is not None else {}
        expire_uploads(engine, multipart_ttl_seconds, dry_run=dry_run, report=report,
                       stop=multipart_stop if multipart_stop is not None else stop, **kwargs)
    rows, blobs, leftovers = analyse(engine, threshold)
    report.count(report.examined, "volumes", len(rows) + len(leftovers))
    for name in leftovers:  # retired before a crash, never unlinked
        if dry_run:
            report.count(report.done, "would_delete_retired")
            continue
        size = _file_size(engine, name)
        if engine.volumes.retire(name):
            report.count(report.done, "volumes_deleted")
            report.count(report.done, "bytes_reclaimed", size)
    if not dry_run:
        _seal_strays(engine, rows, report)
    selected = sorted((r for r in rows if r["selected"]), key=lambda r: -r["dead_fraction"])
    if max_volumes is not None:
        selected = selected[:max_volumes]
    report.details.extend(rows)
    for row in selected:
        if stop is not None and stop.is_set():
            report.count(report.done, "interrupted")
            break
        if dry_run:
            report.count(report.done, "would_compact")
            report.count(report.done, "would_reclaim_bytes", row["size"] - row["live"])
            continue
        if not _room_to_copy(engine, row, report):
            continue
        if _compact_volume(engine, row["volume"], blobs.get(row["volume"], []), report, stop):
            report.count(report.done, "volumes_compacted")
    report.finish()
    log.info("compaction run%s: %d volumes examined, did %s in %.1f ms", " (dry run)" if dry_run else "",
             report.examined.get("volumes", 0), report.done, report.duration_ms)
    return report
