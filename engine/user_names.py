"""IAM CreateUser and DeleteUser in a pool (S4_MODE=cluster): usernames are unique across the pool.

Users replicate by last-writer-wins per user id (engine/projector.py), which cannot say "exactly one of two
concurrent CreateUser of one name succeeds": each node would create its own user and both would live on. So in a
cluster node a username is first claimed in the pool's name register, the one bucket names use
(``BucketNamesPort`` with ``space=NameSpace.USER``: key ``user/<name>``, a CASPaxos register per name), and only the
request the register granted commits ``user.created``. docs/architecture/replication.md, "Usernames in a pool".

* **Create**: a fresh user id is drawn first and claimed as the name's owner. ALREADY_EXISTS is the single-node
  answer (409 "username ... already exists"), unless the holder is a user this node knows deleted (its deletion
  committed, the register not told: see Delete): then that incarnation is freed and the claim tried once more.
  CREATED: commit ``iam_create_user`` with that id and the granted incarnation (``ni``, kept in the user's record).
  A refusal that committed nothing (the name taken on this node, e.g. the root user every node seeds outside the
  register) gives the name back; a 503 keeps it (the event may exist).
* **Delete**: commit ``iam_delete_user`` (deletion is final: the id never comes back), then free the name's
  incarnation ``ni`` (never a later life of it). If the register cannot be told now, the delete still stands (it is
  committed) and the name is freed by the next create of it through a node that has applied the deletion.
* Every register step that finds no majority, or cannot tell whether its change took effect, is a 503
  ``ServiceUnavailable`` with ``Retry-After`` (create), never a guess.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .bucket_names import new_token, release
from .errors import ServiceUnavailableError
from .iam import IamError
from .ports import BucketNamesPort, NameOutcome, NameSpace

Run = Callable[[str, dict[str, Any], str], Awaitable[Any]]
"""Commit one IAM command through the engine's commit port; its refusal is an IamError (returned or raised)."""
IsDeleted = Callable[[str], bool]
"""Whether this node has applied the deletion of the user with that id."""


def _taken(username: str) -> IamError:
    return IamError(409, f"username {username!r} already exists")


async def create_user(names: BucketNamesPort, run: Run, is_deleted: IsDeleted, args: dict[str, Any],
                      actor: str) -> Any:
    """``args`` of ``iam_create_user`` (username, role, password_hash): the committed user record, or the
    IamError (409 when the name is taken anywhere in the pool)."""
    username = args["username"]
    user_id, token = str(uuid.uuid4()), new_token()
    claim = await names.create(username, user_id, token, space=NameSpace.USER)
    if claim.outcome is not NameOutcome.CREATED and claim.owner and is_deleted(claim.owner):
        # held by a deleted user whose delete could not tell the register: free that life, then claim again
        if await release(names, username, claim.incarnation, token, space=NameSpace.USER):
            claim = await names.create(username, user_id, token, space=NameSpace.USER)
    if claim.outcome is not NameOutcome.CREATED:
        return _taken(username)
    try:
        result = await run("iam_create_user", {**args, "user_id": user_id, "ni": claim.incarnation}, actor)
    except ServiceUnavailableError:
        raise  # committed here and short of the quorum (it spreads), or unknown: the name stays taken
    except IamError as exc:
        result = exc
    if isinstance(result, IamError):  # refused, nothing committed: give the name back
        await release(names, username, claim.incarnation, token, space=NameSpace.USER)
    return result


async def delete_user(names: BucketNamesPort, run: Run, record: dict[str, Any] | None, user_id: str,
                      actor: str) -> Any:
    """Commit the deletion, then free the user's name in the register (its incarnation ``ni``; a user the register
    never held, ``ni`` 0, has nothing to free)."""
    try:
        result = await run("iam_delete_user", {"user_id": user_id}, actor)
    except IamError as exc:
        return exc
    if not isinstance(result, IamError) and record is not None and record.get("ni"):
        await release(names, record["username"], record["ni"], new_token(), space=NameSpace.USER)
    return result
