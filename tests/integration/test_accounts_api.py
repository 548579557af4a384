"""Accounts against a real server (issue 21): users created in accounts of their own through the admin API, buckets
owned by their creator's account, roles that stop at the account's edge, Owner fields naming the real owner, all of
it surviving a restart (the journal replays it)."""

from __future__ import annotations

import urllib.error
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers.admin_api import admin_call, iam_server, root_token
from helpers.s3client import account_client as client
from helpers.server import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = iam_server(tmp_path_factory.mktemp("accounts") / "data")
    yield proc
    proc.stop()


def new_user(srv: ServerProcess, role: str, account: str | None = None, email: str | None = None,
             token: str | None = None) -> tuple[dict[str, Any], Any]:
    """(user JSON, boto3 client) of a fresh IAM user with ``role`` in ``account`` (None: the caller's)."""
    token = token or root_token(srv)
    body: dict[str, Any] = {"username": f"u_{uuid.uuid4().hex[:10]}", "password": "pass-word-1", "role": role}
    if account is not None:
        body["account"] = account
    if email is not None:
        body["email"] = email
    user = admin_call(srv, "POST", "/api/admin/users", token, body)
    keys = admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    return user, client(srv.endpoint, keys["access_key"], keys["secret_key"])


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_admin_api_creates_users_in_accounts(srv: ServerProcess) -> None:
    account = f"team{uuid.uuid4().hex[:6]}"
    user, _ = new_user(srv, "Writer", account, email=f"{account}@example.com")
    assert user["account"] == account and len(user["account_id"]) == 12 and len(user["canonical_id"]) == 64
    assert user["email"] == f"{account}@example.com"
    again = admin_call(srv, "GET", f"/api/admin/users/{user['id']}", root_token(srv))
    assert (again["account"], again["account_id"]) == (account, user["account_id"])
    plain, _ = new_user(srv, "Reader")
    assert plain["account"] == "default" and plain["account_id"] == "000000000000"
    listed = {u["username"]: u["account"] for u in admin_call(srv, "GET", "/api/admin/users", root_token(srv))["users"]}
    assert listed[user["username"]] == account and listed["root"] == "default"
    with pytest.raises(urllib.error.HTTPError) as err:
        new_user(srv, "Writer", "bad account name")
    err.value.close()
    assert err.value.code == 400


def test_another_accounts_superuser_administers_its_own_account_only(srv: ServerProcess) -> None:
    account = f"own{uuid.uuid4().hex[:6]}"
    boss, _ = new_user(srv, "SuperUser", account)
    admin_call(srv, "PUT", f"/api/admin/users/{boss['id']}", root_token(srv), {"password": "pass-word-1"})
    token = admin_call(srv, "POST", "/api/admin/login",
                       body={"username": boss["username"], "password": "pass-word-1"})["token"]
    member, _ = new_user(srv, "Reader", token=token)  # default: the caller's account
    assert member["account"] == account
    with pytest.raises(urllib.error.HTTPError) as err:
        new_user(srv, "Reader", "default", token=token)
    err.value.close()
    assert err.value.code == 403
    seen = {u["account"] for u in admin_call(srv, "GET", "/api/admin/users", token)["users"]}
    assert seen == {account}


def test_buckets_belong_to_their_creators_account(srv: ServerProcess) -> None:
    """Before accounts every user listed, read and wrote every bucket; the Owner was a fixed 's4'."""
    account = f"alt{uuid.uuid4().hex[:6]}"
    alt_user, alt = new_user(srv, "Writer", account)
    root = client(srv.endpoint)
    name = f"acct-{uuid.uuid4().hex[:10]}"
    alt.create_bucket(Bucket=name)
    alt.put_object(Bucket=name, Key="k", Body=b"alt's")

    mine = alt.list_buckets()
    assert [b["Name"] for b in mine["Buckets"]] == [name]
    assert mine["Owner"] == {"ID": alt_user["canonical_id"], "DisplayName": account}
    assert name not in [b["Name"] for b in root.list_buckets()["Buckets"]]
    listing = alt.list_objects_v2(Bucket=name, FetchOwner=True)
    assert listing["Contents"][0]["Owner"]["ID"] == alt_user["canonical_id"]
    assert alt.list_objects(Bucket=name)["Contents"][0]["Owner"]["DisplayName"] == account
    assert alt.get_bucket_acl(Bucket=name)["Owner"]["ID"] == alt_user["canonical_id"]

    for call in (lambda: root.get_object(Bucket=name, Key="k"), lambda: root.put_object(Bucket=name, Key="x"),
                 lambda: root.list_objects_v2(Bucket=name), lambda: root.delete_bucket(Bucket=name)):
        with pytest.raises(ClientError) as exc:  # the default account's root: a SuperUser of another account
            call()
        assert code(exc) == "AccessDenied"
    _, neighbour = new_user(srv, "SuperUser", account)  # the same account: its role applies
    assert neighbour.get_object(Bucket=name, Key="k")["Body"].read() == b"alt's"
    with pytest.raises(ClientError) as exc:
        root.create_bucket(Bucket=name)
    assert code(exc) == "BucketAlreadyExists"
    assert "does not reach another account's bucket" in srv.log()


def test_accounts_survive_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = iam_server(tmp_path_factory.mktemp("accounts-restart") / "data")
    try:
        user, alt = new_user(proc, "Writer", "survivor")
        alt.create_bucket(Bucket="kept-bucket")
        proc.stop()
        proc.start()
        keys = admin_call(proc, "POST", f"/api/admin/users/{user['id']}/credentials", root_token(proc))
        alt = client(proc.endpoint, keys["access_key"], keys["secret_key"])
        assert alt.list_buckets()["Owner"]["ID"] == user["canonical_id"]
        assert [b["Name"] for b in alt.list_buckets()["Buckets"]] == ["kept-bucket"]
        with pytest.raises(ClientError) as exc:
            client(proc.endpoint).list_objects_v2(Bucket="kept-bucket")
        assert code(exc) == "AccessDenied"
    finally:
        proc.stop()
