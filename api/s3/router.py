"""Request -> S3 operation name, bucket and key. Table-driven; path-style and virtual-host style.

Operation names are the exact AWS names (``PutObject``, ``CompleteMultipartUpload``...) so the route, the handler
and the AWS documentation share one word. The first matching row wins: (method, level, required query key,
required header) -> operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from s4.engine.errors import ErrorCode, S3Error

from ..inputs import unquote_strict

# (method, level, query key or "", header or "", operation); level: "service" | "bucket" | "object"
ROUTES: tuple[tuple[str, str, str, str, str], ...] = (
    ("GET", "service", "", "", "ListBuckets"),
    # bucket level
    ("PUT", "bucket", "versioning", "", "PutBucketVersioning"),
    ("PUT", "bucket", "cors", "", "PutBucketCors"),
    ("PUT", "bucket", "tagging", "", "PutBucketTagging"),
    ("PUT", "bucket", "lifecycle", "", "PutBucketLifecycleConfiguration"),
    ("PUT", "bucket", "acl", "", "PutBucketAcl"),
    ("PUT", "bucket", "ownershipControls", "", "PutBucketOwnershipControls"),
    ("PUT", "bucket", "publicAccessBlock", "", "PutPublicAccessBlock"),
    ("PUT", "bucket", "policy", "", "PutBucketPolicy"),
    ("PUT", "bucket", "object-lock", "", "PutObjectLockConfiguration"),
    ("PUT", "bucket", "encryption", "", "PutBucketEncryption"),
    ("PUT", "bucket", "notification", "", "PutBucketNotificationConfiguration"),
    ("PUT", "bucket", "", "", "CreateBucket"),
    ("GET", "bucket", "location", "", "GetBucketLocation"),
    ("GET", "bucket", "versioning", "", "GetBucketVersioning"),
    ("GET", "bucket", "cors", "", "GetBucketCors"),
    ("GET", "bucket", "tagging", "", "GetBucketTagging"),
    ("GET", "bucket", "lifecycle", "", "GetBucketLifecycleConfiguration"),
    ("GET", "bucket", "acl", "", "GetBucketAcl"),
    ("GET", "bucket", "policy", "", "GetBucketPolicy"),
    ("GET", "bucket", "policyStatus", "", "GetBucketPolicyStatus"),
    ("GET", "bucket", "encryption", "", "GetBucketEncryption"),
    ("GET", "bucket", "object-lock", "", "GetObjectLockConfiguration"),
    ("GET", "bucket", "ownershipControls", "", "GetBucketOwnershipControls"),
    ("GET", "bucket", "publicAccessBlock", "", "GetPublicAccessBlock"),
    ("GET", "bucket", "website", "", "GetBucketWebsite"),
    ("GET", "bucket", "replication", "", "GetBucketReplication"),
    ("GET", "bucket", "notification", "", "GetBucketNotificationConfiguration"),
    ("GET", "bucket", "uploads", "", "ListMultipartUploads"),
    ("GET", "bucket", "versions", "", "ListObjectVersions"),
    ("GET", "bucket", "list-type", "", "ListObjectsV2"),
    ("GET", "bucket", "", "", "ListObjects"),
    ("HEAD", "bucket", "", "", "HeadBucket"),
    ("DELETE", "bucket", "cors", "", "DeleteBucketCors"),
    ("DELETE", "bucket", "tagging", "", "DeleteBucketTagging"),
    ("DELETE", "bucket", "lifecycle", "", "DeleteBucketLifecycle"),
    ("DELETE", "bucket", "policy", "", "DeleteBucketPolicy"),
    ("DELETE", "bucket", "ownershipControls", "", "DeleteBucketOwnershipControls"),
    ("DELETE", "bucket", "publicAccessBlock", "", "DeletePublicAccessBlock"),
    ("DELETE", "bucket", "encryption", "", "DeleteBucketEncryption"),
    ("DELETE", "bucket", "", "", "DeleteBucket"),
    ("POST", "bucket", "delete", "", "DeleteObjects"),
    ("POST", "bucket", "sql", "", "MultiObjectSQL"),
    ("POST", "bucket", "", "", "PostObject"),  # a browser form upload; only without any query (QUERYLESS)
    # object level
    ("PUT", "object", "uploadId", "x-amz-copy-source", "UploadPartCopy"),
    ("PUT", "object", "uploadId", "", "UploadPart"),
    ("PUT", "object", "tagging", "", "PutObjectTagging"),
    ("PUT", "object", "acl", "", "PutObjectAcl"),
    ("PUT", "object", "renameObject", "", "RenameObject"),
    ("PUT", "object", "", "x-amz-copy-source", "CopyObject"),
    ("PUT", "object", "retention", "", "PutObjectRetention"),
    ("PUT", "object", "legal-hold", "", "PutObjectLegalHold"),
    ("PUT", "object", "", "", "PutObject"),
    ("GET", "object", "uploadId", "", "ListParts"),
    ("GET", "object", "tagging", "", "GetObjectTagging"),
    ("GET", "object", "acl", "", "GetObjectAcl"),
    ("GET", "object", "attributes", "", "GetObjectAttributes"),
    ("GET", "object", "retention", "", "GetObjectRetention"),
    ("GET", "object", "legal-hold", "", "GetObjectLegalHold"),
    ("GET", "object", "", "", "GetObject"),
    ("HEAD", "object", "", "", "HeadObject"),
    ("DELETE", "object", "uploadId", "", "AbortMultipartUpload"),
    ("DELETE", "object", "tagging", "", "DeleteObjectTagging"),
    ("DELETE", "object", "", "", "DeleteObject"),
    ("POST", "object", "select", "", "SelectObjectContent"),
    ("POST", "object", "uploads", "", "CreateMultipartUpload"),
    ("POST", "object", "uploadId", "", "CompleteMultipartUpload"),
)

#: Operations that only read: what a Reader role may call (IAM issue) and what skips body handling.
READ_ONLY = frozenset(op for method, _, _, _, op in ROUTES if method in ("GET", "HEAD")) | {
    "SelectObjectContent", "MultiObjectSQL"}  # POSTs that only read (S3 Select, S4's ?sql)


# Not frozen (nothing assigns to them): a frozen dataclass's ``__init__`` sets each field through
# ``object.__setattr__``, three times the cost of a plain one, and every request builds one of each.
@dataclass(slots=True)
class Route:
    operation: str | None
    bucket: str
    key: str


@dataclass(slots=True)
class Target:
    bucket: str
    key: str
    virtual_host: bool


def split_target(raw_path: str, host: str, vhost_domains: tuple[str, ...]) -> Target:
    """Bucket and key from the path, or the bucket from the Host header for virtual-host-style requests.

    The path is decoded strictly (InvalidURI if it is not UTF-8); a path-style request whose bucket segment is
    empty (``//key``) names no bucket and is InvalidBucketName."""
    path = unquote_strict(raw_path, what="path")
    hostname = host.rsplit(":", 1)[0].lower() if host and not host.startswith("[") else host.lower()
    for domain in vhost_domains:
        suffix = "." + domain
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return Target(hostname[: -len(suffix)], path[1:], True)
    bucket, _, key = path[1:].partition("/")
    if not bucket and path[1:]:
        raise S3Error(ErrorCode.INVALID_BUCKET_NAME, "The bucket name in the path is empty.", BucketName="")
    return Target(bucket, key, False)


#: S3 sub-resources S4 does not implement: a request naming one is answered NotImplemented, never misrouted
#: (a PUT ?policy must not be taken for CreateBucket). GETs of bucket configs S4 does not store have their
#: "not configured" answers in ROUTES instead.
UNSUPPORTED_SUBRESOURCES = frozenset({
    "policy", "encryption", "publicAccessBlock", "ownershipControls", "object-lock", "website", "replication",
    "logging", "notification", "requestPayment", "accelerate", "analytics", "inventory", "metrics",
    "intelligent-tiering", "retention", "legal-hold", "restore", "torrent", "policyStatus",
    "append", "session",
})


#: Operations reached only by a request without any query parameter. POST object authenticates by its form, not
#: its headers: ``POST /bucket?uploads`` (or any other parameter S4 does not route) must not become a form upload.
QUERYLESS = frozenset({"PostObject"})


def _group_routes() -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    """ROUTES grouped by (method, level), in their original order: a request scans only its own group."""
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for method, level, query, header, operation in ROUTES:
        groups.setdefault((method, level), []).append((query, header, operation))
    return groups


_ROUTES_BY_TARGET = _group_routes()


def route(method: str, bucket: str, key: str, query: Mapping[str, str], headers: Mapping[str, str]) -> Route:
    level = "object" if key else "bucket" if bucket else "service"
    for r_query, r_header, operation in _ROUTES_BY_TARGET.get((method, level), ()):
        if (not r_query or r_query in query) and (not r_header or r_header in headers):
            if operation in QUERYLESS and query:
                return Route(None, bucket, key)
            if r_query or not UNSUPPORTED_SUBRESOURCES.intersection(query):
                return Route(operation, bucket, key)
            return Route("NotImplemented", bucket, key)
    return Route(None, bucket, key)
