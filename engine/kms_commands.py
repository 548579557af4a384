"""Deciders of the built-in KMS (engine/kms.py holds the record and its projection): create, rotate, enable or
disable a key. Refusals are ``IamError`` answers (the admin API renders them), as for users."""

from __future__ import annotations

from typing import Any

from s4.journal import EventType

from .iam import IamError, _refusing
from .kms import KEY_ID_RE, public, read_key
from .sequencer import Decider, Decision


def check_key_id(key_id: Any) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise IamError(400, "key_id must be 1-256 characters of letters, digits and _.:+=@- (starting with a "
                            "letter or digit)")
    return key_id


# -- deciders -----------------------------------------------------------------------------------------------------
def _require(d: Decision, key_id: str) -> dict[str, Any]:
    rec = read_key(d.tx, key_id)
    if rec is None:
        raise IamError(404, f"KMS key {key_id!r} not found")
    return rec


def create_key(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    key_id = check_key_id(args["key_id"])
    if read_key(d.tx, key_id) is not None:
        raise IamError(409, f"KMS key {key_id!r} already exists")
    d.emit(EventType.KMS_KEY_CREATED, {"key_id": key_id, "version": args["version"], "material": args["material"]})
    return public(_require(d, key_id))


def rotate_key(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    key_id = check_key_id(args["key_id"])
    _require(d, key_id)
    d.emit(EventType.KMS_KEY_ROTATED, {"key_id": key_id, "version": args["version"], "material": args["material"]})
    return public(_require(d, key_id))


def set_key_enabled(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    key_id = check_key_id(args["key_id"])
    if not isinstance(args["enabled"], bool):
        raise IamError(400, "enabled must be true or false")
    _require(d, key_id)
    d.emit(EventType.KMS_KEY_UPDATED, {"key_id": key_id, "enabled": args["enabled"]})
    return public(_require(d, key_id))


DECIDERS: dict[str, Decider] = {
    "kms_create_key": _refusing(create_key),
    "kms_rotate_key": _refusing(rotate_key),
    "kms_set_key_enabled": _refusing(set_key_enabled),
}


