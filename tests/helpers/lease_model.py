"""The scripted ApplyEvents transport of the read-lease models (tests/unit/cluster/test_read_leases.py and
test_read_lease_asking.py): a grantor's copies to the holder ``a`` succeed, fail, hang or come late as the test's
fates say; its copies to ``b`` (a peer that never reads) always land quickly."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from s4.cluster.wire.s4cluster.v1 import ApplyEventsReply, ApplyEventsRequest
from s4.journal.codec import decode_event


@dataclass
class ModelTransport:
    """ApplyEvents to the holder ``a`` (``holder.applied`` gains a copy's seqs once it is applied, before it answers;
    one fate per write, then "ok") and to ``b``."""

    holder: Any
    rng: random.Random
    fates: list[str]

    async def apply_events(self, peer: str, request: ApplyEventsRequest, *,
                           timeout: float | None = None) -> ApplyEventsReply:
        seqs = [decode_event(bytes(e)).seq for e in request.events]
        if peer == "b":
            await asyncio.sleep(self.rng.uniform(0.0, 0.05))
            return ApplyEventsReply(applied=len(seqs))
        fate = self.fates.pop(0) if self.fates else "ok"
        if fate == "hang":
            await asyncio.sleep(timeout or 10.0)
            raise TimeoutError("deadline exceeded")
        await asyncio.sleep({"ok": self.rng.uniform(0.0, 0.1), "late": self.rng.uniform(0.5, 2.5),
                             "fail": self.rng.uniform(0.0, 0.5)}[fate])
        if fate == "fail":
            raise ConnectionError("refused")
        self.holder.applied.update(seqs)  # applied (journaled, projected) before it answers
        return ApplyEventsReply(applied=len(seqs))

    def catch_up(self, peer: str, request: object) -> object:
        raise AssertionError("not used")
