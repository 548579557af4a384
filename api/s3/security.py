"""Request headers that ask for a protection S4 cannot give: refused before anything is read or stored.

S4 has no server-side encryption and no customer keys (SSE-C). A request asking for either must fail instead of
storing an object *without* the protection the client believes it has. (ACL headers, ``x-amz-acl`` and
``x-amz-grant-*``, are served: api/s3/acl.py.)

* ``x-amz-server-side-encryption`` (``AES256``, ``aws:kms``, ``aws:kms:dsse``) and its KMS companions,
  ``x-amz-server-side-encryption-customer-*`` and ``x-amz-copy-source-server-side-encryption-customer-*``:
  NotImplemented (an unknown algorithm is InvalidArgument). S4 does not encrypt at rest; AES256 is refused too,
  since accepting it would report an encryption that did not happen.

Object Lock is real (api/s3/object_lock.py): ``x-amz-object-lock-*`` headers are parsed by the write handlers and
judged by the deciders (InvalidRequest "Bucket is missing Object Lock Configuration" for a bucket without it).

boto3, the AWS CLI (without ``--sse``), rclone and s3cmd send none of the refused headers by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from s4.engine.errors import ErrorCode, S3Error

SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})

#: Operations that write an object or part (data, copy, or the upload that will become one).
OBJECT_WRITES = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy"})
_SSE_MESSAGE = "S4 does not support server-side encryption; the object would be stored unencrypted."
_SSE_COMPANIONS = ("x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-context",
                   "x-amz-server-side-encryption-bucket-key-enabled")


def check_security_headers(operation: str, headers: Mapping[str, str]) -> None:
    """Raise the S3 error for the first header asking for a protection S4 cannot give (see module docstring)."""
    if operation not in OBJECT_WRITES:
        return
    sse = headers.get("x-amz-server-side-encryption")
    if sse is not None:
        if sse.strip() not in SSE_ALGORITHMS:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "The encryption method specified is not supported",
                          ArgumentName="x-amz-server-side-encryption", ArgumentValue=sse[:64])
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, _SSE_MESSAGE)
    for name in headers:
        if name in _SSE_COMPANIONS or name.startswith(("x-amz-server-side-encryption-customer-",
                                                       "x-amz-copy-source-server-side-encryption-customer-")):
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, _SSE_MESSAGE)
