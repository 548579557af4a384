"""The bucket settings page's rule editors: lifecycle and CORS rules added and removed as forms, still stored as
the S3 XML documents the bucket APIs take. A change edits the current document's tree (one ``<Rule>`` or
``<CORSRule>`` appended or removed), so parts of a rule the form does not show (tag filters, transitions, expose
headers) are kept as they are; S3's own parser validates the result on Put."""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml.ElementTree import fromstring

from s4.engine.iam import IamError

CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
ROOTS = {"lifecycle": ("LifecycleConfiguration", "Rule"), "cors": ("CORSConfiguration", "CORSRule")}
MAX_DAYS = 100_000  # far beyond any sensible rule; keeps the number a small integer


@dataclass
class RuleView:
    """One rule as the page lists it."""

    index: int
    ident: str
    fields: list[tuple[str, str]]


def _local(elem: Element) -> Element:
    """``elem`` with namespaces dropped from every tag (Get answers in S3's namespace; Put takes it without)."""
    for node in elem.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]
    return elem


def parse(kind: str, document: str) -> Element:
    """The current document's tree (an empty configuration when there is none)."""
    root_name = ROOTS[kind][0]
    if not document.strip():
        return Element(root_name)
    return _local(fromstring(document.encode()))


def serialize(root: Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>' + tostring(root, encoding="unicode").encode()


def rules_of(kind: str, root: Element) -> list[Element]:
    return [child for child in root if child.tag == ROOTS[kind][1]]


def _text(elem: Element, path: str) -> str:
    found = elem.find(path)
    return (found.text or "").strip() if found is not None else ""


def views(kind: str, root: Element) -> list[RuleView]:
    """The rules as rows: the fields the form edits (others stay in the XML view)."""
    out = []
    for index, rule in enumerate(rules_of(kind, root)):
        if kind == "lifecycle":
            prefix = _text(rule, "Filter/Prefix") or _text(rule, "Filter/And/Prefix") or _text(rule, "Prefix")
            fields = [("Status", _text(rule, "Status")), ("Prefix", prefix or "(whole bucket)"),
                      ("Expiration days", _text(rule, "Expiration/Days")),
                      ("Noncurrent days", _text(rule, "NoncurrentVersionExpiration/NoncurrentDays")),
                      ("Abort multipart days", _text(rule, "AbortIncompleteMultipartUpload/DaysAfterInitiation"))]
        else:
            fields = [("Origins", " ".join(_texts(rule, "AllowedOrigin"))),
                      ("Methods", " ".join(_texts(rule, "AllowedMethod"))),
                      ("Headers", " ".join(_texts(rule, "AllowedHeader"))),
                      ("Max age (s)", _text(rule, "MaxAgeSeconds"))]
        out.append(RuleView(index, _text(rule, "ID"), fields))
    return out


def _texts(elem: Element, tag: str) -> list[str]:
    return [(child.text or "").strip() for child in elem.findall(tag)]


def _days(value: str, what: str) -> int | None:
    """A form's day count: empty is none; otherwise a whole number 1..MAX_DAYS (400 before anything changes)."""
    value = value.strip()
    if not value:
        return None
    if not re.fullmatch(r"\d{1,6}", value) or not 1 <= int(value) <= MAX_DAYS:
        raise IamError(400, f"{what} is a whole number of days, 1 to {MAX_DAYS}")
    return int(value)


def _words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", value) if w]


def _add(parent: Element, tag: str, text: str) -> Element:
    child = SubElement(parent, tag)
    child.text = text
    return child


def lifecycle_rule(ident: str, prefix: str, expiration: str, noncurrent: str, abort: str) -> Element:
    """A ``<Rule>`` from the form: at least one of the three actions."""
    days = (_days(expiration, "Expiration"), _days(noncurrent, "Noncurrent expiration"),
            _days(abort, "Abort incomplete multipart"))
    if all(d is None for d in days):
        raise IamError(400, "a lifecycle rule needs expiration, noncurrent or abort-multipart days")
    rule = Element("Rule")
    if ident.strip():
        _add(rule, "ID", ident.strip())
    _add(SubElement(rule, "Filter"), "Prefix", prefix)
    _add(rule, "Status", "Enabled")
    if days[0] is not None:
        _add(SubElement(rule, "Expiration"), "Days", str(days[0]))
    if days[1] is not None:
        _add(SubElement(rule, "NoncurrentVersionExpiration"), "NoncurrentDays", str(days[1]))
    if days[2] is not None:
        _add(SubElement(rule, "AbortIncompleteMultipartUpload"), "DaysAfterInitiation", str(days[2]))
    return rule


def cors_rule(ident: str, origins: str, methods: list[str], headers: str, max_age: str) -> Element:
    """A ``<CORSRule>`` from the form: at least one origin and one method."""
    chosen = [m for m in CORS_METHODS if m in methods]
    if not _words(origins) or not chosen:
        raise IamError(400, "a CORS rule needs at least one allowed origin and one allowed method")
    if max_age.strip() and not re.fullmatch(r"\d{1,9}", max_age.strip()):
        raise IamError(400, "max age is a whole number of seconds")
    rule = Element("CORSRule")
    if ident.strip():
        _add(rule, "ID", ident.strip())
    for header in _words(headers):
        _add(rule, "AllowedHeader", header)
    for method in chosen:
        _add(rule, "AllowedMethod", method)
    for origin in _words(origins):
        _add(rule, "AllowedOrigin", origin)
    if max_age.strip():
        _add(rule, "MaxAgeSeconds", max_age.strip())
    return rule


def remove(kind: str, root: Element, index: int, ident: str) -> None:
    """Drop rule ``index``, refused (409) if the rules changed since the page showed it (its ID differs)."""
    rules = rules_of(kind, root)
    if not 0 <= index < len(rules) or _text(rules[index], "ID") != ident:
        raise IamError(409, "the rules changed since this page was loaded; reload it and try again")
    root.remove(rules[index])
