"""PieceWriter (cluster/piece_writer.py): a received blob's pieces hashed and written on one thread, in order,
bounded, and stopped cleanly on an error or a cancellation before the record can be aborted."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest

from s4.cluster.piece_writer import PieceWriter


class FakeRecord:
    """Records what was written and on which thread; optionally slow, or failing at a given piece."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.pieces: list[bytes] = []
        self.threads: set[int] = set()
        self.fail_at, self.gate = fail_at, gate
        self.closed = False

    def write(self, piece: bytes) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        assert not self.closed, "written after the record was given up"
        if self.fail_at is not None and len(self.pieces) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.pieces.append(bytes(piece))
        self.threads.add(threading.get_ident())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("ahead", [1, 3000, 1 << 20])
def test_pieces_are_hashed_and_written_in_order_off_the_loop(ahead: int) -> None:
    pieces = [bytes([i]) * (1000 + i) for i in range(20)]

    async def main() -> tuple[FakeRecord, Any, int]:
        record, hasher = FakeRecord(), hashlib.sha256()
        writer = PieceWriter(record, hasher, ahead_bytes=ahead)  # type: ignore[arg-type]
        writer.start()
        for piece in pieces:
            await writer.put(piece)
        await writer.put(b"")  # nothing queued for an empty piece
        await writer.close()
        return record, hasher, writer.queued_total

    record, hasher, total = run(main())
    assert record.pieces == pieces
    assert hasher.digest() == hashlib.sha256(b"".join(pieces)).digest()
    assert total == sum(map(len, pieces))
    assert threading.get_ident() not in record.threads and len(record.threads) == 1


def test_the_loop_waits_when_too_much_is_queued() -> None:
    async def main() -> None:
        gate = threading.Event()
        writer = PieceWriter(FakeRecord(gate=gate), hashlib.sha256(), ahead_bytes=2500)  # type: ignore[arg-type]
        writer.start()
        await writer.put(b"a" * 1000)
        await writer.put(b"b" * 1000)
        third = asyncio.ensure_future(writer.put(b"c" * 1000))  # 3000 queued > 2500: waits for the thread
        await asyncio.sleep(0.05)
        assert not third.done()
        gate.set()
        await asyncio.wait_for(third, 5)
        await writer.close()

    run(main())


def test_a_failed_write_is_raised_and_stops_the_thread() -> None:
    async def main() -> FakeRecord:
        record = FakeRecord(fail_at=2)
        writer = PieceWriter(record, hashlib.sha256(), ahead_bytes=1)  # type: ignore[arg-type]
        writer.start()
        with pytest.raises(OSError):
            for _ in range(10):
                await writer.put(b"x" * 100)
        with pytest.raises(OSError):
            await writer.close()
        return record

    assert len(run(main()).pieces) == 2


def test_close_after_a_cancellation_waits_for_the_writes_in_flight() -> None:
    async def main() -> None:
        gate = threading.Event()
        record = FakeRecord(gate=gate)
        writer = PieceWriter(record, hashlib.sha256())  # type: ignore[arg-type]
        writer.start()
        await writer.put(b"x" * 100)
        closing = asyncio.ensure_future(writer.close())
        await asyncio.sleep(0.02)
        closing.cancel()  # the caller is cancelled while the thread still writes
        await asyncio.sleep(0.02)
        assert not closing.done()  # close goes on waiting for the thread
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await closing
        record.closed = True  # what aborting the record does next: no write may follow
        assert record.pieces == [b"x" * 100]

    run(main())
