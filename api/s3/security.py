"""Request headers that ask for a protection S4 cannot give: refused before anything is read or stored.

S4 has no dual-layer encryption (DSSE-KMS). A request asking for it must fail instead of storing an object *without*
the protection the client believes it has:

* ``x-amz-server-side-encryption``: ``AES256`` (SSE-S3), ``aws:kms`` (SSE-KMS, with its key id, context and
  bucket-key headers) and the SSE-C headers (``x-amz-server-side-encryption-customer-*``,
  ``x-amz-copy-source-server-side-encryption-customer-*``) are served (api/s3/sse.py); ``aws:kms:dsse`` is
  NotImplemented; an unknown algorithm is InvalidArgument.

ACL headers (``x-amz-acl``, ``x-amz-grant-*``) are served: api/s3/acl.py. Object Lock is real
(api/s3/object_lock.py): ``x-amz-object-lock-*`` headers are parsed by the write handlers and judged by the deciders
(InvalidRequest "Bucket is missing Object Lock Configuration" for a bucket without it).

boto3, the AWS CLI, rclone and s3cmd send none of the refused headers by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from s4.engine.errors import ErrorCode, S3Error

SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})

#: Operations that write an object or part (data, copy, or the upload that will become one).
OBJECT_WRITES = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy"})
_SSE_MESSAGE = "S4 does not support DSSE-KMS; the object would not be encrypted as asked."


def check_security_headers(operation: str, headers: Mapping[str, str]) -> None:
    """Raise the S3 error for the first header asking for a protection S4 cannot give (see module docstring)."""
    if operation not in OBJECT_WRITES:
        return
    sse = headers.get("x-amz-server-side-encryption")
    if sse is not None:
        if sse.strip() not in SSE_ALGORITHMS:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "The encryption method specified is not supported",
                          ArgumentName="x-amz-server-side-encryption", ArgumentValue=sse[:64])
        if sse.strip() == "aws:kms:dsse":
            raise S3Error(ErrorCode.NOT_IMPLEMENTED, _SSE_MESSAGE)
