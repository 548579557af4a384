"""cluster/blob_push.py: a large write's chunks pushed to the peers during its upload, and the replicator's
ApplyEvents of that write waiting for those pushes (so the peer finds the chunks staged and fetches nothing).

Before: the peers learned of a large write only from its ApplyEvents (BLOB_TRANSFER_FETCH), sent once the upload
ended and the batch committed, and then fetched every chunk with GetBlob: the whole transfer in series with the
upload (a 64 MiB PUT to a 3-node pool waited for both)."""

from __future__ import annotations

import asyncio

from helpers.simloop import run_sim
from test_replicator import SETTINGS, MemHints, Peer, SimTransport, write_events

from s4.cluster.blob_push import BlobPusher
from s4.cluster.liveness import DEAD
from s4.cluster.replicator import Replicator
from s4.engine.model import BlobLocation


def loc(n: int) -> BlobLocation:
    return BlobLocation(bytes([n]) * 32, "w01-00000001.vol", 4096 * n, 4 << 20)


class Sends:
    """A scripted ``Sender``: each push takes ``delay`` simulated seconds; ``fail`` peers raise."""

    def __init__(self, delay: float = 1.0, fail: frozenset[str] = frozenset()) -> None:
        self.delay, self.fail = delay, fail
        self.done: list[tuple[str, bytes, float]] = []
        self.running = 0
        self.most = 0

    async def __call__(self, peer: str, location: BlobLocation) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
            if peer in self.fail:
                raise ConnectionError(f"{peer} is unreachable")
            self.done.append((peer, location.hash, asyncio.get_running_loop().time()))
        finally:
            self.running -= 1


def test_issue19_each_new_chunk_goes_to_every_live_peer_once_and_settled_waits_for_it() -> None:
    sends = Sends(delay=1.0)
    pusher = BlobPusher(["b", "c", "d"], sends, state=lambda p: DEAD if p == "d" else "alive", lanes=2)

    async def main() -> float:
        for n in range(3):
            pusher.stored(loc(n))
        pusher.stored(loc(0))  # already on its way: not queued twice
        await pusher.settled("b", [loc(2).hash], timeout=60)
        return asyncio.get_running_loop().time()

    settled_at = run_sim(main())
    assert sorted(h for p, h, _ in sends.done if p == "b") == sorted(loc(n).hash for n in range(3))
    assert settled_at == 2.0  # two lanes: chunks 0 and 1 at t=1, chunk 2 at t=2
    run_sim(asyncio.sleep(5))
    assert {p for p, _, _ in sends.done} == {"b", "c"}  # never the dead peer
    assert sends.most <= 4 and pusher.pushed == 6 and pusher.failed == 0


def test_issue19_a_failed_push_is_counted_and_still_settles() -> None:
    sends = Sends(delay=0.5, fail=frozenset({"c"}))
    pusher = BlobPusher(["b", "c"], sends)

    async def main() -> None:
        pusher.stored(loc(1))
        await pusher.settled("c", [loc(1).hash], timeout=60)
        await pusher.settled("b", [loc(1).hash], timeout=60)

    run_sim(main())
    assert pusher.failed == 1 and pusher.pushed == 1


def test_issue19_a_full_queue_drops_the_chunk_and_settled_does_not_wait_for_it() -> None:
    sends = Sends(delay=10.0)
    pusher = BlobPusher(["b"], sends, max_queued=1, lanes=1)

    async def main() -> float:
        pusher.stored(loc(1))  # taken by the lane at once
        await asyncio.sleep(0)
        pusher.stored(loc(2))  # queued
        pusher.stored(loc(3))  # beyond the bound: left to GetBlob
        await pusher.settled("b", [loc(3).hash], timeout=60)
        return asyncio.get_running_loop().time()

    assert run_sim(main()) == 0.0
    assert pusher.dropped == 1


def test_issue19_settled_gives_up_at_its_timeout_and_stop_ends_the_pushes() -> None:
    sends = Sends(delay=100.0)
    pusher = BlobPusher(["b"], sends)

    async def main() -> float:
        pusher.stored(loc(1))
        await pusher.settled("b", [loc(1).hash], timeout=3.0)
        at = asyncio.get_running_loop().time()
        await pusher.stop()
        pusher.stored(loc(2))  # after stop: ignored
        return at

    assert run_sim(main()) == 3.0
    assert sends.done == []


class Pushes:
    """Stands for a BlobPusher whose pushes of the write's chunk to each peer end at ``until``."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.asked: list[tuple[str, frozenset[bytes], float]] = []

    async def settled(self, peer: str, digests: object, timeout: float) -> None:
        self.asked.append((peer, frozenset(digests), timeout))  # type: ignore[arg-type]
        await asyncio.sleep(max(0.0, self.until - asyncio.get_running_loop().time()))

    async def stop(self) -> None:
        pass


def test_issue19_a_large_writes_apply_events_waits_for_its_chunks_pushes_to_that_peer() -> None:
    plan = {"b": Peer("ok"), "c": Peer("ok")}
    transport = SimTransport(plan)
    replicator = Replicator(list(plan), 2, transport, MemHints(), settings=SETTINGS)  # type: ignore[arg-type]
    pushes = Pushes(until=2.5)
    replicator.pushes = pushes
    run_sim(replicator.replicate(write_events()))
    assert sorted(peer for peer, _, _ in pushes.asked) == ["b", "c"]
    assert all(digests == {b"h" * 32} for _, digests, _ in pushes.asked)  # the chunk the write references
    assert [at for _, at, _ in transport.calls] == [2.5, 2.5]  # each ApplyEvents only once its pushes settled
