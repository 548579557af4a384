"""PutBucketLifecycleConfiguration bodies in, GetBucketLifecycleConfiguration documents out.

Parsing goes through defusedxml (via ``xml_parse.parse_root``); structural problems are MalformedXML and value
problems are InvalidArgument with AWS's own messages, as S3 answers them. The parsed form is the rule record of
``s4.engine.lifecycle`` (what the journal stores), and rendering works from that record alone.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn
from xml.etree.ElementTree import Element

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.lifecycle import DAY_MS

from .xml_parse import children, int_of, malformed, parse_root, text_of
from .xml_render import S3_NS, XML_DECL, xml_escape

MAX_RULES = 1000
MAX_ID_LEN = 255


def _invalid(message: str) -> NoReturn:
    raise S3Error(ErrorCode.INVALID_ARGUMENT, message)


def _single(elem: Element) -> dict[str, Element]:
    """Children by name; a repeated element is MalformedXML (Tag/Rule are handled by their callers)."""
    out: dict[str, Element] = {}
    for name, child in children(elem):
        if name in out:
            malformed()
        out[name] = child
    return out


def _positive(elem: Element, field: str, action: str) -> int:
    value = int_of(elem)
    if value <= 0:
        _invalid(f"'{field}' for {action} action must be a positive integer")
    return value


def _tag(elem: Element) -> tuple[str, str]:
    fields = _single(elem)
    if set(fields) != {"Key", "Value"}:
        malformed()
    return text_of(fields["Key"]), text_of(fields["Value"])


def _date(elem: Element) -> int:
    text = text_of(elem).strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _invalid("Invalid date: Date must be in ISO 8601 format")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms % DAY_MS:
        _invalid("'Date' must be at midnight GMT")
    return ms


def _check_transitions(fields: dict[str, Element]) -> None:
    """Validate (Noncurrent)Transition as S3 would, though S4 then refuses it: exactly one of Days and Date
    (NoncurrentDays for the noncurrent form), a valid midnight date, a storage class."""
    if "Transition" in fields:
        tr = _single(fields["Transition"])
        if "StorageClass" not in tr or len(set(tr) & {"Days", "Date"}) != 1 or not set(tr) <= {
                "Days", "Date", "StorageClass"}:
            malformed()
        if "Date" in tr:
            _date(tr["Date"])
        else:
            int_of(tr["Days"])
    if "NoncurrentVersionTransition" in fields:
        nt = _single(fields["NoncurrentVersionTransition"])
        if not {"NoncurrentDays", "StorageClass"} <= set(nt) <= {"NoncurrentDays", "StorageClass",
                                                                 "NewerNoncurrentVersions"}:
            malformed()
        int_of(nt["NoncurrentDays"])


def _filter(elem: Element) -> dict[str, Any]:
    out: dict[str, Any] = {"prefix": "", "tags": {}, "gt": None, "lt": None, "and": False}
    items = children(elem)
    if len(items) > 1:
        malformed()  # several conditions must be wrapped in <And>
    for name, child in items:
        if name == "And":
            out["and"] = True
            for sub_name, sub in children(child):
                _condition(out, sub_name, sub, allow_tags=True)
        else:
            _condition(out, name, child, allow_tags=True)
    if out["gt"] is not None and out["lt"] is not None and out["gt"] >= out["lt"]:
        _invalid("ObjectSizeGreaterThan must be less than ObjectSizeLessThan")
    return out


def _condition(out: dict[str, Any], name: str, child: Element, *, allow_tags: bool) -> None:
    if name == "Prefix":
        out["prefix"] = text_of(child)
    elif name == "Tag" and allow_tags:
        key, value = _tag(child)
        if key in out["tags"]:
            _invalid("Duplicate Tag Keys are not allowed.")
        out["tags"][key] = value
    elif name in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        size = int_of(child)
        if size < 0:
            _invalid(f"'{name}' should be a non-negative integer")
        out["gt" if name == "ObjectSizeGreaterThan" else "lt"] = size
    else:
        malformed()


def _rule(elem: Element) -> dict[str, Any]:
    fields = _single(elem)
    allowed = {"ID", "Status", "Filter", "Prefix", "Expiration", "NoncurrentVersionExpiration",
               "AbortIncompleteMultipartUpload", "Transition", "NoncurrentVersionTransition"}
    if not set(fields) <= allowed or "Status" not in fields:
        malformed()
    if "Transition" in fields or "NoncurrentVersionTransition" in fields:
        _check_transitions(fields)  # a malformed one is the client's error (400) before it is S4's gap (501)
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, "S4 has a single storage class: transitions are not supported.")
    rule: dict[str, Any] = {"id": text_of(fields["ID"]) if "ID" in fields else "", "legacy_prefix": False,
                            "expiration": None, "noncurrent": None, "abort_days": None}
    if len(rule["id"]) > MAX_ID_LEN:
        _invalid("ID length should not exceed allowed limit of 255")
    rule["status"] = text_of(fields["Status"])
    if rule["status"] not in ("Enabled", "Disabled"):
        malformed()
    if ("Filter" in fields) == ("Prefix" in fields):
        malformed()  # exactly one of Filter and the legacy top-level Prefix
    if "Prefix" in fields:
        rule["legacy_prefix"] = True
        rule["filter"] = {"prefix": text_of(fields["Prefix"]), "tags": {}, "gt": None, "lt": None, "and": False}
    else:
        rule["filter"] = _filter(fields["Filter"])
    if "Expiration" in fields:
        exp = _single(fields["Expiration"])
        if not exp or not set(exp) <= {"Days", "Date", "ExpiredObjectDeleteMarker"} or len(exp) > 1:
            malformed()  # exactly one of Days, Date, ExpiredObjectDeleteMarker
        if "Days" in exp:
            rule["expiration"] = {"days": _positive(exp["Days"], "Days", "Expiration")}
        elif "Date" in exp:
            rule["expiration"] = {"date_ms": _date(exp["Date"])}
        else:
            flag = text_of(exp["ExpiredObjectDeleteMarker"]).strip().lower()
            if flag not in ("true", "false"):
                malformed()
            if rule["filter"]["tags"] and flag == "true":
                _invalid("ExpiredObjectDeleteMarker cannot be specified with tags.")
            rule["expiration"] = {"edm": flag == "true"}
    if "NoncurrentVersionExpiration" in fields:
        nc = _single(fields["NoncurrentVersionExpiration"])
        if "NoncurrentDays" not in nc or not set(nc) <= {"NoncurrentDays", "NewerNoncurrentVersions"}:
            malformed()
        rule["noncurrent"] = {"days": _positive(nc["NoncurrentDays"], "NoncurrentDays",
                                                "NoncurrentVersionExpiration"), "newer": None}
        if "NewerNoncurrentVersions" in nc:
            newer = int_of(nc["NewerNoncurrentVersions"])
            if not 0 < newer <= 100:
                _invalid("'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a positive "
                         "integer not greater than 100")
            rule["noncurrent"]["newer"] = newer
    if "AbortIncompleteMultipartUpload" in fields:
        ab = _single(fields["AbortIncompleteMultipartUpload"])
        if set(ab) != {"DaysAfterInitiation"}:
            malformed()
        if rule["filter"]["tags"]:
            _invalid("AbortIncompleteMultipartUpload cannot be specified with Tags.")
        rule["abort_days"] = _positive(ab["DaysAfterInitiation"], "DaysAfterInitiation",
                                       "AbortIncompleteMultipartUpload")
    if rule["expiration"] is None and rule["noncurrent"] is None and rule["abort_days"] is None:
        _invalid("At least one action needs to be specified in a rule")
    return rule


def parse_lifecycle(body: bytes) -> dict[str, Any]:
    """A <LifecycleConfiguration> body as the stored record ``{"rules": [...]}``."""
    root = parse_root(body, "LifecycleConfiguration")
    rules = []
    for name, child in children(root):
        if name != "Rule":
            malformed()
        rules.append(_rule(child))
    if not rules or len(rules) > MAX_RULES:
        malformed()
    ids = [r["id"] for r in rules if r["id"]]
    if len(ids) != len(set(ids)):
        _invalid("Rule ID must be unique. Found same ID for more than one rule")
    for rule in rules:  # S3 names a rule sent without an ID; the name is stored, so every GET shows the same one
        if not rule["id"]:
            rule["id"] = base64.b32encode(uuid.uuid4().bytes).decode().rstrip("=")  # 128 random bits: unique
    return {"rules": rules}


# --- rendering -------------------------------------------------------------------------------------------------


def _el(name: str, text: Any) -> str:
    return f"<{name}>{xml_escape(str(text))}</{name}>"


def _render_filter(f: dict[str, Any]) -> str:
    parts = []
    if f.get("prefix") or f.get("and"):
        parts.append(_el("Prefix", f.get("prefix", "")))
    for key, value in (f.get("tags") or {}).items():
        parts.append(f"<Tag>{_el('Key', key)}{_el('Value', value)}</Tag>")
    if f.get("gt") is not None:
        parts.append(_el("ObjectSizeGreaterThan", f["gt"]))
    if f.get("lt") is not None:
        parts.append(_el("ObjectSizeLessThan", f["lt"]))
    if not parts:
        parts.append(_el("Prefix", ""))
    inner = "".join(parts)
    return f"<Filter>{'<And>' + inner + '</And>' if f.get('and') or len(parts) > 1 else inner}</Filter>"


def _iso_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _render_rule(rule: dict[str, Any]) -> str:
    out = ["<Rule>"]
    if rule.get("id"):
        out.append(_el("ID", rule["id"]))
    if rule.get("legacy_prefix"):
        out.append(_el("Prefix", rule["filter"].get("prefix", "")))
    else:
        out.append(_render_filter(rule.get("filter") or {}))
    out.append(_el("Status", rule["status"]))
    exp = rule.get("expiration")
    if exp:
        if "days" in exp:
            out.append(f"<Expiration>{_el('Days', exp['days'])}</Expiration>")
        elif "date_ms" in exp:
            out.append(f"<Expiration>{_el('Date', _iso_day(exp['date_ms']))}</Expiration>")
        else:
            flag = "true" if exp.get("edm") else "false"
            out.append(f"<Expiration>{_el('ExpiredObjectDeleteMarker', flag)}</Expiration>")
    nc = rule.get("noncurrent")
    if nc:
        newer = _el("NewerNoncurrentVersions", nc["newer"]) if nc.get("newer") else ""
        out.append(f"<NoncurrentVersionExpiration>{_el('NoncurrentDays', nc['days'])}{newer}"
                   "</NoncurrentVersionExpiration>")
    if rule.get("abort_days"):
        out.append(f"<AbortIncompleteMultipartUpload>{_el('DaysAfterInitiation', rule['abort_days'])}"
                   "</AbortIncompleteMultipartUpload>")
    out.append("</Rule>")
    return "".join(out)


def lifecycle_xml(config: dict[str, Any]) -> bytes:
    rules = "".join(_render_rule(r) for r in config.get("rules", []))
    return f'{XML_DECL}<LifecycleConfiguration xmlns="{S3_NS}">{rules}</LifecycleConfiguration>'.encode()


def expiration_header_value(expiry_ms: int, rule_id: str) -> str:
    when = datetime.fromtimestamp(expiry_ms / 1000, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return f'expiry-date="{when}", rule-id="{rule_id}"'
