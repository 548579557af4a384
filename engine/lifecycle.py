"""Lifecycle rules: the stored record shape and what a rule says about one version or upload. Pure; no I/O.

A bucket's lifecycle configuration is stored (``bucket_cfg[bucket\\0lifecycle]``) as ``{"rules": [rule, ...]}``;
each rule is a plain dict so it journals as msgpack::

    {"id", "status": "Enabled"|"Disabled", "legacy_prefix": bool,
     "filter": {"prefix": str, "tags": {k: v}, "gt": int|None, "lt": int|None, "and": bool},
     "expiration": {"days"|"date_ms"|"edm": ...} | None,
     "noncurrent": {"days": int, "newer": int|None} | None,
     "abort_days": int | None}

Times follow S3: "N days after" means the event time plus N days, rounded **up** to the next midnight UTC. Every
function takes ``now_ms`` so the job and the tests can move the clock without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DAY_MS = 86_400_000


def after_days(start_ms: int, days: int) -> int:
    """S3's expiry instant: ``start + days``, rounded up to the following midnight UTC."""
    return ((start_ms + days * DAY_MS) // DAY_MS + 1) * DAY_MS


def enabled_rules(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (config or {}).get("rules", []) if r.get("status") == "Enabled"]


def matches(rule: dict[str, Any], key: str, size: int | None, tags: dict[str, str]) -> bool:
    """Whether the rule's filter selects an object (``size`` None: a delete marker, size filters ignored)."""
    f = rule.get("filter") or {}
    if not key.startswith(f.get("prefix", "")):
        return False
    for name, value in (f.get("tags") or {}).items():
        if tags.get(name) != value:
            return False
    if size is not None:
        if f.get("gt") is not None and not size > f["gt"]:
            return False
        if f.get("lt") is not None and not size < f["lt"]:
            return False
    return True


def current_expiry(rule: dict[str, Any], created_ms: int) -> int | None:
    """When a rule's Expiration (Days or Date) expires a current version created at ``created_ms``."""
    exp = rule.get("expiration") or {}
    if exp.get("days"):
        return after_days(created_ms, int(exp["days"]))
    if exp.get("date_ms") is not None:
        return int(exp["date_ms"])
    return None


def expiration_header(config: dict[str, Any] | None, key: str, size: int, tags: dict[str, str],
                      created_ms: int) -> tuple[int, str] | None:
    """(expiry ms, rule id) for ``x-amz-expiration``: the earliest current-version expiry of a matching rule."""
    best: tuple[int, str] | None = None
    for rule in enabled_rules(config):
        when = current_expiry(rule, created_ms)
        if when is not None and matches(rule, key, size, tags) and (best is None or when < best[0]):
            best = (when, rule.get("id", ""))
    return best


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the lifecycle job will do, and why (for the log and the dry-run report)."""

    kind: str  # "expire_current" | "expire_noncurrent" | "remove_marker" | "abort_upload"
    bucket: str
    key: str
    version_id: str | None
    rule_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.kind, "bucket": self.bucket, "key": self.key, "version_id": self.version_id,
                "rule": self.rule_id}


def evaluate_key(bucket: str, key: str, versions: list[dict[str, Any]], rules: list[dict[str, Any]],
                 now_ms: int) -> list[Action]:
    """Actions due now for one key; ``versions`` are its version records newest first (``t`` = created ms)."""
    if not versions or not rules:
        return []
    actions: list[Action] = []
    latest = versions[0]
    if latest.get("dm"):
        if len(versions) == 1:  # an expired object delete marker: the only version left is the marker
            for rule in rules:
                exp = rule.get("expiration") or {}
                when = current_expiry(rule, latest["t"])  # Days/Date also clean up markers once they are due
                if matches(rule, key, None, {}) and (exp.get("edm") or (when is not None and now_ms >= when)):
                    actions.append(Action("remove_marker", bucket, key, latest["v"], rule.get("id", "")))
                    break
    else:
        for rule in rules:
            when = current_expiry(rule, latest["t"])
            if when is not None and now_ms >= when and matches(rule, key, latest.get("s", 0),
                                                                latest.get("tg") or {}):
                actions.append(Action("expire_current", bucket, key, latest["v"], rule.get("id", "")))
                break
    expired: set[str] = set()
    for rule in rules:
        nc = rule.get("noncurrent")
        if not nc:
            continue
        keep = int(nc.get("newer") or 0)
        newer_seen = 0  # noncurrent versions newer than the one examined that this rule also selects
        for index in range(1, len(versions)):
            rec = versions[index]
            size = None if rec.get("dm") else rec.get("s", 0)
            if not matches(rule, key, size, rec.get("tg") or {}):
                continue
            became_noncurrent = versions[index - 1]["t"]
            due = now_ms >= after_days(became_noncurrent, int(nc["days"]))
            if due and newer_seen >= keep and rec["v"] not in expired:
                expired.add(rec["v"])
                actions.append(Action("expire_noncurrent", bucket, key, rec["v"], rule.get("id", "")))
            newer_seen += 1
    return actions


def upload_due(rules: list[dict[str, Any]], key: str, initiated_ms: int, now_ms: int) -> str | None:
    """The id of a rule whose AbortIncompleteMultipartUpload applies to an upload now, else None."""
    for rule in rules:
        days = rule.get("abort_days")
        if days and matches(rule, key, None, {}) and now_ms >= after_days(initiated_ms, int(days)):
            return str(rule.get("id", ""))
    return None
