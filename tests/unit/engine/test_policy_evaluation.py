"""The policy evaluator (engine/policy) against cases modelled on AWS's documented bucket policy examples and IAM's
policy evaluation logic (issue 21). Each row: a policy (statements), a caller, an action, a resource, a request
context, whether the caller's role allows, and the expected decision with the deciding statement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import anonymous, decide, is_public, parse_policy, root_principal, user_principal
from s4.engine.policy.actions import wildcard_match

B = "doc-bucket"
OBJ = f"arn:aws:s3:::{B}/*"
BKT = f"arn:aws:s3:::{B}"
ACCT = "000000000000"
ANON = anonymous()
ROOT = root_principal(canonical_id="s4")
MARY = user_principal("mary", "uid-mary", "Writer")
CARLOS = user_principal("carlos", "uid-carlos", "Reader")


def doc(*statements: dict[str, Any], version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def allow(action: Any, resource: Any = OBJ, principal: Any = "*", sid: str = "", **extra: Any) -> dict[str, Any]:
    st = {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": resource, **extra}
    return {"Sid": sid, **st} if sid else st


def deny(action: Any, resource: Any = OBJ, principal: Any = "*", sid: str = "", **extra: Any) -> dict[str, Any]:
    return {**allow(action, resource, principal, sid, **extra), "Effect": "Deny"}


NOT_MARY = {"Sid": "OnlyMary", "Effect": "Deny", "NotPrincipal": {"AWS": f"arn:aws:iam::{ACCT}:user/mary"},
            "Action": "s3:*", "Resource": [BKT, OBJ]}

# (id, policy text or None, principal, action, key ("" = the bucket), context, role allows, allowed, reason, sid)
CASES: list[tuple[Any, ...]] = [
    # Evaluation logic: implicit deny, role allow, explicit deny over any allow.
    ("no policy, no role: implicit deny", None, ANON, "s3:GetObject", "k", {}, False, False, "no allow", ""),
    ("no policy, role allows", None, MARY, "s3:PutObject", "k", {}, True, True, "role allow", ""),
    ("explicit deny beats the role", doc(deny("s3:DeleteObject", principal={"AWS": f"arn:aws:iam::{ACCT}:user/mary"},
                                              sid="NoDelete")),
     MARY, "s3:DeleteObject", "k", {}, True, False, "explicit deny", "NoDelete"),
    ("explicit deny beats an allow in the same policy",
     doc(allow("s3:*", sid="All"), deny("s3:GetObject", sid="NotThis")), ANON, "s3:GetObject", "k", {}, False,
     False, "explicit deny", "NotThis"),
    ("a deny for someone else leaves the role's allow",
     doc(deny("s3:*", principal={"AWS": f"arn:aws:iam::{ACCT}:user/carlos"})), MARY, "s3:DeleteObject", "k", {},
     True, True, "role allow", ""),
    # Granting read-only permission to anonymous users.
    ("public read: anonymous GetObject", doc(allow("s3:GetObject", sid="PublicRead")), ANON, "s3:GetObject",
     "photo.jpg", {}, False, True, "policy allow", "PublicRead"),
    ("public read does not allow PutObject", doc(allow("s3:GetObject")), ANON, "s3:PutObject", "photo.jpg", {},
     False, False, "no allow", ""),
    ("public read of objects does not list the bucket", doc(allow("s3:GetObject")), ANON, "s3:ListBucket", "", {},
     False, False, "no allow", ""),
    ("{'AWS': '*'} also matches anonymous", doc(allow("s3:GetObject", principal={"AWS": "*"})), ANON,
     "s3:GetObject", "k", {}, False, True, "policy allow", ""),
    # Principals: account id, root ARN, user ARN.
    ("account id matches its users", doc(allow("s3:PutObject", principal={"AWS": ACCT})), CARLOS, "s3:PutObject",
     "k", {}, False, True, "policy allow", ""),
    ("account root ARN matches its users", doc(allow("s3:PutObject", principal={"AWS": f"arn:aws:iam::{ACCT}:root"})),
     CARLOS, "s3:PutObject", "k", {}, False, True, "policy allow", ""),
    ("an account principal never matches anonymous", doc(allow("s3:GetObject", principal={"AWS": ACCT})), ANON,
     "s3:GetObject", "k", {}, False, False, "no allow", ""),
    ("another account does not match", doc(allow("s3:GetObject", principal={"AWS": "111122223333"})), CARLOS,
     "s3:PutObject", "k", {}, False, False, "no allow", ""),
    ("a user ARN matches that user only",
     doc(allow("s3:PutObject", principal={"AWS": [f"arn:aws:iam::{ACCT}:user/mary"]})), CARLOS, "s3:PutObject",
     "k", {}, False, False, "no allow", ""),
    ("canonical user id", doc(allow("s3:GetObject", principal={"CanonicalUser": "s4"})), ROOT, "s3:GetObject", "k",
     {}, False, True, "policy allow", ""),
    ("NotPrincipal deny spares the named user",
     doc(NOT_MARY), MARY, "s3:GetObject", "k", {}, True, True, "role allow", ""),
    ("NotPrincipal deny hits everyone else",
     doc(NOT_MARY), CARLOS, "s3:GetObject", "k", {}, True, False, "explicit deny", "OnlyMary"),
    # Actions: wildcards, case, NotAction.
    ("s3:Get* matches GetObjectTagging", doc(allow("s3:Get*")), ANON, "s3:GetObjectTagging", "k", {}, False, True,
     "policy allow", ""),
    ("action names ignore case", doc(allow("S3:getobject")), ANON, "s3:GetObject", "k", {}, False, True,
     "policy allow", ""),
    ("s3:?etObject matches one character", doc(allow("s3:?etObject")), ANON, "s3:GetObject", "k", {}, False, True,
     "policy allow", ""),
    ("NotAction deny: everything but reads",
     doc({"Sid": "ReadOnly", "Effect": "Deny", "Principal": "*", "NotAction": ["s3:Get*", "s3:List*"],
          "Resource": [BKT, OBJ]}), MARY, "s3:PutObject", "k", {}, True, False, "explicit deny", "ReadOnly"),
    ("NotAction deny leaves the reads", doc({"Effect": "Deny", "Principal": "*", "NotAction": "s3:Get*",
                                             "Resource": OBJ}),
     MARY, "s3:GetObject", "k", {}, True, True, "role allow", ""),
    # Resources: prefixes, wildcards, NotResource, case.
    ("a prefix resource", doc(allow("s3:GetObject", f"arn:aws:s3:::{B}/public/*")), ANON, "s3:GetObject",
     "public/a.txt", {}, False, True, "policy allow", ""),
    ("outside the prefix", doc(allow("s3:GetObject", f"arn:aws:s3:::{B}/public/*")), ANON, "s3:GetObject",
     "private/a.txt", {}, False, False, "no allow", ""),
    ("object resources do not cover the bucket", doc(allow("s3:ListBucket", OBJ)), ANON, "s3:ListBucket", "", {},
     False, False, "no allow", ""),
    ("resource ARNs are case-sensitive", doc(allow("s3:GetObject", f"arn:aws:s3:::{B}/Public/*")), ANON,
     "s3:GetObject", "public/a", {}, False, False, "no allow", ""),
    ("NotResource deny protects all but one prefix",
     doc({"Sid": "OnlyTmp", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
          "NotResource": f"arn:aws:s3:::{B}/tmp/*"}), MARY, "s3:DeleteObject", "data/x", {}, True, False,
     "explicit deny", "OnlyTmp"),
    ("NotResource deny leaves the excepted prefix",
     doc({"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "NotResource": f"arn:aws:s3:::{B}/tmp/*"}),
     MARY, "s3:DeleteObject", "tmp/x", {}, True, True, "role allow", ""),
    # Home folders: ${aws:username} in resources and in s3:prefix conditions.
    ("home folder by policy variable", doc(allow("s3:*", f"arn:aws:s3:::{B}/home/${{aws:username}}/*",
                                                 principal={"AWS": ACCT})),
     CARLOS, "s3:PutObject", "home/carlos/notes.txt", {"aws:username": ["carlos"]}, False, True, "policy allow", ""),
    ("someone else's home folder", doc(allow("s3:*", f"arn:aws:s3:::{B}/home/${{aws:username}}/*",
                                             principal={"AWS": ACCT})),
     CARLOS, "s3:PutObject", "home/mary/notes.txt", {"aws:username": ["carlos"]}, False, False, "no allow", ""),
    ("2008-10-17 policies have no variables",
     doc(allow("s3:*", f"arn:aws:s3:::{B}/home/${{aws:username}}/*"), version="2008-10-17"), CARLOS,
     "s3:PutObject", "home/carlos/x", {"aws:username": ["carlos"]}, False, False, "no allow", ""),
    ("list own home prefix", doc(allow("s3:ListBucket", BKT, principal={"AWS": ACCT},
                                       Condition={"StringLike": {"s3:prefix": ["home/${aws:username}/*"]}})),
     CARLOS, "s3:ListBucket", "", {"s3:prefix": ["home/carlos/2024/"], "aws:username": ["carlos"]}, False, True,
     "policy allow", ""),
    ("listing root and home/ with a delimiter",
     doc(allow("s3:ListBucket", BKT, Condition={"StringEquals": {"s3:prefix": ["", "home/"], "s3:delimiter": "/"}})),
     ANON, "s3:ListBucket", "", {"s3:prefix": ["home/"], "s3:delimiter": ["/"]}, False, True, "policy allow", ""),
    ("listing home/ without the delimiter",
     doc(allow("s3:ListBucket", BKT, Condition={"StringEquals": {"s3:prefix": ["", "home/"], "s3:delimiter": "/"}})),
     ANON, "s3:ListBucket", "", {"s3:prefix": ["home/"]}, False, False, "no allow", ""),
    # Numeric: s3:max-keys.
    ("max-keys within the limit", doc(allow("s3:ListBucket", BKT,
                                            Condition={"NumericLessThanEquals": {"s3:max-keys": "10"}})),
     ANON, "s3:ListBucket", "", {"s3:max-keys": ["7"]}, False, True, "policy allow", ""),
    ("max-keys over the limit", doc(allow("s3:ListBucket", BKT,
                                          Condition={"NumericLessThanEquals": {"s3:max-keys": "10"}})),
     ANON, "s3:ListBucket", "", {"s3:max-keys": ["1000"]}, False, False, "no allow", ""),
    ("max-keys absent fails a positive numeric condition",
     doc(allow("s3:ListBucket", BKT, Condition={"NumericLessThanEquals": {"s3:max-keys": "10"}})), ANON,
     "s3:ListBucket", "", {}, False, False, "no allow", ""),
    # Cross-account uploads must give the bucket owner full control (s3:x-amz-acl).
    ("upload with bucket-owner-full-control", doc(allow("s3:PutObject", principal={"AWS": ACCT},
                                                        Condition={"StringEquals": {
                                                            "s3:x-amz-acl": "bucket-owner-full-control"}})),
     CARLOS, "s3:PutObject", "k", {"s3:x-amz-acl": ["bucket-owner-full-control"]}, False, True, "policy allow", ""),
    ("upload without the acl header", doc(allow("s3:PutObject", principal={"AWS": ACCT},
                                                Condition={"StringEquals": {
                                                    "s3:x-amz-acl": "bucket-owner-full-control"}})),
     CARLOS, "s3:PutObject", "k", {}, False, False, "no allow", ""),
    # Requiring HTTPS: deny aws:SecureTransport false.
    ("plain HTTP denied", doc(deny("s3:*", [BKT, OBJ], sid="TLSOnly",
                                   Condition={"Bool": {"aws:SecureTransport": "false"}})),
     MARY, "s3:GetObject", "k", {"aws:securetransport": ["false"]}, True, False, "explicit deny", "TLSOnly"),
    ("HTTPS passes", doc(deny("s3:*", [BKT, OBJ], Condition={"Bool": {"aws:SecureTransport": False}})),
     MARY, "s3:GetObject", "k", {"aws:securetransport": ["true"]}, True, True, "role allow", ""),
    # Source addresses (IPv4 and IPv6).
    ("deny outside the office network", doc(deny("s3:*", [BKT, OBJ], sid="Office",
                                                  Condition={"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24",
                                                                                               "2001:db8::/32"]}})),
     MARY, "s3:GetObject", "k", {"aws:sourceip": ["198.51.100.7"]}, True, False, "explicit deny", "Office"),
    ("inside the office network (IPv6)", doc(deny("s3:*", [BKT, OBJ],
                                                  Condition={"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24",
                                                                                               "2001:db8::/32"]}})),
     MARY, "s3:GetObject", "k", {"aws:sourceip": ["2001:db8::5"]}, True, True, "role allow", ""),
    ("allow from a range", doc(allow("s3:GetObject", Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/30"}})),
     ANON, "s3:GetObject", "k", {"aws:sourceip": ["127.0.0.2"]}, False, True, "policy allow", ""),
    # Object tags.
    ("existing tag allows", doc(allow("s3:GetObject", principal={"AWS": ACCT},
                                      Condition={"StringEquals": {"s3:ExistingObjectTag/environment": "production"}})),
     CARLOS, "s3:GetObject", "k", {"s3:existingobjecttag/environment": ["production"]}, False, True, "policy allow",
     ""),
    ("existing tag with another value", doc(allow("s3:GetObject", principal={"AWS": ACCT},
                                                  Condition={"StringEquals": {
                                                      "s3:ExistingObjectTag/environment": "production"}})),
     CARLOS, "s3:GetObject", "k", {"s3:existingobjecttag/environment": ["test"]}, False, False, "no allow", ""),
    ("request tag keys limited", doc(allow("s3:PutObject", principal={"AWS": ACCT}, Condition={
        "ForAllValues:StringLike": {"s3:RequestObjectTagKeys": ["Owner", "CreationDate"]}})),
     CARLOS, "s3:PutObject", "k", {"s3:requestobjecttagkeys": ["Owner", "Project"]}, False, False, "no allow", ""),
    ("request tag keys within the set", doc(allow("s3:PutObject", principal={"AWS": ACCT}, Condition={
        "ForAllValues:StringLike": {"s3:RequestObjectTagKeys": ["Owner", "CreationDate"]}})),
     CARLOS, "s3:PutObject", "k", {"s3:requestobjecttagkeys": ["Owner"]}, False, True, "policy allow", ""),
    ("ForAnyValue needs one", doc(allow("s3:PutObject", Condition={
        "ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": ["Project"]}})),
     ANON, "s3:PutObject", "k", {"s3:requestobjecttagkeys": ["Owner", "Project"]}, False, True, "policy allow", ""),
    ("ForAnyValue with the key absent", doc(allow("s3:PutObject", Condition={
        "ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": ["Project"]}})),
     ANON, "s3:PutObject", "k", {}, False, False, "no allow", ""),
    # Null: refuse uploads that do not ask for encryption.
    ("Null: header missing is denied", doc(deny("s3:PutObject", sid="Encrypt", Condition={
        "Null": {"s3:x-amz-server-side-encryption": "true"}})),
     MARY, "s3:PutObject", "k", {}, True, False, "explicit deny", "Encrypt"),
    ("Null: header present passes", doc(deny("s3:PutObject", Condition={
        "Null": {"s3:x-amz-server-side-encryption": "true"}})),
     MARY, "s3:PutObject", "k", {"s3:x-amz-server-side-encryption": ["AES256"]}, True, True, "role allow", ""),
    # Negated operators with the key absent hold (IAM: no value matches), IfExists, IgnoreCase.
    ("StringNotEquals with the key absent holds", doc(deny("s3:PutObject", sid="NeedsClass", Condition={
        "StringNotEquals": {"s3:x-amz-storage-class": "STANDARD"}})),
     MARY, "s3:PutObject", "k", {}, True, False, "explicit deny", "NeedsClass"),
    ("StringNotEquals with the expected value", doc(deny("s3:PutObject", Condition={
        "StringNotEquals": {"s3:x-amz-storage-class": "STANDARD"}})),
     MARY, "s3:PutObject", "k", {"s3:x-amz-storage-class": ["STANDARD"]}, True, True, "role allow", ""),
    ("...IfExists holds when the key is absent", doc(allow("s3:PutObject", Condition={
        "StringEqualsIfExists": {"s3:x-amz-storage-class": "STANDARD"}})),
     ANON, "s3:PutObject", "k", {}, False, True, "policy allow", ""),
    ("...IfExists compares a present key", doc(allow("s3:PutObject", Condition={
        "StringEqualsIfExists": {"s3:x-amz-storage-class": "STANDARD"}})),
     ANON, "s3:PutObject", "k", {"s3:x-amz-storage-class": ["GLACIER"]}, False, False, "no allow", ""),
    ("StringLikeIfExists on a referer", doc(allow("s3:GetObject", Condition={
        "StringLikeIfExists": {"aws:Referer": "https://www.example.com/*"}})),
     ANON, "s3:GetObject", "k", {"aws:referer": ["https://www.example.com/page"]}, False, True, "policy allow", ""),
    ("StringLike on another referer", doc(allow("s3:GetObject", Condition={
        "StringLike": {"aws:Referer": "https://www.example.com/*"}})),
     ANON, "s3:GetObject", "k", {"aws:referer": ["https://evil.example.net/"]}, False, False, "no allow", ""),
    ("StringEqualsIgnoreCase", doc(allow("s3:PutObject", Condition={
        "StringEqualsIgnoreCase": {"s3:x-amz-metadata-directive": "copy"}})),
     ANON, "s3:PutObject", "k", {"s3:x-amz-metadata-directive": ["COPY"]}, False, True, "policy allow", ""),
    ("StringNotLike", doc(deny("s3:GetObject", sid="Agents",
                               Condition={"StringNotLike": {"aws:UserAgent": "Boto3/*"}})),
     MARY, "s3:GetObject", "k", {"aws:useragent": ["curl/8"]}, True, False, "explicit deny", "Agents"),
    # Dates: a time window.
    ("inside the window", doc(allow("s3:GetObject", Condition={
        "DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"},
        "DateLessThan": {"aws:CurrentTime": "2026-12-31T23:59:59Z"}})),
     ANON, "s3:GetObject", "k", {"aws:currenttime": ["2026-06-01T12:00:00Z"]}, False, True, "policy allow", ""),
    ("after the window", doc(allow("s3:GetObject", Condition={
        "DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"},
        "DateLessThan": {"aws:CurrentTime": "2026-12-31T23:59:59Z"}})),
     ANON, "s3:GetObject", "k", {"aws:currenttime": ["2027-01-02T00:00:00Z"]}, False, False, "no allow", ""),
    ("epoch seconds compare with ISO dates", doc(allow("s3:GetObject", Condition={
        "DateLessThanEquals": {"aws:EpochTime": "2026-01-01T00:00:00Z"}})),
     ANON, "s3:GetObject", "k", {"aws:epochtime": ["1767225599"]}, False, True, "policy allow", ""),
    # Principal keys.
    ("aws:userid condition", doc(deny("s3:*", [BKT, OBJ], sid="NotCarlos", Condition={
        "StringEquals": {"aws:userid": "uid-carlos"}})),
     CARLOS, "s3:GetObject", "k", {"aws:userid": ["uid-carlos"]}, True, False, "explicit deny", "NotCarlos"),
]


@pytest.mark.parametrize(("text", "who", "action", "key", "context", "role", "allowed", "reason", "sid"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_documented_policy_cases(text: str | None, who: Any, action: str, key: str, context: dict[str, list[str]],
                                 role: bool, allowed: bool, reason: str, sid: str) -> None:
    policy = parse_policy(text, B) if text is not None else None
    resource = f"arn:aws:s3:::{B}/{key}" if key else BKT
    decision = decide(policy, who, action, resource, context.get, role)
    assert (decision.allowed, decision.reason, decision.sid) == (allowed, reason, sid)


@pytest.mark.parametrize(("statement", "message"), [
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}, "Missing required field Resource"),
    ({"Principal": "*", "Action": "s3:GetObject", "Resource": OBJ}, "Missing required field Effect"),
    ({"Effect": "Permit", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJ}, "Invalid effect: Permit"),
    ({"Effect": "Allow", "Principal": "*", "Resource": OBJ}, "Missing required field Action"),
    ({"Effect": "Allow", "Principal": {"AWS": "mary"}, "Action": "s3:GetObject", "Resource": OBJ},
     "Invalid principal in policy"),
    ({"Effect": "Allow", "Principal": {"Nobody": "x"}, "Action": "s3:GetObject", "Resource": OBJ},
     "Invalid principal in policy"),
    ({"Effect": "Allow", "Principal": "*", "Action": "iam:CreateUser", "Resource": OBJ}, "Policy has invalid action"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"},
     "Policy has invalid resource"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:iam::1:user/x"},
     "Policy has invalid resource"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJ,
      "Condition": {"StringEqualz": {"s3:prefix": "a"}}}, "Invalid Condition type : StringEqualz"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJ,
      "Condition": {"StringEquals": {"s3:nonsense": "a"}}}, "Policy has an invalid condition key"),
    ({"Effect": "Allow", "NotPrincipal": {"AWS": "*"}, "Action": "s3:GetObject", "Resource": OBJ},
     "NotPrincipal is only supported with Effect Deny"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJ, "Extra": 1},
     "Unknown field Extra"),
])
def test_malformed_statements(statement: dict[str, Any], message: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_policy(doc(statement), B)
    assert exc.value.code is ErrorCode.MALFORMED_POLICY and exc.value.message == message


def test_malformed_documents() -> None:
    for text, message in [("", "Policies must be valid JSON and the first byte must be '{'"),
                          ("[1]", "Policies must be valid JSON and the first byte must be '{'"),
                          ('{"Statement": []}', "Could not parse the policy: Statement is empty!"),
                          ('{"Version": "2020-01-01", "Statement": []}',
                           "The policy must contain a valid version string"),
                          ("{" + " " * 21000 + "}", "Policies must be less than 20 KB")]:
        with pytest.raises(S3Error) as exc:
            parse_policy(text.encode(), B)
        assert exc.value.code is ErrorCode.MALFORMED_POLICY and exc.value.message == message, text[:40]


def test_wildcard_bucket_resources_are_accepted() -> None:
    """A policy about "every bucket" names this one too (ceph s3-tests put such a policy on two buckets)."""
    policy = parse_policy(doc(allow("s3:ListBucket", ["arn:aws:s3:::*", "arn:aws:s3:::*/*"])), B)
    assert decide(policy, ANON, "s3:ListBucket", BKT, {}.get, False).allowed


def test_policy_status() -> None:
    assert is_public(parse_policy(doc(allow("s3:GetObject")), B))
    assert not is_public(parse_policy(doc(deny("s3:GetObject")), B))
    assert not is_public(parse_policy(doc(allow("s3:GetObject", principal={"AWS": ACCT})), B))
    pinned = allow("s3:GetObject", Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}})
    assert not is_public(parse_policy(doc(pinned), B))
    everywhere = allow("s3:GetObject", Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}})
    assert is_public(parse_policy(doc(everywhere), B))


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*", "", True), ("a*", "a", True), ("a*c", "abc", True), ("a*c", "abd", False), ("a?c", "abc", True),
    ("a?c", "ac", False), ("*.txt", "x/y.txt", True), ("**", "q", True), ("a*b*c", "aXbYbZc", True),
    ("a*b*c", "aXbYbZ", False), ("", "", True), ("", "a", False), ("?", "", False), ("*a", "ba", True),
])
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


def test_wildcard_match_is_not_exponential() -> None:
    """A regex built from ``*a*a*...*b`` backtracks exponentially on a long run of ``a``; the matcher must not
    (a bucket's users write its policy, and every request to the bucket runs the match). Bounded by steps, not by
    the clock: the two-pointer loop makes at most len(pattern) * len(value) moves."""
    pattern, value = "*a" * 40 + "*b", "a" * 1000
    assert wildcard_match(pattern, value) is False
    policy = parse_policy(doc(allow("s3:GetObject", f"arn:aws:s3:::{B}/{pattern}")), B)
    assert not decide(policy, ANON, "s3:GetObject", f"arn:aws:s3:::{B}/{value}", {}.get, False).allowed
