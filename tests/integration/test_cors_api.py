"""CORS on actual requests and preflights (issue 25): the matched rule's headers on every answer, errors
included; wildcard origins; presigned URLs; an OPTIONS that is no preflight is 400."""

from __future__ import annotations

from typing import Any

import requests

RULES = {"CORSRules": [
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["*suffix"]},
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["start*end"]},
    {"AllowedMethods": ["PUT"], "AllowedOrigins": ["*.put"]},
]}


def allow(resp: requests.Response) -> tuple[int, str | None, str | None]:
    return (resp.status_code, resp.headers.get("access-control-allow-origin"),
            resp.headers.get("access-control-allow-methods"))


def test_cors_headers_on_a_denied_request_from_an_allowed_origin(server: Any, s3: Any, bucket: str) -> None:
    """An anonymous PUT to a private bucket is refused before any handler runs; the refusal still carries the
    matched rule's headers (it used to carry none), else the browser cannot even read the 403."""
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    url = f"{server.endpoint}/{bucket}/bar"
    put = {"content-length": "0"}
    assert allow(requests.put(url, headers={"Origin": "foo.put", **put})) == (403, "foo.put", "PUT")
    assert allow(requests.get(url, headers={"Origin": "start12end"})) == (403, "start12end", "GET")
    # matched on the method the request names when it names one; no rule: no headers
    assert allow(requests.put(url, headers={"Origin": "foo.suffix", "Access-Control-Request-Method": "GET",
                                            **put})) == (403, "foo.suffix", "GET")
    assert allow(requests.put(url, headers={"Origin": "foo.suffix", **put})) == (403, None, None)
    assert allow(requests.get(url, headers={"Origin": "0start12end"})) == (403, None, None)
    assert allow(requests.get(url)) == (403, None, None)


def test_cors_headers_on_presigned_get_and_put(server: Any, s3: Any, bucket: str) -> None:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET", "PUT"], "AllowedOrigins": ["*"]}]})
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    got = requests.put(put_url, data=b"hello", headers={"Origin": "https://any.example"})
    assert allow(got) == (200, "*", "GET, PUT")
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    got = requests.get(get_url, headers={"Origin": "https://any.example"})
    assert allow(got) == (200, "*", "GET, PUT") and got.content == b"hello"
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"}, ExpiresIn=300)
    assert allow(requests.get(missing, headers={"Origin": "x"})) == (404, "*", "GET, PUT")
    # a preflight for a presigned URL is answered from the rules, not from the query's signature
    pre = requests.options(get_url, headers={"Origin": "x", "Access-Control-Request-Method": "PUT"})
    assert allow(pre) == (200, "*", "GET, PUT")


def test_options_without_origin_is_400(server: Any, s3: Any, bucket: str) -> None:
    """An OPTIONS without Origin (or without Access-Control-Request-Method) is not a preflight: 400, as S3
    answers (it was 403 without Origin)."""
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    url = f"{server.endpoint}/{bucket}"
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "foo"}, ExpiresIn=300)
    for target in (url, f"{url}/foo", presigned):
        assert requests.options(target).status_code == 400
        assert requests.options(target, headers={"Origin": "foo.suffix"}).status_code == 400
    assert allow(requests.options(url, headers={"Origin": "foo.bar", "Access-Control-Request-Method": "GET"})) \
        == (403, None, None)
    assert allow(requests.options(url, headers={"Origin": "startend", "Access-Control-Request-Method": "GET"})) \
        == (200, "startend", "GET")
