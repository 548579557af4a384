"""Router table: AWS documentation example requests -> operation and authorization level, each run path-style
and virtual-host-style (issue 18's quality gate; Garage's router tests are the model)."""

from __future__ import annotations

import pytest

from s4.api.inputs import parse_query
from s4.api.s3.router import READ_ONLY, route, split_target
from s4.engine.errors import ErrorCode, S3Error

BUCKET = "amzn-s3-demo-bucket"
UPLOAD = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
COPY = {"x-amz-copy-source": "/source-bucket/source-key"}

# (method, path under the bucket ("" = the bucket itself), query, headers, operation, key)
CASES: list[tuple[str, str, str, dict[str, str], str | None, str]] = [
    ("PUT", "", "", {}, "CreateBucket", ""),
    ("HEAD", "", "", {}, "HeadBucket", ""),
    ("DELETE", "", "", {}, "DeleteBucket", ""),
    ("GET", "", "", {}, "ListObjects", ""),
    ("GET", "", "list-type=2&prefix=photos/2006/&delimiter=/", {}, "ListObjectsV2", ""),
    ("GET", "", "versions&key-marker=key2", {}, "ListObjectVersions", ""),
    ("GET", "", "uploads&max-uploads=3", {}, "ListMultipartUploads", ""),
    ("GET", "", "location", {}, "GetBucketLocation", ""),
    ("PUT", "", "versioning", {}, "PutBucketVersioning", ""),
    ("GET", "", "versioning", {}, "GetBucketVersioning", ""),
    ("PUT", "", "cors", {}, "PutBucketCors", ""),
    ("GET", "", "cors", {}, "GetBucketCors", ""),
    ("DELETE", "", "cors", {}, "DeleteBucketCors", ""),
    ("PUT", "", "tagging", {}, "PutBucketTagging", ""),
    ("GET", "", "tagging", {}, "GetBucketTagging", ""),
    ("DELETE", "", "tagging", {}, "DeleteBucketTagging", ""),
    ("PUT", "", "lifecycle", {}, "PutBucketLifecycleConfiguration", ""),
    ("GET", "", "lifecycle", {}, "GetBucketLifecycleConfiguration", ""),
    ("DELETE", "", "lifecycle", {}, "DeleteBucketLifecycle", ""),
    ("PUT", "", "acl", {"x-amz-acl": "private"}, "PutBucketAcl", ""),
    ("GET", "", "acl", {}, "GetBucketAcl", ""),
    ("GET", "", "policy", {}, "GetBucketPolicy", ""),
    ("DELETE", "", "policy", {}, "DeleteBucketPolicy", ""),
    ("PUT", "", "policy", {}, "PutBucketPolicy", ""),
    ("GET", "", "policyStatus", {}, "GetBucketPolicyStatus", ""),
    ("GET", "", "encryption", {}, "GetBucketEncryption", ""),
    ("PUT", "", "encryption", {}, "PutBucketEncryption", ""),
    ("DELETE", "", "encryption", {}, "DeleteBucketEncryption", ""),
    ("GET", "", "object-lock", {}, "GetObjectLockConfiguration", ""),
    ("PUT", "", "notification", {}, "PutBucketNotificationConfiguration", ""),
    ("GET", "", "notification", {}, "GetBucketNotificationConfiguration", ""),
    ("DELETE", "", "notification", {}, "NotImplemented", ""),
    ("POST", "", "delete", {}, "DeleteObjects", ""),
    ("POST", "", "sql", {}, "MultiObjectSQL", ""),
    ("PUT", "/my-image.jpg", "", {}, "PutObject", "my-image.jpg"),
    ("PUT", "/photos/2006/Jan/sample%20one.jpg", "", {}, "PutObject", "photos/2006/Jan/sample one.jpg"),
    ("PUT", "/a//b/", "", {}, "PutObject", "a//b/"),
    ("GET", "/my-image.jpg", "", {"range": "bytes=0-9"}, "GetObject", "my-image.jpg"),
    ("GET", "/my-image.jpg", "response-content-type=text/plain&versionId=3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
     {}, "GetObject", "my-image.jpg"),
    ("GET", "/my-image.jpg", "partNumber=2", {}, "GetObject", "my-image.jpg"),
    ("HEAD", "/my-image.jpg", "", {}, "HeadObject", "my-image.jpg"),
    ("DELETE", "/my-second-image.jpg", "versionId=UIORUnfndfiufdisojhr398493jfdkjFJjkndnqUifhnw89493jJFJ",
     {}, "DeleteObject", "my-second-image.jpg"),
    ("PUT", "/my-second-image.jpg", "", COPY, "CopyObject", "my-second-image.jpg"),
    ("PUT", "/dst", "renameObject", {"x-amz-rename-source": f"/{BUCKET}/src"}, "RenameObject", "dst"),
    ("PUT", "/example-object", "tagging", {}, "PutObjectTagging", "example-object"),
    ("GET", "/example-object", "tagging", {}, "GetObjectTagging", "example-object"),
    ("DELETE", "/example-object", "tagging", {}, "DeleteObjectTagging", "example-object"),
    ("GET", "/my-image.jpg", "acl", {}, "GetObjectAcl", "my-image.jpg"),
    ("PUT", "/my-image.jpg", "acl", {}, "PutObjectAcl", "my-image.jpg"),
    ("POST", "/example-object", "uploads", {}, "CreateMultipartUpload", "example-object"),
    ("PUT", "/my-movie.m2ts", f"partNumber=1&uploadId={UPLOAD}", {}, "UploadPart", "my-movie.m2ts"),
    ("PUT", "/newobject", f"partNumber=2&uploadId={UPLOAD}", {**COPY, "x-amz-copy-source-range": "bytes=0-9"},
     "UploadPartCopy", "newobject"),
    ("POST", "/example-object", f"uploadId={UPLOAD}", {}, "CompleteMultipartUpload", "example-object"),
    ("DELETE", "/example-object", f"uploadId={UPLOAD}", {}, "AbortMultipartUpload", "example-object"),
    ("GET", "/example-object", f"uploadId={UPLOAD}&max-parts=2&part-number-marker=1", {}, "ListParts",
     "example-object"),
    ("POST", "/exampleobject.csv", "select&select-type=2", {}, "SelectObjectContent", "exampleobject.csv"),
    ("PUT", "/my-image.jpg", "retention", {}, "PutObjectRetention", "my-image.jpg"),
    ("PUT", "/my-image.jpg", "legal-hold", {}, "PutObjectLegalHold", "my-image.jpg"),
    ("GET", "/my-image.jpg", "retention", {}, "GetObjectRetention", "my-image.jpg"),
    ("GET", "/my-image.jpg", "legal-hold", {}, "GetObjectLegalHold", "my-image.jpg"),
    ("DELETE", "/my-image.jpg", "retention", {}, "NotImplemented", "my-image.jpg"),
    ("PUT", "", "object-lock", {}, "PutObjectLockConfiguration", ""),
    ("PATCH", "/my-image.jpg", "", {}, None, "my-image.jpg"),
    ("POST", "", "", {}, "PostObject", ""),
    # issue 21: POST object only without a query; a form posted to anything else is not a form upload
    ("POST", "", "uploads", {}, None, ""),
    ("POST", "", f"uploadId={UPLOAD}", {}, None, ""),
    ("POST", "", "select&select-type=2", {}, None, ""),
    ("POST", "", "restore", {}, None, ""),
    ("POST", "", "policy", {}, None, ""),
    ("POST", "", "x-id=PostObject", {}, None, ""),
    ("POST", "/example-object", "", {}, None, "example-object"),
    ("POST", "/example-object", "restore", {}, None, "example-object"),
]
#: Operations a Reader may call: every GET/HEAD plus the read-only POSTs (Select and ?sql).
READS = {"ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads", "GetBucketLocation",
         "GetBucketVersioning", "GetBucketCors", "GetBucketTagging", "GetBucketLifecycleConfiguration",
         "GetBucketAcl", "GetBucketPolicy", "GetBucketPolicyStatus", "GetBucketEncryption",
         "GetObjectLockConfiguration", "HeadBucket", "GetObject", "HeadObject", "GetObjectTagging", "GetObjectAcl",
         "ListParts", "SelectObjectContent", "MultiObjectSQL", "GetObjectRetention", "GetObjectLegalHold",
         "GetBucketNotificationConfiguration"}


def _resolve(style: str, method: str, path: str, query: str, headers: dict[str, str]) -> tuple[str | None, str, str]:
    if style == "path":
        target = split_target(f"/{BUCKET}{path}" if path else f"/{BUCKET}", "s3.example.com", ("localhost",))
    else:
        target = split_target(path or "/", f"{BUCKET}.localhost:9000", ("localhost",))
    assert target.virtual_host is (style == "vhost")
    found = route(method, target.bucket, target.key, parse_query(query), headers)
    return found.operation, found.bucket, found.key


@pytest.mark.parametrize("style", ["path", "vhost"])
@pytest.mark.parametrize(("method", "path", "query", "headers", "operation", "key"), CASES,
                         ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_router_table(style: str, method: str, path: str, query: str, headers: dict[str, str],
                      operation: str | None, key: str) -> None:
    assert _resolve(style, method, path, query, headers) == (operation, BUCKET, key)
    if operation not in (None, "NotImplemented"):
        assert (operation in READ_ONLY) is (operation in READS)


def test_router_service_level() -> None:
    assert route("GET", "", "", {}, {}).operation == "ListBuckets"
    assert "ListBuckets" in READ_ONLY


@pytest.mark.parametrize(("path", "code"), [("//key", ErrorCode.INVALID_BUCKET_NAME),
                                            ("//", ErrorCode.INVALID_BUCKET_NAME),
                                            ("/b%FFucket/key", ErrorCode.INVALID_URI),
                                            ("/bucket/u%ff", ErrorCode.INVALID_URI),
                                            ("/bucket/u%c3", ErrorCode.INVALID_URI)])
def test_issue18_router_refuses_paths_that_name_nothing(path: str, code: ErrorCode) -> None:
    with pytest.raises(S3Error) as exc:
        split_target(path, "s3.example.com", ("localhost",))
    assert exc.value.code is code


def test_issue18_vhost_key_may_start_with_a_slash() -> None:
    target = split_target("//key", f"{BUCKET}.localhost", ("localhost",))
    assert (target.bucket, target.key) == (BUCKET, "/key")
