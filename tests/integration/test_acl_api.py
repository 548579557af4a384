"""ACLs and object ownership against a real server, with boto3 clients of two accounts and unsigned requests
(issue 21): canned ACLs and grants by canonical id, email and group; Get/Put Bucket/Object Acl (versionId too);
BucketOwnerEnforced as the default; an object written by another account belongs to it (ObjectWriter) or to the
bucket owner (BucketOwnerPreferred + bucket-owner-full-control); an explicit Deny beats any grant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.admin_api import admin_call, iam_server, root_token
from helpers.s3client import account_client as client
from helpers.server import ServerProcess

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = iam_server(tmp_path_factory.mktemp("acl") / "data")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def main(srv: ServerProcess) -> Any:
    return client(srv.endpoint)


@pytest.fixture(scope="module")
def alt(srv: ServerProcess) -> tuple[dict[str, Any], Any]:
    """(user JSON, client) of a Writer in an account of its own, with an email."""
    token = root_token(srv)
    user = admin_call(srv, "POST", "/api/admin/users", token, {
        "username": "alt_writer", "password": "pass-word-1", "role": "Writer", "account": "altacct",
        "email": "alt@example.com"})
    keys = admin_call(srv, "POST", f"/api/admin/users/{user['id']}/credentials", token)
    return user, client(srv.endpoint, keys["access_key"], keys["secret_key"])


def new_bucket(s3: Any, ownership: str | None = "ObjectWriter", **extra: Any) -> str:
    name = f"acl-{uuid.uuid4().hex[:12]}"
    if ownership:
        extra["ObjectOwnership"] = ownership
    s3.create_bucket(Bucket=name, **extra)
    return name


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def grants(acl: dict[str, Any]) -> set[tuple[str, str]]:
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]}


def test_bucket_owner_enforced_is_the_default(main: Any) -> None:
    bucket = new_bucket(main, ownership=None)
    rules = main.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    with pytest.raises(ClientError) as exc:
        main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    assert code(exc) == "AccessControlListNotSupported"
    main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="bucket-owner-full-control")  # still accepted
    main.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": [
        {"ObjectOwnership": "ObjectWriter"}]})
    main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    main.delete_bucket_ownership_controls(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        main.get_bucket_ownership_controls(Bucket=bucket)
    assert code(exc) == "OwnershipControlsNotFoundError"
    with pytest.raises(ClientError) as exc:
        main.create_bucket(Bucket=f"acl-{uuid.uuid4().hex[:12]}", ACL="public-read")
    assert code(exc) == "InvalidBucketAclWithObjectOwnership"


def test_public_read_object_is_served_unsigned(srv: ServerProcess, main: Any) -> None:
    """Before issue 21 a public-read ACL was NotImplemented and every unsigned GET was AccessDenied."""
    bucket = new_bucket(main)
    main.put_object(Bucket=bucket, Key="public", Body=b"for everyone", ACL="public-read")
    main.put_object(Bucket=bucket, Key="private", Body=b"mine")
    got = requests.get(f"{srv.endpoint}/{bucket}/public", timeout=30)
    assert (got.status_code, got.content) == (200, b"for everyone")
    assert requests.get(f"{srv.endpoint}/{bucket}/private", timeout=30).status_code == 403
    assert requests.put(f"{srv.endpoint}/{bucket}/public", data=b"overwrite", timeout=30).status_code == 403
    assert requests.get(f"{srv.endpoint}/{bucket}", timeout=30).status_code == 403  # the bucket is private
    acl = main.get_object_acl(Bucket=bucket, Key="public")
    assert (ALL_USERS, "READ") in grants(acl) and (acl["Owner"]["ID"], "FULL_CONTROL") in grants(acl)
    assert "decided-by=no allow" in srv.log()


def test_public_read_bucket_lists_unsigned(srv: ServerProcess, main: Any) -> None:
    bucket = new_bucket(main, ACL="public-read")
    main.put_object(Bucket=bucket, Key="listed", Body=b"x")
    listing = requests.get(f"{srv.endpoint}/{bucket}?list-type=2", timeout=30)
    assert listing.status_code == 200 and b"<Key>listed</Key>" in listing.content
    assert requests.get(f"{srv.endpoint}/{bucket}/listed", timeout=30).status_code == 403  # the object is private
    assert (ALL_USERS, "READ") in grants(main.get_bucket_acl(Bucket=bucket))


def test_cross_account_grants(main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    alt_user, alt_s3 = alt
    bucket = new_bucket(main)
    main.put_object(Bucket=bucket, Key="shared", Body=b"shared")
    with pytest.raises(ClientError) as exc:  # another account's role does not reach this bucket
        alt_s3.get_object(Bucket=bucket, Key="shared")
    assert code(exc) == "AccessDenied"
    main.put_object_acl(Bucket=bucket, Key="shared", GrantRead='emailAddress="alt@example.com"')
    assert alt_s3.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"shared"
    assert (alt_user["canonical_id"], "READ") in grants(main.get_object_acl(Bucket=bucket, Key="shared"))
    with pytest.raises(ClientError) as exc:
        alt_s3.get_object_acl(Bucket=bucket, Key="shared")  # READ is not READ_ACP
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        alt_s3.put_object(Bucket=bucket, Key="new", Body=b"x")
    assert code(exc) == "AccessDenied"
    main.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{alt_user["canonical_id"]}"',
                        GrantFullControl=f'id="{main.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]}"')
    alt_s3.put_object(Bucket=bucket, Key="new", Body=b"from alt")
    with pytest.raises(ClientError) as exc:
        alt_s3.list_objects_v2(Bucket=bucket)  # WRITE is not READ
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        main.put_object_acl(Bucket=bucket, Key="shared", GrantRead='emailAddress="nobody@example.com"')
    assert code(exc) == "UnresolvableGrantByEmailAddress"
    with pytest.raises(ClientError) as exc:
        main.put_object_acl(Bucket=bucket, Key="shared", GrantRead=f'id="{"0" * 64}"')
    assert code(exc) == "InvalidArgument"


def test_object_writer_owns_its_object(main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    alt_user, alt_s3 = alt
    owner = main.get_bucket_acl(Bucket=(bucket := new_bucket(main)))["Owner"]["ID"]
    main.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{alt_user["canonical_id"]}"', GrantFullControl=f'id="{owner}"')
    alt_s3.put_object(Bucket=bucket, Key="alts", Body=b"x")
    acl = alt_s3.get_object_acl(Bucket=bucket, Key="alts")  # its owner has FULL_CONTROL
    assert acl["Owner"]["ID"] == alt_user["canonical_id"]
    alt_s3.put_object(Bucket=bucket, Key="given", Body=b"x", ACL="bucket-owner-full-control")
    assert (owner, "FULL_CONTROL") in grants(main.get_object_acl(Bucket=bucket, Key="given"))
    upload = alt_s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    assert alt_s3.list_parts(Bucket=bucket, Key="parts", UploadId=upload)["Owner"]["ID"] == alt_user["canonical_id"]

    preferred = new_bucket(main, "BucketOwnerPreferred")
    main.put_bucket_acl(Bucket=preferred, GrantWrite=f'id="{alt_user["canonical_id"]}"',
                        GrantFullControl=f'id="{owner}"')
    alt_s3.put_object(Bucket=preferred, Key="given", Body=b"x", ACL="bucket-owner-full-control")
    assert main.get_object_acl(Bucket=preferred, Key="given")["Owner"]["ID"] == owner


def test_object_acl_of_a_version(main: Any) -> None:
    bucket = new_bucket(main)
    main.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = main.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    main.put_object(Bucket=bucket, Key="k", Body=b"2")
    main.put_object_acl(Bucket=bucket, Key="k", VersionId=first, ACL="public-read")
    assert (ALL_USERS, "READ") in grants(main.get_object_acl(Bucket=bucket, Key="k", VersionId=first))
    assert (ALL_USERS, "READ") not in grants(main.get_object_acl(Bucket=bucket, Key="k"))
    main.put_object_tagging(Bucket=bucket, Key="k", VersionId=first, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert (ALL_USERS, "READ") in grants(main.get_object_acl(Bucket=bucket, Key="k", VersionId=first))


def test_explicit_deny_beats_a_grant(srv: ServerProcess, main: Any) -> None:
    bucket = new_bucket(main)
    main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    assert requests.get(f"{srv.endpoint}/{bucket}/k", timeout=30).status_code == 200
    main.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "NoAnonymous", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": {"Null": {"aws:userid": "true"}}}]}))
    assert requests.get(f"{srv.endpoint}/{bucket}/k", timeout=30).status_code == 403
    assert main.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    assert "decided-by=explicit deny (statement 'NoAnonymous')" in srv.log()


def test_acls_survive_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = ServerProcess(tmp_path_factory.mktemp("acl-restart") / "data").start()
    try:
        s3 = client(proc.endpoint)
        bucket = new_bucket(s3, ACL="public-read")
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
        proc.stop()
        proc.start()
        assert requests.get(f"{proc.endpoint}/{bucket}/k", timeout=30).status_code == 200
        assert requests.get(f"{proc.endpoint}/{bucket}", timeout=30).status_code == 200
        rules = client(proc.endpoint).get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert rules == [{"ObjectOwnership": "ObjectWriter"}]
    finally:
        proc.stop()


def test_public_access_block(srv: ServerProcess, main: Any) -> None:
    """Put/Get/DeletePublicAccessBlock answered NotImplemented/404 before issue 21."""
    bucket = new_bucket(main)
    main.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    with pytest.raises(ClientError) as exc:
        main.get_public_access_block(Bucket=bucket)
    assert code(exc) == "NoSuchPublicAccessBlockConfiguration"
    flags = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
             "RestrictPublicBuckets": False}
    main.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=flags)
    assert main.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == flags
    assert requests.get(f"{srv.endpoint}/{bucket}/k", timeout=30).status_code == 403  # IgnorePublicAcls
    with pytest.raises(ClientError) as exc:
        main.put_object(Bucket=bucket, Key="k2", Body=b"x", ACL="public-read")  # BlockPublicAcls
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        main.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert code(exc) == "AccessDenied"
    public_policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    with pytest.raises(ClientError) as exc:
        main.put_bucket_policy(Bucket=bucket, Policy=public_policy)  # BlockPublicPolicy
    assert code(exc) == "AccessDenied"
    main.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
        "RestrictPublicBuckets": True})
    main.put_bucket_policy(Bucket=bucket, Policy=public_policy)
    main.put_object(Bucket=bucket, Key="k", Body=b"x")  # private now: only the policy could open it
    assert requests.get(f"{srv.endpoint}/{bucket}/k", timeout=30).status_code == 403  # RestrictPublicBuckets
    main.delete_public_access_block(Bucket=bucket)
    assert requests.get(f"{srv.endpoint}/{bucket}/k", timeout=30).status_code == 200
    assert main.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_list_multipart_uploads_names_each_uploads_initiator(main: Any, alt: tuple[dict[str, Any], Any]) -> None:
    """ListMultipartUploads names each upload's own initiator and owner, as ListParts does: an upload another
    account started (ObjectWriter) is that account's, not the bucket owner's (s3-tests
    test_list_multipart_upload_owner; every upload was shown as the bucket owner's)."""
    alt_user, alt_s3 = alt
    owner = main.get_bucket_acl(Bucket=(bucket := new_bucket(main)))["Owner"]
    main.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    mine = main.create_multipart_upload(Bucket=bucket, Key="multipart1")["UploadId"]
    theirs = alt_s3.create_multipart_upload(Bucket=bucket, Key="multipart2")["UploadId"]
    for s3 in (main, alt_s3):
        uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
        assert [(u["Key"], u["UploadId"]) for u in uploads] == [("multipart1", mine), ("multipart2", theirs)]
        assert [(u["Initiator"]["ID"], u["Owner"]["ID"]) for u in uploads] == [
            (owner["ID"], owner["ID"]), (alt_user["canonical_id"], alt_user["canonical_id"])]
        assert uploads[1]["Owner"]["DisplayName"] == uploads[1]["Initiator"]["DisplayName"] == "altacct"
