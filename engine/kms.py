"""The built-in KMS: named keys whose versions of key material wrap SSE-KMS data keys (docs/architecture/encryption.md,
"SSE-KMS"). Deciders and projections of the ``kms.*`` events; the engine-facing operations are engine/kms_ops.py.

A key's material is 32 random bytes made by the engine before the command (never in a decider: replay must be
deterministic) and carried in the event **wrapped** under the master key (a pool's shared one), so the journal,
the views and exports never hold it in clear. The ``kms_keys`` view (key: the key id, UTF-8) holds per key::

    {"id": key id, "c": created ms (the earliest creation seen), "en": enabled, "ec": [hlc, origin] of "en",
     "vs": {version id: [wrapped material, created ms, hlc, origin]}}

The deciders are engine/kms_commands.py (this module is imported by the projector, which the sequencer imports).

Versions are a grow-only set: a create or a rotation adds one, concurrent ones on two nodes both stay; the current
version (what new objects use) is the one with the greatest (hlc, origin). ``en`` is last-writer-wins by
(hlc, origin). Both merges commute and are idempotent, so peers' events apply in any order. A key is never
deleted (objects may still need it): it is disabled, which makes its objects unreadable until it is enabled again.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from s4.journal import Event, EventType
from s4.journal.hlc import physical_ms

from .views import keys
from .views.env import pack, unpack
from .views.records import Tx

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=@-]{0,255}$")  # no "/": ids are path segments
VIEW = "kms_keys"


def read_key(tx: Tx, key_id: str) -> dict[str, Any] | None:
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        return None
    return tx.packed(VIEW, keys.text_key(key_id))  # type: ignore[no-any-return]


def current_version(rec: dict[str, Any]) -> str:
    """The version new objects use: the newest by (hlc, origin); "" before any version arrived (a peer's update
    applied ahead of the creation)."""
    if not rec["vs"]:
        return ""
    return str(max(rec["vs"], key=lambda vid: (rec["vs"][vid][2], rec["vs"][vid][3], vid)))


def public(rec: dict[str, Any]) -> dict[str, Any]:
    """What the admin API shows: no material, not even wrapped."""
    return {"key_id": rec["id"], "enabled": rec["en"], "created_ms": rec["c"], "versions": len(rec["vs"]),
            "current_version": current_version(rec)}


# -- anti-entropy (docs/architecture/anti-entropy.md, "KMS keys") ---------------------------------------------------
def ae_state(tx: Tx) -> dict[str, Any]:
    """The replicated facts of every key, as the identities of the events that made them: per key its versions'
    events (creations and rotations) and the event of its enabled flag. Nothing secret, not even wrapped."""
    out: dict[str, Any] = {}
    for _, raw in tx.scan(VIEW, b""):
        rec = unpack(raw)
        out[rec["id"]] = {"vs": {vid: [v[2], v[3]] for vid, v in sorted(rec["vs"].items())}, "ec": list(rec["ec"])}
    return out


def ae_root(state: dict[str, Any]) -> bytes:
    """One digest of ``ae_state`` (empty when there are no keys): equal on two nodes exactly when they hold the
    same KMS events. Keys are few (named by operators), so it is computed from the view on each exchange."""
    if not state:
        return b""
    return hashlib.sha256(pack(dict(sorted(state.items())))).digest()


def ae_lacks(mine: dict[str, Any], theirs: dict[str, Any]) -> set[tuple[int, str]]:
    """The identities of the KMS events ``theirs`` holds and ``mine`` lacks: versions it has and mine does not,
    and its enabled flag's event when newer than mine."""
    out: set[tuple[int, str]] = set()
    for key_id, rec in theirs.items():
        have = mine.get(key_id) or {"vs": {}, "ec": [0, ""]}
        out.update((int(s[0]), str(s[1])) for vid, s in rec["vs"].items() if vid not in have["vs"])
        if (int(rec["ec"][0]), str(rec["ec"][1])) > (int(have["ec"][0]), str(have["ec"][1])):
            out.add((int(rec["ec"][0]), str(rec["ec"][1])))
    return out


# -- projection ---------------------------------------------------------------------------------------------------
def _stamp(event: Event) -> list[Any]:
    return [event.hlc, event.origin]


def _record(tx: Tx, key_id: str, event: Event) -> dict[str, Any]:
    rec = read_key(tx, key_id)
    ms = physical_ms(event.hlc)
    if rec is None:
        return {"id": key_id, "c": ms, "en": True, "ec": [0, ""], "vs": {}}
    rec["c"] = min(rec["c"], ms)
    return rec


def _add_version(tx: Tx, event: Event, *, created: bool) -> None:
    p = event.payload
    rec = _record(tx, p["key_id"], event)
    rec["vs"].setdefault(p["version"], [p["material"], physical_ms(event.hlc), event.hlc, event.origin])
    rec["vs"] = dict(sorted(rec["vs"].items()))  # one byte layout whatever the order of arrival (replicas compare)
    if created:  # a creation enables the key as of its own stamp (a later disable, in any order, wins)
        _set_enabled(rec, True, _stamp(event))
    tx.put(VIEW, keys.text_key(p["key_id"]), pack(rec))


def _set_enabled(rec: dict[str, Any], enabled: bool, stamp: list[Any]) -> None:
    if list(stamp) > list(rec["ec"]):
        rec["en"], rec["ec"] = enabled, stamp


def apply_key_created(tx: Tx, event: Event) -> None:
    _add_version(tx, event, created=True)


def apply_key_rotated(tx: Tx, event: Event) -> None:
    _add_version(tx, event, created=False)


def apply_key_updated(tx: Tx, event: Event) -> None:
    p = event.payload
    rec = _record(tx, p["key_id"], event)
    _set_enabled(rec, bool(p["enabled"]), _stamp(event))
    tx.put(VIEW, keys.text_key(p["key_id"]), pack(rec))


HANDLERS = {
    EventType.KMS_KEY_CREATED: apply_key_created,
    EventType.KMS_KEY_ROTATED: apply_key_rotated,
    EventType.KMS_KEY_UPDATED: apply_key_updated,
}
