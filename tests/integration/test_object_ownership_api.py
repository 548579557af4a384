"""Object ownership as AWS has it, against a real server with boto3 clients of two accounts (issue 21, second
round): under ObjectWriter / BucketOwnerPreferred an object another account wrote is that account's (its reads and
ACL are decided by its ACL, not by the bucket owner's role); listings show each object's owner; a
BucketOwnerEnforced bucket takes only the bucket owner's full control as an ACL and refuses every Put*Acl; and the
admin API and POST object take the client address from the ASGI scope (a malformed ``Forwarded`` header was a 500)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD, admin_call, iam_server, root_token
from helpers.s3client import account_client as client
from helpers.server import ServerProcess

#: falcon's ``req.remote_addr`` parses this header and raises ValueError (the port is not a number).
BAD_FORWARDED = {"Forwarded": 'for="[abc]:x"'}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = iam_server(tmp_path_factory.mktemp("ownership") / "data")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def main(srv: ServerProcess) -> Any:
    return client(srv.endpoint)


@pytest.fixture(scope="module")
def alt(srv: ServerProcess) -> tuple[dict[str, Any], Any]:
    """(user JSON, client) of a Writer in an account of its own."""
    token = root_token(srv)
    user = admin_call(srv, "POST", "/api/admin/users", token, {
        "username": "own_alt", "password": "pass-word-1", "role": "Writer", "account": "ownalt",
        "email": "ownalt@example.com"})
    keys = admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    return user, client(srv.endpoint, keys["access_key"], keys["secret_key"])


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def shared_bucket(main: Any, alt_user: dict[str, Any], ownership: str = "ObjectWriter") -> tuple[str, str]:
    """(bucket, the bucket owner's canonical id): main's bucket that alt may write into (a WRITE grant)."""
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    main.create_bucket(Bucket=bucket, ObjectOwnership=ownership)
    owner = main.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    main.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{alt_user["canonical_id"]}"', GrantFullControl=f'id="{owner}"')
    return bucket, owner


def test_another_accounts_object_is_decided_by_its_acl_not_the_bucket_owners_role(
        srv: ServerProcess, main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """Before: the bucket owner's role reached every object of its buckets, so main read and re-ACLed an object
    alt owned without any grant from alt (AWS: the object owner's ACL decides; s3-tests
    test_bucket_policy_put_obj_grant)."""
    alt_user, alt_s3 = alt
    bucket, owner = shared_bucket(main, alt_user)
    alt_s3.put_object(Bucket=bucket, Key="alts", Body=b"alt's bytes")
    for call in (lambda: main.get_object(Bucket=bucket, Key="alts"),
                 lambda: main.head_object(Bucket=bucket, Key="alts"),
                 lambda: main.get_object_acl(Bucket=bucket, Key="alts"),
                 lambda: main.put_object_acl(Bucket=bucket, Key="alts", ACL="private"),
                 lambda: main.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "alts"})):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) in ("AccessDenied", "403")
    assert "does not reach another account's bucket or object" in srv.log()
    assert alt_s3.get_object(Bucket=bucket, Key="alts")["Body"].read() == b"alt's bytes"  # its owner reads it
    assert alt_s3.get_object_acl(Bucket=bucket, Key="alts")["Owner"]["ID"] == alt_user["canonical_id"]
    alt_s3.put_object(Bucket=bucket, Key="given", Body=b"shared", ACL="bucket-owner-full-control")
    assert main.get_object(Bucket=bucket, Key="given")["Body"].read() == b"shared"  # granted by the object's ACL
    assert main.get_object_acl(Bucket=bucket, Key="given")["Owner"]["ID"] == alt_user["canonical_id"]
    main.delete_object(Bucket=bucket, Key="alts")  # deleting is the bucket's WRITE: the bucket owner may
    main.put_object(Bucket=bucket, Key="mains", Body=b"x")
    assert main.get_object(Bucket=bucket, Key="mains")["Body"].read() == b"x"  # its own objects: its role

    preferred, owner = shared_bucket(main, alt_user, "BucketOwnerPreferred")
    alt_s3.put_object(Bucket=preferred, Key="handed-over", Body=b"y", ACL="bucket-owner-full-control")
    assert main.get_object(Bucket=preferred, Key="handed-over")["Body"].read() == b"y"  # the bucket owner's now
    main.put_object_acl(Bucket=preferred, Key="handed-over", ACL="private")
    alt_s3.put_object(Bucket=preferred, Key="kept", Body=b"z")
    with pytest.raises(ClientError) as exc:
        main.get_object(Bucket=preferred, Key="kept")
    assert code(exc) == "AccessDenied"


def test_listing_owner_fields_show_the_objects_owner(main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """Before: every listed object showed the bucket owner, also an object another account wrote and owns."""
    alt_user, alt_s3 = alt
    bucket, owner = shared_bucket(main, alt_user)
    main.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    alt_s3.put_object(Bucket=bucket, Key="a-alts", Body=b"x")
    main.put_object(Bucket=bucket, Key="b-mains", Body=b"x")
    alt_s3.put_object(Bucket=bucket, Key="c-given", Body=b"x", ACL="bucket-owner-full-control")  # still alt's
    expected = {"a-alts": (alt_user["canonical_id"], "ownalt"), "b-mains": (owner, "default"),
                "c-given": (alt_user["canonical_id"], "ownalt")}

    def owners(entries: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        return {e["Key"]: (e["Owner"]["ID"], e["Owner"]["DisplayName"]) for e in entries}

    assert owners(main.list_objects(Bucket=bucket)["Contents"]) == expected
    assert owners(main.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"]) == expected
    assert all("Owner" not in e for e in main.list_objects_v2(Bucket=bucket)["Contents"])
    assert owners(main.list_object_versions(Bucket=bucket)["Versions"]) == expected


def test_bucket_owner_enforced_accepts_only_the_bucket_owners_full_control(
        main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """Before: ``private`` from another account (its own full control) was accepted, and so were PutBucketAcl and
    PutObjectAcl with ``private``; AWS refuses both (AccessControlListNotSupported) and accepts no ACL,
    bucket-owner-full-control, or the bucket owner's own ``private`` (rclone's default on every upload)."""
    alt_user, alt_s3 = alt
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    main.create_bucket(Bucket=bucket, ACL="private")  # rclone's mkdir sends it: accepted
    owner = main.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    main.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": alt_user["account_id"]}, "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    main.put_object(Bucket=bucket, Key="mine", Body=b"x", ACL="private")
    main.put_object(Bucket=bucket, Key="mine2", Body=b"x", ACL="bucket-owner-full-control")
    alt_s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    alt_s3.put_object(Bucket=bucket, Key="bofc", Body=b"x", ACL="bucket-owner-full-control")
    alt_s3.put_object(Bucket=bucket, Key="grant", Body=b"x", GrantFullControl=f'id="{owner}"')
    for key in ("plain", "bofc", "grant"):
        assert alt_s3.get_object_acl(Bucket=bucket, Key=key)["Owner"]["ID"] == owner  # the bucket owner's
    refused = [lambda: alt_s3.put_object(Bucket=bucket, Key="priv", Body=b"x", ACL="private"),
               lambda: alt_s3.create_multipart_upload(Bucket=bucket, Key="priv", ACL="private"),
               lambda: alt_s3.copy_object(Bucket=bucket, Key="priv", ACL="private",
                                          CopySource={"Bucket": bucket, "Key": "plain"}),
               lambda: main.put_object(Bucket=bucket, Key="pub", Body=b"x", ACL="public-read"),
               lambda: main.put_bucket_acl(Bucket=bucket, ACL="private"),
               lambda: alt_s3.put_bucket_acl(Bucket=bucket, ACL="private"),
               lambda: main.put_object_acl(Bucket=bucket, Key="mine", ACL="private"),
               lambda: main.put_object_acl(Bucket=bucket, Key="mine", ACL="bucket-owner-full-control")]
    for call in refused:
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == "AccessControlListNotSupported"
    assert [k["Key"] for k in main.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "bofc", "grant", "mine", "mine2", "plain"]  # nothing refused was stored
    assert main.get_bucket_acl(Bucket=bucket)["Grants"] == [  # reading ACLs still works
        {"Grantee": {"ID": owner, "DisplayName": "default", "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}]


def test_admin_api_takes_the_client_address_from_the_scope(srv: ServerProcess, main: Any) -> None:
    """Before: the admin login and bucket browsing read falcon's ``req.remote_addr``, which parses the client's
    ``Forwarded`` header, and a malformed one raised: a 500 instead of the answer."""
    login = requests.post(f"{srv.endpoint}/api/admin/login", headers=BAD_FORWARDED, timeout=60,
                          json={"username": "root", "password": "wrong-password"})
    assert login.status_code == 401
    login = requests.post(f"{srv.endpoint}/api/admin/login", headers=BAD_FORWARDED, timeout=60,
                          json={"username": "root", "password": ROOT_PASSWORD})
    assert login.status_code == 200
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    main.create_bucket(Bucket=bucket)
    main.put_object(Bucket=bucket, Key="k", Body=b"x")
    listing = requests.get(f"{srv.endpoint}/api/admin/buckets/{bucket}/objects", timeout=60,
                           headers={**BAD_FORWARDED, "Authorization": f"Bearer {login.json()['token']}"})
    assert listing.status_code == 200 and [o["key"] for o in listing.json()["objects"]] == ["k"]


def test_post_object_takes_the_client_address_from_the_scope(srv: ServerProcess, main: Any) -> None:
    """Before: a form with a malformed ``Forwarded`` header was a 500 (InternalError) instead of AccessDenied."""
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    main.create_bucket(Bucket=bucket)
    form = {"key": (None, "k"), "file": ("a.txt", b"hello")}
    got = requests.post(f"{srv.endpoint}/{bucket}", files=form, headers=BAD_FORWARDED, timeout=60)
    assert got.status_code == 403 and b"<Code>AccessDenied</Code>" in got.content
    assert "Contents" not in main.list_objects_v2(Bucket=bucket)


def test_list_multipart_uploads_shows_each_uploads_initiator(main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """Before: every upload showed the bucket owner as Initiator and Owner, also one another account started
    (ListParts already showed its initiator; s3-tests test_list_multipart_upload_owner)."""
    alt_user, alt_s3 = alt
    bucket, owner = shared_bucket(main, alt_user)
    mine = main.create_multipart_upload(Bucket=bucket, Key="m1")["UploadId"]
    theirs = alt_s3.create_multipart_upload(Bucket=bucket, Key="m2")["UploadId"]
    uploads = {u["UploadId"]: u for u in main.list_multipart_uploads(Bucket=bucket)["Uploads"]}
    for upload, who in ((mine, (owner, "default")), (theirs, (alt_user["canonical_id"], "ownalt"))):
        for field in ("Initiator", "Owner"):
            assert (uploads[upload][field]["ID"], uploads[upload][field]["DisplayName"]) == who
    main.abort_multipart_upload(Bucket=bucket, Key="m1", UploadId=mine)
    alt_s3.abort_multipart_upload(Bucket=bucket, Key="m2", UploadId=theirs)


def test_expected_bucket_owner_of_another_account_is_access_denied(
        srv: ServerProcess, main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """Before: ``x-amz-expected-bucket-owner`` was ignored, so a request meant for one's own bucket reached another
    account's public bucket (s3-tests test_expected_bucket_owner)."""
    alt_user, alt_s3 = alt
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    main.create_bucket(Bucket=bucket, ACL="public-read-write", ObjectOwnership="ObjectWriter")
    main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    account = main.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]  # the canonical id (also accepted)
    wrong = {"x-amz-expected-bucket-owner": alt_user["account_id"]}
    assert requests.get(f"{srv.endpoint}/{bucket}", headers=wrong, timeout=60).status_code == 403
    assert requests.put(f"{srv.endpoint}/{bucket}/anon", data=b"y", headers=wrong, timeout=60).status_code == 403
    assert requests.get(f"{srv.endpoint}/{bucket}", timeout=60).status_code == 200  # public without the header
    right = {"x-amz-expected-bucket-owner": "000000000000"}  # the default account's id
    assert requests.get(f"{srv.endpoint}/{bucket}", headers=right, timeout=60).status_code == 200
    assert requests.get(f"{srv.endpoint}/{bucket}", timeout=60,
                        headers={"x-amz-expected-bucket-owner": account}).status_code == 200
    with pytest.raises(ClientError) as exc:
        main.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=alt_user["account_id"])
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        alt_s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"},
                           ExpectedSourceBucketOwner=alt_user["account_id"])
    assert code(exc) == "AccessDenied"
    assert [o["Key"] for o in main.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]  # nothing was written
    alt_s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"},
                       ExpectedSourceBucketOwner="000000000000")  # the right owner: the grants decide, and allow
    assert "decided-by=x-amz-expected-bucket-owner" in srv.log()
