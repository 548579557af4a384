"""Durable delivery state per target under ``<data dir>/notify/<target id>/``: the cursor and parked messages.

``cursor``: the seq of the last journal event handled for this target (delivered with a 2xx, parked, or matching
nothing). Written atomically (temporary file, fsync, rename, fsync of the directory). It only moves forward past an
event whose message was answered 2xx or durably parked, so a crash at any point resends (at-least-once), never
skips. ``parked/<seq>-<n>.json``: a message that failed ``S4_NOTIFY_MAX_ATTEMPTS`` tries, with its last error;
``retry/``: parked messages an operator asked to retry (``POST /api/admin/notify/parked/retry``), picked up by the
delivery job. Any process can read and move these files (the admin API runs in the HTTP workers, delivery in the
process that owns the journal), and a rename is atomic, so no lock is needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARKED, RETRY = "parked", "retry"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or its old content after any crash, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A message that is not delivered: which target and event, why, and the message itself."""

    name: str  # the file name: <seq>-<n>.json
    target: str
    seq: int
    attempts: int
    error: str
    message: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.name.removesuffix(".json"), "target": self.target, "seq": self.seq,
                "attempts": self.attempts, "error": self.error, "message": self.message}


class NotifyStore:
    """The ``notify`` directory of a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "notify"

    def _dir(self, target: str, *sub: str) -> Path:
        path = self.root.joinpath(target, *sub)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cursor(self, target: str) -> int | None:
        """The last seq handled for ``target``; None before the target's first start."""
        try:
            return int((self.root / target / "cursor").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def set_cursor(self, target: str, seq: int) -> None:
        write_durably(self._dir(target) / "cursor", f"{seq}\n".encode())

    def park(self, target: str, seq: int, index: int, attempts: int, error: str, message: dict[str, Any]) -> None:
        doc = {"target": target, "seq": seq, "attempts": attempts, "error": error[:500], "message": message}
        write_durably(self._dir(target, PARKED) / f"{seq:020d}-{index}.json", json.dumps(doc).encode())

    def targets(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def listed(self, target: str, state: str = PARKED) -> list[ParkedMessage]:
        folder = self.root / target / state
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # moved meanwhile, or a torn write that rename never published (cannot happen)
            out.append(ParkedMessage(path.name, target, int(doc["seq"]), int(doc.get("attempts", 0)),
                                     str(doc.get("error", "")), doc["message"]))
        return out

    def count(self, target: str, state: str = PARKED) -> int:
        folder = self.root / target / state
        return sum(1 for _ in folder.glob("*.json")) if folder.is_dir() else 0

    def request_retry(self, target: str, names: list[str] | None = None) -> int:
        """Move parked messages (all, or those named) to ``retry/``; returns how many moved."""
        moved = 0
        for parked in self.listed(target):
            if names is not None and parked.name.removesuffix(".json") not in names:
                continue
            try:
                os.replace(self.root / target / PARKED / parked.name, self._dir(target, RETRY) / parked.name)
            except FileNotFoundError:
                continue
            moved += 1
        if moved:
            _fsync_dir(self.root / target / RETRY)
        return moved

    def discard(self, target: str, names: list[str] | None = None) -> int:
        """Delete parked messages (all, or those named) for good; returns how many went."""
        gone = 0
        for parked in self.listed(target):
            if names is None or parked.name.removesuffix(".json") in names:
                (self.root / target / PARKED / parked.name).unlink(missing_ok=True)
                gone += 1
        if gone:
            _fsync_dir(self.root / target / PARKED)
        return gone

    def done(self, target: str, name: str, state: str = RETRY) -> None:
        (self.root / target / state / name).unlink(missing_ok=True)

    def repark(self, parked: ParkedMessage, attempts: int, error: str) -> None:
        """A retried message failed again: back to ``parked/`` with its new count and error."""
        doc = {"target": parked.target, "seq": parked.seq, "attempts": attempts, "error": error[:500],
               "message": parked.message}
        write_durably(self._dir(parked.target, PARKED) / parked.name, json.dumps(doc).encode())
        self.done(parked.target, parked.name)
