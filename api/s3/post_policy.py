"""POST object policy documents (browser form uploads): parse the form's base64 JSON policy, and match a form's fields
against it. Pure logic: no HTTP, no clock (the caller passes ``now``).

    parse_post_policy(field) -> PostPolicy   InvalidPolicyDocument (400) for anything malformed, nothing else
    PostPolicy.check(fields, now)            AccessDenied "Invalid according to Policy: ..." (403)
    PostPolicy.length_range                  (min, max) of content-length-range, or None

The document (AWS "Creating a POST policy"): ``{"expiration": "2007-12-01T12:00:00.000Z", "conditions": [...]}``;
the two names are case-sensitive and nothing else may appear. A condition is ``{"field": "value"}`` (exact match),
``["eq", "$field", "value"]``, ``["starts-with", "$field", "prefix"]`` or ``["content-length-range", min, max]``.
Operators and field names are case-insensitive, values are not; ``$`` in a value is literal. A field the form
lacks matches as "" (so ``["starts-with", "$tagging", ""]`` allows leaving it out). For ``Content-Type``,
starts-with must hold for each comma-separated value. Every form field must be named by some condition, except
the exempt ones (the signature and policy themselves, ``file``, ``x-ignore-*``) and the ``x-amz-checksum-*`` fields,
which can only make an upload fail. ``bucket`` is always a field (the request's bucket), so a policy must name it.
docs/architecture/access-control.md, "POST object".
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from s4.engine.errors import ErrorCode, S3Error

#: Form fields no condition has to name: the signature and what it signs, the file, and fields the client marks.
EXEMPT_FIELDS = frozenset({"policy", "signature", "awsaccesskeyid", "x-amz-signature", "file"})
EXEMPT_PREFIXES = ("x-ignore-", "x-amz-checksum-")
_EXPIRATION = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z")
_OPERATORS = frozenset({"eq", "starts-with"})


def _invalid(message: str) -> S3Error:
    return S3Error(ErrorCode.INVALID_POLICY_DOCUMENT, f"Invalid Policy: {message}")


def _denied(message: str) -> S3Error:
    return S3Error(ErrorCode.ACCESS_DENIED, f"Invalid according to Policy: {message}")


@dataclass(frozen=True, slots=True)
class Condition:
    """One eq / starts-with condition: ``field`` lower-case without ``$``; ``text`` as written, for the error."""

    operator: str
    field: str
    value: str
    text: str

    def matches(self, value: str) -> bool:
        if self.operator == "eq":
            return value == self.value
        if self.field == "content-type":
            return all(v.strip().startswith(self.value) for v in value.split(","))
        return value.startswith(self.value)


@dataclass(frozen=True, slots=True)
class PostPolicy:
    expiration: float  # epoch seconds
    conditions: tuple[Condition, ...]
    length_range: tuple[int, int] | None

    def check(self, fields: Mapping[str, str], now: float) -> None:
        """``fields``: the form's fields, names lower-case (``bucket`` included). Expiry first, then each
        condition in order, then the fields no condition names."""
        if now > self.expiration:
            raise _denied("Policy expired.")
        for condition in self.conditions:
            if not condition.matches(fields.get(condition.field, "")):
                raise _denied(f"Policy Condition failed: {condition.text}")
        named = {c.field for c in self.conditions}
        for name in fields:
            if name not in named and name not in EXEMPT_FIELDS and not name.startswith(EXEMPT_PREFIXES):
                raise _denied(f"Extra input fields: {name}")


def parse_post_policy(field: str) -> PostPolicy:
    """The policy form field (base64 of a JSON document) as a PostPolicy; InvalidPolicyDocument otherwise."""
    try:
        raw = base64.b64decode("".join(field.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("Invalid Base64 encoding.") from exc
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _invalid("Invalid JSON.") from exc
    if not isinstance(doc, dict):
        raise _invalid("Invalid JSON.")
    for name in doc:
        if name not in ("expiration", "conditions"):
            raise _invalid(f"Unexpected field: {str(name)[:64]}")
    if "expiration" not in doc:
        raise _invalid("Policy missing expiration.")
    if "conditions" not in doc:
        raise _invalid("Policy missing conditions.")
    expiration = _parse_expiration(doc["expiration"])
    if not isinstance(doc["conditions"], list):
        raise _invalid("Policy conditions must be a list.")
    conditions: list[Condition] = []
    length_range: tuple[int, int] | None = None
    for item in doc["conditions"]:
        if isinstance(item, dict):
            conditions.extend(_exact(item))
        elif isinstance(item, list):
            operator = item[0].lower() if item and isinstance(item[0], str) else None
            if operator == "content-length-range":
                low, high = _length_range(item)
                length_range = (low, high) if length_range is None else \
                    (max(low, length_range[0]), min(high, length_range[1]))  # two ranges: both hold
            else:
                conditions.append(_operator(item))
        else:
            raise _invalid(f"Invalid Condition: {_shown(item)}")
    return PostPolicy(expiration, tuple(conditions), length_range)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shown(item: Any) -> str:
    try:
        return json.dumps(item)[:256]
    except (ValueError, RecursionError):  # nested past what the encoder takes: the message needs no detail
        return "[...]"


def _parse_expiration(value: Any) -> float:
    match = _EXPIRATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(f"Invalid 'expiration' value: '{str(value)[:64]}'")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:  # a month 13, a February 30th
        raise _invalid(f"Invalid 'expiration' value: '{value[:64]}'") from exc
    return when.timestamp()


def _exact(item: dict[Any, Any]) -> list[Condition]:
    """``{"field": "value", ...}``: each pair an exact match; an empty object is not a condition."""
    if not item:
        raise _invalid("Invalid Condition: {}")
    found = []
    for name, value in item.items():
        if not isinstance(value, str):
            raise _invalid(f"Invalid Condition: {_shown(item)}")
        found.append(Condition("eq", name.lower(), value, _shown({name: value})))
    return found


def _operator(item: list[Any]) -> Condition:
    """``["eq" | "starts-with", "$field", "value"]``."""
    if len(item) != 3 or not all(isinstance(part, str) for part in item):
        raise _invalid(f"Invalid Condition: {_shown(item)}")
    operator, name, value = item
    if operator.lower() not in _OPERATORS:
        raise _invalid(f"Invalid Condition: unknown operator {_shown(operator)}")
    if not name.startswith("$") or len(name) < 2:
        raise _invalid(f"Invalid Condition: {_shown(item)}")
    return Condition(operator.lower(), name[1:].lower(), value, _shown(item))


def _length_range(item: list[Any]) -> tuple[int, int]:
    """``["content-length-range", min, max]``: two integers (or strings of digits), 0 <= min <= max."""
    if len(item) != 3:
        raise _invalid(f"Invalid Condition: {_shown(item)}")
    bounds = []
    for bound in item[1:]:
        if isinstance(bound, str) and bound.isascii() and bound.isdigit():
            bound = int(bound)
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
            raise _invalid(f"Invalid Condition: {_shown(item)}")
        bounds.append(bound)
    if bounds[0] > bounds[1]:
        raise _invalid(f"Invalid Condition: {_shown(item)}")
    return bounds[0], bounds[1]
