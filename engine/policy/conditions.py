"""IAM condition operators: names, validation and evaluation against a request context.

A condition block is ``{operator: {key: value or [values]}}``; every operator and every key must hold (AND), and a
key holds when the request's value matches any listed value (OR); a negated operator (``StringNotEquals``...)
holds when it matches none. ``...IfExists`` holds when the key is absent; ``Null`` tests absence itself;
``ForAnyValue:`` / ``ForAllValues:`` compare a multi-valued key's set. A key absent from the request fails a
positive operator and satisfies a negated one, as IAM documents.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .actions import wildcard_match

Values = Sequence[str]

#: base operator -> (compare one request value with one policy value, negated)
_STRING_OPS = ("StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
               "StringLike", "StringNotLike")
_NUMERIC_OPS = ("NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
                "NumericGreaterThan", "NumericGreaterThanEquals")
_DATE_OPS = ("DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
             "DateGreaterThanEquals")
OPERATORS = frozenset(_STRING_OPS + _NUMERIC_OPS + _DATE_OPS + (
    "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike",
    "Null"))
NEGATED = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals",
                     "DateNotEquals", "NotIpAddress", "ArnNotEquals", "ArnNotLike"})
QUALIFIERS = ("ForAnyValue", "ForAllValues")


@dataclass(frozen=True, slots=True)
class Condition:
    """One (operator, key, values) of a statement's Condition block, parsed."""

    operator: str  # as written, for messages
    base: str  # e.g. "StringLike"
    qualifier: str  # "", "ForAnyValue" or "ForAllValues"
    if_exists: bool
    key: str  # normalized (context_key)
    values: tuple[str, ...]


def split_operator(name: str) -> tuple[str, str, bool] | None:
    """(qualifier, base, if_exists) of an operator name, or None when IAM knows no such operator."""
    qualifier = ""
    if ":" in name:
        qualifier, _, name = name.partition(":")
        if qualifier not in QUALIFIERS:
            return None
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base = name[: -len("IfExists")] if if_exists else name
    if base not in OPERATORS or (if_exists and base == "Null"):
        return None
    return qualifier, base, if_exists


def context_key(name: str) -> str:
    """Condition keys compare case-insensitively, except the tag key after ``s3:ExistingObjectTag/`` and the like."""
    head, slash, tail = name.partition("/")
    return head.lower() + slash + tail


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _date(text: str) -> float | None:
    """ISO 8601 (``2026-01-01T00:00:00Z``, a date alone) or epoch seconds, as epoch seconds."""
    number = _number(text)
    if number is not None:
        return number
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _ordered(op: str, left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return False
    if op.endswith("NotEquals") or op.endswith("Equals") and not op.endswith("ThanEquals"):
        return left == right
    if op.endswith("LessThan"):
        return left < right
    if op.endswith("LessThanEquals"):
        return left <= right
    if op.endswith("GreaterThan"):
        return left > right
    return left >= right  # GreaterThanEquals


def _in_network(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip()) in ipaddress.ip_network(network.strip(), strict=False)
    except ValueError:
        return False


def _positive(base: str) -> str:
    """The positive form of a negated operator (its result is then inverted)."""
    return {"NotIpAddress": "IpAddress", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}.get(
        base, base.replace("Not", "", 1))


def _match_one(base: str, actual: str, wanted: str) -> bool:
    """Whether one request value matches one policy value under a positive operator."""
    if base == "StringEquals" or base == "ArnEquals" or base == "BinaryEquals":
        return actual == wanted
    if base == "StringEqualsIgnoreCase":
        return actual.lower() == wanted.lower()
    if base in ("StringLike", "ArnLike"):
        return wildcard_match(wanted, actual)
    if base.startswith("Numeric"):
        return _ordered(base, _number(actual), _number(wanted))
    if base.startswith("Date"):
        return _ordered(base, _date(actual), _date(wanted))
    if base == "Bool":
        return actual.lower() == wanted.lower()
    if base == "IpAddress":
        return _in_network(actual, wanted)
    return False


def holds(cond: Condition, lookup: Callable[[str], Values | None]) -> bool:
    """Whether one condition holds for the request whose values ``lookup`` gives (None: key absent)."""
    actual = lookup(cond.key)
    present = actual is not None and len(actual) > 0
    if cond.base == "Null":  # "true": the key must be absent; "false": present
        return any((v.lower() == "true") != present for v in cond.values)
    if not present:
        if cond.if_exists:
            return True
        if cond.qualifier == "ForAllValues":
            return True  # IAM: an empty set satisfies ForAllValues
        return cond.base in NEGATED and cond.qualifier == ""
    assert actual is not None
    negated = cond.base in NEGATED
    base = _positive(cond.base) if negated else cond.base

    def value_ok(value: str) -> bool:
        hit = any(_match_one(base, value, wanted) for wanted in cond.values)
        return not hit if negated else hit

    if cond.qualifier == "ForAllValues":
        return all(value_ok(v) for v in actual)
    if cond.qualifier == "ForAnyValue" or not negated:
        return any(value_ok(v) for v in actual)
    return all(value_ok(v) for v in actual)  # a negated operator: no request value may match
