"""SigV2 verification: AWS documentation examples, botocore HmacV1 cross-checks, tampering and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from s4.api.auth.request import AuthRequest
from s4.api.auth.sigv2 import canonical_resource, verify_sigv2
from s4.engine.errors import ErrorCode, S3Error

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def lookup(access_key: str) -> str | None:
    return {AKID: SECRET, "AKIDBOTO": "boto/secret+key"}.get(access_key)


def doc(method: str, path: str, query: str, signature: str, **headers: str) -> AuthRequest:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    hdrs["authorization"] = f"AWS {AKID}:{signature}"
    return AuthRequest(method, path, query, hdrs)


def at(http_date: str) -> datetime:
    return parsedate_to_datetime(http_date).astimezone(UTC)


# (request, bucket from Host) for the AWS "Signing and authenticating REST requests" examples.
DOC_EXAMPLES = [
    (doc("GET", "/photos/puppy.jpg", "", "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
         date="Tue, 27 Mar 2007 19:36:42 +0000"), "johnsmith"),
    (doc("PUT", "/photos/puppy.jpg", "", "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
         date="Tue, 27 Mar 2007 21:15:45 +0000", content_type="image/jpeg", content_length="94328"),
     "johnsmith"),
    (doc("GET", "/", "prefix=photos&max-keys=50&marker=puppy", "htDYFYduRNen8P9ZfE/s9SuKy0U=",
         date="Tue, 27 Mar 2007 19:42:41 +0000", user_agent="Mozilla/5.0"), "johnsmith"),
    (doc("GET", "/", "acl", "c2WLPFtWHVgbEmeEG93a4cG37dM=", date="Tue, 27 Mar 2007 19:44:46 +0000"),
     "johnsmith"),
    (doc("DELETE", "/johnsmith/photos/puppy.jpg", "", "lx3byBScXR6KzyMaifNkardMwNk=",
         date="Tue, 27 Mar 2007 21:20:27 +0000", x_amz_date="Tue, 27 Mar 2007 21:20:26 +0000"), None),
    (doc("PUT", "/db-backup.dat.gz", "", "ilyl83RwaSoYIEdixDQcA4OnAnc=",
         date="Tue, 27 Mar 2007 21:06:08 +0000", x_amz_acl="public-read",
         content_type="application/x-download",
         content_md5="4gJE4saaMU4BqNR0kLY+lw==", x_amz_meta_reviewedby="joe@johnsmith.net,jane@johnsmith.net",
         x_amz_meta_filechecksum="0x02661779", x_amz_meta_checksumalgorithm="crc32",
         content_disposition="attachment; filename=database.dat", content_encoding="gzip"),
     "static.johnsmith.net"),
    (doc("GET", "/", "", "qGdzdERIC03wnaRNKh6OqZehG9s=", date="Wed, 28 Mar 2007 01:29:59 +0000"), None),
    (doc("GET", "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re", "", "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
         date="Wed, 28 Mar 2007 01:49:49 +0000"), None),
]


@pytest.mark.parametrize("req, bucket", DOC_EXAMPLES)
def test_aws_documentation_examples(req: AuthRequest, bucket: str | None) -> None:
    when = at(req.headers.get("x-amz-date", req.headers["date"]))
    ctx = verify_sigv2(req, lookup, when + timedelta(minutes=3), bucket_from_host=bucket)
    assert (ctx.access_key, ctx.payload_mode, ctx.signature_version) == (AKID, "unsigned", 2)

    tampered = AuthRequest(req.method, req.raw_path + "x", req.query_string, req.headers)
    with pytest.raises(S3Error) as info:
        verify_sigv2(tampered, lookup, when, bucket_from_host=bucket)
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_doc_presigned_example() -> None:
    req = AuthRequest("GET", "/photos/puppy.jpg",
                      "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D",
                      {"host": "johnsmith.s3.amazonaws.com"})
    expires = datetime.fromtimestamp(1175139620, UTC)
    ctx = verify_sigv2(req, lookup, expires - timedelta(hours=1), bucket_from_host="johnsmith")
    assert ctx.presigned
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lookup, expires + timedelta(seconds=1), bucket_from_host="johnsmith")
    assert info.value.code is ErrorCode.ACCESS_DENIED and info.value.message == "Request has expired"
    later = req.query_string.replace("1175139620", "1175139621")
    with pytest.raises(S3Error) as info:
        verify_sigv2(AuthRequest("GET", req.raw_path, later, req.headers), lookup,
                     expires - timedelta(hours=1), bucket_from_host="johnsmith")
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_canonical_resource() -> None:
    assert canonical_resource("/k", "versionId=a%2Fb&acl&prefix=x", "bkt") == "/bkt/k?acl&versionId=a/b"
    assert canonical_resource("/", "uploads=&max-uploads=3", "bkt") == "/bkt/?uploads="
    assert canonical_resource("/b/k", "retention") == "/b/k"
    assert canonical_resource("/b/k", "retention", include_extra=True) == "/b/k?retention"


def test_skew_and_errors() -> None:
    req, bucket = DOC_EXAMPLES[0]
    when = at(req.headers["date"])
    for now, code in ((when + timedelta(minutes=16), ErrorCode.REQUEST_TIME_TOO_SKEWED),
                      (when - timedelta(minutes=16), ErrorCode.REQUEST_TIME_TOO_SKEWED)):
        with pytest.raises(S3Error) as info:
            verify_sigv2(req, lookup, now, bucket_from_host=bucket)
        assert info.value.code is code
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lambda _: None, when, bucket_from_host=bucket)
    assert info.value.code is ErrorCode.INVALID_ACCESS_KEY_ID
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lambda _: "wrong", when, bucket_from_host=bucket)
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lookup, when, bucket_from_host="otherbucket")
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH
    bad = AuthRequest("GET", "/", "", {"authorization": "AWS nocolon", "date": req.headers["date"]})
    with pytest.raises(S3Error) as info:
        verify_sigv2(bad, lookup, when)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    undated = AuthRequest("GET", "/", "", {"authorization": req.headers["authorization"]})
    with pytest.raises(S3Error) as info:
        verify_sigv2(undated, lookup, when)
    assert info.value.code is ErrorCode.ACCESS_DENIED
    with pytest.raises(S3Error) as info:
        verify_sigv2(AuthRequest("GET", "/", "", {}), lookup, when)
    assert info.value.code is ErrorCode.ACCESS_DENIED


def test_header_signature_cannot_be_replayed_as_presigned_url() -> None:
    req, _ = DOC_EXAMPLES[4]  # signed over the x-amz-date value in the Date line
    query = ("AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=4102444800"
             "&x-amz-date=Tue%2C%2027%20Mar%202007%2021%3A20%3A26%20%2B0000"
             "&Signature=lx3byBScXR6KzyMaifNkardMwNk%3D")
    with pytest.raises(S3Error) as info:
        verify_sigv2(AuthRequest("DELETE", req.raw_path, query, {}), lookup, datetime(2030, 1, 1, tzinfo=UTC))
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


# --- botocore cross-checks ---------------------------------------------------------------------------------

CREDS = Credentials("AKIDBOTO", "boto/secret+key")


def to_auth(prepared: AWSPreparedRequest) -> AuthRequest:
    parts = urlsplit(prepared.url)
    headers: dict[str, str] = {}
    for name, value in prepared.headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        key = name.lower()
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    headers.setdefault("host", parts.netloc)
    return AuthRequest(prepared.method, parts.path or "/", parts.query, headers)


@pytest.mark.parametrize("path, query", [
    ("/bucket/key.txt", ""),
    ("/bucket/a%20b%2Bc/%C3%A9", "versionId=v%2F1&response-content-disposition=attachment%3B%20x%3D%22y%22"),
    ("/bucket", "uploads"),
    ("/bucket/k", "partNumber=2&uploadId=xyz"),
    ("/bucket", "prefix=p&delimiter=%2F&list-type=2"),
])
def test_botocore_hmacv1(path: str, query: str) -> None:
    url = f"http://localhost:9000{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method="PUT", url=url, data=b"x",
                         headers={"Content-Type": "text/plain", "X-Amz-Meta-A": " v ", "Content-MD5": "abc="})
    HmacV1Auth(CREDS).add_auth(request)
    req = to_auth(request.prepare())
    assert verify_sigv2(req, lookup).access_key == "AKIDBOTO"
    for change in ({"x-amz-meta-a": "w"}, {"content-type": "text/html"}, {"content-md5": "abd="},
                   {"x-amz-acl": "public-read"}):
        tampered = AuthRequest(req.method, req.raw_path, req.query_string, {**req.headers, **change})
        with pytest.raises(S3Error) as info:
            verify_sigv2(tampered, lookup)
        assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH
    for tampered in (AuthRequest("GET", req.raw_path, req.query_string, req.headers),
                     AuthRequest(req.method, req.raw_path, req.query_string + "&acl", req.headers)):
        with pytest.raises(S3Error):
            verify_sigv2(tampered, lookup)


def test_botocore_hmacv1_query() -> None:
    request = AWSRequest(method="GET", url="http://localhost:9000/bucket/a%20b?versionId=3",
                         headers={"x-amz-request-payer": "requester", "Content-Type": "text/plain"})
    HmacV1QueryAuth(CREDS, expires=60).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    assert "x-amz-request-payer=requester" in parts.query  # botocore moves x-amz-* into the query
    req = AuthRequest("GET", parts.path, parts.query, {"host": parts.netloc})
    assert verify_sigv2(req, lookup).presigned
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lookup, datetime.now(UTC) + timedelta(seconds=120))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    tampered = AuthRequest("GET", parts.path, parts.query.replace("requester", "owner"), req.headers)
    with pytest.raises(S3Error) as info:
        verify_sigv2(tampered, lookup)
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def s3_client(style: str) -> boto3.client:
    return boto3.client("s3", endpoint_url="http://s3.localhost:9000", region_name="us-east-1",
                        aws_access_key_id="AKIDBOTO", aws_secret_access_key="boto/secret+key",
                        config=Config(signature_version="s3", s3={"addressing_style": style}))


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_boto3_generate_presigned_url(style: str) -> None:
    url = s3_client(style).generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "dir/a b+ü.txt", "ResponseContentType": "text/x y"},
        ExpiresIn=300)
    parts = urlsplit(url)
    bucket = parts.hostname.split(".")[0] if style == "virtual" else None  # type: ignore[union-attr]
    req = AuthRequest("GET", parts.path, parts.query, {"host": parts.netloc})
    assert verify_sigv2(req, lookup, bucket_from_host=bucket).access_key == "AKIDBOTO"
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lookup, datetime.now(UTC) + timedelta(seconds=400), bucket_from_host=bucket)
    assert info.value.code is ErrorCode.ACCESS_DENIED


class _Captured(Exception):
    pass


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_boto3_client_header_auth(style: str) -> None:
    client = s3_client(style)
    box: list[AWSPreparedRequest] = []

    def grab(request: AWSPreparedRequest, **_: object) -> None:
        box.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3", grab)
    with pytest.raises(_Captured):
        client.list_objects(Bucket="bkt", Prefix="x y/€")
    with pytest.raises(_Captured):
        client.get_object_acl(Bucket="bkt", Key="k")
    for prepared in box:
        req = to_auth(prepared)
        bucket = "bkt" if style == "virtual" else None
        assert verify_sigv2(req, lookup, bucket_from_host=bucket).access_key == "AKIDBOTO"


@pytest.mark.parametrize("amz_date, code", [
    ("Tue, 07 Jul 1950 21:53:04 GMT", ErrorCode.ACCESS_DENIED),  # before the epoch: no valid date (was skewed)
    ("Tue, 07 Jul 2010 21:53:04 GMT", ErrorCode.REQUEST_TIME_TOO_SKEWED),
    ("Tue, 07 Jul 9999 21:53:04 GMT", ErrorCode.REQUEST_TIME_TOO_SKEWED),
    ("Bad Date", ErrorCode.ACCESS_DENIED),
])
def test_x_amz_date_before_epoch_is_access_denied(amz_date: str, code: ErrorCode) -> None:
    """s3-tests' bad_date_*_aws2: a date before 1970 is refused as an invalid date, a far one as skewed."""
    req = AuthRequest("PUT", "/b/foo", "", {"host": "127.0.0.1", "x-amz-date": amz_date,
                                           "authorization": f"AWS {AKID}:c2lnbmF0dXJl"})
    with pytest.raises(S3Error) as info:
        verify_sigv2(req, lookup, datetime(2026, 12, 6, tzinfo=UTC))
    assert info.value.code is code
