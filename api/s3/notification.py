"""PutBucketNotificationConfiguration / GetBucketNotificationConfiguration: parse, validate, store, render.

The configuration is a bucket config (kind ``notification``, engine/notify/rules.py) set through the one
bucket-config event, so it is journaled, projected and replicated like CORS or lifecycle. Queue, Topic and
CloudFunction (Lambda) configurations are accepted when their ARN names a target the operator defined
(engine/notify/targets.py); anything else is InvalidArgument, as AWS answers a destination it cannot validate.
EventBridgeConfiguration is accepted and ignored (S4 has no EventBridge). An empty configuration removes it.
"""

from __future__ import annotations

import secrets
from xml.etree.ElementTree import Element

import falcon.asgi

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.notify.rules import CONFIG_KIND, EVENT_PATTERNS, Rule, from_record, to_record
from s4.engine.notify.targets import target_of

from .call import Call
from .xml_parse import children, malformed, parse_root, text_of
from .xml_render import xml_escape

#: XML element -> the element naming its ARN
SHAPES = {"QueueConfiguration": "Queue", "TopicConfiguration": "Topic",
          "CloudFunctionConfiguration": "CloudFunction"}
MAX_RULES = 100


def _invalid(message: str, name: str, value: str) -> S3Error:
    return S3Error(ErrorCode.INVALID_ARGUMENT, message, ArgumentName=name, ArgumentValue=value)


def parse_notification(body: bytes, targets: frozenset[str]) -> list[Rule]:
    """The rules of a NotificationConfiguration document; MalformedXML for a bad document, InvalidArgument for
    an unknown event, filter rule or destination."""
    root = parse_root(body, "NotificationConfiguration")
    rules: list[Rule] = []
    for name, elem in children(root):
        if name == "EventBridgeConfiguration":
            continue
        if name not in SHAPES:
            malformed()
        rules.append(_parse_rule(elem, name, targets))
    if len(rules) > MAX_RULES:
        raise _invalid(f"At most {MAX_RULES} notification configurations are allowed.", "NotificationConfiguration",
                       str(len(rules)))
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise _invalid("Configurations must have unique IDs.", "Id", next(i for i in ids if ids.count(i) > 1))
    return rules


def _parse_rule(elem: Element, element: str, targets: frozenset[str]) -> Rule:
    arn_tag = SHAPES[element]
    rule_id, arn, events, prefix, suffix = "", None, [], None, None
    for name, child in children(elem):
        if name == "Id":
            rule_id = text_of(child)
        elif name == arn_tag:
            if arn is not None:
                malformed()
            arn = text_of(child).strip()
        elif name == "Event":
            events.append(text_of(child).strip())
        elif name == "Filter":
            prefix, suffix = _parse_filter(child)
        else:
            malformed()
    if arn is None or not events:
        malformed()
    for event in events:
        if event not in EVENT_PATTERNS:
            raise _invalid("The event is not supported for notifications", "Event", event)
    target = target_of(arn)
    if target is None or target not in targets:
        raise _invalid("Unable to validate the following destination configurations", arn, "ARN not found")
    return Rule(rule_id or secrets.token_hex(16), arn_tag, arn, target, tuple(dict.fromkeys(events)),
                prefix or "", suffix or "")


def _parse_filter(elem: Element) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    for name, key in children(elem):
        if name != "S3Key":
            malformed()
        for rule_name, rule in children(key):
            if rule_name != "FilterRule":
                malformed()
            fields = dict((n, text_of(c)) for n, c in children(rule))
            if set(fields) - {"Name", "Value"} or "Name" not in fields:
                malformed()
            kind = fields["Name"].strip().lower()
            if kind not in ("prefix", "suffix"):
                raise _invalid("filter rule name must be either prefix or suffix", "FilterRule", fields["Name"])
            if kind in found:
                raise _invalid(f"Cannot specify more than one {kind} rule in a filter.", "FilterRule",
                               fields["Name"])
            value = fields.get("Value", "")
            if len(value.encode()) > 1024:
                raise _invalid("The filter rule value is too long.", "FilterRule", kind)
            found[kind] = value
    return found.get("prefix"), found.get("suffix")


def notification_xml(rules: list[Rule]) -> bytes:
    """GetBucketNotificationConfiguration's body (``<NotificationConfiguration/>`` when there are none)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<NotificationConfiguration '
             'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
    for shape in SHAPES.values():  # AWS's order: queues, topics, functions
        for r in (r for r in rules if r.shape == shape):
            element = next(k for k, v in SHAPES.items() if v == shape)
            parts.append(f"<{element}><Id>{xml_escape(r.id)}</Id><{shape}>{xml_escape(r.arn)}</{shape}>")
            parts.extend(f"<Event>{xml_escape(e)}</Event>" for e in r.events)
            if r.prefix or r.suffix:
                parts.append("<Filter><S3Key>")
                for kind, value in (("prefix", r.prefix), ("suffix", r.suffix)):
                    if value:
                        parts.append(f"<FilterRule><Name>{kind}</Name><Value>{xml_escape(value)}</Value></FilterRule>")
                parts.append("</S3Key></Filter>")
            parts.append(f"</{element}>")
    parts.append("</NotificationConfiguration>")
    return "".join(parts).encode()


async def put_bucket_notification(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    rules = parse_notification(await call.read_body(), call.settings.notify_targets)
    await call.engine.set_bucket_config(call.bucket, CONFIG_KIND, to_record(rules) or None, actor=call.actor)


async def get_bucket_notification(call: Call, resp: falcon.asgi.Response) -> None:
    rules = from_record(call.engine.get_bucket_config(call.bucket, CONFIG_KIND))
    resp.content_type = "application/xml"
    resp.data = notification_xml(rules)
