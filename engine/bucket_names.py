"""CreateBucket and DeleteBucket in a pool (S4_MODE=cluster): the name register decides, then the event commits.

Object writes replicate by last-writer-wins, which cannot say "exactly one of two concurrent CreateBucket of one
name succeeds". So in a cluster node every bucket create and delete is first decided by the pool's name register
(``BucketNamesPort``, engine/ports.py: a CASPaxos register per name, cluster/buckets_register.py), and only the
request the register granted commits the event, through the engine's commit port like any write (so it is answered
once the write quorum holds it). docs/architecture/replication.md, "CreateBucket and DeleteBucket in a pool".

* **Create**: ``create`` in the register. ALREADY_EXISTS is ``BucketAlreadyOwnedByYou`` when the name's holder is
  the creator's account, ``BucketAlreadyExists`` when another account holds it, as on a single node; the holder is
  the bucket's account where this node has the bucket, else the account of the access key the register recorded
  as the name's creator (``Holder``). CREATED: commit ``create_bucket`` with the
  granted incarnation (``ri``). A refusal of that command that left nothing committed gives the name back
  (mark + finish), so no name stays taken without a bucket; a 503 keeps it (the event may exist).
* **Delete**: ``mark_deleting`` fences the name (no create can take it), then ``delete_bucket`` commits here: its
  decider checks emptiness on this node's views, atomically with this node's writes (not a quorum read: see
  replication.md), and emits ``bucket.deleted``; then ``finish_delete``. A refusal (BucketNotEmpty, ...) lifts the
  fence (``abort_delete``). Once ``bucket.deleted`` is committed here the register must follow: ``finish_delete``
  is retried, re-marking if a concurrent delete lifted the fence meanwhile.
* Every register step that finds no majority, or cannot tell whether its change took effect, is a 503
  ``ServiceUnavailable`` with ``Retry-After``, never a guess.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ErrorCode, PoolUnavailableError, S3Error, ServiceUnavailableError
from .model import Bucket
from .policy.principals import DEFAULT_ACCOUNT_ID
from .ports import BucketNamesPort, NameClaim, NameOutcome, NameSpace

log = logging.getLogger(__name__)

Run = Callable[[str, dict[str, Any], str], Awaitable[Any]]
"""Commit one command through the engine's commit port: ``(decider name, args, actor) -> result``."""
Lookup = Callable[[str], Bucket | None]
"""This node's bucket of that name, from its views."""
Holder = Callable[[str, NameClaim], str]
"""The id of the account holding a name the register already has: ``(name, the register's claim) -> account id``."""

FINISH_ATTEMPTS = 4
"""Register steps tried after ``bucket.deleted`` committed here (the register must follow the event)."""


def new_token() -> str:
    """One request's id in the register: its retried steps recognise their own change."""
    return secrets.token_hex(16)


def _already_owned(name: str) -> S3Error:
    return S3Error(ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU, resource=name, BucketName=name)


def _taken(name: str, owner: dict[str, str] | None, holder: str | None) -> S3Error:
    """A name the register already holds: BucketAlreadyOwnedByYou for its own account, BucketAlreadyExists for
    everyone else (the answer a single node's decider gives, engine/commands.py ``create_bucket``)."""
    mine = (owner or {}).get("account") or DEFAULT_ACCOUNT_ID
    if holder is not None and holder != mine:
        return S3Error(ErrorCode.BUCKET_ALREADY_EXISTS, resource=name, BucketName=name)
    return _already_owned(name)


def _no_such_bucket(name: str) -> S3Error:
    return S3Error(ErrorCode.NO_SUCH_BUCKET, resource=name, BucketName=name)


async def create_bucket(names: BucketNamesPort, run: Run, name: str, region: str, actor: str,
                        owner: dict[str, str] | None = None, holder: Holder | None = None) -> None:
    """``owner``: the owning account's fields of the ``create_bucket`` command (engine/accounts.py); ``holder``:
    who holds a name the register already has (without one: the caller's own account)."""
    token = new_token()
    claim = await names.create(name, actor, token)
    if claim.outcome is not NameOutcome.CREATED:
        raise _taken(name, owner, holder(name, claim) if holder is not None else None)
    try:
        await run("create_bucket", {"bucket": name, "region": region, **(owner or {}), "ri": claim.incarnation},
                  actor)
    except ServiceUnavailableError:
        raise  # committed here and short of the quorum (it spreads), or unknown: the name stays taken
    except S3Error as exc:
        if exc.code not in (ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU, ErrorCode.BUCKET_ALREADY_EXISTS):
            await release(names, name, claim.incarnation, token)  # nothing committed: give the name back
        # a bucket this node held before the register knew the name (either account's): the register now does
        raise


async def release(names: BucketNamesPort, name: str, incarnation: int, token: str,
                  space: str = NameSpace.BUCKET) -> bool:
    """Free incarnation ``incarnation`` of a name (never a later life of it): a create whose event was never
    committed, or (usernames) a user whose deletion is committed. True once the register says the name is free;
    False (logged) when it could not tell: best effort, the caller's answer stands."""
    try:
        marked = await names.mark_deleting(name, token, incarnation, space=space)
        if marked.outcome is NameOutcome.MARKED:
            await names.finish_delete(name, incarnation, token, space=space)
        return True
    except ServiceUnavailableError:
        log.warning("%s %s: could not give the name back to the register", space, name)
        return False


async def delete_bucket(names: BucketNamesPort, run: Run, lookup: Lookup, name: str, actor: str) -> None:
    token = new_token()
    marked = await names.mark_deleting(name, token)
    if marked.outcome is NameOutcome.NO_SUCH_BUCKET and marked.incarnation == 0:
        bucket = lookup(name)
        if bucket is not None:  # created before the register was in use: register it, then delete it
            await names.create(name, bucket.owner or actor, token)
            marked = await names.mark_deleting(name, token)
    if marked.outcome is not NameOutcome.MARKED:
        raise _no_such_bucket(name)
    incarnation = marked.incarnation
    try:
        await run("delete_bucket", {"bucket": name}, actor)
    except PoolUnavailableError:
        # Committed here, short of the quorum: the delete happened and spreads (catch-up, hints); the register follows.
        try:
            await _finish(names, name, incarnation, token)
        except ServiceUnavailableError:
            log.warning("bucket %s: deleted here, the register still fences the name", name)
        raise
    except ServiceUnavailableError:
        raise  # this node could not commit (or, in a worker, cannot tell): the fence stays until a retry settles it
    except S3Error as exc:
        await _abort(names, name, incarnation, token)
        if exc.code is ErrorCode.NO_SUCH_BUCKET:
            # The register holds the bucket, this node does not (yet): it has not applied the create. Never a guess.
            raise ServiceUnavailableError(f"bucket {name!r} is not on this node yet") from exc
        raise
    if (await _finish(names, name, incarnation, token)).outcome is not NameOutcome.DELETED:
        raise _no_such_bucket(name)  # another delete of this life finished first


async def _abort(names: BucketNamesPort, name: str, incarnation: int, token: str) -> None:
    """Lift our fence after a refused delete; if that fails the error stands and a later delete settles the name."""
    try:
        await names.abort_delete(name, incarnation, token)
    except ServiceUnavailableError:
        log.warning("bucket %s: could not lift the delete fence", name)


async def _finish(names: BucketNamesPort, name: str, incarnation: int, token: str) -> NameClaim:
    """``bucket.deleted`` of ``incarnation`` is committed here: make the register say so. DELETED, or
    NO_SUCH_BUCKET when another delete of the same life finished first. A delete that lifted the fence meanwhile
    (it found the bucket not empty on a node that had not applied ours) is overruled: the event is out."""
    last: ServiceUnavailableError | None = None
    for _ in range(FINISH_ATTEMPTS):
        try:
            result = await names.finish_delete(name, incarnation, token)
            if result.outcome is not NameOutcome.NOT_DELETING:
                return result
            await names.mark_deleting(name, token, incarnation)
        except ServiceUnavailableError as exc:
            last = exc
    raise last or ServiceUnavailableError(f"bucket {name!r}: the register did not settle the delete")
