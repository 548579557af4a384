"""ACL input (hypothesis, issue 21): whatever AccessControlPolicy XML or x-amz-grant-* header a client sends, parsing
answers an S3 error from the ACL family (MalformedACLError, InvalidArgument, UnresolvableGrantByEmailAddress,
AccessDenied for another owner, InvalidRequest) or an ACL that round-trips through its stored record; never
anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.api.s3.acl import GRANT_HEADERS, acl_from_headers, acl_from_xml
from s4.engine.accounts import Account
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy.acl import ALL_USERS, Acl

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
OWNER = "a" * 64
KNOWN = "b" * 64
ALLOWED = {ErrorCode.MALFORMED_ACL, ErrorCode.INVALID_ARGUMENT, ErrorCode.UNRESOLVABLE_GRANT_BY_EMAIL,
           ErrorCode.ACCESS_DENIED, ErrorCode.INVALID_REQUEST}


class FakeEngine:
    """The two lookups the resolver makes: one known account besides the owner, one known email."""

    def account_by_canonical_id(self, canonical: str) -> Account | None:
        return Account("1", "x") if canonical in (OWNER, KNOWN) else None

    def account_by_email(self, email: str) -> Account | None:
        return Account("1", "x") if email.lower() == "known@example.com" else None


def resolver() -> object:
    from s4.api.s3.acl import Resolver
    return Resolver(FakeEngine())  # type: ignore[arg-type]


pieces = st.sampled_from([
    "<AccessControlPolicy>", "</AccessControlPolicy>", "<Owner>", "</Owner>", f"<ID>{OWNER}</ID>",
    f"<ID>{KNOWN}</ID>", "<ID>_foo</ID>", "<AccessControlList>", "</AccessControlList>", "<Grant>", "</Grant>",
    '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">',
    '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">',
    '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="AmazonCustomerByEmail">',
    "<Grantee>", "</Grantee>", f"<URI>{ALL_USERS}</URI>", "<URI>http://example.com/nope</URI>",
    "<EmailAddress>known@example.com</EmailAddress>", "<EmailAddress>who@example.com</EmailAddress>",
    "<Permission>READ</Permission>", "<Permission>FULL_CONTROL</Permission>", "<Permission>FLY</Permission>",
    "<Other/>", "<!-- c -->", "&amp;", "&bogus;", "<", "x"])


@SETTINGS
@given(st.one_of(st.lists(pieces, max_size=24).map("".join), st.text(max_size=64)))
def test_acl_xml_answers_an_acl_error_or_an_acl(text: str) -> None:
    try:
        acl = acl_from_xml(text.encode(), OWNER, resolver())  # type: ignore[arg-type]
    except S3Error as exc:
        assert exc.code in ALLOWED, exc.code
        return
    assert acl.owner == OWNER and Acl.from_record(acl.to_record()) == acl


header_values = st.lists(st.sampled_from([f'id="{KNOWN}"', 'id="_foo"', f'uri="{ALL_USERS}"', 'uri="nope"',
                                          'emailAddress="known@example.com"', 'emailAddress="x@y.z"', ",", " ",
                                          "id=", '"', "garbage"]), max_size=5).map("".join)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*GRANT_HEADERS, "x-amz-acl"]),
                       st.one_of(header_values, st.sampled_from(["private", "public-read", "bogus"])), max_size=3))
def test_grant_headers_answer_an_acl_error_or_an_acl(headers: dict[str, str]) -> None:
    try:
        acl = acl_from_headers(headers, OWNER, OWNER, resolver())  # type: ignore[arg-type]
    except S3Error as exc:
        assert exc.code in ALLOWED, exc.code
        return
    assert (acl is None) == (not headers)
