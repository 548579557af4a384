"""Accounts (issue 21): ids derived from names, users and buckets carrying their account, a bucket name taken by
another account, and a role that reaches its own account's buckets only (the AccessControl step before a handler)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.api.s3.access import AccessControl, RequestFacts
from s4.api.settings import ApiSettings
from s4.engine import Engine, accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.iam import IamError
from s4.engine.policy import DEFAULT_ACCOUNT_ID, anonymous

pytestmark = pytest.mark.anyio
PASSWORD = "correct-horse-battery"


def test_account_ids_are_derived_from_the_name() -> None:
    alt = accounts.account_id("alt")
    assert alt == accounts.account_id("alt") and len(alt) == 12 and alt.isdigit() and alt != DEFAULT_ACCOUNT_ID
    assert accounts.account_id("default") == accounts.account_id(DEFAULT_ACCOUNT_ID) == DEFAULT_ACCOUNT_ID
    canonical = accounts.canonical_id(alt)
    assert len(canonical) == 64 and int(canonical, 16) >= 0
    assert canonical != accounts.DEFAULT_ACCOUNT.canonical_id


@given(st.text(min_size=1, max_size=64))
def test_account_names_are_checked(name: str) -> None:
    try:
        checked = accounts.check_account_name(name)
    except ValueError:
        assert not accounts.ACCOUNT_NAME_RE.match(name)
        return
    assert accounts.account_id(checked).isdigit()


async def test_users_belong_to_an_account(engine: Engine) -> None:
    plain = await engine.create_user("plain_user", PASSWORD, "Writer")
    alt = await engine.create_user("alt_user", PASSWORD, "Writer", account="alt", email="Alt@Example.com")
    assert "account" not in plain and accounts.of_user(plain) == accounts.DEFAULT_ACCOUNT
    assert alt["account"] == "alt" and alt["email"] == "alt@example.com"
    assert engine.account_by_email("ALT@example.com") == accounts.of_user(alt)
    assert engine.account_by_canonical_id(accounts.of_user(alt).canonical_id) == accounts.of_user(alt)
    with pytest.raises(IamError) as err:
        await engine.create_user("thief", PASSWORD, "Writer", account="other", email="alt@example.com")
    assert err.value.status == 409  # an email names one account
    with pytest.raises(IamError) as err:
        await engine.create_user("bad_account", PASSWORD, "Writer", account="no spaces")
    assert err.value.status == 400


async def test_account_id_collision_is_refused(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.create_user("first_user", PASSWORD, "Writer", account="first")
    monkeypatch.setattr(accounts, "account_id", lambda name: "123456789012")
    with pytest.raises(IamError) as err:
        await engine.create_user("second_user", PASSWORD, "Writer", account="second")
    assert err.value.status == 409


async def test_bucket_owned_by_its_creators_account(engine: Engine) -> None:
    alt = accounts.Account(accounts.account_id("alt"), "alt")
    await engine.create_bucket("alt-bucket", account=alt)
    await engine.create_bucket("main-bucket")
    assert engine.bucket_account("alt-bucket") == alt.id
    assert engine.bucket_account("main-bucket") == DEFAULT_ACCOUNT_ID
    assert engine.bucket_account("missing") is None
    got = engine.get_bucket("alt-bucket")
    assert (got.account, got.account_name) == (alt.id, "alt")
    with pytest.raises(S3Error) as err:  # another account's name: BucketAlreadyExists, not ...OwnedByYou
        await engine.create_bucket("alt-bucket")
    assert err.value.code is ErrorCode.BUCKET_ALREADY_EXISTS
    with pytest.raises(S3Error) as err:
        await engine.create_bucket("alt-bucket", account=alt)
    assert err.value.code is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU


def _facts() -> RequestFacts:
    return RequestFacts({}, {}, "127.0.0.1", False, None, time.time())


@pytest.mark.parametrize(("role", "operation", "own", "allowed"), [
    ("Writer", "PutObject", True, True),
    ("Writer", "PutObject", False, False),
    ("Reader", "GetObject", True, True),
    ("Reader", "GetObject", False, False),
    ("Reader", "PutObject", True, False),
    ("SuperUser", "DeleteBucket", False, False),
    ("SuperUser", "PutBucketPolicy", False, False),  # the policy escape is the bucket's own account's only
    ("SuperUser", "PutBucketPolicy", True, True),
    ("Writer", "DeleteObjects", False, False),
    ("Writer", "CreateBucket", False, True),  # the handler answers BucketAlreadyExists
])
async def test_role_reaches_its_own_accounts_buckets_only(engine: Engine, caplog: pytest.LogCaptureFixture,
                                                          role: str, operation: str, own: bool,
                                                          allowed: bool) -> None:
    """Before accounts every user's role reached every bucket; now another account's bucket is out of reach
    unless a policy (or ACL, or public access) opens it."""
    alt = accounts.Account(accounts.account_id("alt"), "alt")
    await engine.create_bucket("alt-bucket", account=alt)
    record = await engine.create_user("someone", PASSWORD, role, account="alt" if own else None)
    access = AccessControl(engine, ApiSettings(access_key="ROOTKEY", secret_key="ROOTSECRET"))
    who = access.user(record)
    assert who.account == (alt.id if own else DEFAULT_ACCOUNT_ID)
    caplog.set_level(logging.INFO, "s4.api.s3.access")
    try:
        access.authorize(who, operation, "alt-bucket", "k", _facts())
    except S3Error as exc:
        assert exc.code is ErrorCode.ACCESS_DENIED and not allowed
        cross = "does not reach another account's bucket" in caplog.text
        assert cross == (not own and operation != "DeleteObjects")
    else:
        assert allowed


async def test_role_still_reaches_a_missing_bucket(engine: Engine) -> None:
    """CreateBucket, and the NoSuchBucket answer, need the role to apply where no bucket exists yet."""
    record = await engine.create_user("creator", PASSWORD, "Writer", account="alt")
    access = AccessControl(engine, ApiSettings(access_key="ROOTKEY", secret_key="ROOTSECRET"))
    access.authorize(access.user(record), "CreateBucket", "new-bucket", "", _facts())
    access.authorize(access.user(record), "GetObject", "new-bucket", "k", _facts())
    with pytest.raises(S3Error):
        access.authorize(anonymous(), "GetObject", "new-bucket", "k", _facts())


async def test_policy_opens_a_bucket_to_another_account(engine: Engine) -> None:
    alt = accounts.Account(accounts.account_id("alt"), "alt")
    await engine.create_bucket("alt-bucket", account=alt)
    doc = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": DEFAULT_ACCOUNT_ID}, "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::alt-bucket/*"}]})
    await engine.set_bucket_config("alt-bucket", "policy", doc)
    access = AccessControl(engine, ApiSettings(access_key="ROOTKEY", secret_key="ROOTSECRET"))
    main_reader = access.user(await engine.create_user("main_reader", PASSWORD, "Reader"))
    access.authorize(main_reader, "GetObject", "alt-bucket", "k", _facts())
    with pytest.raises(S3Error):
        access.authorize(main_reader, "PutObject", "alt-bucket", "k", _facts())


def test_record_account_reads_the_owner_without_unpacking_default_buckets() -> None:
    from s4.engine.engine import _record_account
    from s4.engine.model import Bucket
    from s4.engine.views.env import pack

    alt = accounts.Account(accounts.account_id("alt"), "alt")
    assert _record_account(pack(Bucket("b", 1).to_record())) == DEFAULT_ACCOUNT_ID
    assert _record_account(pack(Bucket("b", 1, account=alt.id, account_name="alt").to_record())) == alt.id
    assert _record_account(pack(Bucket("b", 1, region="a", owner="a").to_record())) == DEFAULT_ACCOUNT_ID  # "a" value


def test_canonical_id_is_the_sha256_of_the_id_remembered_and_bounded() -> None:
    """``canonical_id`` keeps what it computed (asked on every object read's access check): the same value as the
    hash, and a bounded table whatever the number of accounts asked about."""
    import hashlib

    for i in range(accounts._CANONICAL_LIMIT * 2 + 3):
        account = f"{i:012d}"
        expected = hashlib.sha256(b"s4-canonical\0" + account.encode()).hexdigest()
        assert accounts.canonical_id(account) == expected == accounts.canonical_id(account)
        assert len(accounts._canonical) <= accounts._CANONICAL_LIMIT
