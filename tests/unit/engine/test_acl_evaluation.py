"""ACLs in the one evaluator (issue 21): canned ACLs, which grant gives which permission to whom, and the decision
order role x ACL x policy (explicit deny beats an ACL grant, a policy allow decides before it, a grant widens no
role inside the owning account), over the operations, for callers of the same account, another account and none."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from s4.api.s3.access import AccessControl, RequestFacts
from s4.api.s3.acl import ACL_KIND, OWNERSHIP_KIND
from s4.api.settings import ApiSettings
from s4.engine import Engine, Ingested, accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import anonymous, decide, user_principal
from s4.engine.policy.acl import (
    ALL_USERS,
    AUTHENTICATED_USERS,
    LOG_DELIVERY,
    Acl,
    Grant,
    allowing_grant,
    canned,
    private,
)

OWNER = accounts.Account(accounts.account_id("owner"), "owner")
OTHER = accounts.Account(accounts.account_id("other"), "other")
ANON = anonymous()


def user(account: accounts.Account, role: str = "Writer", name: str = "u") -> Any:
    return user_principal(name, f"id-{name}", role, account.id, account.canonical_id, account.name)


@pytest.mark.parametrize(("name", "grants"), [
    ("private", []),
    ("public-read", [(ALL_USERS, "READ")]),
    ("public-read-write", [(ALL_USERS, "READ"), (ALL_USERS, "WRITE")]),
    ("authenticated-read", [(AUTHENTICATED_USERS, "READ")]),
    ("log-delivery-write", [(LOG_DELIVERY, "WRITE"), (LOG_DELIVERY, "READ_ACP")]),
    ("bucket-owner-read", [(OWNER.canonical_id, "READ")]),
    ("bucket-owner-full-control", [(OWNER.canonical_id, "FULL_CONTROL")]),
])
def test_canned_acls(name: str, grants: list[tuple[str, str]]) -> None:
    acl = canned(name, OTHER.canonical_id, OWNER.canonical_id)
    assert acl.grants == (Grant(OTHER.canonical_id, "FULL_CONTROL"), *(Grant(g, p) for g, p in grants))
    assert Acl.from_record(acl.to_record()) == acl
    assert acl.public == (name in ("public-read", "public-read-write", "authenticated-read"))


# (caller, acl, permission, caller's account owns the bucket, allowed)
GRANTS: list[tuple[Any, ...]] = [
    (ANON, canned("public-read", OWNER.canonical_id), "READ", False, True),
    (ANON, canned("public-read", OWNER.canonical_id), "WRITE", False, False),
    (ANON, canned("public-read-write", OWNER.canonical_id), "WRITE", False, True),
    (ANON, canned("authenticated-read", OWNER.canonical_id), "READ", False, False),
    (user(OTHER), canned("authenticated-read", OWNER.canonical_id), "READ", False, True),
    (user(OTHER), private(OWNER.canonical_id), "READ", False, False),
    (user(OTHER), Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "READ_ACP"),)), "READ_ACP", False, True),
    (user(OTHER), Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "READ_ACP"),)), "READ", False, False),
    (user(OTHER), Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "FULL_CONTROL"),)), "WRITE_ACP", False, True),
    # inside the owning account the role decides: the owner's FULL_CONTROL makes no Reader a writer
    (user(OWNER, "Reader"), private(OWNER.canonical_id), "WRITE", True, False),
    (user(OWNER, "Reader"), canned("public-read-write", OWNER.canonical_id), "WRITE", True, True),
    (ANON, canned("log-delivery-write", OWNER.canonical_id), "WRITE", False, False),
]


@pytest.mark.parametrize(("who", "acl", "permission", "own", "allowed"), GRANTS)
def test_which_grant_allows(who: Any, acl: Acl, permission: str, own: bool, allowed: bool) -> None:
    assert (allowing_grant(acl, permission, who, own) is not None) == allowed


def _policy(effect: str, action: str) -> Any:
    from s4.engine.policy import parse_policy
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "S", "Effect": effect, "Principal": "*", "Action": action, "Resource": "arn:aws:s3:::acl-b/*"}]}),
        "acl-b")


@pytest.mark.parametrize(("policy", "acl", "role", "allowed", "reason"), [
    (None, "", False, False, "no allow"),
    (None, "grant READ to X", False, True, "acl allow"),
    (_policy("Deny", "s3:GetObject"), "grant READ to X", False, False, "explicit deny"),
    (_policy("Deny", "s3:GetObject"), "grant READ to X", True, False, "explicit deny"),
    (_policy("Allow", "s3:GetObject"), "grant READ to X", False, True, "policy allow"),
    (_policy("Allow", "s3:PutObject"), "", True, True, "role allow"),
    (None, "", True, True, "role allow"),
])
def test_decision_order(policy: Any, acl: str, role: bool, allowed: bool, reason: str) -> None:
    asked: list[bool] = []

    def grant() -> str:
        asked.append(True)
        return acl

    decision = decide(policy, ANON, "s3:GetObject", "arn:aws:s3:::acl-b/k", lambda _: None, role, grant)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert not asked or reason in ("acl allow", "no allow")  # the object's ACL is read only when it can decide


# -- through AccessControl, on an engine: bucket and object ACLs, ownership, accounts -------------------------------
def _facts(**query: str) -> RequestFacts:
    return RequestFacts({}, query, "127.0.0.1", False, None, time.time())


async def _setup(engine: Engine, bucket_acl: Acl | None, object_acl: Acl | None, mode: str | None) -> AccessControl:
    await engine.create_bucket("acl-b", account=OWNER)
    if mode is not None:
        await engine.set_bucket_config("acl-b", OWNERSHIP_KIND, mode)
    if bucket_acl is not None:
        await engine.set_bucket_config("acl-b", ACL_KIND, bucket_acl.to_record())
    await engine.put_object("acl-b", "k", Ingested(), acl=object_acl.to_record() if object_acl is not None else None)
    return AccessControl(engine, ApiSettings(access_key="ROOTKEY", secret_key="ROOTSECRET"))


MATRIX: list[tuple[Any, ...]] = [
    # (caller, bucket ACL, object ACL, ownership, operation, allowed)
    (ANON, None, canned("public-read", OWNER.canonical_id), "ObjectWriter", "GetObject", True),
    (ANON, None, canned("public-read", OWNER.canonical_id), "ObjectWriter", "DeleteObject", False),
    (ANON, None, canned("public-read", OWNER.canonical_id), None, "GetObject", False),  # enforced: ACLs disabled
    (ANON, canned("public-read", OWNER.canonical_id), None, "ObjectWriter", "ListObjectsV2", True),
    (ANON, canned("public-read", OWNER.canonical_id), None, "ObjectWriter", "GetObject", False),
    (ANON, canned("public-read-write", OWNER.canonical_id), None, "ObjectWriter", "PutObject", True),
    (user(OTHER), canned("authenticated-read", OWNER.canonical_id), None, "ObjectWriter", "ListObjects", True),
    (user(OTHER), None, None, "ObjectWriter", "ListObjects", False),
    (user(OTHER), None, Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "READ_ACP"),)), "ObjectWriter",
     "GetObjectAcl", True),
    (user(OTHER), None, Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "READ_ACP"),)), "ObjectWriter",
     "GetObject", False),
    (user(OTHER), Acl(OWNER.canonical_id, (Grant(OTHER.canonical_id, "WRITE_ACP"),)), None, "BucketOwnerPreferred",
     "PutBucketAcl", True),
    (user(OWNER, "Reader"), canned("public-read", OWNER.canonical_id), None, "ObjectWriter", "PutObject", False),
    (user(OWNER, "Reader"), None, None, None, "GetObject", True),
    # another account's object (ObjectWriter): its ACL and its owner's role decide, not the bucket owner's role
    (user(OWNER), None, private(OTHER.canonical_id), "ObjectWriter", "GetObject", False),
    (user(OWNER), None, private(OTHER.canonical_id), "ObjectWriter", "GetObjectAcl", False),
    (user(OWNER), None, private(OTHER.canonical_id), "ObjectWriter", "DeleteObject", True),  # the bucket's WRITE
    (user(OWNER), None, canned("bucket-owner-full-control", OTHER.canonical_id, OWNER.canonical_id), "ObjectWriter",
     "GetObject", True),
    (user(OWNER), None, private(OTHER.canonical_id), None, "GetObject", True),  # enforced: the bucket owner's
    (user(OTHER), None, private(OTHER.canonical_id), "ObjectWriter", "GetObject", True),
    (user(OTHER, "Reader"), None, private(OTHER.canonical_id), "ObjectWriter", "GetObject", True),
    (user(OTHER, "Reader"), None, private(OTHER.canonical_id), "ObjectWriter", "PutObjectAcl", False),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("who", "bucket_acl", "object_acl", "mode", "operation", "allowed"), MATRIX)
async def test_acl_matrix(engine: Engine, who: Any, bucket_acl: Acl | None, object_acl: Acl | None,
                          mode: str | None, operation: str, allowed: bool) -> None:
    access = await _setup(engine, bucket_acl, object_acl, mode)
    key = "" if operation in ("ListObjects", "ListObjectsV2", "PutBucketAcl") else "k"
    try:
        access.authorize(who, operation, "acl-b", key, _facts())
    except S3Error as exc:
        assert exc.code is ErrorCode.ACCESS_DENIED
        assert not allowed
    else:
        assert allowed


@pytest.mark.anyio
async def test_explicit_deny_beats_a_public_read_grant(engine: Engine) -> None:
    access = await _setup(engine, None, canned("public-read", OWNER.canonical_id), "ObjectWriter")
    access.authorize(ANON, "GetObject", "acl-b", "k", _facts())
    await engine.set_bucket_config("acl-b", "policy", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "NoAnon", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::acl-b/*"}]}))
    with pytest.raises(S3Error):
        access.authorize(ANON, "GetObject", "acl-b", "k", _facts())


# -- public access block --------------------------------------------------------------------------------------------
def _public_policy(action: str = "s3:GetObject") -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Public", "Effect": "Allow", "Principal": "*", "Action": action,
         "Resource": "arn:aws:s3:::acl-b/*"}]})


@pytest.mark.anyio
@pytest.mark.parametrize(("flags", "who", "source", "allowed"), [
    ({}, ANON, "acl", True),
    ({"IgnorePublicAcls": True}, ANON, "acl", False),
    ({"IgnorePublicAcls": True}, user(OTHER), "acl", False),  # AuthenticatedUsers is public too
    ({"BlockPublicAcls": True}, ANON, "acl", True),  # blocks new public ACLs, ignores none
    ({}, ANON, "policy", True),
    ({"RestrictPublicBuckets": True}, ANON, "policy", False),
    ({"RestrictPublicBuckets": True}, user(OTHER), "policy", False),
    ({"RestrictPublicBuckets": True}, user(OWNER, "Reader"), "policy", True),  # the owner's account still is
    ({"IgnorePublicAcls": True}, ANON, "policy", True),
])
async def test_public_access_block_flags(engine: Engine, flags: dict[str, bool], who: Any, source: str,
                                         allowed: bool) -> None:
    object_acl = Acl(OWNER.canonical_id, (Grant(ALL_USERS, "READ"), Grant(AUTHENTICATED_USERS, "READ")))
    access = await _setup(engine, None, object_acl if source == "acl" else None, "ObjectWriter")
    if source == "policy":
        await engine.set_bucket_config("acl-b", "policy", _public_policy("s3:PutObject"))
    if flags:
        await engine.set_bucket_config("acl-b", "public_access_block", flags)
    operation = "GetObject" if source == "acl" else "PutObject"
    try:
        access.authorize(who, operation, "acl-b", "k", _facts())
    except S3Error:
        assert not allowed
    else:
        assert allowed


# -- what a refusal becomes: NoSuchBucket, NoSuchKey for a lister --------------------------------------------------
@pytest.mark.anyio
async def test_missing_bucket_is_no_such_bucket_to_anyone(engine: Engine) -> None:
    access = AccessControl(engine, ApiSettings(access_key="ROOTKEY", secret_key="ROOTSECRET"))
    with pytest.raises(S3Error) as exc:
        access.authorize(ANON, "GetObject", "no-such-bucket", "k", _facts())
    assert exc.value.code is ErrorCode.NO_SUCH_BUCKET


@pytest.mark.anyio
@pytest.mark.parametrize(("bucket_acl", "policy_prefix", "key", "code"), [
    (canned("public-read", OWNER.canonical_id), None, "missing", ErrorCode.NO_SUCH_KEY),  # may list: 404
    (None, None, "missing", ErrorCode.ACCESS_DENIED),  # may not list: 403, nothing learnt
    (None, "public/*", "public/missing", ErrorCode.NO_SUCH_KEY),
    (None, "public/*", "private/missing", ErrorCode.ACCESS_DENIED),
    (canned("public-read", OWNER.canonical_id), None, "k", ErrorCode.ACCESS_DENIED),  # exists, not readable
])
async def test_missing_object_is_no_such_key_to_a_lister(engine: Engine, bucket_acl: Acl | None,
                                                         policy_prefix: str | None, key: str,
                                                         code: ErrorCode) -> None:
    access = await _setup(engine, bucket_acl, None, "ObjectWriter")
    if policy_prefix:
        await engine.set_bucket_config("acl-b", "policy", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acl-b",
             "Condition": {"StringLike": {"s3:prefix": policy_prefix}}}]}))
    with pytest.raises(S3Error) as exc:
        access.authorize(user(OTHER), "HeadObject", "acl-b", key, _facts())
    assert exc.value.code is code


def test_grant_headers_take_quoted_and_bare_values() -> None:
    from s4.api.s3.acl import Resolver, acl_from_headers

    class Known:
        def account_by_canonical_id(self, canonical: str) -> Any:
            return OTHER if canonical == OTHER.canonical_id else None

        def account_by_email(self, email: str) -> Any:
            return None

    acl = acl_from_headers({"x-amz-grant-read": f'id={OTHER.canonical_id}, uri="{ALL_USERS}"'}, OWNER.canonical_id,
                           OWNER.canonical_id, Resolver(Known()))  # type: ignore[arg-type]
    assert acl is not None and acl.grants == (Grant(OTHER.canonical_id, "READ"), Grant(ALL_USERS, "READ"))
