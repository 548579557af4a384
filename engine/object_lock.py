"""Object Lock rules (docs/architecture/object-lock.md): what a version's lock is, and what it forbids.

A bucket's Object Lock configuration is the bucket config of kind ``object-lock``: ``{"enabled": True}`` plus an
optional default ``rule`` ``{"mode": "GOVERNANCE"|"COMPLIANCE", "days": n}`` or ``{..., "years": n}``. A version's
lock lives in its record: ``lk`` ``{"m": mode, "u": retain-until ms}`` and ``lh`` True while a legal hold is on.

Every rule here is pure and judged against ``now_ms``, the HLC wall part of the decision (``Decision.now_ms``): the
deciders call them inside the sequencer's write transaction, so a check and the event it allows cannot be
separated by another writer. Refusals are AccessDenied, as S3 answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from s4.journal.hlc import physical_ms

from .errors import ErrorCode, S3Error

CONFIG_KIND = "object-lock"
GOVERNANCE, COMPLIANCE = "GOVERNANCE", "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_MS = 86_400_000
YEAR_DAYS = 365
#: S3 refuses default retention periods beyond 100 years.
MAX_DAYS = 36_500
MISSING_CONFIG = "Bucket is missing Object Lock Configuration"


def enabled(config: Mapping[str, Any] | None) -> bool:
    return bool(config and config.get("enabled"))


def default_lock(config: Mapping[str, Any] | None, now_ms: int) -> dict[str, Any] | None:
    """The retention a new version gets from the bucket's default rule, or None (no rule)."""
    rule: Mapping[str, Any] | None = (config or {}).get("rule")
    if not rule:
        return None
    days = rule.get("days") or YEAR_DAYS * int(rule.get("years") or 0)
    return {"m": rule["mode"], "u": now_ms + int(days) * DAY_MS}


def retention_active(rec: Mapping[str, Any], now_ms: int) -> bool:
    lock = rec.get("lk")
    return lock is not None and int(lock["u"]) > now_ms


def is_locked(rec: Mapping[str, Any], now_ms: int) -> bool:
    """Whether a version cannot be removed by anyone now (ignoring a governance bypass)."""
    return bool(rec.get("lh")) or retention_active(rec, now_ms)


def check_removable(rec: Mapping[str, Any], now_ms: int, bypass_governance: bool) -> None:
    """AccessDenied unless the version may be removed now: no legal hold, and no retention in force except a
    GOVERNANCE retention with the caller's permitted bypass."""
    if rec.get("lh"):
        raise S3Error(ErrorCode.ACCESS_DENIED, "Object is under a legal hold and cannot be deleted or overwritten.")
    if not retention_active(rec, now_ms):
        return
    if rec["lk"]["m"] == GOVERNANCE and bypass_governance:
        return
    until = datetime.fromtimestamp(int(rec["lk"]["u"]) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise S3Error(ErrorCode.ACCESS_DENIED, f"Object is WORM protected ({rec['lk']['m']} retention until {until}) "
                  "and cannot be deleted or overwritten.")


def check_retention_change(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, now_ms: int,
                           bypass_governance: bool) -> None:
    """PutObjectRetention over a retention still in force: COMPLIANCE may only be extended (same mode, a later or
    equal date); GOVERNANCE may be extended freely, and shortened, removed or changed only with the bypass."""
    if not old or int(old["u"]) <= now_ms:
        return
    extends = new is not None and new["m"] == old["m"] and int(new["u"]) >= int(old["u"])
    if extends:
        return
    if old["m"] == GOVERNANCE and bypass_governance:
        return
    raise S3Error(ErrorCode.ACCESS_DENIED, f"The object's {old['m']} retention cannot be shortened, removed or "
                  "changed" + (" without x-amz-bypass-governance-retention." if old["m"] == GOVERNANCE else "."))


def check_new_retention(lock: Mapping[str, Any] | None, now_ms: int) -> None:
    """A retention set on a version must end in the future (S3: InvalidArgument)."""
    if lock and int(lock["u"]) <= now_ms:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The retain until date must be in the future!",
                      ArgumentName="RetainUntilDate")


def validate_rule(rule: Mapping[str, Any] | None) -> None:
    """A default retention rule: a mode and exactly one positive period (days or years) within 100 years."""
    if rule is None:
        return
    if rule.get("mode") not in MODES:
        raise S3Error(ErrorCode.MALFORMED_XML)
    days, years = rule.get("days"), rule.get("years")
    if (days is None) == (years is None):
        raise S3Error(ErrorCode.MALFORMED_XML)
    value = days if days is not None else years
    if not isinstance(value, int) or value <= 0:
        raise S3Error(ErrorCode.INVALID_RETENTION_PERIOD, "Default retention period must be a positive integer "
                      "value.")
    if (days or 0) > MAX_DAYS or (years or 0) * YEAR_DAYS > MAX_DAYS:
        raise S3Error(ErrorCode.INVALID_RETENTION_PERIOD, "Default retention period is too large.")


# -- a version's lock state in a pool: a join of its lock events (object-lock.md, "Concurrent lock changes") ----------
#: The fields a lock event sets (``object.lock_set`` payload ``f``): PutObjectRetention sets the retention, and
#: PutObjectLegalHold the legal hold; an event without ``f`` (journaled before per-field clocks) sets both.
RETENTION, LEGAL_HOLD = "lk", "lh"
#: The state's parts, each ``[hlc, origin, value]``: ``r`` the newest retention event (value: ``{m, u}`` or None),
#: ``c`` the strongest COMPLIANCE retention ever set (latest until, then newest stamp), ``g`` the newest legal hold
#: event (value: True/False, or None: never set).
PARTS = ("r", "c", "g")
Part = list[Any]


def event_state(fields: str | None, lk: Mapping[str, Any] | None, lh: bool | None, hlc: int,
                origin: str) -> dict[str, Part]:
    """The lock state one event alone gives: the retention and/or legal hold it sets (``fields`` None: both), at
    its stamp. A version's own lock (the one it was written with) is such an event at the version's stamp."""
    out: dict[str, Part] = {}
    if fields in (None, RETENTION):
        out["r"] = [hlc, origin, dict(lk) if lk else None]
        if lk and lk["m"] == COMPLIANCE:
            out["c"] = [hlc, origin, dict(lk)]
    if fields in (None, LEGAL_HOLD):
        out["g"] = [hlc, origin, None if lh is None else bool(lh)]
    return out


def clock_state(clock: Mapping[str, Any]) -> dict[str, Part]:
    """The state a ``lock_clocks`` entry holds; an entry of a peer of an older release (``{h, o, lk, lh?}``, one
    whole-state lock_set) as that event setting both fields."""
    if any(clock.get(name) is not None for name in PARTS):
        return {name: clock[name] for name in PARTS if clock.get(name) is not None}
    return event_state(None, clock.get("lk"), clock.get("lh"), int(clock["h"]), str(clock.get("o", "")))


def _stamp(part: Part) -> tuple[int, str]:
    return int(part[0]), str(part[1])


def _strength(part: Part) -> tuple[int, int, str]:
    """The order of COMPLIANCE retentions: the later until wins, then the newer event (a tie of equal values)."""
    return int(part[2]["u"]), int(part[0]), str(part[1])


def join(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Part]:
    """The state holding both states' events: per part the newest (``c``: the strongest). Commutative,
    associative and idempotent, so every replica reaches the same state whatever order the events came in."""
    out: dict[str, Part] = {}
    for name in PARTS:
        x, y = (a or {}).get(name), (b or {}).get(name)
        if x is None or y is None:
            best = x if y is None else y
        elif name == "c":
            best = x if _strength(x) >= _strength(y) else y
        else:
            best = x if _stamp(x) >= _stamp(y) else y
        if best is not None:
            out[name] = [int(best[0]), str(best[1]), best[2]]
    return out


def effective(state: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool | None]:
    """The retention and legal hold a state means. The newest retention decision stands unless the strongest
    COMPLIANCE retention was still in force when it was stamped: a node that decided it had not seen that
    COMPLIANCE retention (its decider would have refused a shortening), so WORM keeps the COMPLIANCE one. A
    decision stamped after that retention ended is a legitimate later one and stands. The legal hold is the newest."""
    r, c, g = state.get("r"), state.get("c"), state.get("g")
    lk = r[2] if r is not None else None
    if c is not None and (r is None or int(c[2]["u"]) > physical_ms(int(r[0]))):
        lk = c[2]
    return (dict(lk) if lk else None), (None if g is None or g[2] is None else bool(g[2]))


def newest(state: Mapping[str, Any]) -> tuple[int, str]:
    """The newest event stamp in a state (its ``lock_clocks`` entry's ``h``/``o``, which tombstone GC compares)."""
    return max(_stamp(state[name]) for name in PARTS if state.get(name) is not None)
