"""Events -> views. Deterministic and idempotent: the same events in the same order give the same views.

The logical events (``journal.events.REPLICATED``) also project last-writer-wins by ``(hlc, origin)``: this node's
decisions and peers' events take the same handlers, and the views they leave do not depend on the order in which
a node received the events (docs/architecture/replication.md, "Applying a peer's events"). ``event_ids`` records
every event's identity, so the sequencer can tell a peer's event it already holds. That bookkeeping is kept only in
views of the replicated flavour (``tx.replicated``): a node that never served in a pool applies its own events
once, in order, and nothing reads it there (docs/architecture/views.md, "Flavour").

``apply(tx, event)`` skips events at or below the views' ``last_seq`` and records the new ``last_seq`` in the
same LMDB transaction as the view changes, so a crash can never leave a view half-updated or an event applied
twice. Handlers never consult the clock or randomness: every value they store comes from the event (times come
from its HLC). The dispatch table is the event catalogue's "views touched" column (docs/architecture/events.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s4.journal import REPLICATED, Event, EventType
from s4.journal.hlc import physical_ms

from . import imports, kms, object_lock
from .model import Bucket, Upload, stamped, version_record
from .tombstones import apply_tombstones_collected
from .views import blobs, keys, merkle, upload_index
from .views.env import pack, unpack
from .views.records import Tx
from .volumes.record import record_bytes

Handler = Callable[[Tx, Event], None]


class ProjectionError(RuntimeError):
    """An event that cannot apply to the current views: the log and views disagree (a bug or corruption)."""


def _event_ms(event: Event) -> int:
    return physical_ms(event.hlc)


# -- blobs --------------------------------------------------------------------------------------------------------
def _count_bad(stats: dict[str, Any], blobs: int, size: int) -> None:
    """Damaged blobs located in a volume (keys absent while 0, so undamaged volumes' records are unchanged)."""
    for key, delta in (("bad_blobs", blobs), ("bad_bytes", size)):
        value = stats.get(key, 0) + delta
        if value:
            stats[key] = value
        else:
            stats.pop(key, None)


def _count_live(stats: dict[str, Any], size: int, sign: int) -> None:
    """A blob of ``size`` data bytes entered (``sign`` 1) or left (-1) a volume. ``rb`` counts the live records'
    whole bytes (header and block table included); a record that leaves turns dead whole: ``dead`` is what
    compaction can reclaim (docs/architecture/volumes.md, "Garbage")."""
    stats["live"] += sign * size
    stats["rb"] = max(0, stats.get("rb", 0) + sign * record_bytes(size))
    if sign < 0:
        stats["dead"] += record_bytes(size)
    _settle_dead(stats)


def _settle_dead(stats: dict[str, Any]) -> None:
    """In a sealed volume (size known) dead bytes are exactly the bytes outside live records."""
    if "size" in stats:
        stats["dead"] = max(0, stats["size"] - stats.get("rb", 0))


def _leave(tx: Tx, rec: list[Any]) -> None:
    """The blob's bytes at its current location stop being live there (freed, moved or repointed)."""
    stats = tx.volume_stats(rec[0])
    _count_live(stats, rec[2], -1)
    if blobs.is_damaged(rec):
        _count_bad(stats, -1, -rec[2])
    tx.put_volume_stats(rec[0], stats)


def _arrive(tx: Tx, rec: list[Any]) -> None:
    stats = tx.volume_stats(rec[0])
    _count_live(stats, rec[2], 1)
    tx.put_volume_stats(rec[0], stats)


def incref(tx: Tx, digest: bytes, locations: dict[bytes, list[Any]]) -> None:
    """One more reference. A blob whose current copy is damaged is repointed to the event's location when that is
    another place not known to be bad: the writer stored the bytes afresh (ingest skips damaged blobs)."""
    rec = tx.blob(digest)
    loc = locations.get(digest)
    if rec is not None:
        if loc is not None and blobs.is_damaged(rec) and [loc[1], loc[2]] not in blobs.damaged_locations(rec):
            _leave(tx, rec)
            rec[0], rec[1] = loc[1], loc[2]
            _arrive(tx, rec)
        rec[3] += 1
    else:
        if loc is None:
            raise ProjectionError(f"blob {digest.hex()} referenced without a location")
        rec = [loc[1], loc[2], loc[3], 1]
        _arrive(tx, rec)
    tx.put("blobs", digest, pack(rec))


def decref(tx: Tx, digest: bytes) -> None:
    rec = tx.blob(digest)
    if rec is None:
        raise ProjectionError(f"blob {digest.hex()} released but not in the index")
    rec[3] -= 1
    if rec[3] > 0:
        tx.put("blobs", digest, pack(rec))
        return
    tx.delete("blobs", digest)
    _leave(tx, rec)


def _locations(payload: dict[str, Any]) -> dict[bytes, list[Any]]:
    return {loc[0]: loc for loc in payload.get("blobs_at", ())}


# -- last-writer-wins (docs/architecture/replication.md, "Applying a peer's events") ------------------------------
Stamp = tuple[int, str]


def _stamp(event: Event) -> Stamp:
    """An event's identity and its last-writer-wins order: ``(hlc, origin)``."""
    return event.hlc, event.origin


def _pair(value: Any) -> Stamp:
    """A stored ``[hlc, origin]`` (or ``{h, o}``) as a comparable stamp."""
    if isinstance(value, dict):
        return value["h"], value.get("o", "")
    return value[0], value[1]


def _newer(stamp: Stamp, stored: Any) -> bool:
    """Strictly newer than what is stored (None: nothing stored): equal means the same event, applied already."""
    return stored is None or stamp > _pair(stored)


class UnknownBucketError(ProjectionError):
    """An event of a bucket incarnation this node has not created yet (it is behind): applying it now would lose it,
    so a peer's batch holding it is refused and sent again after catch-up."""


def _bucket_for(tx: Tx, event: Event) -> Bucket | None:
    """The bucket an object, multipart, config or rename event applies to, or None when the event belongs to an
    older incarnation of the name (deleted, perhaps re-created since): such an event is ignored.

    ``inc`` (the ``[hlc, origin]`` of the bucket's ``bucket.created``) is added to every bucket-scoped event by
    ``Decision.emit``; events journaled before it existed carry none and apply to the bucket of that name."""
    p = event.payload
    bucket = tx.bucket(p["bucket"])
    inc = p.get("inc")
    if inc is None or (bucket is not None and bucket.incarnation is None):
        if bucket is None:
            raise ProjectionError(f"{event.type} for missing bucket {p['bucket']!r}")
        return bucket
    wanted = _pair(inc)
    if bucket is not None:
        have = _pair(bucket.incarnation)
        if have == wanted:
            return bucket
        if have > wanted:
            return None
    dead = tx.packed("bucket_tombs", keys.bucket_key(p["bucket"]))
    if dead is not None and _pair(dead) >= wanted:
        return None
    raise UnknownBucketError(f"{event.type} of bucket {p['bucket']!r} incarnation {inc} that this node does not "
                             "hold yet")


def _live(rec: dict[str, Any] | None) -> int:
    return int(rec is not None and not rec.get("dm"))


def _set_tags(rec: dict[str, Any], tags: dict[str, str] | None) -> None:
    if tags:
        rec["tg"] = tags
    else:
        rec.pop("tg", None)


def _set_acl(rec: dict[str, Any], attrs: dict[str, Any]) -> None:
    """A tags_set that carries ``acl`` (PutObjectAcl, and every tags_set of a version with an ACL) sets it too."""
    if "acl" in attrs:
        if attrs["acl"]:
            rec["acl"] = attrs["acl"]
        else:
            rec.pop("acl", None)


def lock_state(rec: dict[str, Any]) -> dict[str, Any]:
    """A version's lock state (engine/object_lock.py ``join``): ``lc``, the join of the lock events applied to it,
    else the lock it was written with, as an event at the version's own stamp. (A record of a peer of an older
    release has ``lc`` ``[hlc, origin]``: its whole lock state set at that stamp.)"""
    lc = rec.get("lc")
    if isinstance(lc, dict):
        return lc
    at = lc if lc is not None else (rec["h"], rec.get("o", ""))
    return object_lock.event_state(None, rec.get("lk"), rec.get("lh"), int(at[0]), str(at[1]))


def _set_lock(rec: dict[str, Any], state: dict[str, Any]) -> None:
    """A version's lock from its state: retention ``lk`` (absent: none), legal hold ``lh`` (absent: never set;
    False is kept, GetObjectLegalHold answers OFF), both by ``object_lock.effective``, and the state itself ``lc``."""
    lk, lh = object_lock.effective(state)
    if lk:
        rec["lk"] = lk
    else:
        rec.pop("lk", None)
    if lh is not None:
        rec["lh"] = lh
    else:
        rec.pop("lh", None)
    rec["lc"] = state


def with_lock(rec: dict[str, Any], clock: dict[str, Any] | None) -> dict[str, Any]:
    """``rec`` as it stands once the lock events of ``clock`` (a ``lock_clocks`` entry, or one event's state)
    joined its own (a copy when that changes anything). The one rule for a lock event applied to its version, a
    lock clock applied to a version arriving after it, and the quorum-read merge, so all three agree."""
    if clock is None:
        return rec
    have = lock_state(rec)
    state = object_lock.join(have, clock)
    if state == object_lock.join(have, None):
        return rec
    rec = dict(rec)
    _set_lock(rec, state)
    return rec


#: The comparisons above under public names, for cluster code that merges replicas' records by the projection's rules
#: (cluster/key_merge.py): one definition of "newer" and of how a lock clock applies.
stamp_of = _pair
newer = _newer


# -- objects ------------------------------------------------------------------------------------------------------
def _store_version(tx: Tx, event: Event, rec: dict[str, Any]) -> None:
    """Store a version unless a version of that id or a tombstone for it is at least as new (last writer wins by
    ``(hlc, origin)``). It takes its place among the key's versions by that order, so the latest version is the
    same whatever order the events came in; a same-id version it supersedes (``null``) is released."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    stamp = _stamp(event)
    rec = stamped(rec, event.hlc, event.origin)
    if tx.replicated:  # a removal, tags_set or lock_set newer than this put may have arrived first (never on one node)
        vkey = keys.object_version_key(bucket.name, p["key"], rec["v"])
        if not _newer(stamp, tx.packed("vtombs", vkey)):
            return
        tags = tx.packed("tag_clocks", vkey)
        if tags is not None and _pair(tags) > stamp:
            _set_tags(rec, tags["tg"])
            _set_acl(rec, tags)
        rec = with_lock(rec, tx.packed("lock_clocks", vkey))  # a lock_set that overtook its version
    # One namespace walk: ``ensure_object`` finds the key's leaf or creates it (a walk to find it first, then a
    # second to create it, cost a new key ~5,000 instructions); a leaf that existed creates nothing, so the early
    # return below leaves the namespace as it was.
    oid, created = tx.ensure_object(bucket.root, p["key"].encode())
    found = before = None
    if not created:
        found = tx.version_at(oid, rec["v"])
        if found is not None and not _newer(stamp, found[1]):
            return
        before = tx.latest(oid)
    locations = _locations(p)
    for digest, _size in rec.get("b", ()):
        incref(tx, digest, locations)
    if found is not None:  # the same version id (``null``) written again: the one it replaces is released
        order, replaced = found
        tx.remove_version_at(oid, rec["v"], order)
        _release(tx, bucket, replaced)
        merkle.version(tx, bucket.name, p["key"], replaced, -1)
    tx.insert_version(oid, rec)
    merkle.version(tx, bucket.name, p["key"], rec, 1)
    bucket.bytes_stored += rec.get("s", 0)
    # A leaf created now has a fresh object id: the version just stored is its only one, so its latest.
    bucket.object_count += _live(rec if created else tx.latest(oid)) - _live(before)
    tx.put_bucket(bucket)


def _release(tx: Tx, bucket: Any, rec: dict[str, Any]) -> None:
    for digest, _size in rec.get("b", ()):
        decref(tx, digest)
    bucket.bytes_stored -= rec.get("s", 0)


def takes_references(tx: Tx, event: Event) -> bool:
    """Whether projecting ``event`` now would take references on its blobs (so needs their locations): False for
    a put superseded here already (a tombstone or a same-id version at least as new, a bucket life that ended) and
    for a part of an upload that ended or a part number holding a newer part. A replica applies such an event
    without the bytes, which may be gone on every node (engine/replica.py)."""
    p = event.payload
    try:
        bucket = _bucket_for(tx, event)
    except ProjectionError:
        return True  # refused anyway: its bucket is unknown here
    if bucket is None:
        return False
    stamp = _stamp(event)
    if event.type is EventType.PART_STORED:
        if _ended(tx, p["upload_id"]):
            return False
        old = tx.packed("parts", keys.parts_key(p["upload_id"], p["part"]["n"]))
        return old is None or _newer(stamp, {"h": old.get("h", 0), "o": old.get("o", "")})
    if event.type not in (EventType.OBJECT_VERSION_PUT, EventType.MULTIPART_COMPLETED):
        return False
    rec = p["version"]
    if not _newer(stamp, tx.packed("vtombs", keys.object_version_key(bucket.name, p["key"], rec["v"]))):
        return False
    oid = tx.find_object(bucket.root, p["key"].encode())
    current = None if oid is None else tx.version(oid, rec["v"])
    return current is None or _newer(stamp, current)


def apply_object_version_put(tx: Tx, event: Event) -> None:
    _store_version(tx, event, event.payload["version"])


def apply_delete_marker_put(tx: Tx, event: Event) -> None:
    _store_version(tx, event, version_record(event.payload["version_id"], 0, "", delete_marker=True,
                                             imported=imports.of(event.payload)))


def _tombstone(tx: Tx, bucket: str, key: str, version_id: str, stamp: Stamp) -> None:
    """Remember a removal, so an older put of that version arriving later does not bring it back. A single node's
    projection keeps none: it applies only its own events, in order, so no older put can follow the removal."""
    if not tx.replicated:
        return
    vkey = keys.object_version_key(bucket, key, version_id)
    old = tx.packed("vtombs", vkey)
    if old is None:
        tx.count_tombstones(1)
    if _newer(stamp, old):
        new = {"k": key, "v": version_id, "h": stamp[0], "o": stamp[1]}
        tx.put("vtombs", vkey, pack(new))
        merkle.clock(tx, merkle.TOMBSTONE, bucket, key, version_id, old, new)


def apply_object_version_removed(tx: Tx, event: Event) -> None:
    """Removes the version only if the stored one is older than the removal; always leaves a tombstone."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    stamp = _stamp(event)
    _tombstone(tx, bucket.name, p["key"], p["version_id"], stamp)
    key = p["key"].encode()
    oid = tx.find_object(bucket.root, key)
    if oid is None:
        return
    found = tx.version_at(oid, p["version_id"])
    if found is None or not stamp > _pair(found[1]):
        return
    order, removed = found
    before = tx.latest(oid)
    tx.remove_version_at(oid, p["version_id"], order)
    _release(tx, bucket, removed)
    merkle.version(tx, bucket.name, p["key"], removed, -1)
    after = tx.latest(oid)
    if after is None:
        tx.remove_object(bucket.root, key)
    bucket.object_count += _live(after) - _live(before)
    tx.put_bucket(bucket)


def apply_object_tags_set(tx: Tx, event: Event) -> None:
    """Tags are last-writer-wins per version: the newest tags_set is kept in ``tag_clocks`` (it may arrive before
    the version does) and replaces the version's tags unless the version itself was written later."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    stamp = _stamp(event)
    if tx.replicated:  # the clock lets a tags_set overtake its version's put; in order (a single node) none is needed
        vkey = keys.object_version_key(bucket.name, p["key"], p["version_id"])
        old = tx.packed("tag_clocks", vkey)
        if not _newer(stamp, old):
            return
        new = {"h": stamp[0], "o": stamp[1], "tg": p["tags"], "k": p["key"]}
        if "acl" in p:
            new["acl"] = p["acl"]
        tx.put("tag_clocks", vkey, pack(new))
        merkle.clock(tx, merkle.TAGS, bucket.name, p["key"], p["version_id"], old, new)
    oid = tx.find_object(bucket.root, p["key"].encode())
    if oid is None:
        return
    rec = tx.version(oid, p["version_id"])
    if rec is None or _pair(rec) > stamp:
        return
    _set_tags(rec, p["tags"])
    _set_acl(rec, p)
    tx.replace_version(oid, rec)


def apply_object_lock_set(tx: Tx, event: Event) -> None:
    """A version's retention (``lk``) or legal hold (``lh``), the field ``f`` names (none: both, an event of an
    older release), joined into the version's lock state (engine/object_lock.py ``join``): per field the newest
    event, except that no concurrent decision shortens a COMPLIANCE retention. In a pool the join of a version's
    lock events is also kept in ``lock_clocks`` (a peer's may arrive before the version it names, which then takes
    it on arrival: ``_store_version``); an event already joined changes nothing."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    stamp = _stamp(event)
    incoming = object_lock.event_state(p.get("f"), p.get("lk"), p.get("lh"), stamp[0], stamp[1])
    if tx.replicated:  # the clock lets a lock_set overtake its version's put; in order (a single node) none is needed
        vkey = keys.object_version_key(bucket.name, p["key"], p["version_id"])
        old = tx.packed("lock_clocks", vkey)
        state = object_lock.join(old, incoming)
        if old is not None and state == object_lock.join(old, None):
            return
        h, o = object_lock.newest(state)
        new = {"h": h, "o": o, "k": p["key"], **state}
        tx.put("lock_clocks", vkey, pack(new))
        merkle.clock(tx, merkle.LOCK, bucket.name, p["key"], p["version_id"], old, new)
    oid = tx.find_object(bucket.root, p["key"].encode())
    rec = tx.version(oid, p["version_id"]) if oid is not None else None
    if oid is None or rec is None:
        return
    locked = with_lock(rec, incoming)
    if locked is not rec:
        tx.replace_version(oid, locked)


def _drop_object(tx: Tx, bucket: Bucket, oid: int) -> None:
    """Release every version of an object being overwritten by a rename."""
    before = tx.latest(oid)
    for _, rec in list(tx.versions(oid)):
        tx.delete_version(oid, rec["v"])
        _release(tx, bucket, rec)
    if before is not None and not before.get("dm"):
        bucket.object_count -= 1


def _retarget_uploads(tx: Tx, bucket: Bucket, src: str, dst: str, whole_prefix: bool) -> None:
    """In-flight multipart uploads follow their key to its new name."""
    if whole_prefix:
        ids = [upload_id for _, upload_id in upload_index.under(tx, bucket.root, src.encode())]
    else:
        ids = upload_index.of_key(tx, bucket.root, src.encode())
    for upload_id in ids:
        upload = tx.upload(upload_id)
        if upload is None:
            continue
        upload_index.remove(tx, bucket.root, upload)
        upload.key = dst + upload.key[len(src):]
        upload_index.add(tx, bucket.root, upload)
        tx.put_upload(upload)


def apply_prefix_renamed(tx: Tx, event: Event) -> None:
    """Idempotent through the event's identity (a peer's copy is applied once: ``event_ids``), but not
    order-independent: see replication.md, "Rename" for what the cluster layer must order."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    src, dst = p["src"].encode(), p["dst"].encode()
    if src.endswith(b"/"):
        def drop(oid: int) -> None:
            _drop_object(tx, bucket, oid)

        tx.move_dir(bucket.root, src, dst, on_conflict=drop)
    else:
        oid = tx.find_object(bucket.root, src)
        if oid is None:
            return
        existing = tx.find_object(bucket.root, dst)
        if existing is not None:
            for _, rec in tx.versions(existing):
                merkle.version(tx, bucket.name, p["dst"], rec, -1)
            _drop_object(tx, bucket, existing)
            tx.remove_object(bucket.root, dst)
        for _, rec in tx.versions(oid):  # the Merkle view follows a key rename (a prefix rename waits for a rebuild)
            merkle.version(tx, bucket.name, p["src"], rec, -1)
            merkle.version(tx, bucket.name, p["dst"], rec, 1)
        tx.remove_object(bucket.root, src)
        tx.ensure_object(bucket.root, dst, leaf_id=oid)
    tx.put_bucket(bucket)
    _retarget_uploads(tx, bucket, p["src"], p["dst"], src.endswith(b"/"))
    if p.get("client_token"):
        tx.put_rename_token(bucket.name, p["client_token"], p["src"], p["dst"])


# -- buckets ------------------------------------------------------------------------------------------------------
def apply_bucket_created(tx: Tx, event: Event) -> None:
    """Idempotent: a no-op while the name exists in this or a newer incarnation, and for an incarnation already
    deleted (a late duplicate). The event's ``(hlc, origin)`` is the new bucket's incarnation."""
    p = event.payload
    stamp = _stamp(event)
    dead = tx.packed("bucket_tombs", keys.bucket_key(p["bucket"]))
    if dead is not None and _pair(dead) >= stamp:
        return
    existing = tx.bucket(p["bucket"])
    if existing is not None:
        if existing.incarnation is None or _pair(existing.incarnation) >= stamp:
            return
        # A newer life of the name: creations are linearized, so the life held here was deleted and that delete
        # has not arrived yet. Ending it now keeps this creation from being lost (it would never apply again).
        tx.delete("buckets", keys.bucket_key(p["bucket"]))
        tx.drop_bucket_records(p["bucket"])
        if _newer(_pair(existing.incarnation), dead):
            tx.put("bucket_tombs", keys.bucket_key(p["bucket"]), pack(list(existing.incarnation)))
    tx.put_bucket(Bucket(p["bucket"], _event_ms(event), p.get("region", "us-east-1"), "", tx.alloc_node(),
                         p.get("owner", ""), incarnation=list(stamp), account=p.get("account", ""),
                         account_name=p.get("account_name", "")))


def apply_bucket_deleted(tx: Tx, event: Event) -> None:
    """Deletes the bucket of the event's incarnation (or an older one this node still holds; never a newer one)
    and remembers the deleted incarnation in ``bucket_tombs``."""
    name, inc = event.payload["bucket"], event.payload.get("inc")
    bucket = tx.bucket(name)
    if bucket is not None and (inc is None or bucket.incarnation is None or _pair(bucket.incarnation) <= _pair(inc)):
        tx.delete("buckets", keys.bucket_key(name))
        tx.drop_bucket_records(name)
    if inc is None:
        return
    # [incarnation hlc, origin, deletion hlc, origin]: readers compare the first two (``stamp_of``); anti-entropy
    # ships the deletion by the last two (docs/architecture/anti-entropy.md). Of one incarnation's deletions (or a
    # tombstone a newer creation left without one) the newest deletion is kept, so any arrival order agrees.
    old = tx.packed("bucket_tombs", keys.bucket_key(name))
    if _newer(_pair(inc), old) or (_pair(inc) == _pair(old) and (len(old) < 4 or _stamp(event) > _pair(old[2:]))):
        tx.put("bucket_tombs", keys.bucket_key(name), pack([*inc, event.hlc, event.origin]))


def apply_bucket_config_set(tx: Tx, event: Event) -> None:
    """Last writer wins per (bucket, kind); a deleted config (``value`` None) keeps its clock as a tombstone."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    key = keys.bucket_cfg_key(p["bucket"], p["kind"])
    stamp = _stamp(event)
    if not _newer(stamp, tx.packed("cfg_clocks", key)):
        return
    tx.put("cfg_clocks", key, pack(list(stamp)))
    if p["kind"] == "versioning":
        bucket.versioning = p["value"] or ""
        tx.put_bucket(bucket)
        return
    if p["value"] is None:
        tx.delete("bucket_cfg", key)
    else:
        tx.put("bucket_cfg", key, pack(p["value"]))


# -- multipart ----------------------------------------------------------------------------------------------------
def _ended(tx: Tx, upload_id: str) -> bool:
    """Whether the upload completed or was aborted here: only ever asked for a late event, which a single node's
    in-order projection never sees (it keeps no ``upload_ends``)."""
    return tx.replicated and tx.get("upload_ends", keys.upload_key(upload_id)) is not None


def apply_multipart_created(tx: Tx, event: Event) -> None:
    """Idempotent by upload id; a no-op for an upload already completed or aborted here."""
    bucket = _bucket_for(tx, event)
    if bucket is None:
        return
    upload = Upload.from_record(dict(event.payload["upload"], t=_event_ms(event)))
    if tx.upload(upload.upload_id) is not None or _ended(tx, upload.upload_id):
        return
    upload_index.add(tx, bucket.root, upload)
    tx.put_upload(upload)


def apply_part_stored(tx: Tx, event: Event) -> None:
    """Last writer wins per (upload, part number). A part may arrive before its upload's ``created`` (it waits in
    ``parts``); one arriving after the upload ended is ignored."""
    p = event.payload
    bucket = _bucket_for(tx, event)
    if bucket is None or _ended(tx, p["upload_id"]):
        return
    key = keys.parts_key(p["upload_id"], p["part"]["n"])
    old = tx.packed("parts", key)
    stamp = _stamp(event)
    if old is not None and not _newer(stamp, {"h": old.get("h", 0), "o": old.get("o", "")}):
        return
    part = dict(p["part"], t=_event_ms(event), h=stamp[0], o=stamp[1])
    locations = _locations(p)
    for digest, _size in part["b"]:
        incref(tx, digest, locations)
    if old is not None:
        for digest, _size in old["b"]:
            decref(tx, digest)
    tx.put("parts", key, pack(part))


def _drop_upload(tx: Tx, upload_id: str) -> None:
    for part in list(tx.parts(upload_id)):
        for blob in part.blobs:
            decref(tx, blob.hash)
        tx.delete("parts", keys.parts_key(upload_id, part.part_number))
    upload = tx.upload(upload_id)
    if upload is None:
        return
    tx.delete("uploads", keys.upload_key(upload_id))
    bucket = tx.bucket(upload.bucket)
    if bucket is not None:
        upload_index.remove(tx, bucket.root, upload)


def _end_upload(tx: Tx, event: Event, upload_id: str, state: str) -> None:
    """The marker that keeps a late ``created`` or ``part_stored`` of a finished upload out (the newest end wins
    when a completion and an abort raced on two nodes)."""
    key = keys.upload_key(upload_id)
    stamp = _stamp(event)
    if tx.replicated and _newer(stamp, tx.packed("upload_ends", key)):
        tx.put("upload_ends", key, pack({"h": stamp[0], "o": stamp[1], "st": state}))
    _drop_upload(tx, upload_id)


def apply_multipart_completed(tx: Tx, event: Event) -> None:
    p = event.payload
    if _bucket_for(tx, event) is None:
        return
    _store_version(tx, event, p["version"])  # takes its own refs on the parts' blobs first
    _end_upload(tx, event, p["upload_id"], "completed")
    # Remember the outcome so a retried CompleteMultipartUpload gets the same answer (S3 does this too).
    prior = tx.completed_upload(p["bucket"], p["upload_id"])
    if prior is None or _newer(_stamp(event), prior["version"]):
        summary = {k: v for k, v in p["version"].items() if k != "b"}
        tx.put_completed_upload(p["bucket"], p["upload_id"], {
            "bk": p["bucket"], "k": p["key"], "parts": p.get("parts"),
            "version": stamped(summary, event.hlc, event.origin)})


def apply_multipart_aborted(tx: Tx, event: Event) -> None:
    if _bucket_for(tx, event) is None:
        return
    _end_upload(tx, event, event.payload["upload_id"], "aborted")


# -- users and credentials: last writer wins per field, deletion final ---------------------------------------------
def _user_state(tx: Tx, user_id: str) -> dict[str, Any]:
    """``{f: {field: [value, hlc, origin]}, c: created ms, u: newest [hlc, origin], ep: epoch (count of password
    changes and deactivations), d: deletion [hlc, origin]}``: what the user's events decided, in any order."""
    return tx.packed("user_clocks", keys.text_key(user_id)) or {"f": {}}


def _field_beats(new: list[Any], old: list[Any]) -> bool:
    """Whether field entry ``new`` replaces ``old``. An entry is ``[value, hlc, origin]`` from ``user.updated``, or
    ``[value, hlc, origin, 0]`` from ``user.created`` (a *base* value). Any update beats any base; among updates
    the newest wins; among bases the *earliest* creation wins. Only a pool's root user has several creations (one
    seed per node, one id: engine/iam.py ``root_user_id``): so a node that seeds it later, with another password,
    never overrides the pool's first seed nor a password rotated or a deactivation made through the admin API."""
    new_base, old_base = len(new) > 3, len(old) > 3
    if new_base != old_base:
        return old_base
    if new_base:
        return (new[1], new[2]) < (old[1], old[2])
    return (new[1], new[2]) > (old[1], old[2])


def _set_fields(state: dict[str, Any], values: dict[str, Any], event: Event, *, base: bool = False) -> None:
    stamp = _stamp(event)
    for name, value in values.items():
        old = state["f"].get(name)
        entry = [value, stamp[0], stamp[1], 0] if base else [value, stamp[0], stamp[1]]
        if old is None or _field_beats(entry, old):
            state["f"][name] = entry
    if _newer(stamp, state.get("u")):
        state["u"] = list(stamp)


def _user_access_key(tx: Tx, user_id: str) -> str | None:
    """The user's one key pair: its newest live credential."""
    best: tuple[Stamp, str] | None = None
    for key, val in tx.scan("credentials", b""):
        rec = unpack(val)
        if rec["user"] == user_id:
            stamp = (rec.get("h", 0), rec.get("o", ""))
            if best is None or stamp > best[0]:
                best = (stamp, keys.decode_text_key(key))
    return best[1] if best is not None else None


def _settle_name(tx: Tx, username: str) -> None:
    """``user_names`` points at the live user of that name created last (two nodes may create one name at once)."""
    best: tuple[Stamp, str] | None = None
    for _, val in tx.scan("users", b""):
        rec = unpack(val)
        if rec["username"] == username:
            field = _user_state(tx, rec["id"])["f"]["username"]
            if best is None or (field[1], field[2]) > best[0]:
                best = ((field[1], field[2]), rec["id"])
    if best is None:
        tx.delete("user_names", keys.text_key(username))
    else:
        tx.put("user_names", keys.text_key(username), best[1].encode())


def _save_user(tx: Tx, user_id: str, state: dict[str, Any]) -> None:
    """Store the state and materialize the ``users`` record from it (absent until ``created`` arrived, and after
    the deletion, which also takes the user's credentials)."""
    tx.put("user_clocks", keys.text_key(user_id), pack(state))
    old = tx.user(user_id)
    fields = state["f"]
    if state.get("d") or "username" not in fields:
        if old is not None:
            tx.delete("users", keys.text_key(user_id))
            _settle_name(tx, old["username"])
        if state.get("d"):
            for key, val in list(tx.scan("credentials", b"")):
                if unpack(val)["user"] == user_id:
                    tx.delete("credentials", key)
        return
    rec = {"id": user_id, "username": fields["username"][0], "role": fields["role"][0],
           "password_hash": fields["password_hash"][0], "active": fields["active"][0],
           "created_ms": state.get("c", 0), "updated_ms": physical_ms(state["u"][0]),
           "epoch": state.get("ep", 0), "access_key": _user_access_key(tx, user_id)}
    for name in ("ni", "account", "email"):
        if name in fields:
            rec[name] = fields[name][0]
    tx.put("users", keys.text_key(user_id), pack(rec))
    if old is not None and old["username"] != rec["username"]:
        _settle_name(tx, old["username"])
    _settle_name(tx, rec["username"])


def apply_user_created(tx: Tx, event: Event) -> None:
    p = event.payload
    state = _user_state(tx, p["user_id"])
    if state.get("d"):
        return
    fields = {"username": p["username"], "role": p["role"], "password_hash": p["password_hash"], "active": True}
    for name in ("account", "email"):  # engine/accounts.py; absent: the default account, no email
        if name in p:
            fields[name] = p[name]
    if "ni" in p:
        fields["ni"] = p["ni"]  # the name's incarnation in the pool's register (engine/user_names.py)
    _set_fields(state, fields, event, base=True)
    state["c"] = min(state.get("c", _event_ms(event)), _event_ms(event))  # the first creation, in any order
    _save_user(tx, p["user_id"], state)


def apply_user_updated(tx: Tx, event: Event) -> None:
    p = event.payload
    state = _user_state(tx, p["user_id"])
    if state.get("d"):
        return
    _set_fields(state, {k: p[k] for k in ("role", "password_hash", "active") if k in p}, event)
    if "password_hash" in p or p.get("active") is False:
        # invalidates tokens issued before. A count commutes, and each event is applied once per node (a peer's
        # copy it already holds is never applied again: event_ids), so every node counts the same.
        state["ep"] = state.get("ep", 0) + 1
    _save_user(tx, p["user_id"], state)


def apply_user_deleted(tx: Tx, event: Event) -> None:
    user_id = event.payload["user_id"]
    state = _user_state(tx, user_id)
    if _newer(_stamp(event), state.get("d")):
        # final: what came before is forgotten, so it does not matter whether it arrived before the deletion
        state = {"f": {}, "d": list(_stamp(event))}
    _save_user(tx, user_id, state)


def _refresh_access_key(tx: Tx, user_id: str) -> None:
    user = tx.user(user_id)
    if user is not None:
        user["access_key"] = _user_access_key(tx, user_id)
        tx.put("users", keys.text_key(user_id), pack(user))


def apply_credential_created(tx: Tx, event: Event) -> None:
    """``secret_key`` is ciphertext (engine/keyring.py); the view keeps it encrypted too. Idempotent by access key
    (never reused); a no-op once the key or its user is deleted."""
    p = event.payload
    key = keys.text_key(p["access_key"])
    if tx.get("cred_tombs", key) is not None or tx.get("credentials", key) is not None:
        return
    if _user_state(tx, p["user_id"]).get("d"):
        return
    tx.put("credentials", key, pack({"user": p["user_id"], "secret": p["secret_key"], "created_ms": _event_ms(event),
                                     "h": event.hlc, "o": event.origin}))
    _refresh_access_key(tx, p["user_id"])


def apply_credential_deleted(tx: Tx, event: Event) -> None:
    """Leaves a tombstone in ``cred_tombs``, so a late ``credential.created`` of the key stays out."""
    key = keys.text_key(event.payload["access_key"])
    if _newer(_stamp(event), tx.packed("cred_tombs", key)):
        tx.put("cred_tombs", key, pack(list(_stamp(event))))
    raw = tx.get("credentials", key)
    if raw is None:
        return
    tx.delete("credentials", key)
    _refresh_access_key(tx, unpack(raw)["user"])


# -- volumes ------------------------------------------------------------------------------------------------------
def apply_blob_moved(tx: Tx, event: Event) -> None:
    p = event.payload
    rec = tx.blob(p["hash"])
    if rec is None:
        return
    _leave(tx, rec)
    rec[0], rec[1] = p["volume"], p["offset"]
    _arrive(tx, rec)
    tx.put("blobs", p["hash"], pack(rec))


def apply_blob_damaged(tx: Tx, event: Event) -> None:
    """The blob's bytes at ``volume``/``offset`` failed their checksums: remembered on its index record (no write
    deduplicates onto a damaged copy) and counted on the volume while the blob still lives there."""
    p = event.payload
    rec = tx.blob(p["hash"])
    if rec is None:
        return
    if blobs.mark_damaged(rec, p["volume"], p["offset"]):
        stats = tx.volume_stats(rec[0])
        _count_bad(stats, 1, rec[2])
        tx.put_volume_stats(rec[0], stats)
    tx.put("blobs", p["hash"], pack(rec))


def apply_blob_freed(tx: Tx, event: Event) -> None:
    """Compaction dropped the bytes of an unreferenced blob; nothing in the index points at them."""


def apply_volume_sealed(tx: Tx, event: Event) -> None:
    """A sealed volume's size is final: from now on every byte not in a live record counts as dead, which takes
    in the garbage no event ever named (failed or killed uploads, duplicate copies of a race, torn writes)."""
    stats = tx.volume_stats(event.payload["volume"])
    stats["sealed"] = True
    stats["size"] = event.payload["size"]
    _settle_dead(stats)
    tx.put_volume_stats(event.payload["volume"], stats)


def apply_volume_retired(tx: Tx, event: Event) -> None:
    """The record stays as a tombstone: a late write naming the volume must be refused (commands.py)."""
    tx.put_volume_stats(event.payload["volume"], {"live": 0, "dead": 0, "sealed": True, "retired": True})


HANDLERS: dict[EventType, Handler] = {
    EventType.BUCKET_CREATED: apply_bucket_created,
    EventType.BUCKET_DELETED: apply_bucket_deleted,
    EventType.BUCKET_CONFIG_SET: apply_bucket_config_set,
    EventType.OBJECT_VERSION_PUT: apply_object_version_put,
    EventType.DELETE_MARKER_PUT: apply_delete_marker_put,
    EventType.OBJECT_VERSION_REMOVED: apply_object_version_removed,
    EventType.OBJECT_TAGS_SET: apply_object_tags_set,
    EventType.MULTIPART_CREATED: apply_multipart_created,
    EventType.PART_STORED: apply_part_stored,
    EventType.MULTIPART_COMPLETED: apply_multipart_completed,
    EventType.MULTIPART_ABORTED: apply_multipart_aborted,
    EventType.PREFIX_RENAMED: apply_prefix_renamed,
    EventType.USER_CREATED: apply_user_created,
    EventType.USER_UPDATED: apply_user_updated,
    EventType.USER_DELETED: apply_user_deleted,
    EventType.CREDENTIAL_CREATED: apply_credential_created,
    EventType.CREDENTIAL_DELETED: apply_credential_deleted,
    EventType.BLOB_MOVED: apply_blob_moved,
    EventType.BLOB_FREED: apply_blob_freed,
    EventType.BLOB_DAMAGED: apply_blob_damaged,
    EventType.VOLUME_SEALED: apply_volume_sealed,
    EventType.VOLUME_RETIRED: apply_volume_retired,
    EventType.TOMBSTONES_COLLECTED: apply_tombstones_collected,
    EventType.OBJECT_LOCK_SET: apply_object_lock_set,
    **kms.HANDLERS,
}


def apply(tx: Tx, event: Event) -> bool:
    """Apply one event if it is new to these views; returns whether it was applied."""
    if event.seq <= tx.last_seq():
        return False
    handler = HANDLERS.get(event.type)
    if handler is None:
        raise ProjectionError(f"no projection for event type {event.type!r} (seq {event.seq})")
    handler(tx, event)
    if tx.replicated and event.type in REPLICATED:  # a single node never asks whether it holds an event
        tx.record_event(event.origin, event.hlc, event.seq)
    tx.set_last_seq(event.seq)
    return True
