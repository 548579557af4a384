"""Login and user/credential management: the JSON shapes the existing console and scripts speak."""

from __future__ import annotations

from typing import Any

from s4.engine import accounts
from s4.engine.iam import IamError

from ..s3.access import client_address
from .call import AdminCall, Result
from .tokens import rfc3339


def user_json(rec: dict[str, Any]) -> dict[str, Any]:
    account = accounts.of_user(rec)
    return {"id": rec["id"], "username": rec["username"], "role": rec["role"], "access_key": rec.get("access_key"),
            "created_at": rfc3339(rec["created_ms"]), "updated_at": rfc3339(rec["updated_ms"]),
            "is_active": bool(rec.get("active", True)), "account": account.name, "account_id": account.id,
            "canonical_id": account.canonical_id, "email": rec.get("email")}


def _caller_account(call: AdminCall) -> accounts.Account:
    return accounts.of_user(call.user) if call.user is not None else accounts.DEFAULT_ACCOUNT


def _visible(call: AdminCall, rec: dict[str, Any]) -> bool:
    """The default account's SuperUsers administer every account; another account's, their own account only."""
    mine = _caller_account(call)
    return mine.id == accounts.DEFAULT_ACCOUNT.id or accounts.of_user(rec).id == mine.id


def _require_visible(call: AdminCall, user_id: str) -> None:
    if not _visible(call, call.engine.get_user(user_id)):
        raise IamError(404, "user not found")


def _client(call: AdminCall) -> str:
    return client_address(call.req.scope)  # the address the S3 path and the access log see


async def login(call: AdminCall) -> Result:
    body = await call.json()
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise IamError(400, "username and password are required")
    client = _client(call)
    await call.engine.throttle_login("attempt", username, client)  # checks and counts in one step
    user = await call.engine.authenticate_password(username, password)
    if user is None:
        raise IamError(401, "invalid username or password")
    await call.engine.throttle_login("succeeded", username, client)
    token, exp = call.api.tokens.issue(user)
    return 200, {"token": token, "expires_at": rfc3339(exp, ms=False)}


async def list_users(call: AdminCall) -> Result:
    return 200, {"users": [user_json(u) for u in call.engine.list_users() if _visible(call, u)]}


async def create_user(call: AdminCall) -> Result:
    body = await call.json()
    for name in ("username", "password", "role"):
        if name not in body:
            raise IamError(400, f"{name} is required")
    mine = _caller_account(call)
    account = body.get("account", mine.name)  # a new account is created with its first user
    if account is None:
        account = mine.name
    if mine.id != accounts.DEFAULT_ACCOUNT.id and isinstance(account, str) and account not in (mine.name, mine.id):
        raise IamError(403, "only the default account's SuperUsers create users in other accounts")
    rec = await call.engine.create_user(body["username"], body["password"], body["role"], actor=call.actor,
                                        account=account, email=body.get("email"))
    return 201, user_json(rec)


async def get_user(call: AdminCall) -> Result:
    _require_visible(call, call.params["id"])
    return 200, user_json(call.engine.get_user(call.params["id"]))


async def update_user(call: AdminCall) -> Result:
    body = await call.json()
    unknown = set(body) - {"password", "role", "is_active"}
    if unknown:
        raise IamError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    user_id = call.params["id"]
    assert call.user is not None
    _require_visible(call, user_id)
    if user_id == call.user["id"] and (body.get("is_active") is False or body.get("role") not in (None, "SuperUser")):
        raise IamError(400, "you cannot deactivate or demote yourself")
    rec = await call.engine.update_user(user_id, password=body.get("password"), role=body.get("role"),
                                        is_active=body.get("is_active"), actor=call.actor)
    return 200, user_json(rec)


async def delete_user(call: AdminCall) -> Result:
    assert call.user is not None
    if call.params["id"] == call.user["id"]:
        raise IamError(400, "you cannot delete yourself")
    _require_visible(call, call.params["id"])
    await call.engine.delete_user(call.params["id"], actor=call.actor)
    return 204, None


async def create_credential(call: AdminCall) -> Result:
    _require_visible(call, call.params["id"])
    access_key, secret = await call.engine.create_credential(call.params["id"], actor=call.actor)
    return 200, {"access_key": access_key, "secret_key": secret}


async def delete_credential(call: AdminCall) -> Result:
    _require_visible(call, call.params["id"])
    await call.engine.delete_credential(call.params["id"], actor=call.actor)
    return 204, None
