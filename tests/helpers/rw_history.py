"""A read-after-write checker for histories of PUT, DELETE and GET on a few keys, recorded by clients of a real pool.

Every operation is one HTTP attempt with its invocation time ``start`` and completion time ``end`` (one monotonic
clock, taken before the request is sent and after the answer arrived, so real-time precedence is never overstated).
A write's outcome is ``ok`` (acknowledged), ``maybe`` (503, a connection cut or a timeout: it may or may not have
taken effect, now or later) or ``refused`` (the connection was never established: it cannot have happened). A PUT's
value is its body (unique per operation), a DELETE's is ``None``, and the key's initial state is a virtual
acknowledged write of ``None`` that completed before everything.

The rule, for every successful GET ``r`` of a key (its value, or ``None`` for 404):

1. **Explained**: some write ``w`` of that key, ``ok`` or ``maybe``, with exactly the value ``r`` returned (byte for
   byte), was invoked before ``r`` completed (``w.start < r.end``).
2. **Not stale**: for at least one such ``w``, no *acknowledged* write ``w2`` of that key completed before ``r``
   started (``w2.end < r.start``) and was invoked after ``w`` completed (``w2.start > w.end``; a ``maybe`` write has
   no completion, it may take effect at any later time). Otherwise ``r`` missed a newer acknowledged write: an
   acknowledged write unseen by a later quorum read.
3. **Never backwards**: when GET ``r1`` completed before GET ``r2`` started, ``r2`` must have an explanation ``w``
   (from rule 1) that is not strictly older than every explanation ``w1`` of ``r1`` (``w`` acknowledged and
   ``w.end < w1.start``): once a quorum read returned a write, a later one never returns what that write
   superseded in real time.

``maybe`` and ``refused`` writes never require anything; GETs that failed say nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OK, MAYBE, REFUSED = "ok", "maybe", "refused"


@dataclass(frozen=True)
class Rec:
    """One client operation: ``kind`` put/delete/get; ``value`` the PUT's body or the GET's answer (None: 404)."""

    op_id: int
    kind: str
    key: str
    start: float
    end: float
    outcome: str
    value: bytes | None = None
    via: str = ""
    detail: str = ""

    def describe(self) -> str:
        shown = None if self.value is None else self.value[:40]
        return (f"#{self.op_id} {self.kind} {self.key} via {self.via} [{self.start:.6f}, {self.end:.6f}] "
                f"{self.outcome} {shown!r} {self.detail}".rstrip())


INITIAL = Rec(-1, "initial", "", -math.inf, -math.inf, OK, None, "", "the key's state before the history")


def _completed(w: Rec) -> float:
    return w.end if w.outcome == OK else math.inf


def explanations(read: Rec, writes: Sequence[Rec]) -> list[Rec]:
    """Rule 1: the writes (``writes`` are one key's, ``ok`` or ``maybe``) that may have produced ``read``'s value."""
    return [w for w in (INITIAL, *writes) if w.value == read.value and w.start < read.end]


def fresh(read: Rec, candidates: Sequence[Rec], writes: Sequence[Rec]) -> list[Rec]:
    """Rule 2: the candidates no acknowledged write superseded in real time before ``read`` started."""
    acked = [w2 for w2 in writes if w2.outcome == OK and w2.end < read.start]
    return [w for w in candidates if not any(w2.start > _completed(w) for w2 in acked)]


def _latest(ops: Sequence[Rec], n: int = 3) -> list[Rec]:
    return sorted(ops, key=lambda o: o.start)[-n:]


def check(history: Iterable[Rec]) -> list[str]:
    """Every violation of the rule (module docstring), with the operations involved; empty when there is none."""
    by_key: dict[str, list[Rec]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    violations: list[str] = []
    for _, ops in sorted(by_key.items()):
        writes = [o for o in ops if o.kind in ("put", "delete") and o.outcome in (OK, MAYBE)]
        reads = sorted((o for o in ops if o.kind == "get" and o.outcome == OK), key=lambda o: o.start)
        explained: list[tuple[Rec, list[Rec]]] = []
        for read in reads:
            candidates = explanations(read, writes)
            if not candidates:
                violations.append(f"unexplained read (no write of this value): {read.describe()}")
                continue
            kept = fresh(read, candidates, writes)
            if not kept:
                missed = [w2 for w2 in writes if w2.outcome == OK and w2.end < read.start
                          and any(w2.start > _completed(w) for w in candidates)]
                violations.append(f"stale read: {read.describe()}\n  explained only by (latest) "
                                  + "; ".join(w.describe() for w in _latest(candidates))
                                  + "\n  but it missed the acknowledged (latest) "
                                  + "; ".join(w.describe() for w in _latest(missed)))
                continue
            explained.append((read, kept))
        for later, later_ws in explained:
            for earlier, earlier_ws in explained:
                if earlier.end >= later.start:
                    continue
                if all(w.outcome == OK and w.end < w1.start for w in later_ws for w1 in earlier_ws):
                    violations.append(f"read went backwards: {later.describe()}\n  after {earlier.describe()}\n"
                                      f"  explained by {earlier_ws[0].describe()}")
    return violations
