"""Bucket CORS: parsing/validation, rendering (checked with botocore's parser), storage records, matching."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.parsers import RestXMLParser
from hypothesis import given
from hypothesis import strategies as st

from s4.api.s3.cors import (
    CorsRule,
    cors_from_record,
    cors_response_headers,
    cors_to_record,
    cors_xml,
    match_cors,
    parse_cors,
    split_header_list,
    wildcard_match,
)
from s4.api.s3.xml_render import S3_NS
from s4.engine.errors import ErrorCode, S3Error

MODEL = botocore.session.get_session().get_service_model("s3")

# The AWS API reference's PutBucketCors example.
AWS_EXAMPLE = b"""<CORSConfiguration>
 <CORSRule>
   <AllowedOrigin>http://www.example.com</AllowedOrigin>
   <AllowedMethod>PUT</AllowedMethod>
   <AllowedMethod>POST</AllowedMethod>
   <AllowedMethod>DELETE</AllowedMethod>
   <AllowedHeader>*</AllowedHeader>
   <MaxAgeSeconds>3000</MaxAgeSeconds>
   <ExposeHeader>x-amz-server-side-encryption</ExposeHeader>
 </CORSRule>
 <CORSRule>
   <AllowedOrigin>*</AllowedOrigin>
   <AllowedMethod>GET</AllowedMethod>
   <AllowedHeader>*</AllowedHeader>
   <MaxAgeSeconds>3000</MaxAgeSeconds>
 </CORSRule>
</CORSConfiguration>"""

EXAMPLE_RULES = [
    CorsRule("", ["http://www.example.com"], ["PUT", "POST", "DELETE"], ["*"], ["x-amz-server-side-encryption"], 3000),
    CorsRule("", ["*"], ["GET"], ["*"], [], 3000),
]


def rule(origins: list[str], methods: list[str], headers: list[str] | None = None, rule_id: str = "") -> CorsRule:
    return CorsRule(rule_id, origins, methods, headers or [], [], None)


def boto_cors(body: bytes) -> list[dict[str, Any]]:
    shape = MODEL.operation_model("GetBucketCors").output_shape
    return RestXMLParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)["CORSRules"]


# --- parsing -----------------------------------------------------------------------------------------------


def test_parse_aws_example() -> None:
    assert parse_cors(AWS_EXAMPLE) == EXAMPLE_RULES
    namespaced = AWS_EXAMPLE.replace(b"<CORSConfiguration>", f'<CORSConfiguration xmlns="{S3_NS}">'.encode())
    assert parse_cors(namespaced) == EXAMPLE_RULES


def test_parse_id() -> None:
    body = (b"<CORSConfiguration><CORSRule><ID>my rule &amp; co</ID><AllowedOrigin>https://a</AllowedOrigin>"
            b"<AllowedMethod>HEAD</AllowedMethod></CORSRule></CORSConfiguration>")
    assert parse_cors(body) == [rule(["https://a"], ["HEAD"], rule_id="my rule & co")]


def _cfg(*rules: str) -> bytes:
    return ("<CORSConfiguration>" + "".join(f"<CORSRule>{r}</CORSRule>" for r in rules)
            + "</CORSConfiguration>").encode()


OK_RULE = "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"


@pytest.mark.parametrize("body", [
    b"", b"junk", b"<CORSConfiguration/>", b"<CORSConfig><CORSRule/></CORSConfig>",
    _cfg("<AllowedMethod>GET</AllowedMethod>"),  # no origin
    _cfg("<AllowedOrigin>*</AllowedOrigin>"),  # no method
    _cfg(OK_RULE + "<Bogus/>"),
    _cfg(OK_RULE + "<MaxAgeSeconds>soon</MaxAgeSeconds>"),
    _cfg(OK_RULE + "<MaxAgeSeconds>1</MaxAgeSeconds><MaxAgeSeconds>2</MaxAgeSeconds>"),
    _cfg(OK_RULE + "<ID>a</ID><ID>b</ID>"),
    _cfg(*([OK_RULE] * 101)),
    b"<CORSConfiguration><Other/></CORSConfiguration>",
])
def test_parse_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        parse_cors(body)
    assert info.value.code is ErrorCode.MALFORMED_XML


def test_hundred_rules_is_the_limit() -> None:
    assert len(parse_cors(_cfg(*([OK_RULE] * 100)))) == 100


@pytest.mark.parametrize(("rule_xml", "message"), [
    ("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>",
     "Found unsupported HTTP method in CORS config. Unsupported method is PATCH"),
    ("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>get</AllowedMethod>",
     "Found unsupported HTTP method in CORS config. Unsupported method is get"),
    ("<AllowedOrigin>http://*.*.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod>",
     'AllowedOrigin "http://*.*.com" can not have more than one wildcard.'),
    (OK_RULE + "<AllowedHeader>x-*-*</AllowedHeader>", 'AllowedHeader "x-*-*" can not have more than one wildcard.'),
])
def test_parse_invalid_request(rule_xml: str, message: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_cors(_cfg(rule_xml))
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.message == message


# --- rendering and storage ---------------------------------------------------------------------------------


def test_render_through_botocore() -> None:
    rules = [*EXAMPLE_RULES, rule(["https://*.a&b.com"], ["HEAD"], ["x-amz-*"], rule_id="id<1>")]
    body = cors_xml(rules)
    assert body.startswith(f'<?xml version="1.0" encoding="UTF-8"?>\n<CORSConfiguration xmlns="{S3_NS}">'.encode())
    parsed = boto_cors(body)
    assert parsed[0] == {"AllowedOrigins": ["http://www.example.com"], "AllowedMethods": ["PUT", "POST", "DELETE"],
                         "AllowedHeaders": ["*"], "ExposeHeaders": ["x-amz-server-side-encryption"],
                         "MaxAgeSeconds": 3000}
    assert parsed[1] == {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"],
                         "MaxAgeSeconds": 3000}
    assert parsed[2] == {"ID": "id<1>", "AllowedOrigins": ["https://*.a&b.com"], "AllowedMethods": ["HEAD"],
                         "AllowedHeaders": ["x-amz-*"]}


methods = st.lists(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]), min_size=1, max_size=5)
words = st.text(st.sampled_from("abcxyz-.:/&<>\"'ü0"), min_size=1, max_size=15)
one_wildcard = st.builds(lambda a, star, b: a + ("*" if star else "") + b, words, st.booleans(), words)
rules_st = st.lists(st.builds(CorsRule, st.text("abc &<", max_size=10), st.lists(one_wildcard, min_size=1, max_size=3),
                              methods, st.lists(one_wildcard, max_size=3), st.lists(words, max_size=3),
                              st.none() | st.integers(0, 10**6)), min_size=1, max_size=5)


@given(rules_st)
def test_xml_round_trip(rules: list[CorsRule]) -> None:
    assert parse_cors(cors_xml(rules)) == rules


@given(rules_st)
def test_record_round_trip(rules: list[CorsRule]) -> None:
    assert cors_from_record(cors_to_record(rules)) == rules


# --- matching ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*", "", True), ("*", "anything", True), ("http://a.com", "http://a.com", True),
    ("http://a.com", "http://a.co", False), ("http://*.a.com", "http://x.a.com", True),
    ("http://*.a.com", "http://a.com", False), ("http://*.a.com", "http://.a.com", True),
    ("*.com", "x.org", False), ("ab*ba", "aba", False), ("ab*ba", "abba", True), ("x-*", "x-", True),
])
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


def test_first_matching_rule_wins() -> None:
    rules = parse_cors(AWS_EXAMPLE)
    assert match_cors(rules, "http://www.example.com", "PUT", []) is rules[0]
    assert match_cors(rules, "http://www.example.com", "GET", []) is rules[1]
    assert match_cors(rules, "http://other.example", "GET", []) is rules[1]
    assert match_cors(rules, "http://other.example", "PUT", []) is None
    assert match_cors(rules, "http://www.example.com", "PATCH", []) is None


def test_headers_must_all_be_allowed_case_insensitively() -> None:
    rules = [rule(["*"], ["PUT"], ["Content-Type", "X-Amz-*"])]
    assert match_cors(rules, "o", "PUT", ["content-type", "x-amz-date", "X-AMZ-META-FOO"]) is rules[0]
    assert match_cors(rules, "o", "PUT", [" Content-Type ", ""]) is rules[0]
    assert match_cors(rules, "o", "PUT", ["content-type", "authorization"]) is None
    assert match_cors(rules, "o", "PUT", []) is rules[0]
    assert match_cors([rule(["*"], ["PUT"])], "o", "PUT", ["x-a"]) is None


def test_origin_wildcards() -> None:
    rules = [rule(["https://*.example.com"], ["GET"]), rule(["http://exact.org"], ["GET"])]
    assert match_cors(rules, "https://app.example.com", "GET", []) is rules[0]
    assert match_cors(rules, "http://app.example.com", "GET", []) is None
    assert match_cors(rules, "http://exact.org", "GET", []) is rules[1]
    assert match_cors(rules, "http://exact.org.evil", "GET", []) is None


def test_response_headers() -> None:
    specific = CorsRule("", ["https://*.a.com"], ["GET", "PUT"], ["*"], ["ETag", "x-amz-version-id"], 600)
    h = cors_response_headers(specific, "https://x.a.com", ["Content-Type"], preflight=True)
    assert h["Access-Control-Allow-Origin"] == "https://x.a.com"
    assert h["Access-Control-Allow-Credentials"] == "true"
    assert h["Access-Control-Allow-Methods"] == "GET, PUT"
    assert h["Access-Control-Allow-Headers"] == "content-type"
    assert h["Access-Control-Max-Age"] == "600"
    assert h["Access-Control-Expose-Headers"] == "ETag, x-amz-version-id"
    assert "Origin" in h["Vary"]
    anyone = cors_response_headers(rule(["*"], ["GET"]), "https://x", [], preflight=False)
    assert anyone["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in anyone
    assert "Access-Control-Max-Age" not in anyone


def test_split_header_list() -> None:
    assert split_header_list(None) == []
    assert split_header_list("") == []
    assert split_header_list("content-type, x-amz-date,,  X-Foo ") == ["content-type", "x-amz-date", "X-Foo"]


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_s3error(body: bytes) -> None:
    try:
        parse_cors(body)
    except S3Error:
        pass
