"""Object Lock over S3 (docs/architecture/object-lock.md): the bucket's configuration, per-version retention and
legal hold, the ``x-amz-object-lock-*`` headers of object writes and reads, and the governance bypass.

Parsing and rendering live here; the rules (what may change, what may be removed) are engine/object_lock.py's,
applied by the deciders so a check and its event are one atomic step. The bypass is a permission like any other:
``x-amz-bypass-governance-retention: true`` counts only when the one evaluator (s3/access.py) allows the caller
``s3:BypassGovernanceRetention`` on the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import falcon.asgi

from s4.engine import object_lock
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import ObjectVersion

from .call import Call
from .xml_parse import children, int_of, malformed, parse_root, text_of
from .xml_render import S3_NS, XML_DECL, iso8601

MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
BYPASS_ACTION = "s3:BypassGovernanceRetention"


def _date_ms(text: str, *, header: bool) -> int:
    """An ISO 8601 date with a time zone as epoch ms; a header's bad date is InvalidArgument, XML's MalformedXML."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError(text)
    except ValueError:
        if not header:
            malformed()
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The retain until date must be provided in ISO 8601 format",
                      ArgumentName=UNTIL_HEADER, ArgumentValue=text[:64]) from None
    return int(when.timestamp() * 1000)


def lock_from_headers(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The lock an object write asks for (``lk``/``lh``), or None; S3's InvalidArgument for a bad combination."""
    mode, until, hold = headers.get(MODE_HEADER), headers.get(UNTIL_HEADER), headers.get(HOLD_HEADER)
    if mode is None and until is None and hold is None:
        return None
    lock: dict[str, Any] = {}
    if (mode is None) != (until is None):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode "
                      "must both be supplied", ArgumentName=MODE_HEADER if mode is None else UNTIL_HEADER)
    if mode is not None and until is not None:
        if mode.strip() not in object_lock.MODES:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Unknown wormMode directive.", ArgumentName=MODE_HEADER,
                          ArgumentValue=mode[:64])
        lock["lk"] = {"m": mode.strip(), "u": _date_ms(until, header=True)}
    if hold is not None:
        if hold.strip() not in ("ON", "OFF"):
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Legal Hold must be either of 'ON' or 'OFF'",
                          ArgumentName=HOLD_HEADER, ArgumentValue=hold[:64])
        lock["lh"] = hold.strip() == "ON"
    return lock


def bypass_governance(call: Call, key: str | None = None) -> bool:
    """Whether the request asks for the governance bypass and the caller is allowed it (a refusal is not an
    error here: the bypass just does not apply, and a governed version stays protected)."""
    if call.headers.get(BYPASS_HEADER, "").strip().lower() != "true":
        return False
    try:
        call.authorize(BYPASS_ACTION, call.bucket, call.key if key is None else key)
    except S3Error:
        return False
    return True


def set_lock_headers(version: ObjectVersion, resp: falcon.asgi.Response) -> None:
    """GET/HEAD: the version's retention and legal hold, as S3 reports them."""
    lock = version.lock
    if lock.get("lk"):
        resp.set_header(MODE_HEADER, lock["lk"]["m"])
        resp.set_header(UNTIL_HEADER, iso8601(int(lock["lk"]["u"])))
    if "lh" in lock:
        resp.set_header(HOLD_HEADER, "ON" if lock["lh"] else "OFF")


def _xml(resp: falcon.asgi.Response, body: str) -> None:
    resp.content_type = "application/xml"
    resp.data = f'{XML_DECL}{body}'.encode()


# -- bucket configuration -----------------------------------------------------------------------------------------
def parse_configuration(body: bytes) -> dict[str, Any]:
    root = parse_root(body, "ObjectLockConfiguration")
    enabled, rule = False, None
    for name, child in children(root):
        if name == "ObjectLockEnabled":
            if text_of(child).strip() != "Enabled":
                malformed()
            enabled = True
        elif name == "Rule":
            rule = _parse_rule(child)
        else:
            malformed()
    if not enabled:
        malformed()
    return {"enabled": True, "rule": rule} if rule else {"enabled": True}


def _parse_rule(elem: Any) -> dict[str, Any]:
    found = children(elem)
    if len(found) != 1 or found[0][0] != "DefaultRetention":
        malformed()
    rule: dict[str, Any] = {}
    for name, child in children(found[0][1]):
        if name == "Mode":
            rule["mode"] = text_of(child).strip()
            if rule["mode"] not in object_lock.MODES:
                malformed()
        elif name in ("Days", "Years") and name.lower() not in rule:
            rule[name.lower()] = int_of(child)
        else:
            malformed()
    if "mode" not in rule:
        malformed()
    object_lock.validate_rule(rule)
    return rule


def configuration_xml(config: Mapping[str, Any]) -> str:
    out = [f'<ObjectLockConfiguration xmlns="{S3_NS}"><ObjectLockEnabled>Enabled</ObjectLockEnabled>']
    rule = config.get("rule")
    if rule:
        period = f"<Days>{rule['days']}</Days>" if rule.get("days") else f"<Years>{rule['years']}</Years>"
        out.append(f"<Rule><DefaultRetention><Mode>{rule['mode']}</Mode>{period}</DefaultRetention></Rule>")
    out.append("</ObjectLockConfiguration>")
    return "".join(out)


async def put_object_lock_configuration(call: Call, resp: falcon.asgi.Response) -> None:
    config = parse_configuration(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, object_lock.CONFIG_KIND, config, actor=call.actor)


async def get_object_lock_configuration(call: Call, resp: falcon.asgi.Response) -> None:
    config = call.engine.get_bucket_config(call.bucket, object_lock.CONFIG_KIND)
    if not object_lock.enabled(config):
        raise S3Error(ErrorCode.OBJECT_LOCK_CONFIGURATION_NOT_FOUND, BucketName=call.bucket)
    _xml(resp, configuration_xml(config))


# -- per version --------------------------------------------------------------------------------------------------
def require_lock_bucket(call: Call) -> None:
    """InvalidRequest unless the request's bucket has Object Lock (NoSuchBucket if there is no bucket)."""
    if not object_lock.enabled(call.engine.get_bucket_config(call.bucket, object_lock.CONFIG_KIND)):
        raise S3Error(ErrorCode.INVALID_REQUEST, object_lock.MISSING_CONFIG)


def parse_retention(body: bytes) -> dict[str, Any] | None:
    """A Retention document: ``{"m", "u"}``, or None for an empty one (removes the retention, bypass needed)."""
    root = parse_root(body, "Retention")
    fields = {name: text_of(child).strip() for name, child in children(root)}
    if set(fields) - {"Mode", "RetainUntilDate"}:
        malformed()
    if not fields:
        return None
    if set(fields) != {"Mode", "RetainUntilDate"} or fields["Mode"] not in object_lock.MODES:
        malformed()
    return {"m": fields["Mode"], "u": _date_ms(fields["RetainUntilDate"], header=False)}


def parse_legal_hold(body: bytes) -> bool:
    root = parse_root(body, "LegalHold")
    fields = {name: text_of(child).strip() for name, child in children(root)}
    if set(fields) != {"Status"} or fields["Status"] not in ("ON", "OFF"):
        malformed()
    return fields["Status"] == "ON"


async def _version(call: Call) -> ObjectVersion:
    await call.engine.settle_key(call.bucket, call.key)
    return call.engine.head_object(call.bucket, call.key, call.query.get("versionId"))


async def put_object_retention(call: Call, resp: falcon.asgi.Response) -> None:
    retention = parse_retention(await call.read_body())
    version_id = await call.engine.set_object_lock(call.bucket, call.key, call.query.get("versionId"),
                                                   retention=retention, bypass_governance=bypass_governance(call),
                                                   actor=call.actor)
    resp.set_header("x-amz-version-id", version_id)


async def get_object_retention(call: Call, resp: falcon.asgi.Response) -> None:
    require_lock_bucket(call)
    lock = (await _version(call)).lock.get("lk")
    if not lock:
        raise S3Error(ErrorCode.NO_SUCH_OBJECT_LOCK_CONFIGURATION)
    _xml(resp, f'<Retention xmlns="{S3_NS}"><Mode>{lock["m"]}</Mode>'
               f'<RetainUntilDate>{iso8601(int(lock["u"]))}</RetainUntilDate></Retention>')


async def put_object_legal_hold(call: Call, resp: falcon.asgi.Response) -> None:
    hold = parse_legal_hold(await call.read_body())
    version_id = await call.engine.set_object_lock(call.bucket, call.key, call.query.get("versionId"),
                                                   legal_hold=hold, actor=call.actor)
    resp.set_header("x-amz-version-id", version_id)


async def get_object_legal_hold(call: Call, resp: falcon.asgi.Response) -> None:
    require_lock_bucket(call)
    version = await _version(call)
    if "lh" not in version.lock:
        raise S3Error(ErrorCode.NO_SUCH_OBJECT_LOCK_CONFIGURATION)
    _xml(resp, f'<LegalHold xmlns="{S3_NS}"><Status>{"ON" if version.lock["lh"] else "OFF"}</Status></LegalHold>')
