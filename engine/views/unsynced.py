"""When the views may skip fsync: LMDB commits in page cache only, trusted again only within the same boot.

The journal is the durable record; the views are a projection of it. Syncing the LMDB data file on every commit
cost the sequencer one more fdatasync per batch (on the acknowledgement path) than the journal needs. So the node
opens its views with MDB_NOSYNC and leaves a marker holding the kernel's boot id while they are open:

* a process crash (kill -9, OOM) loses nothing LMDB committed: the page cache survives the process, and LMDB
  never leaves a committed tree half-written in it; start-up replays the journal past the views' ``last_seq``;
* a machine crash or power loss can lose or tear unsynced LMDB pages. The boot id then differs from the marker's,
  and start-up discards the views and rebuilds them from the journal (every acknowledged event is there);
* a clean close syncs the views and removes the marker.

Where no boot id exists (not Linux) the views sync on every commit as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from s4.journal.segment import fsync_dir

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
MARKER_NAME = "unsynced-since-boot"


def current_boot_id() -> str | None:
    """The running kernel's boot id, or None where the platform has none."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


class UnsyncedMarker:
    """The file saying "these views hold commits not yet synced, made during boot X"."""

    def __init__(self, views_dir: Path, boot_id: str | None) -> None:
        self.path = views_dir / MARKER_NAME
        self.boot_id = boot_id

    def views_untrusted(self) -> bool:
        """True if the views were left unsynced by a boot other than this one (they may be torn)."""
        if not self.path.exists():
            return False
        return self.boot_id is None or self.path.read_text().strip() != self.boot_id

    def mark(self) -> None:
        """Record the boot id durably before the first unsynced commit."""
        assert self.boot_id is not None
        tmp = self.path.with_suffix(".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(self.boot_id + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        """After the views were synced: nothing unsynced remains."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.path.parent)

