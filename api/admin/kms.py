"""The built-in KMS through the admin API (SuperUser): create, list, show, rotate, enable and disable keys
(engine/kms.py). Material never leaves the server, not even wrapped."""

from __future__ import annotations

from s4.engine.iam import IamError

from .call import AdminCall, Result


async def create_key(call: AdminCall) -> Result:
    """``POST /api/admin/kms/keys`` ``{"key_id": "..."}``: 201 with the key; 409 if it exists."""
    body = await call.json()
    if set(body) - {"key_id"} or "key_id" not in body:
        raise IamError(400, 'the body is {"key_id": "..."}')
    return 201, await call.engine.kms_create_key(body["key_id"], actor=call.actor)


async def list_keys(call: AdminCall) -> Result:
    return 200, {"keys": call.engine.kms_list_keys()}


async def get_key(call: AdminCall) -> Result:
    return 200, call.engine.kms_get_key(call.params["id"])


async def rotate_key(call: AdminCall) -> Result:
    """``POST /api/admin/kms/keys/{id}/rotate``: a new current version; older objects stay readable."""
    return 200, await call.engine.kms_rotate_key(call.params["id"], actor=call.actor)


async def update_key(call: AdminCall) -> Result:
    """``PUT /api/admin/kms/keys/{id}`` ``{"enabled": false}``: a disabled key's objects are unreadable (400
    KMS.DisabledException) and it encrypts nothing new, until it is enabled again."""
    body = await call.json()
    if set(body) != {"enabled"} or not isinstance(body["enabled"], bool):
        raise IamError(400, 'the body is {"enabled": true|false}')
    return 200, await call.engine.kms_set_key_enabled(call.params["id"], body["enabled"], actor=call.actor)
