"""SigV4 verification: AWS documentation vectors, botocore cross-checks, and tampering/time failures."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote_to_bytes, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from s4.api.auth.request import AuthRequest, auth_scheme, check_payload_sha256
from s4.api.auth.sigv4 import EMPTY_SHA256, canonical_query, canonical_uri, signing_key, verify_sigv4
from s4.engine.errors import ErrorCode, S3Error

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)
SCOPE = f"{AKID}/20130524/us-east-1/s3/aws4_request"
HOST = "examplebucket.s3.amazonaws.com"


def lookup(access_key: str) -> str | None:
    return {AKID: SECRET}.get(access_key)


def auth_header(signed: str, signature: str) -> str:
    return f"AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders={signed},Signature={signature}"


def doc_get_object(**overrides: str) -> AuthRequest:
    headers = {
        "host": HOST, "range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": auth_header("host;range;x-amz-content-sha256;x-amz-date",
                                     "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    }
    headers.update(overrides)
    return AuthRequest("GET", "/test.txt", "", headers)


def doc_put_object(path: str = "/test%24file.text") -> AuthRequest:
    sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    return AuthRequest("PUT", path, "", {
        "host": HOST, "date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY", "x-amz-content-sha256": sha,
        "authorization": auth_header("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                                     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    })


def doc_bucket_get(query: str, signature: str) -> AuthRequest:
    return AuthRequest("GET", "/", query, {
        "host": HOST, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": "20130524T000000Z",
        "authorization": auth_header("host;x-amz-content-sha256;x-amz-date", signature),
    })


LIFECYCLE_SIG = "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
LIST_SIG = "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
DOC_PRESIGNED_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
    "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
    "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


def doc_streaming(trailer: bool) -> AuthRequest:
    """The seed requests of the AWS chunked-upload examples (plain and with a CRC32C trailer)."""
    headers = {
        "host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY", "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
    }
    if trailer:
        headers.update({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                        "x-amz-trailer": "x-amz-checksum-crc32c"})
        signed = ("content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
                  "x-amz-storage-class;x-amz-trailer")
        sig = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    else:
        headers.update({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                        "content-length": "66824"})
        signed = ("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                  "x-amz-decoded-content-length;x-amz-storage-class")
        sig = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    headers["authorization"] = auth_header(signed, sig)
    return AuthRequest("PUT", "/examplebucket/chunkObject.txt", "", headers)


def expect_error(code: ErrorCode, req: AuthRequest, now: datetime | None = DOC_TIME, **kw: object) -> S3Error:
    with pytest.raises(S3Error) as info:
        verify_sigv4(req, lookup, now, **kw)  # type: ignore[arg-type]
    assert info.value.code is code, info.value
    return info.value


# --- AWS documentation examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("req, mode", [
    (doc_get_object(), "sha256"),
    (doc_put_object(), "sha256"),
    (doc_put_object("/test$file.text"), "sha256"),  # same request, "$" left unencoded by the client
    (doc_bucket_get("lifecycle", LIFECYCLE_SIG), "sha256"),
    (doc_bucket_get("max-keys=2&prefix=J", LIST_SIG), "sha256"),
    (doc_bucket_get("prefix=J&max-keys=2", LIST_SIG), "sha256"),
    (AuthRequest("GET", "/test.txt", DOC_PRESIGNED_QUERY, {"host": HOST}), "unsigned"),
    (doc_streaming(False), "streaming-signed"),
    (doc_streaming(True), "streaming-signed-trailer"),
])
def test_aws_documentation_examples(req: AuthRequest, mode: str) -> None:
    ctx = verify_sigv4(req, lookup, DOC_TIME + timedelta(minutes=5))
    assert (ctx.access_key, ctx.region, ctx.service, ctx.payload_mode) == (AKID, "us-east-1", "s3", mode)
    assert ctx.scope == "20130524/us-east-1/s3/aws4_request"
    assert ctx.amz_date == "20130524T000000Z"
    assert ctx.signing_key == signing_key(SECRET, "20130524", "us-east-1", "s3")
    assert ctx.presigned == (mode == "unsigned")


def test_doc_seed_signature_is_exposed_for_chunk_chaining() -> None:
    ctx = verify_sigv4(doc_streaming(False), lookup, DOC_TIME)
    assert ctx.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert ctx.streaming and ctx.payload_sha256 is None


def test_payload_sha256_check() -> None:
    ctx = verify_sigv4(doc_get_object(), lookup, DOC_TIME)
    assert ctx.payload_sha256 == EMPTY_SHA256
    check_payload_sha256(ctx, hashlib.sha256(b"").hexdigest())
    with pytest.raises(S3Error) as info:
        check_payload_sha256(ctx, hashlib.sha256(b"x").hexdigest())
    assert info.value.code is ErrorCode.X_AMZ_CONTENT_SHA256_MISMATCH


def test_canonical_forms() -> None:
    assert canonical_uri("/b/a b+c/%7e%2f!") == "/b/a%20b%2Bc/~%2F%21"
    assert canonical_uri("") == "/"
    assert canonical_query("b=2&a=1&a=0&flag") == "a=0&a=1&b=2&flag="
    assert canonical_query("X-Amz-Signature=x&a=%2f", presigned=True) == "a=%2F"


@given(st.text(alphabet="ab/-_.~%2fF7e +!é", max_size=40))
def test_canonical_uri_is_one_decode_then_one_unreserved_encode_per_segment(raw: str) -> None:
    """The fast path for already-canonical paths agrees with decoding and re-encoding every segment (raw paths
    are latin-1 decoded wire bytes)."""
    expected = "/".join(quote(unquote_to_bytes(seg.encode("latin-1")), safe="-_.~") for seg in raw.split("/"))
    assert canonical_uri(raw) == (expected if raw else "/")


@pytest.mark.parametrize("change", [
    {"range": "bytes=0-10"},
    {"x-amz-date": "20130524T000001Z"},
    {"authorization": auth_header("host;range;x-amz-content-sha256;x-amz-date", "0" * 64)},
])
def test_doc_example_tampered(change: dict[str, str]) -> None:
    err = expect_error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, doc_get_object(**change))
    assert err.fields["AWSAccessKeyId"] == AKID and "CanonicalRequest" in err.fields


def test_doc_example_wrong_path_and_secret() -> None:
    good = doc_get_object()
    expect_error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AuthRequest("GET", "/test.txt2", "", good.headers))
    expect_error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AuthRequest("GET", "/test.txt", "x=1", good.headers))
    with pytest.raises(S3Error) as info:
        verify_sigv4(good, lambda _: "not-the-secret", DOC_TIME)
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH
    with pytest.raises(S3Error) as info:
        verify_sigv4(good, lambda _: None, DOC_TIME)
    assert info.value.code is ErrorCode.INVALID_ACCESS_KEY_ID


def test_clock_skew() -> None:
    verify_sigv4(doc_get_object(), lookup, DOC_TIME + timedelta(minutes=14))
    expect_error(ErrorCode.REQUEST_TIME_TOO_SKEWED, doc_get_object(), DOC_TIME + timedelta(minutes=16))
    expect_error(ErrorCode.REQUEST_TIME_TOO_SKEWED, doc_get_object(), DOC_TIME - timedelta(minutes=16))


def test_presigned_expiry_window() -> None:
    req = AuthRequest("GET", "/test.txt", DOC_PRESIGNED_QUERY, {"host": HOST})
    verify_sigv4(req, lookup, DOC_TIME + timedelta(seconds=86400))
    err = expect_error(ErrorCode.ACCESS_DENIED, req, DOC_TIME + timedelta(seconds=86401))
    assert err.message == "Request has expired"
    expect_error(ErrorCode.ACCESS_DENIED, req, DOC_TIME - timedelta(hours=1))
    week = DOC_PRESIGNED_QUERY.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801")
    expect_error(ErrorCode.ACCESS_DENIED,
                 AuthRequest("GET", "/test.txt", week, req.headers))
    other = DOC_PRESIGNED_QUERY.replace("X-Amz-Expires=86400", "X-Amz-Expires=86399")
    expect_error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AuthRequest("GET", "/test.txt", other, req.headers))


@pytest.mark.parametrize("req, code", [
    (AuthRequest("GET", "/", "", {"host": HOST}), ErrorCode.ACCESS_DENIED),
    (doc_get_object(authorization="AWS4-HMAC-SHA256 Credential=x"), ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    (doc_get_object(authorization=auth_header("host", "ab").replace("/us-east-1", "")),
     ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    (doc_get_object(authorization=auth_header("host", "ab").replace("20130524/", "20130525/")),
     ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    (doc_get_object(authorization="AWS4-ECDSA-P256-SHA256 Credential=x"), ErrorCode.INVALID_REQUEST),
    (doc_get_object(**{"x-amz-date": "yesterday"}), ErrorCode.ACCESS_DENIED),
    (doc_get_object(**{"x-amz-content-sha256": "nope"}), ErrorCode.INVALID_ARGUMENT),
    (doc_get_object(**{"x-amz-meta-sneaky": "1"}), ErrorCode.ACCESS_DENIED),
    (doc_get_object(authorization=auth_header("range;x-amz-content-sha256;x-amz-date", "ab")),
     ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    (AuthRequest("GET", "/t", "X-Amz-Algorithm=AWS4-HMAC-SHA256", {"host": HOST}),
     ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR),
    (AuthRequest("GET", "/t", DOC_PRESIGNED_QUERY.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
                 {"host": HOST}),
     ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR),
])
def test_rejections(req: AuthRequest, code: ErrorCode) -> None:
    expect_error(code, req)


def test_header_and_query_auth_together() -> None:
    req = doc_get_object()
    expect_error(ErrorCode.INVALID_ARGUMENT,
                 AuthRequest("GET", "/test.txt", DOC_PRESIGNED_QUERY, req.headers))


def test_missing_content_sha256_header() -> None:
    req = doc_get_object()
    headers = {k: v for k, v in req.headers.items() if k != "x-amz-content-sha256"}
    expect_error(ErrorCode.INVALID_REQUEST, AuthRequest("GET", "/test.txt", "", headers))


def test_expected_region() -> None:
    verify_sigv4(doc_get_object(), lookup, DOC_TIME, expected_region="us-east-1")
    err = expect_error(ErrorCode.AUTHORIZATION_HEADER_MALFORMED, doc_get_object(),
                       expected_region="eu-west-1")
    assert err.fields["Region"] == "eu-west-1"


def test_auth_scheme_detection() -> None:
    assert auth_scheme(doc_get_object()) == "sigv4"
    assert auth_scheme(AuthRequest("GET", "/", DOC_PRESIGNED_QUERY, {})) == "sigv4-query"
    assert auth_scheme(AuthRequest("GET", "/", "AWSAccessKeyId=a&Signature=b&Expires=1", {})) == "sigv2-query"
    assert auth_scheme(AuthRequest("GET", "/", "prefix=Signature", {})) is None
    assert auth_scheme(AuthRequest("GET", "/", "", {"authorization": "AWS a:b"})) == "sigv2"


def test_signing_key_is_cached() -> None:
    signing_key.cache_clear()
    for _ in range(3):
        verify_sigv4(doc_get_object(), lookup, DOC_TIME)
    assert signing_key.cache_info().hits >= 2


# --- botocore cross-checks ---------------------------------------------------------------------------------

CREDS = Credentials("AKIDBOTO", "boto/secret+key")


def boto_lookup(access_key: str) -> str | None:
    return {"AKIDBOTO": "boto/secret+key"}.get(access_key)


def to_auth(prepared: AWSPreparedRequest) -> AuthRequest:
    """The request exactly as it would reach the server: wire path/query, lower-case joined headers."""
    parts = urlsplit(prepared.url)
    headers: dict[str, str] = {}
    for name, value in prepared.headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        key = name.lower()
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    if "host" not in headers:
        default = {"http": ":80", "https": ":443"}[parts.scheme]
        headers["host"] = parts.netloc.removesuffix(default)
    return AuthRequest(prepared.method, parts.path or "/", parts.query, headers)


def boto_signed(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"",
                signer: type[SigV4Auth] = S3SigV4Auth, **kwargs: object) -> AuthRequest:
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    signer(CREDS, "s3", "us-east-1", **kwargs).add_auth(request)  # type: ignore[arg-type]
    return to_auth(request.prepare())


def with_(req: AuthRequest, path: str | None = None, query: str | None = None, **headers: str) -> AuthRequest:
    merged = {**req.headers, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return AuthRequest(req.method, req.raw_path if path is None else path,
                       req.query_string if query is None else query, merged)


URLS = [
    "http://localhost:9000/bucket/plain.txt",
    "http://localhost:9000/bucket/a%20b%2Bc/%C3%A9%28x%29~!%24%27",
    "http://bucket.s3.example.com/key?versionId=3%2F4&tagging",
    "https://localhost/bucket?list-type=2&prefix=a%20b%2F&delimiter=%2F&start-after=%E2%82%AC",
    "http://localhost:9000/bucket/k?uploadId=abc&partNumber=7",
    "http://localhost:9000/bucket/k?response-content-disposition=attachment%3B%20filename%3D%22x.txt%22",
]


@pytest.mark.parametrize("url", URLS)
def test_botocore_header_auth_round_trip(url: str) -> None:
    body = b"some payload"
    headers = {"X-Amz-Meta-Colour": "  blue   green ", "Content-Type": "text/plain"}
    req = boto_signed("PUT", url, headers, body)
    ctx = verify_sigv4(req, boto_lookup)
    assert ctx.access_key == "AKIDBOTO" and ctx.payload_mode == "sha256"
    check_payload_sha256(ctx, hashlib.sha256(body).hexdigest())

    for tampered in (
        with_(req, x_amz_meta_colour="red"),
        with_(req, content_type="text/html"),
        with_(req, path=req.raw_path + "x"),
        with_(req, query=(req.query_string + "&" if req.query_string else "") + "extra=1"),
        with_(req, x_amz_content_sha256=hashlib.sha256(b"other").hexdigest()),
        AuthRequest("POST", req.raw_path, req.query_string, req.headers),
    ):
        with pytest.raises(S3Error) as info:
            verify_sigv4(tampered, boto_lookup)
        assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH
    with pytest.raises(S3Error) as info:
        verify_sigv4(req, lambda _: "wrong")
    assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_botocore_skew() -> None:
    req = boto_signed("GET", URLS[0])
    verify_sigv4(req, boto_lookup, datetime.now(UTC) + timedelta(minutes=10))
    with pytest.raises(S3Error) as info:
        verify_sigv4(req, boto_lookup, datetime.now(UTC) + timedelta(minutes=20))
    assert info.value.code is ErrorCode.REQUEST_TIME_TOO_SKEWED


def test_botocore_date_header_instead_of_x_amz_date() -> None:
    req = boto_signed("GET", URLS[0], {"Date": "placeholder"})
    assert "x-amz-date" not in req.headers and "date" in req.headers
    assert verify_sigv4(req, boto_lookup).amz_date[:8] == datetime.now(UTC).strftime("%Y%m%d")


def test_botocore_generic_sigv4_auth() -> None:
    """The generic signer (normalises, double-encodes paths) agrees on plain paths given the body hash."""
    body = b"{}"
    sha = hashlib.sha256(body).hexdigest()
    req = boto_signed("POST", "http://localhost:9000/bucket/key?a=1&b=x%20y", {"X-Amz-Content-SHA256": sha},
                      body, signer=SigV4Auth)
    assert verify_sigv4(req, boto_lookup).payload_sha256 == sha


@pytest.mark.parametrize("url", URLS)
def test_botocore_presigned(url: str) -> None:
    req = boto_signed("GET", url, signer=S3SigV4QueryAuth, expires=60)
    assert "authorization" not in req.headers
    ctx = verify_sigv4(req, boto_lookup)
    assert ctx.presigned and ctx.payload_mode == "unsigned"
    with pytest.raises(S3Error) as info:
        verify_sigv4(req, boto_lookup, datetime.now(UTC) + timedelta(seconds=120))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    for tampered in (with_(req, path=req.raw_path + "x"), with_(req, query=req.query_string + "&x=1"),
                     with_(req, host="evil.example.com")):
        with pytest.raises(S3Error) as info:
            verify_sigv4(tampered, boto_lookup)
        assert info.value.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


class _Captured(Exception):
    pass


def capture(call: str, **params: object) -> AuthRequest:
    """Run a real boto3 client call up to the wire and return what it would have sent."""
    client = boto3.client("s3", endpoint_url="http://localhost:9000", region_name="us-east-1",
                          aws_access_key_id="AKIDBOTO", aws_secret_access_key="boto/secret+key",
                          config=Config(signature_version="s3v4", retries={"max_attempts": 0}))
    box: list[AWSPreparedRequest] = []

    def grab(request: AWSPreparedRequest, **_: object) -> None:
        box.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3", grab)
    with pytest.raises(_Captured):
        getattr(client, call)(**params)
    return to_auth(box[0])


@pytest.mark.parametrize("call, params", [
    ("get_object", {"Bucket": "b", "Key": "dir/ünï cödé+&=?.txt", "Range": "bytes=0-9"}),
    ("list_objects_v2", {"Bucket": "b", "Prefix": "a b/€", "Delimiter": "/", "MaxKeys": 5}),
    ("put_object", {"Bucket": "b", "Key": "k y", "Body": b"data", "Metadata": {"m": "v"}}),
    ("delete_objects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "a"}]}}),
    ("put_object_tagging", {"Bucket": "b", "Key": "k", "Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}}),
])
def test_boto3_client_requests(call: str, params: dict[str, object]) -> None:
    ctx = verify_sigv4(capture(call, **params), boto_lookup)
    assert ctx.access_key == "AKIDBOTO"


@pytest.mark.parametrize("url, params", [
    ("http://localhost:9000/b?prefix=a+b", None),  # signed raw, '+' as sent
    ("http://localhost:9000/b?prefix=a%2bb&z=%7e", None),  # signed raw, lower-case escapes
    ("http://localhost:9000/b", {"prefix": "a b+c", "list-type": "2"}),  # params: sent as a+b%2Bc
])
def test_query_encoding_variants(url: str, params: dict[str, str] | None) -> None:
    request = AWSRequest(method="GET", url=url, params=params or {})
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    req = to_auth(request.prepare())
    assert "+" in req.query_string or "%2b" in req.query_string
    verify_sigv4(req, boto_lookup)
    with pytest.raises(S3Error):
        verify_sigv4(with_(req, query=req.query_string.replace("a", "x")), boto_lookup)


DOC_SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
DOC_SIGNED = "host;range;x-amz-content-sha256;x-amz-date"


@pytest.mark.parametrize("authorization", [
    f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={DOC_SIGNED}, Signature={DOC_SIGNATURE}",
    f"AWS4-HMAC-SHA256 Signature={DOC_SIGNATURE.upper()},Credential={SCOPE},SignedHeaders={DOC_SIGNED}",
    f"AWS4-HMAC-SHA256 SignedHeaders={DOC_SIGNED} , Credential={SCOPE} , Signature={DOC_SIGNATURE} ",
])
def test_authorization_components_in_any_order_and_spacing(authorization: str) -> None:
    """The per-day parse is cached on everything before the signature; other layouts take the general parse."""
    for _ in range(2):  # the second time through the cache
        assert verify_sigv4(doc_get_object(authorization=authorization), lookup, DOC_TIME).access_key == AKID


@pytest.mark.parametrize("authorization, message", [
    (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={DOC_SIGNED}", "missing Signature."),
    (f"AWS4-HMAC-SHA256 Credential={SCOPE}, Signature={DOC_SIGNATURE}", "missing SignedHeaders."),
    (f"AWS4-HMAC-SHA256 SignedHeaders={DOC_SIGNED}, Signature={DOC_SIGNATURE}", "missing Credential."),
    (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={DOC_SIGNED}, Signature=", "missing Signature."),
    (f"AWS4-HMAC-SHA256 Credential={SCOPE}, junk, Signature={DOC_SIGNATURE}",
     'the authorization component "junk" is malformed.'),
])
def test_malformed_authorization_components(authorization: str, message: str) -> None:
    err = expect_error(ErrorCode.AUTHORIZATION_HEADER_MALFORMED, doc_get_object(authorization=authorization))
    assert err.message.endswith(message), err.message


@pytest.mark.parametrize("expires, message, status", [
    ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less "
               "than 604800 seconds", 403),
    ("-7", "X-Amz-Expires must be non-negative", 403),
    ("0", "Request has expired", 403),  # in range, and expired the moment it was signed
    ("soon", "X-Amz-Expires should be a number", 400),
])
def test_presigned_expires_out_of_range_is_403(expires: str, message: str, status: int) -> None:
    """X-Amz-Expires below 0 or above a week is refused as S3 refuses it: 403 (it was 400, and 0 was 400 too);
    only a value that is no number at all is a malformed (400) query."""
    query = DOC_PRESIGNED_QUERY.replace("X-Amz-Expires=86400", f"X-Amz-Expires={expires}")
    code = ErrorCode.ACCESS_DENIED if status == 403 else ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR
    err = expect_error(code, AuthRequest("GET", "/test.txt", query, {"host": HOST}), DOC_TIME)
    assert (err.status, err.message) == (status, message)
