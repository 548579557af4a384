"""Bucket policy documents (hypothesis, issue 21): whatever a client sends, PutBucketPolicy's validation answers
MalformedPolicy or accepts, never anything else; the evaluator never raises on an accepted policy, whatever the
request context holds; and an explicit Deny always wins over an Allow."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import anonymous, decide, is_public, parse_policy, root_principal, user_principal

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
BUCKET = "prop-bucket"

# Pieces that are valid, nearly valid or nonsense, so generated documents reach every branch of the validator.
words = st.sampled_from(["*", "s3:GetObject", "s3:Get*", "s3:?utObject", "S3:listbucket", "s3:Fly", "iam:*", "",
                         "arn:aws:s3:::prop-bucket", "arn:aws:s3:::prop-bucket/*", "arn:aws:s3:::*/a/*",
                         "arn:aws:s3:::other/*", "000000000000", "arn:aws:iam::000000000000:root",
                         "arn:aws:iam::000000000000:user/mary", "127.0.0.0/8", "::1/128", "not-an-ip", "true",
                         "2026-01-01T00:00:00Z", "12", "${aws:username}", "${*}", "${nope", "home/${aws:username}/*"])
scalars = st.one_of(words, st.text(max_size=8), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(words, scalars, max_size=2))
operators = st.sampled_from(["StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike",
                             "StringNotLike", "NumericLessThan", "NumericEquals", "NumericGreaterThanEquals",
                             "DateLessThan", "DateGreaterThan", "Bool", "IpAddress", "NotIpAddress", "Null",
                             "ArnLike", "StringLikeIfExists", "ForAnyValue:StringEquals", "ForAllValues:StringLike",
                             "ForAllValues:NumericLessThan", "NullIfExists", "Bogus", "ForSome:StringEquals"])
keys = st.sampled_from(["aws:SourceIp", "aws:username", "aws:CurrentTime", "aws:SecureTransport", "s3:prefix",
                        "s3:max-keys", "s3:x-amz-acl", "s3:ExistingObjectTag/env", "s3:RequestObjectTagKeys",
                        "s3:unknown", "ec2:Region", "aws:"])
conditions = st.dictionaries(operators, st.one_of(st.dictionaries(keys, values, max_size=3), values), max_size=3)
principals = st.one_of(st.just("*"), words, st.dictionaries(st.sampled_from(["AWS", "CanonicalUser", "Service",
                                                                             "Bad"]), values, max_size=2), values)
statement = st.fixed_dictionaries(
    {}, optional={"Sid": st.one_of(words, st.integers()), "Effect": st.sampled_from(["Allow", "Deny", "allow", 1]),
                  "Principal": principals, "NotPrincipal": principals, "Action": values, "NotAction": values,
                  "Resource": values, "NotResource": values, "Condition": st.one_of(conditions, values),
                  "Other": scalars})
documents = st.fixed_dictionaries(
    {}, optional={"Version": st.sampled_from(["2012-10-17", "2008-10-17", "2020-01-01", 1]),
                  "Id": scalars, "Statement": st.one_of(statement, st.lists(statement, max_size=4), values),
                  "Extra": scalars})
# Valid documents (so the evaluator is exercised on what PutBucketPolicy accepts) and near misses of them.
good_principal = st.one_of(st.just("*"), st.fixed_dictionaries({"AWS": st.one_of(st.sampled_from(
    ["*", "000000000000", "arn:aws:iam::000000000000:root", "arn:aws:iam::000000000000:user/mary"]), st.lists(
    st.sampled_from(["000000000000", "arn:aws:iam::000000000000:user/carlos", "111122223333"]), min_size=1))}))
good_action = st.sampled_from(["*", "s3:*", "s3:GetObject", "s3:Get*", "s3:?utObject", "S3:listbucket",
                               "s3:DeleteObject"])
good_resource = st.sampled_from(["*", "arn:aws:s3:::prop-bucket", "arn:aws:s3:::prop-bucket/*",
                                 "arn:aws:s3:::*/a/*", "arn:aws:s3:::prop-bucket/home/${aws:username}/*",
                                 "arn:aws:s3:::prop-?ucket/k"])
good_value = st.one_of(words, st.text(max_size=6), st.integers(-5, 5), st.booleans())
good_conditions = st.dictionaries(
    st.sampled_from(["StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike", "StringNotLike",
                     "NumericLessThan", "NumericEquals", "DateLessThan", "DateGreaterThanEquals", "Bool", "IpAddress",
                     "NotIpAddress", "Null", "ArnLike", "StringLikeIfExists", "ForAnyValue:StringEquals",
                     "ForAllValues:StringLike", "NumericNotEqualsIfExists"]),
    st.dictionaries(st.sampled_from(["aws:SourceIp", "aws:username", "aws:CurrentTime", "aws:EpochTime",
                                     "aws:SecureTransport", "s3:prefix", "s3:max-keys", "s3:x-amz-acl",
                                     "s3:ExistingObjectTag/env", "s3:RequestObjectTagKeys"]),
                    st.one_of(good_value, st.lists(good_value, min_size=1, max_size=3)), min_size=1, max_size=2),
    max_size=2)


@st.composite
def good_statement(draw: Any) -> dict[str, Any]:
    effect = draw(st.sampled_from(["Allow", "Deny"]))
    out: dict[str, Any] = {"Effect": effect}
    use_not = effect == "Deny" and draw(st.booleans())
    out["NotPrincipal" if use_not else "Principal"] = draw(good_principal)
    out[draw(st.sampled_from(["Action", "NotAction"]))] = draw(st.one_of(good_action, st.lists(good_action,
                                                                                                min_size=1)))
    out[draw(st.sampled_from(["Resource", "NotResource"]))] = draw(st.one_of(good_resource, st.lists(
        good_resource, min_size=1)))
    cond = draw(good_conditions)
    if cond:
        out["Condition"] = cond
    return out


good_documents = st.builds(lambda version, statements: {"Version": version, "Statement": statements},
                           st.sampled_from(["2012-10-17", "2008-10-17"]),
                           st.lists(good_statement(), min_size=1, max_size=4))
raw_text = st.one_of(documents.map(json.dumps), good_documents.map(json.dumps), st.text(max_size=200),
                     st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                     st.integers(1, 4000).map(lambda n: "[" * n), st.integers(1, 4000).map(lambda n: "{\"a\":" * n))
who = st.sampled_from([anonymous(), root_principal(), user_principal("mary", "uid-1", "Writer"),
                       user_principal("carlos", "uid-2", "Reader")])
context = st.dictionaries(st.sampled_from(["aws:sourceip", "aws:username", "aws:currenttime", "aws:securetransport",
                                           "s3:prefix", "s3:max-keys", "s3:x-amz-acl", "s3:existingobjecttag/env",
                                           "s3:requestobjecttagkeys", "aws:epochtime"]),
                          st.lists(st.one_of(words, st.text(max_size=10)), max_size=3), max_size=6)


def _parse(text: str | bytes) -> Any:
    try:
        return parse_policy(text, BUCKET)
    except S3Error as exc:
        assert exc.code is ErrorCode.MALFORMED_POLICY and exc.status == 400 and exc.message
        return None


@SETTINGS
@given(raw_text)
def test_any_document_is_accepted_or_malformed_policy(text: str) -> None:
    _parse(text)
    _parse(text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(good_documents, who, st.sampled_from(["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"]),
       st.sampled_from(["", "k", "home/mary/x", "a/b"]), context, st.booleans())
def test_evaluation_never_raises(doc: dict[str, Any], caller: Any, action: str, key: str,
                                 ctx: dict[str, list[str]], role: bool) -> None:
    policy = _parse(json.dumps(doc))
    assert policy is not None, doc  # the strategy builds only documents PutBucketPolicy accepts
    resource = f"arn:aws:s3:::{BUCKET}/{key}" if key else f"arn:aws:s3:::{BUCKET}"
    decision = decide(policy, caller, action, resource, ctx.get, role)
    assert decision.reason in ("explicit deny", "policy allow", "role allow", "no allow")
    is_public(policy)
    # Adding a Deny for everything in front can only take the allow away (explicit deny wins).
    denied = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                             "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"]}, *policy_statements(doc)]}
    strict = _parse(json.dumps(denied))
    assert strict is not None
    assert not decide(strict, caller, action, resource, ctx.get, role).allowed


def policy_statements(doc: dict[str, Any]) -> list[Any]:
    return list(doc["Statement"])
