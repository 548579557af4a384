"""IAM deciders: users and S3 credentials are journal events like every other change.

Deciders only check the views and record facts. Everything expensive or secret-bearing is prepared by the caller
(engine/iam_ops.py) before the command reaches the sequencer: the argon2id hash, the generated access key and the
*encrypted* secret. So no plain password or secret is ever part of an event, and replay stays deterministic.

A refusal is an ``IamError`` (HTTP status + message), not an S3Error: the admin API answers it as JSON. Deciders
return it rather than raise it (see ``_refusing``) so a refused command is an answer, not a logged failure.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from s4.journal import EventType

from . import accounts
from .sequencer import Decider, Decision
from .views import keys
from .views.env import unpack

ROLES = ("Reader", "Writer", "SuperUser")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{3,32}$")
ACCESS_KEY_RE = re.compile(r"^S4AK[A-Z0-9]{16}$")
ROOT_ID_NAMESPACE = uuid.UUID("5b4a1c2e-7f0d-4e8a-9b1c-3d2e6f8a0c41")
"""uuid5 namespace of the root users' ids in a pool (``root_user_id``): fixed forever, ids derive from it."""


class IamError(Exception):
    """A refused IAM request: ``status`` is the HTTP status the admin API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_username(username: Any) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise IamError(400, "username must be 3-32 characters of letters, digits and '_'")
    return username


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise IamError(400, f"role must be one of {', '.join(ROLES)}")
    return str(role)


def root_user_id(cluster_name: str, username: str) -> str:
    """The root user's id in a pool: every node derives the same one, so the nodes' first-start seeds of the root
    user (S4_ROOT_PASSWORD) are one user whose replicated ``user.created`` events merge into one record
    (engine/projector.py: the earliest creation is the base, every update overrides it) instead of one user named
    ``root`` per node. Single mode keeps a random id."""
    return str(uuid.uuid5(ROOT_ID_NAMESPACE, f"{cluster_name}\0{username}"))


def _require_user(d: Decision, user_id: str) -> dict[str, Any]:
    rec = d.tx.user(user_id)
    if rec is None:
        raise IamError(404, "user not found")
    return rec


def create_user(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    username = check_username(args["username"])
    role = check_role(args["role"])
    if d.tx.user_id_by_name(username) is not None:
        raise IamError(409, f"username {username!r} already exists")
    _check_account(d, args.get("account") or "", args.get("email") or "")
    user_id = args.get("user_id") or str(uuid.uuid4())  # given: a pool's root (root_user_id), or engine/user_names.py
    if d.tx.packed("user_clocks", keys.text_key(user_id)) is not None:  # ids are never reused (a deletion is final)
        raise IamError(409, f"user id {user_id} was used before")
    payload = {"user_id": user_id, "username": username, "role": role, "password_hash": args["password_hash"]}
    for name in ("account", "email"):  # checked by the caller (engine/iam_ops.py); absent: default account
        if args.get(name):
            payload[name] = args[name]
    if args.get("ni"):  # a pool: the incarnation of the name the register granted (engine/user_names.py)
        payload["ni"] = int(args["ni"])
    d.emit(EventType.USER_CREATED, payload)
    return d.tx.user(user_id)  # type: ignore[return-value]


def _check_account(d: Decision, account: str, email: str) -> None:
    """An account id names one account (ids derive from names: engine/accounts.py), and an email one account."""
    if not account and not email:
        return
    name = account or accounts.DEFAULT_ACCOUNT_NAME
    wanted = accounts.account_id(name)
    for _, raw in d.tx.scan("users", b""):
        other = accounts.of_user(unpack(raw))
        if other.id == wanted and other.name != name:
            raise IamError(409, f"account {name!r} cannot be created (its id is taken); choose another name")
        if email and unpack(raw).get("email") == email and other.name != name:
            raise IamError(409, f"email {email!r} belongs to another account")


def update_user(d: Decision, args: dict[str, Any]) -> dict[str, Any]:
    rec = _require_user(d, args["user_id"])
    payload: dict[str, Any] = {"user_id": rec["id"]}
    if args.get("role") is not None:
        payload["role"] = check_role(args["role"])
    if args.get("password_hash") is not None:
        payload["password_hash"] = args["password_hash"]
    if args.get("active") is not None:
        payload["active"] = bool(args["active"])
    changed = {k: v for k, v in payload.items() if k != "user_id" and rec.get(k) != v}
    if changed:
        d.emit(EventType.USER_UPDATED, {"user_id": rec["id"], **changed})
    return d.tx.user(rec["id"])  # type: ignore[return-value]


def delete_user(d: Decision, args: dict[str, Any]) -> None:
    rec = _require_user(d, args["user_id"])
    if rec.get("access_key"):
        d.emit(EventType.CREDENTIAL_DELETED, {"access_key": rec["access_key"], "user_id": rec["id"]})
    d.emit(EventType.USER_DELETED, {"user_id": rec["id"]})


def create_credential(d: Decision, args: dict[str, Any]) -> str:
    """A user holds at most one S3 key pair: a new one replaces (and so revokes) the old."""
    rec = _require_user(d, args["user_id"])
    access_key = args["access_key"]
    if not ACCESS_KEY_RE.match(access_key) or d.tx.credential(access_key) is not None:
        raise IamError(409, "access key collision; retry")
    if rec.get("access_key"):
        d.emit(EventType.CREDENTIAL_DELETED, {"access_key": rec["access_key"], "user_id": rec["id"]})
    d.emit(EventType.CREDENTIAL_CREATED, {"access_key": access_key, "user_id": rec["id"],
                                          "secret_key": args["secret_key"]})  # ciphertext (see keyring.py)
    return str(access_key)


def delete_credential(d: Decision, args: dict[str, Any]) -> None:
    rec = _require_user(d, args["user_id"])
    if not rec.get("access_key"):
        raise IamError(404, "user has no credentials")
    d.emit(EventType.CREDENTIAL_DELETED, {"access_key": rec["access_key"], "user_id": rec["id"]})


def _refusing(decider: Callable[[Decision, dict[str, Any]], Any]) -> Decider:
    """Turn an ``IamError`` raised before any event into the command's result (the caller re-raises it)."""
    def run(d: Decision, args: dict[str, Any]) -> Any:
        try:
            return decider(d, args)
        except IamError as exc:
            if d.events:  # a refusal after an emit would leave half a change: a bug, fail loudly
                raise
            return exc

    run.__name__ = decider.__name__
    return run


DECIDERS: dict[str, Decider] = {
    "iam_create_user": _refusing(create_user),
    "iam_update_user": _refusing(update_user),
    "iam_delete_user": _refusing(delete_user),
    "iam_create_credential": _refusing(create_credential),
    "iam_delete_credential": _refusing(delete_credential),
}
