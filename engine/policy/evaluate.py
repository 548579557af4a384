"""The one policy evaluator: does this principal may do this action on this resource, and which statement said so.

Decision order (IAM's evaluation logic for a request inside one account; docs/architecture/access-control.md):

1. a Deny statement that applies -> denied ("explicit deny", naming its Sid);
2. an Allow statement that applies -> allowed;
3. an ACL grant gives the caller the permission the action needs -> allowed ("acl allow", naming the grant);
4. the caller's S4 role allows the operation -> allowed (the role is S4's identity-based policy);
5. otherwise denied ("no allow").

A statement applies when its Principal, Action, Resource and every Condition match. Pure: the request context
comes in as a ``lookup`` function (key -> values or None), so nothing here reads the clock, the views or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from .actions import action_matches, wildcard_match
from .conditions import Values, context_key, holds
from .document import Policy, Statement
from .principals import Principal

Lookup = Callable[[str], Values | None]
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LITERALS = {"*": "*", "?": "?", "$": "$"}
#: Condition keys whose fixed values make a statement for "*" non-public (AWS's "The meaning of public").
_RESTRICTING = frozenset({"aws:sourceip", "aws:sourcearn", "aws:sourcevpc", "aws:sourcevpce", "aws:sourceaccount",
                          "aws:sourceowner", "aws:principalorgid", "aws:principalaccount", "aws:principalarn",
                          "aws:userid", "aws:username", "s3:dataaccesspointarn", "s3:dataaccesspointaccount"})
_FIXING_OPERATORS = frozenset({"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike",
                               "IpAddress"})


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``, and why: "explicit deny" / "policy allow" / "acl allow" / "role allow" / "no allow", with the
    Sid (or, for an ACL, the grant)."""

    allowed: bool
    reason: str
    sid: str = ""

    def describe(self) -> str:
        if self.reason == "acl allow":
            return f"{self.reason} ({self.sid})"
        return f"{self.reason} (statement {self.sid!r})" if self.sid else self.reason


def _substitute(text: str, lookup: Lookup, version: str) -> str | None:
    """Policy variables (``${aws:username}``...) in a Resource or condition value; None when one has no value
    (then nothing matches it). Version 2008-10-17 policies have no variables."""
    if version != "2012-10-17" or "${" not in text:
        return text
    missing = False

    def repl(m: re.Match[str]) -> str:
        nonlocal missing
        name = m.group(1)
        if name in _LITERALS:
            return _LITERALS[name]
        found = lookup(context_key(name))
        if not found:
            missing = True
            return ""
        return found[0]

    out = _VARIABLE.sub(repl, text)
    return None if missing else out


def principal_matches(ids: dict[str, tuple[str, ...]], who: Principal) -> bool:
    """``*`` (everyone, anonymous included), an account id or its root ARN (every principal of that account),
    a user ARN (that user), a canonical user id. Service and federated principals never match an S3 caller."""
    if "*" in ids:
        return True
    for value in ids.get("AWS", ()):
        if value == "*":
            return True
        if who.anonymous:
            continue
        if value == who.account or value == f"arn:aws:iam::{who.account}:root" or value == who.arn:
            return True
    return bool(who.canonical_id) and who.canonical_id in ids.get("CanonicalUser", ())


def _resource_matches(patterns: tuple[str, ...], resource: str, lookup: Lookup, version: str) -> bool:
    for pattern in patterns:
        concrete = _substitute(pattern, lookup, version)
        if concrete is not None and wildcard_match(concrete, resource):
            return True
    return False


def applies(st: Statement, who: Principal, action: str, resource: str, lookup: Lookup, version: str) -> bool:
    if st.principals is not None and not principal_matches(st.principals, who):
        return False
    if st.not_principals is not None and principal_matches(st.not_principals, who):
        return False
    if st.actions is not None and not any(action_matches(p, action) for p in st.actions):
        return False
    if st.not_actions is not None and any(action_matches(p, action) for p in st.not_actions):
        return False
    if st.resources is not None and not _resource_matches(st.resources, resource, lookup, version):
        return False
    if st.not_resources is not None and _resource_matches(st.not_resources, resource, lookup, version):
        return False
    for cond in st.conditions:
        if any("${" in v for v in cond.values):
            cond = replace(cond, values=tuple(v for v in (_substitute(x, lookup, version) for x in cond.values)
                                              if v is not None))
        if not holds(cond, lookup):
            return False
    return True


def decide(policy: Policy | None, who: Principal, action: str, resource: str, lookup: Lookup,
           role_allows: bool, acl_grant: Callable[[], str] | None = None) -> Decision:
    """Explicit deny, then an allow from the policy, then from an ACL grant, then the role; else "no allow".
    ``acl_grant``: the grant allowing the action, described ("" when none), asked only when it could decide."""
    allow: Statement | None = None
    if policy is not None:
        for index, st in enumerate(policy.statements):
            if not applies(st, who, action, resource, lookup, policy.version):
                continue
            if st.effect == "Deny":
                return Decision(False, "explicit deny", st.sid or f"#{index}")
            if allow is None:
                allow = st
    if allow is not None:
        return Decision(True, "policy allow", allow.sid or "")
    if not role_allows and acl_grant is not None:
        grant = acl_grant()
        if grant:
            return Decision(True, "acl allow", grant)
    if role_allows:
        return Decision(True, "role allow", "")
    return Decision(False, "no allow", "")


def _fixes_public(st: Statement) -> bool:
    """A condition pinning the caller to fixed sources (aws:SourceIp = a network...) makes the grant non-public."""
    for cond in st.conditions:
        if cond.key in _RESTRICTING and cond.base in _FIXING_OPERATORS and cond.qualifier != "ForAllValues" \
                and not cond.if_exists and all(v not in ("*", "0.0.0.0/0", "::/0") for v in cond.values):
            return True
    return False


def is_public(policy: Policy) -> bool:
    """GetBucketPolicyStatus: an Allow for everyone (``*`` or ``{"AWS": "*"}``) not pinned by a condition."""
    for st in policy.statements:
        if st.effect != "Allow" or st.principals is None:
            continue
        wildcard = "*" in st.principals or "*" in st.principals.get("AWS", ())
        if wildcard and not _fixes_public(st):
            return True
    return False
