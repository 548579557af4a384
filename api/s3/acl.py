"""ACLs and object ownership over HTTP: x-amz-acl / x-amz-grant-* headers and AccessControlPolicy XML in, the ACL
document out; Get/PutBucketAcl, Get/PutObjectAcl, Put/Get/DeleteBucketOwnershipControls; the ACL a new object
gets. The grant logic is engine/policy/acl.py; access control (which grant allows what) is s3/access.py.

Storage: a bucket's ACL is the bucket configuration ``acl`` and its ownership setting the configuration
``ownership`` (``bucket.config_set`` events); an object's ACL is its version record's ``acl`` (written with the
version, changed by PutObjectAcl through an ``object.tags_set`` event). An absent ACL is the owner's private one.

Object ownership: ``BucketOwnerEnforced`` (the default for new buckets, as AWS since 2023; S4_DEFAULT_OBJECT_OWNERSHIP
can name another) disables ACLs: a PUT carrying an ACL other than the bucket owner's full control (read as the
writer's ACL) is AccessControlListNotSupported, so is every PutBucketAcl / PutObjectAcl, and no grant is
consulted. ``ObjectWriter``: an object belongs to the account that wrote it (its reads and ACL are that account's,
granted by the object's ACL). ``BucketOwnerPreferred``: as ObjectWriter, but an object written with
``bucket-owner-full-control`` belongs to the bucket owner.
DeleteBucketOwnershipControls leaves ObjectWriter (no controls).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import falcon.asgi

from s4.engine import Engine, accounts
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy.acl import ALL_USERS, CANNED, GROUPS, PERMISSIONS, Acl, Grant, canned, private

from . import public_access
from .call import Call
from .xml_parse import local_name, parse_root
from .xml_render import xml_escape

log = logging.getLogger("s4.api.s3.access")  # refusals are logged where access control logs them
ACL_KIND, OWNERSHIP_KIND = "acl", "ownership"  # bucket configurations (BUCKET_CONFIG_SET)
ENFORCED, PREFERRED, WRITER = "BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"
OWNERSHIPS = (ENFORCED, PREFERRED, WRITER)
NO_CONTROLS = ""  # the ``ownership`` value DeleteBucketOwnershipControls records: ObjectWriter, Get answers 404
GRANT_HEADERS = {"x-amz-grant-read": "READ", "x-amz-grant-write": "WRITE", "x-amz-grant-read-acp": "READ_ACP",
                 "x-amz-grant-write-acp": "WRITE_ACP", "x-amz-grant-full-control": "FULL_CONTROL"}
#: Any of these on a write makes its new object's ACL more than the bucket owner's private one.
_ACL_HEADERS = frozenset({"x-amz-acl", *GRANT_HEADERS})
_GRANTEE_RE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*(?:"([^"]*)"|([^,"\s]+))\s*(?:,|$)', re.IGNORECASE)
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}type"
_NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
_XSI_NS = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


# -- ownership ----------------------------------------------------------------------------------------------------
def ownership(engine: Engine, bucket: str) -> str:
    """The bucket's effective object ownership (no configuration: BucketOwnerEnforced)."""
    value = engine.bucket_config_if_any(bucket, OWNERSHIP_KIND)
    if value is None:
        return ENFORCED
    return value or WRITER


def check_ownership_value(value: str | None) -> str:
    if value not in OWNERSHIPS:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid x-amz-object-ownership header" if value is not None
                      else "Invalid ObjectOwnership", ArgumentName="x-amz-object-ownership",
                      ArgumentValue=(value or "")[:64])
    return value


# -- parsing ------------------------------------------------------------------------------------------------------
class Resolver:
    """Grantee -> canonical id: known canonical ids, emails of users' accounts, group URIs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def canonical(self, value: str) -> str:
        if self.engine.account_by_canonical_id(value) is None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid id", ArgumentName="CanonicalUser/ID",
                          ArgumentValue=value[:128])
        return value

    def email(self, value: str) -> str:
        account = self.engine.account_by_email(value)
        if account is None:
            raise S3Error(ErrorCode.UNRESOLVABLE_GRANT_BY_EMAIL, EmailAddress=value[:128])
        return account.canonical_id

    @staticmethod
    def group(value: str) -> str:
        if value not in GROUPS:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid group uri", ArgumentName="Group/URI",
                          ArgumentValue=value[:128])
        return value


def acl_from_headers(headers: Mapping[str, str], owner: str, bucket_owner: str, resolver: Resolver) -> Acl | None:
    """The ACL an ``x-amz-acl`` or ``x-amz-grant-*`` headers describe (None: neither is present)."""
    name = headers.get("x-amz-acl")
    grant_headers = [h for h in GRANT_HEADERS if h in headers]
    if name is not None and grant_headers:
        raise S3Error(ErrorCode.INVALID_REQUEST, "Specifying both Canned ACLs and Header Grants is not allowed")
    if name is not None:
        value = name.strip()
        if value not in CANNED:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, None, ArgumentName="x-amz-acl", ArgumentValue=name[:64])
        return canned(value, owner, bucket_owner)
    if not grant_headers:
        return None
    grants: list[Grant] = []
    for header in grant_headers:
        text = headers[header]
        pos = 0
        while pos < len(text):
            m = _GRANTEE_RE.match(text, pos)
            if m is None or m.end() == pos:
                raise S3Error(ErrorCode.INVALID_ARGUMENT, "Invalid grant header", ArgumentName=header,
                              ArgumentValue=text[:128])
            kind, value = m.group(1).lower(), m.group(2) if m.group(2) is not None else m.group(3)
            grantee = resolver.canonical(value) if kind == "id" else resolver.group(value) if kind == "uri" \
                else resolver.email(value)
            grants.append(Grant(grantee, GRANT_HEADERS[header]))
            pos = m.end()
    return Acl(owner, tuple(grants))


def acl_from_xml(body: bytes, owner: str, resolver: Resolver) -> Acl:
    """An AccessControlPolicy document. Its Owner, when given, must be the resource's owner (AWS: AccessDenied
    otherwise); each Grant names a CanonicalUser ID, an AmazonCustomerByEmail address or a Group URI."""
    try:
        root = parse_root(body, "AccessControlPolicy")
    except S3Error:
        raise S3Error(ErrorCode.MALFORMED_ACL) from None
    grants: list[Grant] = []
    for child in root:
        name = local_name(child)
        if name == "Owner":
            ids = [(c.text or "").strip() for c in child if local_name(c) == "ID"]
            if ids and ids[0] != owner:
                raise S3Error(ErrorCode.ACCESS_DENIED)
        elif name == "AccessControlList":
            for grant in child:
                if local_name(grant) != "Grant":
                    raise S3Error(ErrorCode.MALFORMED_ACL)
                grants.append(_grant_from_xml(grant, resolver))
        else:
            raise S3Error(ErrorCode.MALFORMED_ACL)
    return Acl(owner, tuple(grants))


def _grant_from_xml(grant: Any, resolver: Resolver) -> Grant:
    fields = {local_name(c): c for c in grant}
    grantee, permission = fields.get("Grantee"), fields.get("Permission")
    if grantee is None or permission is None:
        raise S3Error(ErrorCode.MALFORMED_ACL)
    perm = (permission.text or "").strip()
    if perm not in PERMISSIONS:
        raise S3Error(ErrorCode.MALFORMED_ACL)
    parts = {local_name(c): (c.text or "").strip() for c in grantee}
    kind = grantee.get(_XSI, "")
    if kind == "CanonicalUser" or (not kind and "ID" in parts):
        if "ID" not in parts:
            raise S3Error(ErrorCode.MALFORMED_ACL)
        return Grant(resolver.canonical(parts["ID"]), perm)
    if kind == "AmazonCustomerByEmail" or (not kind and "EmailAddress" in parts):
        if "EmailAddress" not in parts:
            raise S3Error(ErrorCode.MALFORMED_ACL)
        return Grant(resolver.email(parts["EmailAddress"]), perm)
    if kind == "Group" or (not kind and "URI" in parts):
        if "URI" not in parts:
            raise S3Error(ErrorCode.MALFORMED_ACL)
        return Grant(resolver.group(parts["URI"]), perm)
    raise S3Error(ErrorCode.MALFORMED_ACL)


def owner_only(acl: Acl | None, owner: str) -> bool:
    """What BucketOwnerEnforced still accepts: no ACL, or one granting nothing beyond the owner's FULL_CONTROL."""
    return acl is None or all(g.grantee == owner and g.permission == "FULL_CONTROL" for g in acl.grants)


# -- rendering ----------------------------------------------------------------------------------------------------
def acl_xml(acl: Acl, names: Callable[[str], str]) -> bytes:
    """The AccessControlPolicy document; ``names``: canonical id -> display name."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n', f"<AccessControlPolicy {_NS}>",
             f"<Owner><ID>{xml_escape(acl.owner)}</ID><DisplayName>{xml_escape(names(acl.owner))}</DisplayName>"
             "</Owner><AccessControlList>"]
    for grant in sorted(acl.grants, key=lambda g: not g.group):  # groups first, as RGW lists them
        if grant.group:
            grantee = f'<Grantee {_XSI_NS} xsi:type="Group"><URI>{xml_escape(grant.grantee)}</URI></Grantee>'
        else:
            grantee = (f'<Grantee {_XSI_NS} xsi:type="CanonicalUser"><ID>{xml_escape(grant.grantee)}</ID>'
                       f"<DisplayName>{xml_escape(names(grant.grantee))}</DisplayName></Grantee>")
        parts.append(f"<Grant>{grantee}<Permission>{grant.permission}</Permission></Grant>")
    parts.append("</AccessControlList></AccessControlPolicy>")
    return "".join(parts).encode()


def _names(engine: Engine) -> Callable[[str], str]:
    def name(canonical: str) -> str:
        account = engine.account_by_canonical_id(canonical)
        return account.name if account is not None else ""

    return name


# -- what a request stores ----------------------------------------------------------------------------------------
def stored_bucket_acl(engine: Engine, bucket: str, owner: accounts.Account) -> Acl:
    rec = engine.bucket_config_if_any(bucket, ACL_KIND)
    return Acl.from_record(rec) if rec else private(owner.canonical_id)


def new_object_acl(call: Call) -> list[Any] | None:
    """The ACL of an object this request writes (PutObject, CopyObject, CreateMultipartUpload), as its version
    record keeps it: None when it is the bucket owner's private ACL (the common case, stored as nothing: a write by
    the bucket's own account without ACL headers costs one get here)."""
    if _ACL_HEADERS.isdisjoint(call.headers):  # one C call; then ``call.account.id`` without building an Account
        who = call.who
        writer_id = accounts.DEFAULT_ACCOUNT.id if who is None or who.anonymous or not who.account else who.account
        if call.bucket_account() in (None, writer_id):
            return None
    bucket_owner = call.bucket_owner()
    mode = ownership(call.engine, call.bucket)
    writer = call.account
    name = call.headers.get("x-amz-acl", "").strip()
    anonymous = call.who is None or call.who.anonymous  # an unsigned write (public-read-write): the owner's object
    if mode == ENFORCED or anonymous or writer.id == bucket_owner.id or \
            (mode == PREFERRED and name == "bucket-owner-full-control"):
        owner = bucket_owner.canonical_id
    else:
        owner = writer.canonical_id
    if mode == ENFORCED:
        # AWS accepts no ACL, bucket-owner-full-control, or grants giving the bucket owner full control and nobody
        # anything else, read as the writer's ACL: another account's ``private`` (its own full control) is refused,
        # the bucket owner's own ``private`` (rclone's default) is the same as bucket-owner-full-control
        as_writer = bucket_owner.canonical_id if anonymous else writer.canonical_id
        acl = acl_from_headers(call.headers, as_writer, bucket_owner.canonical_id, Resolver(call.engine))
        if not owner_only(acl, bucket_owner.canonical_id) and name != "bucket-owner-full-control":
            refused(call, "BucketOwnerEnforced (ACLs disabled)")
            raise S3Error(ErrorCode.ACL_NOT_SUPPORTED)
        return None
    acl = acl_from_headers(call.headers, owner, bucket_owner.canonical_id, Resolver(call.engine))
    if acl is None:
        acl = private(owner)
    refuse_public(call, acl)
    if acl == private(bucket_owner.canonical_id):
        return None
    return acl.to_record()


def refuse_public(call: Call, acl: Acl) -> None:
    """BlockPublicAcls: an ACL granting AllUsers or AuthenticatedUsers is AccessDenied."""
    if acl.public and public_access.block(call.engine, call.bucket).block_public_acls:
        refused(call, "BlockPublicAcls (a public ACL)")
        raise S3Error(ErrorCode.ACCESS_DENIED, "Access Denied: BlockPublicAcls is set on this bucket")


def refused(call: Call, why: str) -> None:
    """The refusal's log line, on the access-control logger like every other (s3/access.py)."""
    who = call.who.label if call.who is not None else "-"
    log.info("access denied: actor=%s operation=%s resource=%s decided-by=%s", who, call.req.context.operation,
             f"arn:aws:s3:::{call.bucket}/{call.key}" if call.key else f"arn:aws:s3:::{call.bucket}", why)


def create_bucket_settings(call: Call) -> tuple[str, Acl | None]:
    """CreateBucket's ``x-amz-object-ownership`` (default BucketOwnerEnforced) and ACL headers, checked before the
    bucket is created: ACLs granting others on a BucketOwnerEnforced bucket are InvalidBucketAclWithObjectOwnership."""
    header = call.headers.get("x-amz-object-ownership")
    mode = check_ownership_value(header.strip()) if header is not None else call.settings.default_object_ownership
    if header is None and mode == WRITER:
        mode = NO_CONTROLS  # ObjectWriter by default is a bucket without controls, as on AWS before 2023 (Get: 404)
    owner = call.account.canonical_id
    acl = acl_from_headers(call.headers, owner, owner, Resolver(call.engine))
    if mode == ENFORCED and not owner_only(acl, owner):
        raise S3Error(ErrorCode.INVALID_BUCKET_ACL_WITH_OWNERSHIP)
    return mode, acl


async def record_bucket_settings(call: Call, mode: str, acl: Acl | None) -> None:
    """After CreateBucket: the ownership and ACL it asked for, when not the defaults (one event each)."""
    if mode != ENFORCED:
        await call.engine.set_bucket_config(call.bucket, OWNERSHIP_KIND, mode, actor=call.actor)
    if acl is not None and not owner_only(acl, acl.owner):
        await call.engine.set_bucket_config(call.bucket, ACL_KIND, acl.to_record(), actor=call.actor)


def listing_owners(call: Call) -> Callable[[Mapping[str, Any]], tuple[str, str] | None] | None:
    """The Owner of each version a listing shows (ListObjects, ListObjectsV2 with fetch-owner, ListObjectVersions):
    the account that wrote it where ACLs are enabled (its stored ACL's owner), else the bucket owner (None: every
    entry is the bucket owner's, no per-entry lookup). Each account's display name is looked up once per page."""
    if ownership(call.engine, call.bucket) == ENFORCED:
        return None
    names: dict[str, str] = {}

    def owner(record: Mapping[str, Any]) -> tuple[str, str] | None:
        acl = record.get("acl")
        if not acl:
            return None
        canonical = str(acl[0])
        name = names.get(canonical)
        if name is None:
            account = call.engine.account_by_canonical_id(canonical)
            name = names[canonical] = account.name if account is not None else ""
        return canonical, name

    return owner


def owner_of(call: Call, acl: list[Any] | None) -> accounts.Account:
    """Whose an object (or upload) is: its ACL's owner when another account wrote it (ObjectWriter), else the
    bucket owner's."""
    bucket_owner = call.bucket_owner()
    if acl and acl[0] != bucket_owner.canonical_id:
        account = call.engine.account_by_canonical_id(str(acl[0]))
        if account is not None:
            return account
    return bucket_owner


# -- handlers -----------------------------------------------------------------------------------------------------
async def get_acl(call: Call, resp: falcon.asgi.Response) -> None:
    """GetBucketAcl / GetObjectAcl (with versionId)."""
    owner = call.bucket_owner()
    if call.key:
        version = call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))
        if version.is_delete_marker:
            raise S3Error(ErrorCode.METHOD_NOT_ALLOWED, headers={"x-amz-delete-marker": "true"})
        acl = Acl.from_record(version.acl) if version.acl else private(owner.canonical_id)
    else:
        acl = stored_bucket_acl(call.engine, call.bucket, owner)
    resp.content_type = "application/xml"
    resp.data = acl_xml(acl, _names(call.engine))


async def put_acl(call: Call, resp: falcon.asgi.Response) -> None:
    """PutBucketAcl / PutObjectAcl (with versionId): a canned ACL, grant headers or an AccessControlPolicy body."""
    bucket_owner = call.bucket_owner()
    if call.key:
        version = call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))
        current = Acl.from_record(version.acl) if version.acl else private(bucket_owner.canonical_id)
    else:
        current = stored_bucket_acl(call.engine, call.bucket, bucket_owner)
    owner, resolver = current.owner, Resolver(call.engine)
    body = await call.read_body()
    from_headers = acl_from_headers(call.headers, owner, bucket_owner.canonical_id, resolver)
    if body and not body.isspace():
        if from_headers is not None:
            raise S3Error(ErrorCode.INVALID_REQUEST, "Specifying both an ACL body and ACL headers is not allowed")
        acl = acl_from_xml(body, owner, resolver)
    elif from_headers is not None:
        acl = from_headers
    else:
        raise S3Error(ErrorCode.MISSING_SECURITY_HEADER, "Your request was missing a required header",
                      MissingHeaderName="x-amz-acl")
    if ownership(call.engine, call.bucket) == ENFORCED:  # AWS: setting an ACL fails, whichever (reading works)
        refused(call, "BucketOwnerEnforced (ACLs disabled)")
        raise S3Error(ErrorCode.ACL_NOT_SUPPORTED)
    refuse_public(call, acl)
    if call.key:
        record = None if acl == private(bucket_owner.canonical_id) else acl.to_record()
        await call.engine.put_object_acl(call.bucket, call.key, call.query.get("versionId"), record,
                                         actor=call.actor)
    else:
        await call.engine.set_bucket_config(call.bucket, ACL_KIND, acl.to_record(), actor=call.actor)


async def get_ownership_controls(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    value = call.engine.bucket_config_if_any(call.bucket, OWNERSHIP_KIND)
    if value == NO_CONTROLS:
        raise S3Error(ErrorCode.OWNERSHIP_CONTROLS_NOT_FOUND, BucketName=call.bucket)
    resp.content_type = "application/xml"
    resp.data = (f'<?xml version="1.0" encoding="UTF-8"?>\n<OwnershipControls {_NS}><Rule><ObjectOwnership>'
                 f"{value or ENFORCED}</ObjectOwnership></Rule></OwnershipControls>").encode()


async def put_ownership_controls(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    root = parse_root(await call.read_body(), "OwnershipControls")
    values = [(o.text or "").strip() for rule in root if local_name(rule) == "Rule"
              for o in rule if local_name(o) == "ObjectOwnership"]
    if len(values) != 1 or len(list(root)) != 1:
        raise S3Error(ErrorCode.MALFORMED_XML)
    value = check_ownership_value(values[0])
    if value == ENFORCED:  # AWS refuses to disable ACLs while the bucket ACL grants anyone else
        owner = call.bucket_owner()
        if not owner_only(stored_bucket_acl(call.engine, call.bucket, owner), owner.canonical_id):
            raise S3Error(ErrorCode.INVALID_BUCKET_ACL_WITH_OWNERSHIP)
    await call.engine.set_bucket_config(call.bucket, OWNERSHIP_KIND, value, actor=call.actor)


async def delete_ownership_controls(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    await call.engine.set_bucket_config(call.bucket, OWNERSHIP_KIND, NO_CONTROLS, actor=call.actor)
    resp.status = falcon.HTTP_204


__all__ = ["ALL_USERS", "acl_from_headers", "acl_from_xml", "acl_xml", "get_acl", "new_object_acl", "ownership",
           "put_acl"]
