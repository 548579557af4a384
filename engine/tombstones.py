"""Tombstone GC: which tombstones may go, the decider that drops them, and the projection of that decision
(docs/architecture/tombstones.md).

A tombstone keeps an older write out (replication.md, "The rules"). It may go once no event it must keep out can
still arrive here, which a ``Horizon`` states in two numbers the cluster computes (cluster/tombstone_gc.py):

* ``before_ms``: its stamp's wall time is at most this (``min(now, every peer's last completed catch-up start) -
  S4_GC_GRACE_DAYS``): this node has pulled every peer's journal past anything decided before it, so it holds the
  identity (``event_ids``) of every older event and can never take one as new;
* ``max_seq``: the local seq at which this node applied the tombstone's event is at most this (every peer reported
  applying this node's journal through it): every replica has the tombstone, so no replica still holds (and could
  read-repair or anti-entropy back) what it removed.

The GC job finds candidates in a read transaction (``candidates``), then the decider ``collect_tombstones``
re-checks each (still stored with that stamp) and journals one node-local ``tombstones.collected`` event naming
them; ``apply_tombstones_collected`` deletes exactly those, so replay of the journal gives the same views.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from s4.journal import Event, EventType
from s4.journal.hlc import physical_ms

from .views import keys, merkle
from .views.env import unpack
from .views.records import Tx

if TYPE_CHECKING:  # the sequencer imports the projector, which imports this module
    from .sequencer import Decision

#: The tombstones the GC collects, in scan order. ``bucket_tombs`` stay (one per deleted bucket name: an event of a
#: forgotten incarnation would be refused as behind forever), as do the name register's (cluster/caspaxos.py).
KINDS = ("vtombs", "upload_ends", "cred_tombs", "user_clocks")
Entry = list[Any]  # [db, key bytes, hlc, origin]
#: A removed version's last-writer-wins clocks: collected with its tombstone when no newer than it.
CLOCKS = ("tag_clocks", "lock_clocks")


@dataclass(frozen=True, slots=True)
class Horizon:
    before_ms: int  # a tombstone whose stamp's wall time is later stays
    max_seq: int  # a tombstone whose event this node applied at a later local seq stays


def stamp(db: str, value: Any) -> tuple[int, str] | None:
    """The ``(hlc, origin)`` of the event a stored tombstone records; None: not a tombstone (a live user)."""
    if db == "user_clocks":
        dead = value.get("d")
        return (dead[0], dead[1]) if dead else None
    if isinstance(value, dict):
        return value["h"], value.get("o", "")
    return value[0], value[1]


def collectable(tx: Tx, db: str, value: Any, horizon: Horizon) -> tuple[int, str] | None:
    """The tombstone's stamp if ``horizon`` lets it go, else None. A tombstone whose event has no local seq (none
    recorded) stays: nothing proves the peers hold it."""
    found = stamp(db, value)
    if found is None or physical_ms(found[0]) > horizon.before_ms:
        return None
    seq = tx.event_seq(found[1], found[0])
    if seq is None or seq > horizon.max_seq:
        return None
    return found


def candidates(tx: Tx, horizon: Horizon, *, db: str, after: bytes | None, limit: int
               ) -> tuple[list[Entry], bytes | None]:
    """Up to ``limit`` examined entries of ``db`` after key ``after``: the collectable ones (a version tombstone
    brings the tag and lock clocks of that version when no newer), and the key to resume from (None: ``db`` done)."""
    out: list[Entry] = []
    last: bytes | None = None
    for n, (key, raw) in enumerate(_scan_after(tx, db, after)):
        if n >= limit:
            return out, last
        last = bytes(key)
        found = collectable(tx, db, unpack(raw), horizon)
        if found is None:
            continue
        out.append([db, last, found[0], found[1]])
        if db == "vtombs":
            for clocks in CLOCKS:
                clock = tx.packed(clocks, last)
                if clock is not None and (clock["h"], clock.get("o", "")) <= found:
                    out.append([clocks, last, clock["h"], clock.get("o", "")])
    return out, None


def _scan_after(tx: Tx, db: str, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    for key, raw in tx.scan(db, b"", after):
        if after is not None and key == after:
            continue
        yield key, raw


def _still(tx: Tx, entry: Entry) -> bool:
    db, key, h, o = entry
    value = tx.packed(db, key)
    if value is None:
        return False
    if db in CLOCKS:
        return (value["h"], value.get("o", "")) == (h, o)
    return stamp(db, value) == (h, o)


def collect_tombstones(d: Decision, args: dict[str, Any]) -> int:
    """The GC job's candidates, each re-checked (a newer tombstone may have replaced it since: its event is newer,
    so it waits for its own horizon): one ``tombstones.collected`` naming those still stored. How many."""
    entries = [list(e) for e in args["entries"] if e[0] in (*KINDS, *CLOCKS) and _still(d.tx, e)]
    if entries:
        d.emit(EventType.TOMBSTONES_COLLECTED, {"entries": entries})
    return len(entries)


def apply_tombstones_collected(tx: Tx, event: Event) -> None:
    """Delete exactly the tombstones the decider named, each only while it is the one named (same stamp)."""
    for entry in event.payload["entries"]:
        if not _still(tx, entry):
            continue
        _forget_digest(tx, entry)
        tx.delete(entry[0], entry[1])
        if entry[0] == "vtombs":
            tx.count_tombstones(-1)


def _forget_digest(tx: Tx, entry: Entry) -> None:
    """Take a collected tombstone or tag clock out of the key's Merkle digest (engine/views/merkle.py), in the same
    transaction: two replicas that collected the same records keep equal digests, and anti-entropy finds no
    difference in what was collected on both."""
    kind = {"vtombs": merkle.TOMBSTONE, "tag_clocks": merkle.TAGS, "lock_clocks": merkle.LOCK}.get(entry[0])
    value = tx.packed(entry[0], entry[1])
    if kind is None or value is None:
        return
    bucket, khash, version_id = keys.decode_object_version_key(entry[1])
    for digest in merkle.record_atoms(kind, bucket, khash, version_id, value):
        merkle.toggle(tx, bucket, value.get("k", ""), digest, -1, khash)


DECIDERS = {"collect_tombstones": collect_tombstones}
