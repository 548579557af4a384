"""Issue 19: lifecycle and multipart expiry act only on the node holding the job's lease (engine/jobs/service.py
over engine/ports.py ``JobLeasePort``, engine/jobs/lease.py). A real engine and scripted lease ports: a run on a
node that does not hold the lease acts on nothing and is counted in the status; a lease that runs out stops the
run before its next action; compaction still compacts without the multipart lease; dry runs need no lease;
stopping the jobs gives the held leases back."""

from __future__ import annotations

import logging
import math
import time

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine
from s4.engine.jobs.service import Jobs, JobSettings
from s4.engine.ports import LeaseGrant

pytestmark = pytest.mark.anyio
DAY = 86400.0
RULE = {"id": "all", "status": "Enabled", "legacy_prefix": False,
        "filter": {"prefix": "", "tags": {}, "gt": None, "lt": None, "and": False},
        "expiration": {"days": 1}, "noncurrent": None, "abort_days": None}


class ScriptedLeases:
    """A JobLeasePort answering what the test says: held by ``holder`` (another node), or granted until
    ``deadline`` (monotonic seconds)."""

    def __init__(self, holder: str = "", deadline: float = math.inf) -> None:
        self.holder, self.deadline = holder, deadline
        self.acquired: list[str] = []
        self.released: list[str] = []

    async def acquire(self, job: str) -> LeaseGrant:
        self.acquired.append(job)
        if self.holder:
            return LeaseGrant(job, False, self.holder, 7, 123, reason="held")
        return LeaseGrant(job, True, "me", 3, 456, deadline=self.deadline)

    async def release(self, job: str) -> None:
        self.released.append(job)


async def expiring_bucket(engine: Engine, count: int = 4) -> None:
    await engine.create_bucket("bkt")
    await engine.set_bucket_config("bkt", "lifecycle", {"rules": [RULE]})
    for i in range(count):
        await put(engine, "bkt", f"o{i}", b"x")


def later() -> float:
    return time.time() + 9 * DAY


async def test_issue19_lifecycle_acts_on_nothing_where_another_node_holds_the_lease(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    await expiring_bucket(engine)
    leases = ScriptedLeases(holder="node-2")
    jobs = Jobs(engine, JobSettings(), clock=later, leases=leases)
    with caplog.at_level(logging.DEBUG, logger="s4.engine.jobs.service"):
        answer = await jobs.lifecycle()
    assert answer == {"worker": "lifecycle", "skipped": True, "lease": {
        "job": "lifecycle", "granted": False, "holder": "node-2", "term": 7, "expires_ms": 123, "reason": "held"}}
    assert "node node-2 holds the lease (term 7)" in caplog.text
    for i in range(4):
        assert await get(engine, "bkt", f"o{i}") == b"x"
    status = jobs.status("lifecycle")
    assert status["runs"] == 0 and status["skipped_runs"] == 1 and status["last_run"] is None
    assert status["lease"]["holder"] == "node-2" and status["lease"]["held_here"] is False
    dry = await jobs.lifecycle(dry_run=True)  # a dry run acts on nothing: no lease needed
    assert dry["done"] == {"would_expire_current": 4} and leases.acquired == ["lifecycle"]
    leases.holder = ""  # the lease is ours now: the run acts
    done = await jobs.lifecycle()
    assert done["done"] == {"expire_current": 4} and done["lease"]["term"] == 3
    assert jobs.status("lifecycle")["lease"]["held_here"] is True


async def test_issue19_a_run_whose_lease_ran_out_stops_before_its_next_action(engine: Engine) -> None:
    """The grant came back already past this node's deadline (the register answered late): not one action."""
    await expiring_bucket(engine)
    jobs = Jobs(engine, JobSettings(), clock=later, monotonic=lambda: 1000.0, leases=ScriptedLeases(deadline=999.0))
    report = await jobs.lifecycle()
    assert report["done"] == {"interrupted": 1}
    for i in range(4):
        assert await get(engine, "bkt", f"o{i}") == b"x"
    await jobs.stop()


async def test_issue19_compaction_skips_multipart_expiry_without_its_lease_and_still_compacts(
        engine: Engine) -> None:
    await engine.create_bucket("bkt")
    upload = await engine.create_multipart_upload("bkt", "big")
    settings = JobSettings(multipart_ttl_secs_override=0)
    leases = ScriptedLeases(holder="node-3")
    jobs = Jobs(engine, settings, clock=lambda: time.time() + 60, leases=leases)
    report = await jobs.compaction(threshold=0.0)
    assert report["done"].get("abort_upload") is None and report["done"]["multipart_ttl_skipped"] == 1
    assert "volumes" in report["examined"]  # the node-local part ran
    assert [u.upload_id for u in engine.list_multipart_uploads("bkt").uploads] == [upload]
    status = jobs.status("compaction")
    assert status["runs"] == 1 and status["skipped_runs"] == 1 and status["lease"]["holder"] == "node-3"
    leases.holder = ""
    report = await jobs.compaction(threshold=0.0)
    assert report["done"]["abort_upload"] == 1 and "multipart_ttl_skipped" not in report["done"]
    assert engine.list_multipart_uploads("bkt").uploads == []


async def test_issue19_stopping_the_jobs_gives_the_held_leases_back(engine: Engine) -> None:
    await expiring_bucket(engine, 1)
    leases = ScriptedLeases(deadline=time.monotonic() + 3600)
    jobs = Jobs(engine, JobSettings(), clock=later, leases=leases)
    assert (await jobs.lifecycle())["done"] == {"expire_current": 1}
    assert (await jobs.lifecycle())["done"] == {}  # still valid: not asked again
    assert leases.acquired == ["lifecycle"]
    await jobs.stop()
    assert leases.released == ["lifecycle"]
    assert jobs.status("lifecycle")["lease"]["held_here"] is False
