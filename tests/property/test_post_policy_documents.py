"""POST object policy documents (hypothesis, issue 21): whatever a form's policy field holds, parsing answers
InvalidPolicyDocument (400) or accepts, never anything else; an accepted policy checks any form with AccessDenied
(403) or lets it through, never anything else; and a policy naming each field of a form exactly allows exactly that
form (a changed value, or a field it does not name, is refused)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4.api.s3.post_policy import parse_post_policy
from s4.engine.errors import ErrorCode, S3Error

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0

names = st.sampled_from(["bucket", "key", "$key", "$Content-Type", "$x-amz-meta-a", "acl", "$bucket", "$", "",
                         "success_action_status", "$tagging", "x-amz-meta-a", "Content-Type"])
scalars = st.one_of(names, st.text(max_size=6), st.integers(-3, 2**70), st.floats(), st.booleans(), st.none())
operators = st.sampled_from(["eq", "EQ", "starts-with", "Starts-With", "content-length-range", "ends-with", ""])
list_conditions = st.lists(st.one_of(operators, scalars), max_size=4).map(list) | st.tuples(
    operators, names, scalars).map(list)
conditions = st.one_of(list_conditions, st.dictionaries(names, scalars, max_size=3), scalars)
expirations = st.one_of(st.sampled_from(["2099-12-30T12:00:00.000Z", "2020-01-01T00:00:00Z", "2099-13-01T00:00:00Z",
                                         "2099-12-30 12:00:00", ""]), scalars)
documents = st.fixed_dictionaries({}, optional={"expiration": expirations,
                                                "conditions": st.one_of(st.lists(conditions, max_size=5), scalars),
                                                "Other": scalars})
fields = st.dictionaries(st.sampled_from(["bucket", "key", "content-type", "x-amz-meta-a", "acl", "tagging",
                                          "x-ignore-z", "policy", "file"]), st.text(max_size=6), max_size=6)


def encoded(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


@SETTINGS
@given(st.one_of(documents.map(encoded), st.text(max_size=40), st.binary(max_size=40).map(
    lambda b: base64.b64encode(b).decode())), fields)
def test_post_policy_is_accepted_or_invalid_and_checks_only_deny(text: str, form: dict[str, str]) -> None:
    try:
        parsed = parse_post_policy(text)
    except S3Error as exc:
        assert exc.code is ErrorCode.INVALID_POLICY_DOCUMENT and exc.status == 400
        return
    try:
        parsed.check(form, NOW)
    except S3Error as exc:
        assert exc.code is ErrorCode.ACCESS_DENIED and exc.message.startswith("Invalid according to Policy: ")


@SETTINGS
@given(fields.filter(bool), st.data())
def test_post_policy_naming_each_field_allows_exactly_that_form(form: dict[str, str], data: st.DataObject) -> None:
    style = data.draw(st.sampled_from(["exact", "eq"]))
    conds = [{name: value} if style == "exact" else ["eq", f"${name}", value] for name, value in form.items()]
    parsed = parse_post_policy(encoded({"expiration": "2099-12-30T12:00:00Z", "conditions": conds}))
    parsed.check(form, NOW)
    name = data.draw(st.sampled_from(sorted(form)))
    changed = {**form, name: form[name] + data.draw(st.text(min_size=1, max_size=3))}
    try:
        parsed.check(changed, NOW)
        raise AssertionError("a changed value passed an eq condition")
    except S3Error as exc:
        assert exc.code is ErrorCode.ACCESS_DENIED
    extra = {**form, "x-amz-meta-unnamed": "1"}
    try:
        parsed.check(extra, NOW)
        raise AssertionError("a field no condition names passed")
    except S3Error as exc:
        assert exc.code is ErrorCode.ACCESS_DENIED
