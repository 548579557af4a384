"""A bucket policy document: parsed and validated once, as AWS validates PutBucketPolicy.

Every refusal is ``S3Error(MalformedPolicy)`` (400) with AWS's message where AWS has one; nothing in a document
can raise anything else (tests/property/test_policy_documents.py). The stored form is the text the client sent
(GetBucketPolicy returns it unchanged); evaluation uses the parsed ``Policy``, cached by text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import ErrorCode, S3Error
from .actions import valid_action, wildcard_match
from .conditions import Condition, context_key, split_operator

MAX_POLICY_BYTES = 20 * 1024  # AWS's bucket policy size limit
VERSIONS = ("2012-10-17", "2008-10-17")
TOP_FIELDS = frozenset({"Version", "Id", "Statement"})
STATEMENT_FIELDS = frozenset({"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
                              "NotResource", "Condition"})
PRINCIPAL_TYPES = frozenset({"AWS", "CanonicalUser", "Service", "Federated"})
ACCOUNT_RE = re.compile(r"^[0-9]{12}$")
PRINCIPAL_ARN_RE = re.compile(r"^arn:aws:(iam|sts)::[^:/*?]+:(root|(user|role|assumed-role|federated-user)/.+)$")
S3_ARN_PREFIX = "arn:aws:s3:::"
S3_KEY_PREFIXES = ("s3:existingobjecttag/", "s3:requestobjecttag/")
S3_CONDITION_KEYS = frozenset({
    "s3:prefix", "s3:delimiter", "s3:max-keys", "s3:versionid", "s3:x-amz-acl", "s3:x-amz-content-sha256",
    "s3:x-amz-copy-source", "s3:x-amz-metadata-directive", "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-aws-kms-key-id", "s3:x-amz-server-side-encryption-customer-algorithm",
    "s3:x-amz-storage-class", "s3:x-amz-website-redirect-location", "s3:x-amz-grant-read",
    "s3:x-amz-grant-write", "s3:x-amz-grant-read-acp", "s3:x-amz-grant-write-acp", "s3:x-amz-grant-full-control",
    "s3:requestobjecttagkeys", "s3:existingobjecttagkeys", "s3:signatureversion", "s3:signatureage",
    "s3:authtype", "s3:tlsversion", "s3:locationconstraint", "s3:object-lock-mode",
    "s3:object-lock-retain-until-date", "s3:object-lock-legal-hold", "s3:object-lock-remaining-retention-days",
    "s3:resourceaccount", "s3:objectownership", "s3:x-amz-object-ownership", "s3:accesspointnetworkorigin",
    "s3:dataaccesspointaccount", "s3:dataaccesspointarn", "s3:x-amz-checksum-algorithm",
})


def malformed(message: str) -> S3Error:
    return S3Error(ErrorCode.MALFORMED_POLICY, message)


@dataclass(frozen=True, slots=True)
class Statement:
    sid: str
    effect: str  # "Allow" | "Deny"
    principals: dict[str, tuple[str, ...]] | None  # {"*": ("*",)} for "*"; None when NotPrincipal is used
    not_principals: dict[str, tuple[str, ...]] | None
    actions: tuple[str, ...] | None
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    statements: tuple[Statement, ...]


def _strings(value: Any, field: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings (IAM's shape for Action, Resource and principal lists)."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise malformed(f"Policy has an invalid {field} element")
    return tuple(items)


def _principals(value: Any) -> dict[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, dict) or not value:
        raise malformed("Invalid principal in policy")
    parsed: dict[str, tuple[str, ...]] = {}
    for kind, ids in value.items():
        if kind not in PRINCIPAL_TYPES:
            raise malformed("Invalid principal in policy")
        items = ids if isinstance(ids, list) else [ids]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise malformed("Invalid principal in policy")
        if kind == "AWS":
            for v in items:
                if v != "*" and not ACCOUNT_RE.match(v) and not PRINCIPAL_ARN_RE.match(v):
                    raise malformed("Invalid principal in policy")
        parsed[kind] = tuple(items)
    return parsed


def _resource_ok(resource: str, bucket: str) -> bool:
    """``*`` or an ``arn:aws:s3:::`` ARN whose bucket part (a wildcard pattern) can name this bucket: AWS refuses a
    policy about another bucket."""
    if resource == "*":
        return True
    if not resource.startswith(S3_ARN_PREFIX):
        return False
    bucket_part = resource[len(S3_ARN_PREFIX):].split("/", 1)[0]
    return bool(bucket_part) and wildcard_match(bucket_part, bucket)


def _condition_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise malformed("Policy has an invalid condition value")


def _condition_key_ok(key: str) -> bool:
    lowered = key.lower()
    if lowered.startswith("aws:"):
        return len(lowered) > 4
    if lowered.startswith("s3:"):
        return lowered in S3_CONDITION_KEYS or (lowered.startswith(S3_KEY_PREFIXES) and "/" in key and
                                                 not key.endswith("/"))
    return False


def _conditions(value: Any) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise malformed("Policy has an invalid condition block")
    parsed: list[Condition] = []
    for operator, block in value.items():
        split = split_operator(operator)
        if split is None:
            raise malformed(f"Invalid Condition type : {operator}")
        if not isinstance(block, dict) or not block:
            raise malformed(f"Invalid Condition type : {operator}")
        qualifier, base, if_exists = split
        for key, raw in block.items():
            if not _condition_key_ok(key):
                raise malformed("Policy has an invalid condition key")
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise malformed("Policy has an invalid condition value")
            parsed.append(Condition(operator, base, qualifier, if_exists, context_key(key),
                                    tuple(_condition_value(v) for v in items)))
    return tuple(parsed)


def _statement(raw: Any, bucket: str) -> Statement:
    if not isinstance(raw, dict):
        raise malformed("Policy has an invalid statement")
    for name in raw:
        if name not in STATEMENT_FIELDS:
            raise malformed(f"Unknown field {name}")
    sid = raw.get("Sid", "")
    if not isinstance(sid, str):
        raise malformed("Statement IDs (SID) must be strings")
    effect = raw.get("Effect")
    if effect is None:
        raise malformed("Missing required field Effect")
    if effect not in ("Allow", "Deny"):
        raise malformed(f"Invalid effect: {effect}")
    if ("Principal" in raw) == ("NotPrincipal" in raw):
        raise malformed("Missing required field Principal" if "Principal" not in raw else
                        "Statement has both Principal and NotPrincipal")
    if "NotPrincipal" in raw and effect == "Allow":
        raise malformed("NotPrincipal is only supported with Effect Deny")  # AWS: "Allow with NotPrincipal"
    if ("Action" in raw) == ("NotAction" in raw):
        raise malformed("Missing required field Action" if "Action" not in raw else
                        "Statement has both Action and NotAction")
    if ("Resource" in raw) == ("NotResource" in raw):
        raise malformed("Missing required field Resource" if "Resource" not in raw else
                        "Statement has both Resource and NotResource")
    actions = _strings(raw.get("Action", raw.get("NotAction")), "action")
    if not all(valid_action(a) for a in actions):
        raise malformed("Policy has invalid action")
    resources = _strings(raw.get("Resource", raw.get("NotResource")), "resource")
    if not all(_resource_ok(r, bucket) for r in resources):
        raise malformed("Policy has invalid resource")
    principals = _principals(raw.get("Principal", raw.get("NotPrincipal")))
    conditions = _conditions(raw["Condition"]) if "Condition" in raw else ()
    return Statement(
        sid, effect,
        principals if "Principal" in raw else None, principals if "NotPrincipal" in raw else None,
        actions if "Action" in raw else None, actions if "NotAction" in raw else None,
        resources if "Resource" in raw else None, resources if "NotResource" in raw else None,
        conditions)


def parse_policy(text: str | bytes, bucket: str) -> Policy:
    """Validate a PutBucketPolicy body for ``bucket``; raise MalformedPolicy with the first problem found."""
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise malformed("Policies must be less than 20 KB")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed("This policy contains invalid Json") from exc
    return _parse_cached(text, bucket)


@lru_cache(maxsize=256)
def _parse_cached(text: str, bucket: str) -> Policy:
    """Parsed once per (text, bucket): a stored policy is re-read on every request to its bucket."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise malformed("Policies must be less than 20 KB")
    if not text.lstrip().startswith("{"):
        raise malformed("Policies must be valid JSON and the first byte must be '{'")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise malformed("This policy contains invalid Json") from exc
    if not isinstance(doc, dict):
        raise malformed("This policy contains invalid Json")
    for name in doc:
        if name not in TOP_FIELDS:
            raise malformed(f"Unknown field {name}")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise malformed("The policy must contain a valid version string")
    if "Id" in doc and not isinstance(doc["Id"], str):
        raise malformed("Policy Id must be a string")
    if "Statement" not in doc:
        raise malformed("Missing required field Statement")
    raw = doc["Statement"]
    statements = raw if isinstance(raw, list) else [raw]
    if not statements:
        raise malformed("Could not parse the policy: Statement is empty!")
    # Sids need not be unique: IAM requires it of identity policies, S3 bucket policies do not.
    return Policy(version, tuple(_statement(s, bucket) for s in statements))
