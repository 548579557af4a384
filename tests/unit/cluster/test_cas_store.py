"""Issue 19: the CASPaxos acceptor's durable LMDB store (cluster/cas_store.py) and its server-side service
(cluster/cas_rpc.py). Promises and accepted values survive a reopen; keys are independent; the acceptor answers only
after the fsync, and never when the fsync fails (the store then refuses everything until reopened); a cancelled
caller does not release a key's lock before its write is finished."""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.cas_rpc import BUCKET_CODEC, CasAcceptorService, ballot_from_wire, ballot_to_wire
from s4.cluster.cas_store import CasStore, CasStoreFailed, decode_slot, encode_slot, store_path
from s4.cluster.caspaxos import ZERO, Accepted, Acceptor, Ballot, BucketRecord, BucketStatus, Promise, Reject, Slot
from s4.cluster.wire.s4cluster.v1 import Ballot as WireBallot
from s4.cluster.wire.s4cluster.v1 import CasAcceptRequest, CasPrepareRequest

B1, B2, B3 = Ballot(1, "n1", 5), Ballot(2, "n2", 1), Ballot(3, "n1", 5)


def open_store(tmp_path: Path, sync: Callable[[], None] | None = None) -> CasStore:
    return CasStore(store_path(tmp_path), sync=sync)


def test_issue19_cas_store_keeps_promises_and_values_across_reopen(tmp_path: Path) -> None:
    async def first() -> None:
        store = open_store(tmp_path)
        acc: Acceptor[bytes] = Acceptor(store)
        assert await acc.prepare("bucket/a", B2) == Promise(B2, ZERO, None)
        assert await acc.accept("bucket/a", B2, b"va", (B1,)) == Accepted(B2)
        assert await acc.prepare("bucket/b", B1) == Promise(B1, ZERO, None)
        store.close()

    async def second() -> None:
        store = open_store(tmp_path)
        try:
            acc: Acceptor[bytes] = Acceptor(store)
            assert store.load_sync("bucket/a") == Slot(B2, B2, b"va", (B1,))
            assert await acc.prepare("bucket/b", B1) == Reject(B1)  # the promise of the previous life holds
            assert await acc.accept("bucket/a", B1, b"old", ()) == Reject(B2)
            assert await acc.prepare("bucket/a", B3) == Promise(B3, B2, b"va", (B1,))
            assert sorted(store.keys()) == ["bucket/a", "bucket/b"]
        finally:
            store.close()

    asyncio.run(first())
    asyncio.run(second())


def test_issue19_cas_store_files_are_private_and_incarnation_grows_per_open(tmp_path: Path) -> None:
    incarnations = []
    for _ in range(3):
        store = open_store(tmp_path)
        incarnations.append(store.next_incarnation())
        store.close()
    assert incarnations == [1, 2, 3]
    path = store_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((path / "data.mdb").stat().st_mode) == 0o600


def test_issue19_cas_store_keys_are_independent(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        store.save_sync("x", Slot(B2, B1, b"x1", ()))
        store.save_sync("y", Slot(B1, ZERO, None, ()))
        store.save_sync("x", Slot(B3, B3, b"x2", (B1,)))
        assert store.load_sync("y") == Slot(B1, ZERO, None, ())
        assert store.load_sync("x") == Slot(B3, B3, b"x2", (B1,))
        assert store.load_sync("z") == Slot()
        with pytest.raises(ValueError):
            store.load_sync("")
        with pytest.raises(ValueError):
            store.save_sync("k" * 512, Slot())
    finally:
        store.close()


def test_issue19_cas_store_refuses_a_second_open_in_one_process(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        with pytest.raises(CasStoreFailed, match="already open"):
            open_store(tmp_path)
    finally:
        store.close()
    open_store(tmp_path).close()  # closed: can be opened again


ballots = st.builds(Ballot, st.integers(0, 2**64 - 1), st.text(max_size=8), st.integers(0, 2**63))


@given(ballots, ballots, st.none() | st.binary(max_size=64), st.lists(ballots, max_size=16))
def test_issue19_cas_slot_and_wire_ballot_round_trip(promised: Ballot, accepted: Ballot, value: bytes | None,
                                                     lineage: list[Ballot]) -> None:
    slot = Slot(promised, accepted, value, tuple(lineage))
    assert decode_slot(encode_slot(slot)) == slot
    assert ballot_from_wire(WireBallot.parse(bytes(ballot_to_wire(promised)))) == promised
    assert ballot_from_wire(None) == ZERO


def test_issue19_bucket_record_codec_round_trips_and_refuses_garbage() -> None:
    rec = BucketRecord(BucketStatus.DELETING, "alice", 3, "tok")
    assert BUCKET_CODEC.decode(BUCKET_CODEC.encode(rec)) == rec
    with pytest.raises((ValueError, TypeError)):
        BUCKET_CODEC.decode(b"\x93\x01\x02\x03")


# --- fsync ordering ------------------------------------------------------------------------------------------------


def test_issue19_acceptor_answers_only_after_the_fsync_of_its_promise(tmp_path: Path) -> None:
    events: list[str] = []
    box: dict[str, CasStore] = {}

    def sync() -> None:
        store = box.get("store")
        if store is not None:  # the promise is committed (visible) when the fsync runs, and not yet answered
            with store.env.begin(db=store._slots) as txn:
                events.append("sync:" + ("committed" if txn.get(b"k") is not None else "missing"))
        store_env_sync(store)

    async def main() -> None:
        store = box["store"] = open_store(tmp_path, sync)
        try:
            answer = await Acceptor(store).prepare("k", B1)
            events.append(f"answer:{type(answer).__name__}")
        finally:
            store.close()

    asyncio.run(main())
    assert events == ["sync:committed", "answer:Promise"]


def store_env_sync(store: CasStore | None) -> None:
    if store is not None:
        store.env.sync(True)


def test_issue19_failed_fsync_gives_no_answer_and_poisons_the_store(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    fail = threading.Event()

    def sync() -> None:
        if fail.is_set():
            raise OSError(5, "Input/output error")

    async def main() -> None:
        store = open_store(tmp_path, sync)
        try:
            acc: Acceptor[bytes] = Acceptor(store)
            service = CasAcceptorService(acc)
            assert await acc.prepare("k", B1) == Promise(B1, ZERO, None)
            fail.set()
            with pytest.raises(CasStoreFailed, match="fsync failed"):
                await acc.prepare("k", B2)
            fail.clear()  # a later fsync "succeeding" proves nothing: the store stays refused until reopened
            with pytest.raises(CasStoreFailed, match="restart the node"):
                await acc.accept("k", B2, b"v", ())
            with pytest.raises(GRPCError) as err:
                await service.cas_prepare("n2", CasPrepareRequest(key="k", ballot=ballot_to_wire(B2)))
            assert err.value.status is Status.UNAVAILABLE
            with pytest.raises(CasStoreFailed):
                store.load_sync("other")
        finally:
            store.close()

    asyncio.run(main())
    assert "fsync failed" in caplog.text and "stops voting" in caplog.text


# --- key locks -------------------------------------------------------------------------------------------------


class GatedStore:
    """Wraps a CasStore; a save of ``gated`` blocks (in its worker thread) until ``release`` is set."""

    def __init__(self, inner: CasStore, gated: str) -> None:
        self.inner, self.gated = inner, gated
        self.release = threading.Event()
        self.entered = threading.Event()

    async def load(self, key: str) -> Slot[bytes]:
        return await self.inner.load(key)

    async def save(self, key: str, slot: Slot[bytes]) -> None:
        if key != self.gated:
            return await self.inner.save(key, slot)

        def blocked() -> None:
            self.entered.set()
            assert self.release.wait(10)
            self.inner.save_sync(key, slot)

        await self.inner._off_loop(blocked)


async def _wait_for(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("event never set")


def test_issue19_acceptor_locks_per_key_so_one_slow_fsync_does_not_hold_up_others(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(tmp_path)
        gate = GatedStore(store, "slow")
        acc: Acceptor[bytes] = Acceptor(gate)
        try:
            slow = asyncio.ensure_future(acc.prepare("slow", B1))
            await _wait_for(gate.entered)
            # Another key proceeds while "slow" is mid-save (the acceptor used to hold one lock for every key).
            assert await asyncio.wait_for(acc.prepare("fast", B1), 5) == Promise(B1, ZERO, None)
            # The same key waits: its read-modify-write cannot interleave with the one in flight.
            same = asyncio.ensure_future(acc.prepare("slow", B2))
            await asyncio.sleep(0.02)
            assert not same.done()
            gate.release.set()
            assert await slow == Promise(B1, ZERO, None)
            assert await same == Promise(B2, ZERO, None)
            assert store.load_sync("slow").promised == B2
            assert not acc._locks and not acc._users  # the per-key locks are dropped when unused
        finally:
            gate.release.set()
            store.close()

    asyncio.run(main())


def test_issue19_cancelled_caller_keeps_the_key_locked_until_its_write_is_done(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(tmp_path)
        gate = GatedStore(store, "k")
        acc: Acceptor[bytes] = Acceptor(gate)
        try:
            first = asyncio.ensure_future(acc.prepare("k", B2))
            await _wait_for(gate.entered)
            first.cancel()
            second = asyncio.ensure_future(acc.prepare("k", B1))  # lower: must see the promise of B2
            await asyncio.sleep(0.02)
            assert not first.done() and not second.done()  # the cancelled one still holds the lock
            gate.release.set()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await second == Reject(B2)
        finally:
            gate.release.set()
            store.close()

    asyncio.run(main())


# --- the server side's checks --------------------------------------------------------------------------------------


def test_issue19_cas_service_checks_ballots_and_lineage(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        store = open_store(tmp_path)
        service = CasAcceptorService(Acceptor(store))
        out: list[Any] = []
        try:
            reply = await service.cas_prepare("n2", CasPrepareRequest(key="k", ballot=ballot_to_wire(B2)))
            out.append((reply.promised, ballot_from_wire(reply.accepted_ballot), reply.value, reply.lineage))
            bad = [CasPrepareRequest(key="k", ballot=ballot_to_wire(B1)),  # n1's ballot sent by n2
                   CasPrepareRequest(key="k"),
                   CasPrepareRequest(key="", ballot=ballot_to_wire(B2)),
                   CasAcceptRequest(key="k", ballot=ballot_to_wire(B2), lineage=[ballot_to_wire(B3)]),
                   CasAcceptRequest(key="k", ballot=ballot_to_wire(B2), value=b"x" * (64 * 1024 + 1))]
            for request in bad:
                call = service.cas_prepare if isinstance(request, CasPrepareRequest) else service.cas_accept
                with pytest.raises(GRPCError) as err:
                    await call("n2", request)  # type: ignore[arg-type]
                out.append(err.value.status)
            low = await service.cas_prepare("n1", CasPrepareRequest(key="k", ballot=ballot_to_wire(B1)))
            out.append((low.promised, ballot_from_wire(low.conflict)))
            ok = await service.cas_accept("n2", CasAcceptRequest(key="k", ballot=ballot_to_wire(B2), value=b"v",
                                                                  lineage=[ballot_to_wire(B1)]))
            out.append(ok.accepted)
            again = await service.cas_prepare("n1", CasPrepareRequest(key="k", ballot=ballot_to_wire(B3)))
            out.append((ballot_from_wire(again.accepted_ballot), again.value,
                        [ballot_from_wire(b) for b in again.lineage]))
        finally:
            store.close()
        return out

    out = asyncio.run(main())
    assert out[0] == (True, ZERO, None, [])
    assert out[1:6] == [Status.INVALID_ARGUMENT] * 5
    assert out[6] == (False, B2)
    assert out[7] is True
    assert out[8] == (B2, b"v", [B1])
