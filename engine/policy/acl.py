"""Access control lists: an owner and grants (grantee, permission), canned ACLs, and which grant allows an action.

Pure logic (docs/architecture/access-control.md, "ACLs"): parsing the XML and headers is api/s3/acl.py's, storage
the views'. A stored ACL is ``[owner canonical id, [[grantee, permission], ...]]``: a grantee is a canonical id
(64 hex) or a group URI. Email grantees are resolved to their account's canonical id when the ACL is put.

Which permission an action needs (S3's ACL permission mapping):

    bucket ACL   READ: ListBucket(Versions), ListBucketMultipartUploads   WRITE: PutObject, DeleteObject(Version),
                                                                          ListMultipartUploadParts, AbortMultipartUpload
                 READ_ACP: GetBucketAcl                                   WRITE_ACP: PutBucketAcl
    object ACL   READ: GetObject(Version)   READ_ACP: GetObject(Version)Acl   WRITE_ACP: PutObject(Version)Acl
    FULL_CONTROL grants all four.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .principals import Principal

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = frozenset({ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY})
PUBLIC_GROUPS = frozenset({ALL_USERS, AUTHENTICATED_USERS})
PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
CANNED = frozenset({"private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
                    "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write"})

BUCKET_PERMISSIONS = {
    "s3:ListBucket": "READ", "s3:ListBucketVersions": "READ", "s3:ListBucketMultipartUploads": "READ",
    "s3:PutObject": "WRITE", "s3:DeleteObject": "WRITE", "s3:DeleteObjectVersion": "WRITE",
    # S3 lets an upload's initiator list and abort it; S4 keeps no per-upload owner check: a bucket writer may
    "s3:ListMultipartUploadParts": "WRITE", "s3:AbortMultipartUpload": "WRITE",
    "s3:GetBucketAcl": "READ_ACP", "s3:PutBucketAcl": "WRITE_ACP",
}
OBJECT_PERMISSIONS = {
    "s3:GetObject": "READ", "s3:GetObjectVersion": "READ",
    "s3:GetObjectAcl": "READ_ACP", "s3:GetObjectVersionAcl": "READ_ACP",
    "s3:PutObjectAcl": "WRITE_ACP", "s3:PutObjectVersionAcl": "WRITE_ACP",
}


@dataclass(frozen=True, slots=True)
class Grant:
    grantee: str  # a canonical id, or a group URI (GROUPS)
    permission: str

    @property
    def group(self) -> bool:
        return self.grantee in GROUPS

    def describe(self) -> str:
        return f"grant {self.permission} to {self.grantee}"


@dataclass(frozen=True, slots=True)
class Acl:
    owner: str  # the owner's canonical id
    grants: tuple[Grant, ...]

    def to_record(self) -> list[Any]:
        return [self.owner, [[g.grantee, g.permission] for g in self.grants]]

    @classmethod
    def from_record(cls, rec: list[Any]) -> Acl:
        return cls(str(rec[0]), tuple(Grant(str(g), str(p)) for g, p in rec[1]))

    @property
    def public(self) -> bool:
        """Grants something to AllUsers or AuthenticatedUsers (what the public access block calls public)."""
        return any(g.grantee in PUBLIC_GROUPS for g in self.grants)


def private(owner: str) -> Acl:
    return Acl(owner, (Grant(owner, "FULL_CONTROL"),))


def canned(name: str, owner: str, bucket_owner: str = "") -> Acl:
    """The ACL a canned name stands for; ``bucket_owner``: the bucket's owner (for an object's bucket-owner-*)."""
    grants = [Grant(owner, "FULL_CONTROL")]
    if name == "public-read":
        grants.append(Grant(ALL_USERS, "READ"))
    elif name == "public-read-write":
        grants += [Grant(ALL_USERS, "READ"), Grant(ALL_USERS, "WRITE")]
    elif name == "authenticated-read":
        grants.append(Grant(AUTHENTICATED_USERS, "READ"))
    elif name == "log-delivery-write":
        grants += [Grant(LOG_DELIVERY, "WRITE"), Grant(LOG_DELIVERY, "READ_ACP")]
    elif name in ("bucket-owner-read", "bucket-owner-full-control") and bucket_owner and bucket_owner != owner:
        grants.append(Grant(bucket_owner, "READ" if name == "bucket-owner-read" else "FULL_CONTROL"))
    return Acl(owner, tuple(grants))


def grantee_matches(grantee: str, who: Principal, own_account: bool) -> bool:
    """AllUsers: everyone; AuthenticatedUsers: every signed caller; a canonical id: that account's callers, except
    inside the account owning the bucket, where S4's roles decide (an owner's FULL_CONTROL does not make a Reader
    a writer). LogDelivery: no S3 caller (S4 has no log delivery service)."""
    if grantee == ALL_USERS:
        return True
    if grantee == AUTHENTICATED_USERS:
        return not who.anonymous
    return not own_account and not who.anonymous and grantee == who.canonical_id


def allowing_grant(acl: Acl | None, permission: str, who: Principal, own_account: bool,
                   ignore_public: bool = False) -> Grant | None:
    """The first grant of ``acl`` giving ``who`` the permission (FULL_CONTROL gives every one), or None.
    ``ignore_public`` (IgnorePublicAcls): grants to AllUsers and AuthenticatedUsers count for nothing."""
    if acl is None:
        return None
    for grant in acl.grants:
        if ignore_public and grant.grantee in PUBLIC_GROUPS:
            continue
        if grant.permission in (permission, "FULL_CONTROL") and grantee_matches(grant.grantee, who, own_account):
            return grant
    return None
