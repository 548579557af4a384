"""robust19: where a bucket lives, asked of the registry by a node outside the registry pool (cluster/
buckets_register.py ``RegisterNames.pool_of``), over a simulated registry pool of two acceptors (pool-1 of the
pools integration test: N=2, so either node lost is a lost majority).

Every HTTP worker of a node asks the supervisor's one ``RegisterNames``: the pool the registry last named for a
bucket routes while the registry has no majority, whichever worker asked before, and nothing is invented for a
bucket the registry never named or last said is free."""

from __future__ import annotations

import random

import pytest
from helpers.simcluster import Faults, SimNetwork
from helpers.simloop import run_sim

from s4.cluster.buckets_register import BucketRegister, RegisterNames
from s4.cluster.caspaxos import Proposer
from s4.engine.errors import ServiceUnavailableError

REGISTRY = ["node-1", "node-2"]


def names_outside(net: SimNetwork) -> RegisterNames:
    """node-3's view of the registry: a remote proposer (another pool's node), few attempts, short phases."""
    proposer = Proposer("node-3", REGISTRY, net, incarnation=3, max_attempts=3, phase_timeout=0.5, remote=True)
    return RegisterNames(BucketRegister(proposer, "pool-2"))


def test_robust19_a_pool_named_to_any_worker_routes_while_the_registry_has_no_majority() -> None:
    async def main() -> None:
        net = SimNetwork(REGISTRY, random.Random(7), Faults(max_delay=0.001))
        creator = RegisterNames(BucketRegister(Proposer("node-1", REGISTRY, net, incarnation=1), "pool-1"))
        assert (await creator.create("in-one", "owner", "t1")).outcome.value == "created"
        assert (await creator.create("gone", "owner", "t2")).outcome.value == "created"
        names = names_outside(net)
        # one worker routed in-one and gone earlier (through the supervisor's port); gone was deleted since
        assert await names.pool_of("in-one", "pool-1") == "pool-1"
        assert await names.pool_of("gone", "pool-1") == "pool-1"
        await creator.register.delete("gone", "t3", is_empty=_empty)
        assert await names.pool_of("gone", "pool-1") is None
        net.crash("node-2")  # pool-1 without a majority
        # another worker, which never routed in-one itself, asks now: the pool the registry named routes
        assert await names.pool_of("in-one", "pool-1") == "pool-1"
        for never_named in ("gone", "never-created"):  # free when last asked, or never asked: never a guess
            with pytest.raises(ServiceUnavailableError):
                await names.pool_of(never_named, "pool-1")
        net.restart("node-2")
        assert await names.pool_of("never-created", "pool-1") is None

    run_sim(main())


async def _empty(_record: object) -> bool:
    return True
