"""Bucket CORS: the <CORSConfiguration> document, its stored form, and S3's rule matching.

Matching follows S3: rules are tried in order and the first one whose AllowedOrigin matches the Origin,
whose AllowedMethod contains the (requested) method, and whose AllowedHeaders cover every requested header
wins. Origins and headers may carry a single ``*`` wildcard; header names compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s4.api.s3.xml_parse import children, int_of, malformed, parse_root, text_of
from s4.api.s3.xml_render import S3_NS, XML_DECL, xml_escape
from s4.engine.errors import ErrorCode, S3Error

CORS_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})
MAX_CORS_RULES = 100


@dataclass(slots=True)
class CorsRule:
    id: str = ""
    allowed_origins: list[str] = field(default_factory=list)
    allowed_methods: list[str] = field(default_factory=list)
    allowed_headers: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=list)
    max_age_seconds: int | None = None


# --- XML --------------------------------------------------------------------------------------------------


def parse_cors(body: bytes) -> list[CorsRule]:
    """Parse and validate a PutBucketCors body (1 to 100 rules, each with an origin and a method)."""
    root = parse_root(body, "CORSConfiguration")
    rules: list[CorsRule] = []
    for name, elem in children(root):
        if name != "CORSRule" or len(rules) >= MAX_CORS_RULES:
            malformed()
        rules.append(_parse_rule(elem))
    if not rules:
        malformed()
    return rules


def _parse_rule(elem: Any) -> CorsRule:
    rule = CorsRule()
    seen_id = False
    for name, child in children(elem):
        if name == "AllowedOrigin":
            rule.allowed_origins.append(text_of(child).strip())
        elif name == "AllowedMethod":
            rule.allowed_methods.append(text_of(child).strip())
        elif name == "AllowedHeader":
            rule.allowed_headers.append(text_of(child).strip())
        elif name == "ExposeHeader":
            rule.expose_headers.append(text_of(child).strip())
        elif name == "MaxAgeSeconds" and rule.max_age_seconds is None:
            rule.max_age_seconds = int_of(child)
        elif name == "ID" and not seen_id:
            seen_id = True
            rule.id = text_of(child)
        else:
            malformed()
    if not rule.allowed_origins or not rule.allowed_methods:
        malformed()
    for method in rule.allowed_methods:
        if method not in CORS_METHODS:
            raise S3Error(ErrorCode.INVALID_REQUEST,
                          f"Found unsupported HTTP method in CORS config. Unsupported method is {method}")
    for kind, values in (("AllowedOrigin", rule.allowed_origins), ("AllowedHeader", rule.allowed_headers)):
        for value in values:
            if value.count("*") > 1:
                raise S3Error(ErrorCode.INVALID_REQUEST,
                              f'{kind} "{value}" can not have more than one wildcard.')
    for value in rule.expose_headers:
        if "*" in value:
            raise S3Error(ErrorCode.INVALID_REQUEST, f'ExposeHeader "{value}" contains wildcard. '
                          "We currently do not support wildcard for ExposeHeader.")
    return rule


def cors_xml(rules: Sequence[CorsRule]) -> bytes:
    """GetBucketCors body."""
    parts = [XML_DECL, f'<CORSConfiguration xmlns="{S3_NS}">']
    append = parts.append
    for rule in rules:
        append("<CORSRule>")
        if rule.id:
            append(f"<ID>{xml_escape(rule.id)}</ID>")
        for tag, values in (("AllowedHeader", rule.allowed_headers), ("AllowedMethod", rule.allowed_methods),
                            ("AllowedOrigin", rule.allowed_origins), ("ExposeHeader", rule.expose_headers)):
            for value in values:
                append(f"<{tag}>{xml_escape(value)}</{tag}>")
        if rule.max_age_seconds is not None:
            append(f"<MaxAgeSeconds>{rule.max_age_seconds}</MaxAgeSeconds>")
        append("</CORSRule>")
    append("</CORSConfiguration>")
    return "".join(parts).encode("utf-8")


# --- storage ----------------------------------------------------------------------------------------------


def cors_to_record(rules: Iterable[CorsRule]) -> list[dict[str, Any]]:
    """Short-keyed plain dicts (msgpack-friendly) so stored config never depends on class layout."""
    out: list[dict[str, Any]] = []
    for rule in rules:
        rec: dict[str, Any] = {"o": list(rule.allowed_origins), "m": list(rule.allowed_methods)}
        if rule.id:
            rec["id"] = rule.id
        if rule.allowed_headers:
            rec["h"] = list(rule.allowed_headers)
        if rule.expose_headers:
            rec["e"] = list(rule.expose_headers)
        if rule.max_age_seconds is not None:
            rec["a"] = rule.max_age_seconds
        out.append(rec)
    return out


def cors_from_record(records: Iterable[dict[str, Any]]) -> list[CorsRule]:
    return [CorsRule(rec.get("id", ""), list(rec.get("o", [])), list(rec.get("m", [])),
                     list(rec.get("h", [])), list(rec.get("e", [])), rec.get("a")) for rec in records]


# --- matching ---------------------------------------------------------------------------------------------


def wildcard_match(pattern: str, value: str) -> bool:
    """Match with at most one ``*`` standing for any run of characters (validated at PUT time)."""
    star = pattern.find("*")
    if star < 0:
        return pattern == value
    prefix, suffix = pattern[:star], pattern[star + 1:]
    return len(value) >= len(prefix) + len(suffix) and value.startswith(prefix) and value.endswith(suffix)


def _header_allowed(rule: CorsRule, header: str) -> bool:
    return any(wildcard_match(pattern.lower(), header) for pattern in rule.allowed_headers)


def match_cors(rules: Sequence[CorsRule], origin: str, method: str,
               request_headers: Sequence[str]) -> CorsRule | None:
    """The first rule allowing this origin, method and every requested header (preflight
    Access-Control-Request-Headers; pass [] for actual requests), or None."""
    wanted = [h.strip().lower() for h in request_headers if h.strip()]
    for rule in rules:
        if method not in rule.allowed_methods:
            continue
        if not any(wildcard_match(pattern, origin) for pattern in rule.allowed_origins):
            continue
        if all(_header_allowed(rule, h) for h in wanted):
            return rule
    return None


def split_header_list(value: str | None) -> list[str]:
    """Access-Control-Request-Headers as a list of names."""
    if not value:
        return []
    return [h.strip() for h in value.split(",") if h.strip()]


def cors_response_headers(rule: CorsRule, origin: str, request_headers: Sequence[str], *,
                          preflight: bool) -> dict[str, str]:
    """The Access-Control-* headers S3 sends for a matched rule. A ``*`` origin rule answers ``*`` without
    credentials; a specific origin is echoed back and credentials are allowed."""
    headers: dict[str, str] = {}
    if "*" in rule.allowed_origins:
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    headers["Vary"] = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
    headers["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
    if preflight:
        wanted = [h.strip().lower() for h in request_headers if h.strip()]
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
        if rule.max_age_seconds is not None:
            headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    if rule.expose_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    return headers
