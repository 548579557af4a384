"""The S3 side of access control: who the caller is, which S3 action an operation is, what the request context
holds, and the one place a refusal is decided and logged. The decision itself is engine/policy (pure logic).

Every S3 operation passes ``AccessControl.authorize`` before its handler runs; handlers that touch a second
resource (the source of a copy, each key of a DeleteObjects, each object a ``?sql`` query reads) call
``Call.authorize`` for it. The admin API's bucket browsing calls ``AccessControl.check`` with the console user.
docs/architecture/access-control.md has the decision order.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from s4.engine import Engine, accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import (
    Decision,
    Policy,
    Principal,
    anonymous,
    decide,
    is_public,
    parse_policy,
    root_principal,
    user_principal,
)
from s4.engine.policy.acl import BUCKET_PERMISSIONS, OBJECT_PERMISSIONS, Acl, allowing_grant, private
from s4.engine.policy.conditions import Values

from ..auth.request import AuthContext
from ..settings import ApiSettings
from . import public_access
from .acl import ACL_KIND, ENFORCED, OWNERSHIP_KIND, ownership
from .bucket_reads import POLICY_KIND as POLICY_KIND  # the policy's configuration kind (s3/policy.py imports it here)
from .bucket_reads import BucketReads
from .router import READ_ONLY

log = logging.getLogger(__name__)  # s4.api.s3.access: one INFO line per refusal
#: Operations whose S3 action names the bucket, not an object.
ACTIONS: dict[str, str] = {
    "ListBuckets": "s3:ListAllMyBuckets", "CreateBucket": "s3:CreateBucket", "HeadBucket": "s3:ListBucket",
    "DeleteBucket": "s3:DeleteBucket", "GetBucketLocation": "s3:GetBucketLocation",
    "PutBucketVersioning": "s3:PutBucketVersioning", "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketCors": "s3:PutBucketCORS", "GetBucketCors": "s3:GetBucketCORS", "DeleteBucketCors": "s3:PutBucketCORS",
    "PutBucketTagging": "s3:PutBucketTagging", "GetBucketTagging": "s3:GetBucketTagging",
    "DeleteBucketTagging": "s3:PutBucketTagging",
    "PutBucketNotificationConfiguration": "s3:PutBucketNotification",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "GetBucketAcl": "s3:GetBucketAcl", "PutBucketAcl": "s3:PutBucketAcl",
    "GetBucketPolicy": "s3:GetBucketPolicy", "PutBucketPolicy": "s3:PutBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy", "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration", "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock", "GetBucketWebsite": "s3:GetBucketWebsite",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketReplication": "s3:GetReplicationConfiguration",
    "ListObjects": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads", "MultiObjectSQL": "s3:ListBucket",
    # object level
    "PutObject": "s3:PutObject", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject", "CopyObject": "s3:PutObject", "RenameObject": "s3:PutObject",
    "PutObjectTagging": "s3:PutObjectTagging", "GetObjectTagging": "s3:GetObjectTagging",
    "DeleteObjectTagging": "s3:DeleteObjectTagging", "GetObjectAcl": "s3:GetObjectAcl",
    "PutObjectAcl": "s3:PutObjectAcl", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListParts": "s3:ListMultipartUploadParts",
    "SelectObjectContent": "s3:GetObject",
    "PostObject": "s3:PutObject",  # the form's signer, authorized by api/s3/post_object.py
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
}
#: With ``?versionId=``, S3 asks for the version's own action.
VERSION_ACTIONS = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion",
                   "s3:GetObjectTagging": "s3:GetObjectVersionTagging",
                   "s3:PutObjectTagging": "s3:PutObjectVersionTagging",
                   "s3:DeleteObjectTagging": "s3:DeleteObjectVersionTagging",
                   "s3:GetObjectAcl": "s3:GetObjectVersionAcl", "s3:PutObjectAcl": "s3:PutObjectVersionAcl",
                   "s3:GetObjectAttributes": "s3:GetObjectVersionAttributes"}
#: Checked per key by the handler (Call.authorize), not once for the bucket.
PER_KEY = frozenset({"DeleteObjects"})
#: The bucket policy's own operations: a SuperUser may always run them, so a policy cannot lock everyone out
#: (AWS keeps the same escape for the account's root user).
POLICY_OPERATIONS = frozenset({"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy", "GetBucketPolicyStatus"})
_HEADER_KEYS = ("x-amz-acl", "x-amz-copy-source", "x-amz-metadata-directive", "x-amz-server-side-encryption",
                "x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-customer-algorithm",
                "x-amz-storage-class", "x-amz-website-redirect-location", "x-amz-grant-read", "x-amz-grant-write",
                "x-amz-grant-read-acp", "x-amz-grant-write-acp", "x-amz-grant-full-control",
                "x-amz-content-sha256", "x-amz-object-ownership", "x-amz-checksum-algorithm")


ROLE_ALLOW = Decision(True, "role allow", "")  # no policy decided: the caller's role allows the operation


def reaches_owner(engine: Engine, who: Principal, bucket: str) -> bool:
    """The caller belongs to the bucket's account (RestrictPublicBuckets lets a public policy reach only those)."""
    return not who.anonymous and engine.bucket_account(bucket) == who.account


def client_address(scope: Mapping[str, Any]) -> str:
    """The request's client address (``aws:SourceIp``, the login throttle's key) from the ASGI scope: the peer as
    uvicorn set it (a trusted proxy's forwarded address only with S4_TRUSTED_PROXIES), '127.0.0.1' when the server
    gave none. Never falcon's ``req.remote_addr``: that parses the client's own ``Forwarded`` header first, and a
    malformed one (``for="[a]:x"``) raised out of the request as a 500."""
    client = scope.get("client")
    return str(client[0]) if client else "127.0.0.1"


def resource_arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


@dataclass(slots=True)
class RequestFacts:
    """What conditions may ask about a request, gathered once (aws:* and s3:* keys). Not frozen: a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~1 us on every request; nothing assigns to it."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    source_ip: str
    secure: bool
    auth: AuthContext | None
    now: float
    bucket_reads: BucketReads | None = None  # the request's own bucket, read once (s3/bucket_reads.py)


def context_values(facts: RequestFacts, who: Principal) -> dict[str, list[str]]:
    """The request context as condition keys (lower-case) -> values; absent keys are simply not there."""
    values: dict[str, list[str]] = {
        "aws:securetransport": ["true" if facts.secure else "false"],
        "aws:currenttime": [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(facts.now))],
        "aws:epochtime": [str(int(facts.now))],
        "aws:principaltype": ["Anonymous" if who.anonymous else "Account" if who.kind == "root" else "User"],
    }
    if facts.source_ip:
        values["aws:sourceip"] = [facts.source_ip]
    if not who.anonymous:
        values["aws:userid"] = [who.userid]
        values["aws:principalarn"] = [who.arn]
        values["aws:principalaccount"] = [who.account]
        if who.username:
            values["aws:username"] = [who.username]
    for header, key in (("referer", "aws:referer"), ("user-agent", "aws:useragent")):
        if header in facts.headers:
            values[key] = [facts.headers[header]]
    for name in ("prefix", "delimiter", "max-keys"):
        if name in facts.query:
            values[f"s3:{name}"] = [facts.query[name]]
    if "versionId" in facts.query:
        values["s3:versionid"] = [facts.query["versionId"]]
    for header in _HEADER_KEYS:
        if header in facts.headers:
            values[f"s3:{header}"] = [facts.headers[header]]
    if facts.auth is not None:
        values["s3:signatureversion"] = ["AWS4-HMAC-SHA256" if facts.auth.signature_version == 4 else "AWS"]
        values["s3:authtype"] = ["POST" if facts.auth.form else
                                 "REST-QUERY-STRING" if facts.auth.presigned else "REST-HEADER"]
    tagging = facts.headers.get("x-amz-tagging")
    if tagging is not None:
        tags = parse_qsl(tagging, keep_blank_values=True)
        values["s3:requestobjecttagkeys"] = [k for k, _ in tags]
        for k, v in tags:
            values[f"s3:requestobjecttag/{k}"] = [v]
    return values


class AccessControl:
    """Principal resolution, bucket policy lookup and the logged decision; one per process."""

    def __init__(self, engine: Engine, settings: ApiSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._root_key = settings.access_key.encode()
        default = accounts.DEFAULT_ACCOUNT  # the root keys' account; one principal per process
        self._root = root_principal(default.id, default.canonical_id, account_name=default.name)

    # -- who ------------------------------------------------------------------------------------------------------
    def principal(self, auth: AuthContext | None) -> Principal:
        """The verified caller; InvalidAccessKeyId if its credential vanished since the signature was checked."""
        if auth is None:
            return anonymous()
        access_key = auth.access_key
        if hmac.compare_digest(access_key.encode(), self._root_key):
            return self._root
        found = self.engine.secret_for(access_key) if self.settings.iam_enabled else None
        if found is None:
            raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, AWSAccessKeyId=access_key)
        return self.user(found[1])

    def user(self, record: Mapping[str, Any]) -> Principal:
        account = accounts.of_user(dict(record))
        return user_principal(str(record["username"]), str(record["id"]), str(record["role"]), account.id,
                              account.canonical_id, account.name)

    # -- what -----------------------------------------------------------------------------------------------------
    def policy(self, bucket: str, text: Any = ...) -> Policy | None:
        """The bucket's parsed policy (cached by text), or None: no bucket, no policy. Read from the views on every
        call, so a policy put through any worker or node applies to the next request that reaches the views after
        it (no per-process copy to invalidate); one get, no bucket record (``Engine.bucket_config_if_any``). No such
        bucket: None, and the handler answers NoSuchBucket to whoever may ask."""
        if not bucket:
            return None
        if text is ...:  # not read already (``check`` reads it with the bucket's owner: Engine.bucket_guard)
            text = self.engine.bucket_config_if_any(bucket, POLICY_KIND)
        if not text:
            return None
        try:
            return parse_policy(text, bucket)
        except S3Error:  # validated when stored; a document that no longer parses grants nothing
            log.error("bucket %s: stored policy does not parse; ignoring it", bucket)
            return None

    @staticmethod
    def action_for(operation: str, query: Mapping[str, str]) -> str:
        action = ACTIONS.get(operation, f"s3:{operation}")
        return VERSION_ACTIONS.get(action, action) if "versionId" in query else action

    # -- the decision ---------------------------------------------------------------------------------------------
    def role_reaches(self, who: Principal, bucket: str) -> bool:
        """A role applies to its own account's buckets only (and to a bucket that does not exist: the handler
        answers NoSuchBucket, or creates it). One get of the bucket record."""
        if not bucket or who.anonymous:
            return not who.anonymous
        owner = self.engine.bucket_account(bucket)
        return owner is None or owner == who.account

    def check(self, who: Principal, operation: str, action: str, bucket: str, key: str, facts: RequestFacts,
              role_allows: bool) -> Decision:
        """Decide, log a refusal with its reason, raise AccessDenied when refused."""
        object_acl_action = role_allows and bool(key) and action in OBJECT_PERMISSIONS
        mode: Any = ...  # the bucket's object ownership, when read with the rest (``object_owner``)
        reads = facts.bucket_reads
        if reads is not None and reads.bucket == bucket:  # the request's own bucket: its one read transaction
            owner, text, read_mode = reads.guard(POLICY_KIND, OWNERSHIP_KIND if object_acl_action else None)
            if object_acl_action:
                mode = read_mode
        elif object_acl_action:  # the bucket's object ownership too, in the same read
            owner, text, mode = self.engine.bucket_guard_and(bucket, POLICY_KIND, OWNERSHIP_KIND)
        else:
            owner, text = self.engine.bucket_guard(bucket, POLICY_KIND) if bucket else (None, None)
        # a role reaches its own account's buckets (and a missing one). CreateBucket is the account's own act: a
        # name another account holds is BucketAlreadyExists, not a refusal
        reaches = not role_allows or operation == "CreateBucket" or owner is None or owner == who.account
        if object_acl_action and owner is not None:
            # an object's reads and ACL belong to the object's owner: another account's object (ObjectWriter,
            # BucketOwnerPreferred) is reached by the role of that account, not the bucket's; its ACL decides
            reaches = self.object_owner(bucket, key, facts.query.get("versionId"), owner, mode) == who.canonical_id
        if operation in POLICY_OPERATIONS and who.role == "SuperUser" and reaches:
            return ROLE_ALLOW
        role_allows = role_allows and reaches
        policy = self.policy(bucket, text) if text else None  # (no policy stored: None, without the call)
        if policy is None and role_allows:  # the common case: what ``decide`` answers, without its resource,
            return ROLE_ALLOW               # request context and Decision built on every request
        if policy is not None and not reaches_owner(self.engine, who, bucket) and \
                public_access.block(self.engine, bucket).restrict_public_buckets and is_public(policy):
            policy = Policy(policy.version, tuple(st for st in policy.statements if st.effect == "Deny"))
        resource = resource_arn(bucket, key)
        decision = decide(policy, who, action, resource, self.lookup(facts, who, bucket, key), role_allows,
                          partial(self.acl_grant, who, action, bucket, key, facts.query.get("versionId")))
        if not decision.allowed:
            self._missing(who, operation, action, bucket, key, facts)
            why = decision.describe() if reaches else f"{decision.describe()} (the role of account {who.account} " \
                "does not reach another account's bucket or object)"
            log.info("access denied: actor=%s operation=%s action=%s resource=%s decided-by=%s", who.label,
                     operation, action, resource, why)
            raise S3Error(ErrorCode.ACCESS_DENIED)
        return decision

    def _missing(self, who: Principal, operation: str, action: str, bucket: str, key: str,
                 facts: RequestFacts) -> None:
        """What S3 answers instead of AccessDenied: NoSuchBucket when the bucket does not exist (to anyone), and
        NoSuchKey for a read of a missing object by a caller allowed to list it (``s3:ListBucket`` with
        ``s3:prefix`` = the key), so a lister learns nothing it could not list, and nobody else learns anything."""
        if not bucket or operation == "CreateBucket":
            return
        owner = self.engine.bucket_account(bucket)
        if owner is None:
            raise S3Error(ErrorCode.NO_SUCH_BUCKET, resource=bucket, BucketName=bucket)
        if not key or action not in ("s3:GetObject", "s3:GetObjectVersion"):
            return
        try:
            self.engine.head_object(bucket, key, facts.query.get("versionId"))
            return
        except S3Error as exc:
            if exc.code is not ErrorCode.NO_SUCH_KEY:
                return
        listing = RequestFacts(facts.headers, {"prefix": key}, facts.source_ip, facts.secure, facts.auth, facts.now)
        role = who.role in ("Reader", "Writer", "SuperUser") and owner == who.account
        decision = decide(self.policy(bucket), who, "s3:ListBucket", resource_arn(bucket), self.lookup(
            listing, who, bucket, ""), role, partial(self.acl_grant, who, "s3:ListBucket", bucket, "", None))
        if decision.allowed:
            raise S3Error(ErrorCode.NO_SUCH_KEY, resource=key, Key=key)

    def object_owner(self, bucket: str, key: str, version_id: str | None, bucket_owner: str, mode: Any = ...) -> str:
        """The canonical id of the account owning an object: its ACL's owner when another account wrote it into a
        bucket with ACLs enabled; the bucket owner's otherwise (BucketOwnerEnforced: every object is the bucket
        owner's, as AWS has it once the setting is applied; no such object: the handler answers). ``mode``: the
        bucket's stored ``ownership`` config when already read (``Engine.bucket_guard_and``); no get on a
        BucketOwnerEnforced bucket then, the version's record otherwise."""
        enforced = ownership(self.engine, bucket) == ENFORCED if mode is ... else mode is None or mode == ENFORCED
        if not enforced:
            try:
                acl = self.engine.head_object(bucket, key, version_id).acl
            except S3Error:
                acl = None
            if acl:
                return str(acl[0])
        return accounts.canonical_id(bucket_owner)

    def acl_grant(self, who: Principal, action: str, bucket: str, key: str, version_id: str | None) -> str:
        """The ACL grant allowing ``action`` (described for the log), or "": object reads and the object's ACL ask
        the object's ACL, the rest the bucket's (engine/policy/acl.py). Asked only when no policy statement
        decided and the role does not allow; BucketOwnerEnforced buckets (ACLs disabled) have none."""
        object_permission = OBJECT_PERMISSIONS.get(action) if key else None
        permission = object_permission or BUCKET_PERMISSIONS.get(action)
        if permission is None or not bucket:
            return ""
        owner = self.engine.bucket_account(bucket)
        if owner is None or ownership(self.engine, bucket) == ENFORCED:
            return ""
        owner_canonical = accounts.canonical_id(owner)
        if object_permission:
            try:
                version = self.engine.head_object(bucket, key, version_id)
            except S3Error:
                return ""
            acl = Acl.from_record(version.acl) if version.acl else private(owner_canonical)
            own = acl.owner == who.canonical_id  # inside the object owner's account its role decides
        else:
            rec = self.engine.bucket_config_if_any(bucket, ACL_KIND)
            acl = Acl.from_record(rec) if rec else private(owner_canonical)
            own = owner == who.account
        ignore_public = public_access.block(self.engine, bucket).ignore_public_acls
        grant = allowing_grant(acl, permission, who, own, ignore_public)
        return grant.describe() if grant is not None else ""

    def lookup(self, facts: RequestFacts, who: Principal, bucket: str,
               key: str) -> Callable[[str], Values | None]:
        """The request context; ``s3:ExistingObjectTag/<k>`` reads the object's tags only when a condition asks."""
        built: list[dict[str, list[str]]] = []  # the context is built on the first condition that asks
        existing: list[dict[str, str] | None] = []

        def find(name: str) -> Values | None:
            if not built:
                built.append(context_values(facts, who))
            values = built[0]
            if name in values:
                return values[name]
            if key and (name.startswith("s3:existingobjecttag/") or name == "s3:existingobjecttagkeys"):
                if not existing:
                    existing.append(self._tags(bucket, key, facts.query.get("versionId")))
                tags = existing[0]
                if tags is None:
                    return None
                if name == "s3:existingobjecttagkeys":
                    return list(tags)
                tag = tags.get(name.partition("/")[2])
                return None if tag is None else [tag]
            return None

        return find

    def _tags(self, bucket: str, key: str, version_id: str | None) -> dict[str, str] | None:
        try:
            return dict(self.engine.head_object(bucket, key, version_id).tags)
        except S3Error:
            return None

    def authorize(self, who: Principal, operation: str, bucket: str, key: str, facts: RequestFacts) -> None:
        """The request's own check (the bucket, or the object it names) before its handler runs."""
        if bucket and "x-amz-expected-bucket-owner" in facts.headers:
            self.expected_owner(who, operation, bucket, facts.headers["x-amz-expected-bucket-owner"])
        role_allows = who.role in ("Writer", "SuperUser") or (who.role == "Reader" and operation in READ_ONLY)
        if operation in PER_KEY:  # each key is checked by the handler; without a policy or grant nothing can allow it
            if not (role_allows and self.role_reaches(who, bucket)) and self.policy(bucket) is None and \
                    not self.acl_grant(who, "s3:DeleteObject", bucket, "", None):
                log.info("access denied: actor=%s operation=%s resource=%s decided-by=no allow", who.label,
                         operation, resource_arn(bucket))
                raise S3Error(ErrorCode.ACCESS_DENIED)
            return
        self.check(who, operation, self.action_for(operation, facts.query), bucket, key, facts, role_allows)

    def expected_owner(self, who: Principal, operation: str, bucket: str, expected: str) -> None:
        """``x-amz-expected-bucket-owner``: a bucket another account owns is AccessDenied (AWS: 403), whatever a
        policy or ACL would allow. The value is the owner's account id (S4 also takes its canonical id, which RGW
        and s3-tests use); a missing bucket is left to the handler (NoSuchBucket)."""
        owner = self.engine.bucket_account(bucket)
        if owner is not None and expected.strip() not in (owner, accounts.canonical_id(owner)):
            log.info("access denied: actor=%s operation=%s resource=%s decided-by=x-amz-expected-bucket-owner "
                     "(the bucket belongs to account %s)", who.label, operation, resource_arn(bucket), owner)
            raise S3Error(ErrorCode.ACCESS_DENIED)

    def guard(self, who: Principal, facts: RequestFacts, operation: str) -> Callable[[str, str, str], None]:
        """``Call.authorize(action, bucket, key)``: a second resource of the same request (a copy source, each key
        of a DeleteObjects, each object a query reads). Reading is allowed to every role; the rest to writers.
        A ``partial``, not a closure: made for every request, used by few."""
        return partial(self._authorize_second, who, facts, operation)

    def _authorize_second(self, who: Principal, facts: RequestFacts, operation: str, action: str, bucket: str,
                          key: str) -> None:
        if operation in ("CopyObject", "UploadPartCopy") and "x-amz-source-expected-bucket-owner" in facts.headers:
            self.expected_owner(who, operation, bucket, facts.headers["x-amz-source-expected-bucket-owner"])
        reads = action.startswith(("s3:Get", "s3:List"))
        role_allows = who.role in ("Writer", "SuperUser") or (who.role == "Reader" and reads)
        self.check(who, operation, action, bucket, key, facts, role_allows)

