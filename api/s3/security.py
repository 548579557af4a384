"""Request headers that ask for a protection S4 cannot give: refused before anything is read or stored.

S4 has one owner per node, no ACL grants, no Object Lock and no dual-layer encryption. A request asking for any
of them must fail instead of storing an object *without* the protection the client believes it has:

* ``x-amz-acl``: ``private`` (the default, what S4 does) and ``bucket-owner-full-control`` /
  ``bucket-owner-read`` (the bucket owner is the only owner, so they change nothing) are accepted; the canned ACLs
  that open access (``public-read``, ``public-read-write``, ``authenticated-read``, ``aws-exec-read``,
  ``log-delivery-write``) are NotImplemented; any other value is InvalidArgument, as AWS answers.
* ``x-amz-grant-*``: NotImplemented.
* ``x-amz-server-side-encryption``: ``AES256`` (SSE-S3), ``aws:kms`` (SSE-KMS, with its key id, context and
  bucket-key headers) and the SSE-C headers (``x-amz-server-side-encryption-customer-*``,
  ``x-amz-copy-source-server-side-encryption-customer-*``) are served (api/s3/sse.py); ``aws:kms:dsse`` is
  NotImplemented; an unknown algorithm is InvalidArgument.
* ``x-amz-object-lock-*`` on an object write: InvalidRequest "Bucket is missing Object Lock Configuration", AWS's
  answer for a bucket without Object Lock (no S4 bucket has it); ``x-amz-bucket-object-lock-enabled: true`` on
  CreateBucket: NotImplemented.

boto3, the AWS CLI (without ``--sse``/``--acl``), rclone (``acl = private`` or unset) and s3cmd send none of
the refused headers by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from s4.engine.errors import ErrorCode, S3Error

from .xml_parse import local_name, parse_root

CANNED_ACLS = frozenset({"private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
                         "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write"})
#: Canned ACLs that grant nothing beyond what S4's single owner already has.
HARMLESS_ACLS = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})

#: Operations that write an object or part (data, copy, or the upload that will become one).
OBJECT_WRITES = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy"})
#: Operations that take an ACL.
ACL_OPERATIONS = OBJECT_WRITES - {"UploadPart", "UploadPartCopy"} | {"CreateBucket", "PutObjectAcl",
                                                                     "PutBucketAcl"}
_ACL_MESSAGE = "S4 does not support ACL grants; use IAM roles instead."
_SSE_MESSAGE = "S4 does not support DSSE-KMS; the object would not be encrypted as asked."


def check_security_headers(operation: str, headers: Mapping[str, str]) -> None:
    """Raise the S3 error for the first header asking for a protection S4 cannot give (see module docstring)."""
    if operation in ACL_OPERATIONS:
        _check_acl(headers)
    if operation == "CreateBucket" and headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower() == "true":
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, "S4 does not support Object Lock.")
    if operation not in OBJECT_WRITES:
        return
    sse = headers.get("x-amz-server-side-encryption")
    if sse is not None:
        if sse.strip() not in SSE_ALGORITHMS:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "The encryption method specified is not supported",
                          ArgumentName="x-amz-server-side-encryption", ArgumentValue=sse[:64])
        if sse.strip() == "aws:kms:dsse":
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, _SSE_MESSAGE)
    for name in headers:
        if name.startswith("x-amz-object-lock-") and operation not in ("UploadPart", "UploadPartCopy"):
            raise S3Error(ErrorCode.INVALID_REQUEST, "Bucket is missing Object Lock Configuration")


def _check_acl(headers: Mapping[str, str]) -> None:
    canned = headers.get("x-amz-acl")
    if canned is not None:
        value = canned.strip()
        if value not in CANNED_ACLS:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, None, ArgumentName="x-amz-acl", ArgumentValue=canned[:64])
        if value not in HARMLESS_ACLS:
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, _ACL_MESSAGE)
    if any(name.startswith("x-amz-grant-") for name in headers):
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, _ACL_MESSAGE)


def check_acl_body(body: bytes, owner_id: str) -> None:
    """A PutObjectAcl/PutBucketAcl AccessControlPolicy document: only the owner's FULL_CONTROL (what S4 has)
    is accepted; any other grant is NotImplemented. An empty body (canned ACL in the header) passes."""
    if not body or body.isspace():
        return
    root = parse_root(body, "AccessControlPolicy")
    for grant in root.iter():
        if local_name(grant) != "Grant":
            continue
        fields = {local_name(child): child for child in grant}
        grantee = fields.get("Grantee")
        permission = (fields["Permission"].text or "").strip() if "Permission" in fields else ""
        ids = [(c.text or "").strip() for c in grantee if local_name(c) == "ID"] if grantee is not None else []
        others = [c for c in grantee if local_name(c) in ("URI", "EmailAddress")] if grantee is not None else []
        if permission != "FULL_CONTROL" or ids != [owner_id] or others:
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, _ACL_MESSAGE)
