"""Compare LMDB views: dump every named database, rebuild views from a journal, diff two dumps.

A small, self-contained stand-in for ``s4.tools.replay`` so the engine's tests do not depend on it. Rebuilding
follows ``s4.engine.sequencer.replay``: events in journal order through ``s4.engine.projector.apply``, one LMDB
write transaction per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from s4.engine import datadir, projector
from s4.engine.views.blobs import is_damaged
from s4.engine.views.env import DB_NAMES, Views, from_u64, unpack
from s4.engine.views.records import Tx
from s4.journal import Event, Journal

Dump = dict[str, dict[bytes, bytes]]


def dump_views(views: Views) -> Dump:
    """Every key and value of every named database, read in one transaction."""
    out: Dump = {}
    with views.read() as txn:
        for name in DB_NAMES:
            db = views.dbs.get(name)  # read-only views lack databases never written: those are empty
            out[name] = dict(txn.cursor(db=db).iternext()) if db is not None else {}
    return out


def replay_events(events: Iterable[Event], views: Views, batch_size: int = 500) -> int:
    """Apply events to ``views`` through the projector, one transaction per batch; returns how many applied."""
    applied = 0
    pending: list[Event] = []

    def flush() -> None:
        nonlocal applied
        with views.env.begin(write=True) as txn:
            tx = Tx(txn, views.dbs, views.replicated)
            for event in pending:
                applied += int(projector.apply(tx, event))
        pending.clear()

    for event in events:
        pending.append(event)
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return applied


def rebuild_from_journal(journal: Journal, out_dir: Path, batch_size: int = 500, *, replicated: bool = True) -> Views:
    """Fresh views in ``out_dir`` (which must not hold views yet) built from every event of ``journal``, in the
    flavour ``replicated`` says (docs/architecture/views.md, "Flavour")."""
    if (Path(out_dir) / "data.mdb").exists():
        raise FileExistsError(f"{out_dir} already holds LMDB views")
    views = Views(out_dir, replicated=replicated)
    replay_events(journal.read(1), views, batch_size)
    return views


def rebuild_from_data_dir(data_dir: Path, out_dir: Path, batch_size: int = 500) -> Views:
    """Rebuild from the journal of a data directory no engine has open (the journal recovers on open)."""
    origin = (Path(data_dir) / "node_id").read_text().strip()
    journal = Journal(Path(data_dir) / "journal", origin=origin)
    try:
        return rebuild_from_journal(journal, out_dir, batch_size, replicated=datadir.pooled(Path(data_dir)))
    finally:
        journal.close()


def _show(db: str, key: bytes, value: bytes | None) -> str:
    if value is None:
        return "<absent>"
    if db == "meta" or (db == "vidx" and len(value) == 8):
        return str(from_u64(value)) if len(value) == 8 else repr(value)
    try:
        return repr(unpack(value))
    except Exception:
        return repr(value)


def diff_dumps(a: Dump, b: Dump, limit: int = 20) -> list[str]:
    """Human-readable differences between two dumps (at most ``limit`` lines); empty when identical."""
    out: list[str] = []
    for db in sorted(set(a) | set(b)):
        left, right = a.get(db, {}), b.get(db, {})
        for key in sorted(set(left) | set(right)):
            lv, rv = left.get(key), right.get(key)
            if lv == rv:
                continue
            out.append(f"{db}[{key!r}]: {_show(db, key, lv)} != {_show(db, key, rv)}")
            if len(out) >= limit:
                return out
    return out


def assert_same_views(live: Views, rebuilt: Views) -> None:
    diffs = diff_dumps(dump_views(live), dump_views(rebuilt))
    assert not diffs, "views differ from a rebuild of the journal:\n" + "\n".join(diffs)


def check_live_vs_rebuild(live: Views, journal: Journal, scratch: Path) -> None:
    """Rebuild ``journal`` into ``scratch`` (in ``live``'s flavour) and assert every database equals ``live``."""
    rebuilt = rebuild_from_journal(journal, scratch, replicated=live.replicated)
    try:
        assert_same_views(live, rebuilt)
    finally:
        rebuilt.close()


def refcount_problems(views: Views) -> list[str]:
    """Blob index vs references: each blob's refcount must equal the versions and parts that name it."""
    expected: Counter[bytes] = Counter()
    stored: dict[bytes, list[Any]] = {}
    with views.read() as txn:
        for _, raw in txn.cursor(db=views.dbs["versions"]).iternext():
            for digest, _size in unpack(raw).get("b", ()):
                expected[digest] += 1
        for _, raw in txn.cursor(db=views.dbs["parts"]).iternext():
            for digest, _size in unpack(raw)["b"]:
                expected[digest] += 1
        for digest, raw in txn.cursor(db=views.dbs["blobs"]).iternext():
            stored[digest] = unpack(raw)
        live_by_volume: Counter[str] = Counter()
        bad_by_volume: Counter[str] = Counter()
        for rec in stored.values():
            live_by_volume[rec[0]] += rec[2]
            if is_damaged(rec):
                bad_by_volume[rec[0]] += 1
        volume_stats = {name.decode(): unpack(raw) for name, raw in txn.cursor(db=views.dbs["volumes"]).iternext()}
        volume_live = {name: stats["live"] for name, stats in volume_stats.items()}
        volume_bad = {name: stats.get("bad_blobs", 0) for name, stats in volume_stats.items()}
    problems = []
    for digest in sorted(set(expected) | set(stored)):
        have = stored[digest][3] if digest in stored else 0
        if have != expected[digest]:
            problems.append(f"blob {digest.hex()[:16]}: refcount {have}, referenced {expected[digest]} times")
    for name in sorted(set(live_by_volume) | set(volume_live)):
        if live_by_volume[name] != volume_live.get(name, 0):
            problems.append(f"volume {name}: live {volume_live.get(name, 0)} != indexed {live_by_volume[name]}")
    for name in sorted(set(bad_by_volume) | {n for n, bad in volume_bad.items() if bad}):
        if bad_by_volume[name] != volume_bad.get(name, 0):
            problems.append(f"volume {name}: bad_blobs {volume_bad.get(name, 0)} != indexed {bad_by_volume[name]}")
    return problems


def check_engine_integrity(engine: Any, scratch: Path) -> None:
    """After a crash: views == a rebuild from the journal, refcounts exact, every indexed blob's record intact."""
    import shutil

    from s4.engine.model import BlobLocation

    check_live_vs_rebuild(engine.views, engine.journal, scratch)
    shutil.rmtree(scratch)
    problems = refcount_problems(engine.views)
    assert not problems, "\n".join(problems)
    for digest, raw in dump_views(engine.views)["blobs"].items():
        volume, offset, size = unpack(raw)[:3]
        damage = engine.volumes.verify_blob(BlobLocation(digest, volume, offset, size))
        assert damage is None, f"blob {digest.hex()} in {volume}@{offset}: {damage}"
