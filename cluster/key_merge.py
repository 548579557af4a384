"""Merging R replicas' answers about one key, one upload or one bucket, by the projection's own rules.

Each replica answers with the raw replicated state it holds (engine/reads.py: records with their ``(hlc, origin)``,
version tombstones, tag clocks, the bucket's incarnation). The merge is the state a replica holding the union of
those replicas' events would have: per version the newest record unless a tombstone is at least as new, tags from
the newest tag clock newer than the version, the Object Lock state from the newest lock clock newer than the
version, only the newest live incarnation of the bucket. It compares with
``engine.projector.stamp_of`` / ``newer``, the projector's comparisons, so the two cannot disagree. It also says, per
replica, which records it lacks or holds older (read repair sends those), docs/architecture/replication.md,
"Quorum reads and listing merge".
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from s4.engine import object_lock
from s4.engine.model import LOCK_FIELDS
from s4.engine.projector import newer, stamp_of, with_lock

R = TypeVar("R", bound=Hashable)
Stamp = tuple[int, str]
#: What a stale replica lacks: ("bucket", "") its bucket life differs (catch-up, not read repair, fixes that),
#: ("version" | "tomb" | "tags" | "lock", version id), ("upload" | "end", upload id), ("part", number),
#: ("config", kind).
Repair = tuple[str, str]


@dataclass(frozen=True)
class Merged(Generic[R]):
    """The merged state and, per replica that must be repaired, what it lacks (sorted)."""

    state: dict[str, Any]
    stale: dict[R, tuple[Repair, ...]] = field(default_factory=dict)


def _max(values: Iterable[Any]) -> Any:
    """The value with the greatest stamp (``[h, o]`` or a record with ``h``/``o``), None if there is none."""
    best = None
    for value in values:
        if value is not None and (best is None or newer(stamp_of(value), best)):
            best = value
    return best


def bucket_life(states: Iterable[Mapping[str, Any]]) -> tuple[Stamp | None, Stamp | None]:
    """(the live incarnation, or None when the merged bucket does not exist; the newest deleted incarnation).

    Creations are linearized (the CASPaxos register), so the newest incarnation anyone holds is the bucket's life,
    unless a deletion at least as new ended it."""
    states = list(states)
    inc = _max(s.get("i") for s in states)
    dead = _max(s.get("bt") for s in states)
    inc_stamp = stamp_of(inc) if inc is not None else None
    dead_stamp = stamp_of(dead) if dead is not None else None
    if inc_stamp is not None and dead_stamp is not None and dead_stamp >= inc_stamp:
        inc_stamp = None
    return inc_stamp, dead_stamp


def _life_of(state: Mapping[str, Any]) -> Stamp | None:
    return stamp_of(state["i"]) if state.get("i") is not None else None


def merge_key_states(states: Mapping[R, Mapping[str, Any]]) -> Merged[R]:
    """The newest state of one key over R replicas' ``reads.key_state`` answers (see the module docstring)."""
    inc, dead = bucket_life(states.values())
    key = next((s["k"] for s in states.values()), "")
    merged: dict[str, Any] = {"k": key, "i": list(inc) if inc else None, "bt": list(dead) if dead else None,
                              "vs": [], "vt": {}, "tc": {}, "lkc": {}}
    held = {r: s for r, s in states.items() if inc is not None and _life_of(s) == inc}
    merged["vc"] = _max(s.get("vc") for s in held.values())  # the bucket's versioning clock (writes depend on it)
    for s in held.values():
        for vid, tomb in s["vt"].items():
            merged["vt"][vid] = _max([merged["vt"].get(vid), tomb])
        for vid, clock in s["tc"].items():
            merged["tc"][vid] = _max([merged["tc"].get(vid), clock])
        for vid, clock in (s.get("lkc") or {}).items():  # a peer of an older release sends no lock clocks
            merged["lkc"][vid] = _join_locks(merged["lkc"].get(vid), clock)
    records: dict[str, dict[str, Any]] = {}
    for s in held.values():
        for rec in s["vs"]:
            records[rec["v"]] = _max([records.get(rec["v"]), rec])
    for vid, rec in records.items():
        stamp = stamp_of(rec)
        if not newer(stamp, merged["vt"].get(vid)):
            continue  # a removal at least as new
        clock = merged["tc"].get(vid)
        if clock is not None and stamp_of(clock) > stamp:  # a tags_set newer than the version: its tags
            rec = dict(rec)
            if clock["tg"]:
                rec["tg"] = clock["tg"]
            else:
                rec.pop("tg", None)
            if "acl" in clock:  # PutObjectAcl rides the tags_set event (engine/commands.py set_object_acl)
                if clock["acl"]:
                    rec["acl"] = clock["acl"]
                else:
                    rec.pop("acl", None)
        rec = with_lock(rec, merged["lkc"].get(vid))
        merged["vs"].append(rec)
    merged["vs"].sort(key=stamp_of, reverse=True)
    stale: dict[R, tuple[Repair, ...]] = {}
    for r, s in states.items():
        lacks = _key_lacks(s, merged, inc)
        if lacks:
            stale[r] = lacks
    return Merged(merged, stale)


def _key_lacks(s: Mapping[str, Any], merged: Mapping[str, Any], inc: Stamp | None) -> tuple[Repair, ...]:
    if _life_of(s) != inc:
        return (("bucket", ""),)
    if inc is None:
        return ()
    lacks: set[Repair] = set()
    if merged.get("vc") is not None and (s.get("vc") is None or stamp_of(s["vc"]) != stamp_of(merged["vc"])):
        lacks.add(("config", "versioning"))
    have = {rec["v"]: rec for rec in s["vs"]}
    for rec in merged["vs"]:
        if _unlocked(have.get(rec["v"])) != _unlocked(rec):
            lacks.add(("version", rec["v"]))
    alive = {rec["v"] for rec in merged["vs"]}
    lacks.update(("tomb", vid) for vid in have if vid not in alive)
    for vid, tomb in merged["vt"].items():
        if s["vt"].get(vid) is None or stamp_of(s["vt"][vid]) != stamp_of(tomb):
            lacks.add(("tomb", vid))
    for vid, clock in merged["tc"].items():
        if s["tc"].get(vid) is None or stamp_of(s["tc"][vid]) != stamp_of(clock):
            lacks.add(("tags", vid))
    held = s.get("lkc") or {}
    for vid, clock in merged["lkc"].items():
        if lock_events(held.get(vid)) != lock_events(clock):
            lacks.add(("lock", vid))
    return tuple(sorted(lacks))


def _join_locks(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> dict[str, Any]:
    """Two replicas' lock clocks of one version as one: the join of their lock events (engine/object_lock.py)."""
    state = object_lock.join(object_lock.clock_state(a) if a is not None else None, object_lock.clock_state(b))
    h, o = object_lock.newest(state)
    return {"h": h, "o": o, "k": b.get("k", ""), **state}


def lock_events(clock: Mapping[str, Any] | None) -> set[Stamp]:
    """The identities of the events a lock clock holds (one per part of its state): what a replica lacking some
    of them must be brought (catch-up, anti-entropy). A clock of an older release is one whole-state event."""
    if clock is None:
        return set()
    parts = [clock[p] for p in object_lock.PARTS if clock.get(p) is not None]
    if not parts:
        return {stamp_of(clock)}
    return {(int(p[0]), str(p[1])) for p in parts}


def _unlocked(rec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A version record without its Object Lock fields. A replica's lock state is judged by its lock clocks
    (``lkc``, "lock" above), the replicated fact a catch-up brings, never by the fields derived from them in the
    version record: those can differ for good where no event can change them (a record of views from before lock
    clocks, or a version whose lock clock was collected with its tombstone), and comparing them would mark the
    replica stale on every read that a catch-up cannot repair (a 503 for the key forever)."""
    if rec is None or not any(k in rec for k in LOCK_FIELDS):
        return rec
    return {k: v for k, v in rec.items() if k not in LOCK_FIELDS}


def merge_upload_states(states: Mapping[R, Mapping[str, Any]]) -> Merged[R]:
    """One multipart upload over R replicas' ``reads.upload_state`` answers: ended (the newest end marker) drops the
    record and parts; otherwise the record (every copy is one event's) and, per part number, the newest part."""
    upload_id = next((s["id"] for s in states.values()), "")
    end = _max(s.get("end") for s in states.values())
    merged: dict[str, Any] = {"id": upload_id, "u": None, "ps": {}, "end": end}
    if end is None:
        merged["u"] = next((s["u"] for s in states.values() if s.get("u") is not None), None)
        for s in states.values():
            for number, part in s["ps"].items():
                merged["ps"][number] = _max([merged["ps"].get(number), part])
    stale: dict[R, tuple[Repair, ...]] = {}
    for r, s in states.items():
        lacks: set[Repair] = set()
        if end is not None and (s.get("end") is None or stamp_of(s["end"]) != stamp_of(end)):
            lacks.add(("end", upload_id))
        if merged["u"] is not None and s.get("u") is None:
            lacks.add(("upload", upload_id))
        lacks.update(("part", str(n)) for n, part in merged["ps"].items() if s["ps"].get(n) != part)
        if lacks:
            stale[r] = tuple(sorted(lacks))
    return Merged(merged, stale)


def merge_bucket_states(states: Mapping[R, Mapping[str, Any]]) -> Merged[R]:
    """A bucket over R replicas' ``reads.bucket_state`` answers: the live incarnation's record, and per config kind
    the value with the newest clock (versioning included). The record's counts (``n``, ``sz``) are the answering
    replica's: derived numbers that converge with the events, not merged."""
    inc, dead = bucket_life(states.values())
    merged: dict[str, Any] = {"i": list(inc) if inc else None, "bt": list(dead) if dead else None, "b": None,
                              "cfg": {}}
    held = {r: s for r, s in states.items() if inc is not None and _life_of(s) == inc}
    for s in held.values():
        if merged["b"] is None:
            merged["b"] = dict(s["b"])
        for kind, (value, clock) in s["cfg"].items():
            old = merged["cfg"].get(kind)
            if old is None or (clock is not None and newer(stamp_of(clock), old[1])):
                merged["cfg"][kind] = [value, clock]
    if merged["b"] is not None and "versioning" in merged["cfg"]:
        merged["b"]["v"] = merged["cfg"]["versioning"][0] or ""
    stale: dict[R, tuple[Repair, ...]] = {}
    for r, s in states.items():
        if _life_of(s) != inc:
            stale[r] = (("bucket", ""),)
            continue
        lacks = tuple(sorted(("config", kind) for kind, entry in merged["cfg"].items()
                             if s["cfg"].get(kind, [None, None])[1] != entry[1]))
        if lacks:
            stale[r] = lacks
    return Merged(merged, stale)
