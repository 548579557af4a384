"""cluster/blob_push.py: a large write's chunks pushed to the peers during its upload, and the replicator's
ApplyEvents of that write waiting for those pushes (so the peer finds the chunks staged and fetches nothing).

Before: the peers learned of a large write only from its ApplyEvents (BLOB_TRANSFER_FETCH), sent once the upload
ended and the batch committed, and then fetched every chunk with GetBlob: the whole transfer in series with the
upload (a 64 MiB PUT to a 3-node pool waited for both)."""

from __future__ import annotations

import asyncio

import pytest
from helpers.simloop import run_sim
from test_replicator import SETTINGS, MemHints, Peer, SimTransport, write_events

from s4.cluster.blob_push import BlobPusher, SharedBudget, SharedPieces
from s4.cluster.liveness import DEAD
from s4.cluster.pre_encoded import Encoded, PassThroughCodec
from s4.cluster.replicator import Replicator
from s4.cluster.wire.s4cluster.v1 import PutBlobChunk, PutBlobReply
from s4.engine.model import BlobLocation
from s4.engine.volumes.record import DamagedBlob


def loc(n: int) -> BlobLocation:
    return BlobLocation(bytes([n]) * 32, "w01-00000001.vol", 4096 * n, 4 << 20)


class Sends:
    """A scripted ``Sender``: each push takes ``delay`` simulated seconds; ``fail`` peers raise."""

    def __init__(self, delay: float = 1.0, fail: frozenset[str] = frozenset()) -> None:
        self.delay, self.fail = delay, fail
        self.done: list[tuple[str, bytes, float]] = []
        self.running = 0
        self.most = 0

    async def __call__(self, peer: str, location: BlobLocation, shared: SharedPieces) -> None:
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


# -- one read and one encoding per piece for every peer (SharedPieces) ------------------------------------------------
# Before: each peer's push read every piece of the chunk again and betterproto2 encoded it again (~1 ms of CPU per
# MiB and peer on the coordinator, the largest item of its 64 MiB PUT after the socket writes).

PIECE = 1024 * 1024


class PieceSends:
    """A ``Sender`` that takes a 4-piece chunk's messages through ``shared`` as pool_sender does, counting how
    often a piece is produced (read and encoded); peer ``slow`` takes ``lag`` simulated seconds per piece."""

    def __init__(self, lag: float = 0.0, slow: str = "", fail_at: dict[str, int] | None = None) -> None:
        self.lag, self.slow, self.fail_at = lag, slow, fail_at or {}
        self.made: list[tuple[str, int]] = []
        self.got: dict[str, list[Encoded]] = {}

    async def __call__(self, peer: str, location: BlobLocation, shared: SharedPieces) -> None:
        for i in range(4):
            if self.fail_at.get(peer) == i:
                raise ConnectionError(f"{peer} went away")

            async def make(i: int = i) -> Encoded:
                await asyncio.sleep(0.1)  # the read and the encoding take time: the other peer may ask meanwhile
                self.made.append((peer, i))
                return Encoded.of(PutBlobChunk(data=location.hash + bytes([i])))

            message = await shared.message(peer, i * PIECE, PIECE, make)
            self.got.setdefault(peer, []).append(message)
            if peer == self.slow:
                await asyncio.sleep(self.lag)


def test_issue19_each_piece_of_a_pushed_chunk_is_read_and_encoded_once_for_both_peers() -> None:
    sends = PieceSends(lag=0.5, slow="c")
    pusher = BlobPusher(["b", "c"], sends)

    async def main() -> None:
        pusher.stored(loc(1))
        await pusher.settled("c", [loc(1).hash], timeout=60)
        await pusher.settled("b", [loc(1).hash], timeout=60)

    run_sim(main())
    assert sorted(i for _, i in sends.made) == [0, 1, 2, 3]  # once each, not once per peer
    assert sends.got["b"] == sends.got["c"]  # the same bytes to both peers
    assert [PutBlobChunk.FromString(m.data).data for m in sends.got["c"]] == [
        loc(1).hash + bytes([i]) for i in range(4)]
    assert pusher.pushed == 2 and pusher._budget.used == 0  # nothing kept once both peers sent it


def test_issue19_shared_pieces_are_bounded_and_a_peer_that_ends_early_releases_them() -> None:
    budget = SharedBudget(limit=2 * PIECE)
    shared = SharedPieces(["b", "c"], budget)

    async def make(i: int) -> Encoded:
        return Encoded.of(PutBlobChunk(data=bytes([i])))

    async def main() -> None:
        for i in range(3):  # b runs ahead: two pieces kept for c, the third beyond the bound is not
            await shared.message("b", i * PIECE, PIECE, lambda i=i: make(i))
        assert shared.kept == 2 and budget.used == 2 * PIECE
        assert (await shared.message("c", 0, PIECE, lambda: make(99))).data == bytes(PutBlobChunk(data=bytes([0])))
        assert shared.kept == 1 and budget.used == PIECE
        shared.leave("c")  # c's push failed: what was kept for it goes
        assert shared.kept == 0 and budget.used == 0

    run_sim(main())


def test_issue19_a_piece_whose_producer_failed_is_read_by_the_next_peer_itself() -> None:
    shared = SharedPieces(["b", "c"], SharedBudget())
    order: list[str] = []

    async def broken() -> Encoded:
        await asyncio.sleep(1)
        raise DamagedBlob("block 3: checksum mismatch")

    async def fine() -> Encoded:
        order.append("c made its own")
        return Encoded.of(PutBlobChunk(data=b"x"))

    async def main() -> tuple[BaseException | Encoded, BaseException | Encoded]:
        first = asyncio.ensure_future(shared.message("b", 0, PIECE, broken))
        await asyncio.sleep(0.5)
        second = asyncio.ensure_future(shared.message("c", 0, PIECE, fine))
        got = await asyncio.gather(first, second, return_exceptions=True)
        return got[0], got[1]

    b_got, c_got = run_sim(main())
    assert isinstance(b_got, DamagedBlob) and order == ["c made its own"]
    assert isinstance(c_got, Encoded) and shared.kept == 0


def test_issue19_pre_encoded_messages_pass_the_bulk_codec_unchanged_and_parse_the_same() -> None:
    codec = PassThroughCodec()
    message = PutBlobChunk(data=bytes(range(256)) * 4)
    encoded = Encoded.of(message)
    assert codec.encode(encoded, PutBlobChunk) is encoded.data == bytes(message)
    assert codec.decode(codec.encode(encoded, PutBlobChunk), PutBlobChunk) == message
    assert codec.encode(message, PutBlobChunk) == bytes(message)  # any other message: encoded as ProtoCodec does
    with pytest.raises(TypeError):
        codec.encode(encoded, PutBlobReply)
