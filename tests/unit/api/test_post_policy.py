"""POST object policy documents (issue 21): parsing (InvalidPolicyDocument for every malformed shape) and the
condition matcher (eq, starts-with, exact form, content-length-range, case rules, coverage of every field), with
AWS's documented example policy and the shapes ceph/s3-tests sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from s4.api.s3.post_policy import parse_post_policy
from s4.engine.errors import ErrorCode, S3Error

FUTURE = "2099-12-30T12:00:00.000Z"
NOW = 1_800_000_000.0  # 2027-01-15


def encode(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def policy(*conditions: Any, expiration: str = FUTURE) -> str:
    return encode({"expiration": expiration, "conditions": list(conditions)})


#: AWS's example ("Example: Browser-based upload using HTTP POST"), fields as that form sends them.
AWS_EXAMPLE = policy({"bucket": "sigv4examplebucket"}, ["starts-with", "$key", "user/user1/"],
                     {"acl": "public-read"}, {"success_action_redirect": "http://sigv4examplebucket.s3.amazonaws.com/"
                                                                         "successful_upload.html"},
                     ["starts-with", "$Content-Type", "image/"], {"x-amz-meta-uuid": "14365123651274"},
                     {"x-amz-server-side-encryption": "AES256"}, ["starts-with", "$x-amz-meta-tag", ""],
                     {"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"},
                     {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-date": "20151229T000000Z"})
AWS_FIELDS = {"bucket": "sigv4examplebucket", "key": "user/user1/photo.jpg", "acl": "public-read",
              "success_action_redirect": "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html",
              "content-type": "image/jpeg", "x-amz-meta-uuid": "14365123651274",
              "x-amz-server-side-encryption": "AES256", "x-amz-meta-tag": "",
              "x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request",
              "x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-date": "20151229T000000Z", "policy": "...",
              "x-amz-signature": "..."}


def denied(text: str, fields: dict[str, str], now: float = NOW) -> str:
    with pytest.raises(S3Error) as exc:
        parse_post_policy(text).check(fields, now)
    assert exc.value.code is ErrorCode.ACCESS_DENIED
    return exc.value.message


def test_aws_example_policy_allows_its_form() -> None:
    parse_post_policy(AWS_EXAMPLE).check(AWS_FIELDS, NOW)


@pytest.mark.parametrize(("field", "value"), [("key", "user/user2/photo.jpg"), ("acl", "private"),
                                              ("content-type", "text/plain"), ("x-amz-meta-uuid", "1"),
                                              ("bucket", "otherbucket"), ("x-amz-server-side-encryption", "aws:kms")])
def test_post_policy_condition_failure_is_access_denied(field: str, value: str) -> None:
    message = denied(AWS_EXAMPLE, {**AWS_FIELDS, field: value})
    assert message.startswith("Invalid according to Policy: Policy Condition failed: ")


def test_post_policy_expired_is_access_denied() -> None:
    text = policy({"bucket": "b"}, expiration="2020-01-01T00:00:00Z")
    assert denied(text, {"bucket": "b"}) == "Invalid according to Policy: Policy expired."


def test_post_policy_every_field_must_be_named_by_a_condition() -> None:
    message = denied(AWS_EXAMPLE, {**AWS_FIELDS, "x-amz-meta-other": "1"})
    assert message == "Invalid according to Policy: Extra input fields: x-amz-meta-other"
    # the bucket is always a field: a policy without a condition on it allows nothing (s3-tests
    # test_post_object_missing_policy_condition)
    assert "bucket" in denied(policy(["starts-with", "$key", ""]), {"bucket": "b", "key": "k"})


def test_post_policy_exempt_fields_need_no_condition() -> None:
    fields = {"bucket": "b", "key": "k", "policy": "p", "signature": "s", "awsaccesskeyid": "a",
              "x-amz-signature": "s", "x-ignore-foo": "bar", "x-amz-checksum-sha256": "abc="}
    parse_post_policy(policy({"bucket": "b"}, ["starts-with", "$key", ""])).check(fields, NOW)


def test_post_policy_names_and_operators_are_case_insensitive_values_are_not() -> None:
    text = policy({"bUcKeT": "b"}, ["StArTs-WiTh", "$KeY", "foo"], ["EQ", "$AcL", "private"])
    parse_post_policy(text).check({"bucket": "b", "key": "foo.txt", "acl": "private"}, NOW)
    assert "Condition failed" in denied(text, {"bucket": "b", "key": "Foo.txt", "acl": "private"})


def test_post_policy_missing_field_matches_as_empty() -> None:
    text = policy({"bucket": "b"}, ["starts-with", "$tagging", ""], ["starts-with", "$x-amz-meta-foo", "bar"])
    assert "x-amz-meta-foo" in denied(text, {"bucket": "b"})
    parse_post_policy(text).check({"bucket": "b", "x-amz-meta-foo": "barclamp"}, NOW)


def test_post_policy_dollar_in_value_is_literal() -> None:
    text = policy({"bucket": "b"}, ["starts-with", "$key", r"\$foo"])
    parse_post_policy(text).check({"bucket": "b", "key": r"\$foo.txt"}, NOW)


def test_post_policy_content_type_starts_with_holds_for_each_value() -> None:
    text = policy({"bucket": "b"}, ["starts-with", "$Content-Type", "image/"])
    parse_post_policy(text).check({"bucket": "b", "content-type": "image/jpeg, image/png"}, NOW)
    denied(text, {"bucket": "b", "content-type": "image/jpeg, text/plain"})


def test_post_policy_content_length_range() -> None:
    assert parse_post_policy(policy(["content-length-range", 1, 1024])).length_range == (1, 1024)
    assert parse_post_policy(policy(["content-length-range", "10", "20"])).length_range == (10, 20)
    both = policy(["content-length-range", 0, 100], ["content-length-range", 50, 200])
    assert parse_post_policy(both).length_range == (50, 100)
    assert parse_post_policy(policy({"bucket": "b"})).length_range is None


@pytest.mark.parametrize("text", [
    "not base64!", base64.b64encode(b"\xff\xfe").decode(), base64.b64encode(b"{").decode(), encode([]),
    encode({"conditions": []}),  # no expiration (s3-tests test_post_object_missing_expires_condition)
    encode({"expiration": FUTURE}),  # no conditions
    encode({"EXPIRATION": FUTURE, "conditions": []}), encode({"expiration": FUTURE, "CONDITIONS": []}),
    encode({"expiration": "2099-12-30 12:00:00.000+00:00", "conditions": []}),  # str(datetime)
    encode({"expiration": "2099-02-30T00:00:00Z", "conditions": []}), encode({"expiration": 4102444800,
                                                                               "conditions": []}),
    policy({}), policy({"bucket": 1}), policy("bucket"), policy(["eq", "$key"]), policy(["eq", "key", "v"]),
    policy(["eq", "$", "v"]), policy(["matches", "$key", "v"]), policy([]), policy([1, "$key", "v"]),
    policy(["content-length-range", 0]), policy(["content-length-range", -1, 0]),
    policy(["content-length-range", 10, 5]), policy(["content-length-range", 0, 1.5]),
    policy(["content-length-range", True, 5]), policy(["content-length-range", "0x10", 5]),
    base64.b64encode(b'{"expiration": NaN, "conditions": []}').decode(),
    base64.b64encode(b"[" * 100_000).decode(),
])
def test_malformed_post_policy_is_invalid_policy_document(text: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_post_policy(text)
    assert exc.value.code is ErrorCode.INVALID_POLICY_DOCUMENT
    assert exc.value.status == 400
