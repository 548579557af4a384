"""Select's object readers: ScanRange record selection, and pyarrow's read-ahead held near the consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from s4.engine.select import records, streams
from s4.engine.select.inputs import CsvInput, InputSpec, Meter
from s4.engine.select.readahead import ReadAhead


def ranged(body: bytes, start: int, end: int | None, sep: bytes = b"\n") -> bytes:
    """What _scan_range keeps when fed the way stream_reader feeds it (from byte start - 1, in small pieces)."""
    data = body[max(start - 1, 0):]
    pieces = (data[i:i + 3] for i in range(0, len(data), 3))
    return b"".join(records.scan_range(pieces, start, end, sep))


BODY = b"aa\nbbb\nc\ndddd\n"  # records start at 0, 3, 7 and 9


@pytest.mark.parametrize(("start", "end", "expected"), [
    (0, None, BODY),
    (0, 0, b"aa\n"),
    (1, 3, b"bbb\n"),  # 0 began before the range; 3 starts at its end
    (3, 3, b"bbb\n"),
    (4, 8, b"c\n"),
    (2, 2, b""),
    (9, None, b"dddd\n"),
    (10, None, b""),
    (14, None, b""),
])
def test_scan_range_keeps_records_that_start_inside(start: int, end: int | None, expected: bytes) -> None:
    assert ranged(BODY, start, end) == expected


def test_scan_range_on_a_custom_record_delimiter() -> None:
    body = BODY.replace(b"\n", b";")
    assert ranged(body, 1, 8, b";") == b"bbb;c;"
    assert list(records.lines(iter([b"a;b", b"b;", b"c"]), b";")) == [b"a;", b"bb;", b"c"]


def test_read_ahead_waits_for_the_consumer_but_never_deadlocks() -> None:
    gate = ReadAhead(lambda: None)
    for _ in range(ReadAhead.AHEAD):
        gate.before_read()  # within the allowance: no wait
    blocked = threading.Thread(target=gate.before_read, daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # nobody consumed and nobody waits: the reader is held
    with gate.consumer_waits():
        blocked.join(5)  # a consumer that waits (and gets nothing) lets one more block through after STALL_S
        assert not blocked.is_alive()
    with gate.consumer_waits():
        pass  # one more batch handed on: the reader is one block behind its allowance again
    late = threading.Thread(target=gate.before_read, daemon=True)
    late.start()
    late.join(5)
    assert not late.is_alive()
    gate.close()
    with pytest.raises(OSError):
        gate.before_read()  # the query is over: pyarrow's reading thread gets an error and ends


def test_closing_releases_a_reader_thread_waiting_at_the_gate() -> None:
    gate = ReadAhead(lambda: None)
    for _ in range(ReadAhead.AHEAD):
        gate.before_read()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            gate.before_read()
        except OSError as exc:
            errors.append(exc)

    blocked = threading.Thread(target=read, daemon=True)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()
    gate.close()
    blocked.join(5)
    assert not blocked.is_alive() and errors


class FakeFetcher:
    """Serves one generated CSV object in 1 MiB pieces and counts them."""

    def __init__(self, body: bytes) -> None:
        self.body, self.meter, self.pulled = body, Meter(), 0
        self.gates: list[ReadAhead] = []

    def check(self) -> None:
        pass

    def pieces(self, version: Any, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        end = len(self.body) if length is None else start + length
        for pos in range(start, end, 1 << 20):
            self.pulled += 1
            yield self.body[pos:min(pos + (1 << 20), end)]


def test_pyarrow_read_ahead_stays_within_a_few_blocks() -> None:
    body = b"k,v\n" + b"".join(b"key%08d,%d\n" % (i, i) for i in range(800_000))  # 16 MiB: 16 blocks
    fetcher = FakeFetcher(body)
    reader = streams.stream_reader(fetcher, [object()], InputSpec("csv", csv=CsvInput(header="USE")))  # type: ignore[arg-type, list-item]
    first = reader.read_next_batch()
    time.sleep(0.5)  # ample time for an unthrottled reader to fetch all 16 blocks (it reads 32 ahead)
    assert first.num_rows > 0
    assert fetcher.pulled <= ReadAhead.AHEAD + 4, fetcher.pulled
    rows = first.num_rows + sum(batch.num_rows for batch in reader)
    assert rows == 800_000 and fetcher.pulled >= len(body) >> 20


def test_issue18_decompression_yields_at_most_a_block_per_piece() -> None:
    import bz2
    import gzip

    from s4.engine.errors import S3Error
    from s4.engine.select.inputs import BLOCK_BYTES
    body = bytes(16 * BLOCK_BYTES) + b"end\n"
    for compression, data in (("GZIP", gzip.compress(body) * 2), ("BZIP2", bz2.compress(body) * 2)):
        pieces = list(records.decompress(iter([data]), compression))  # a whole bomb in one input piece
        assert max(map(len, pieces)) <= BLOCK_BYTES
        assert b"".join(pieces) == body * 2  # multi-member / multi-stream still decoded whole
    with pytest.raises(S3Error) as info:
        list(records.decompress(iter([b"not gzip"]), "GZIP"))
    assert info.value.code.aws_code == "InvalidCompressionFormat"


def test_issue18_a_record_over_one_mib_is_over_max_record_size() -> None:
    from s4.engine.errors import S3Error
    from s4.engine.select.inputs import MAX_RECORD_BYTES
    ok = b"x" * (MAX_RECORD_BYTES - 1) + b"\n"
    assert list(records.lines(iter([ok[:10], ok[10:]]))) == [ok]
    with pytest.raises(S3Error) as info:  # no separator: refused once past the limit, not buffered to the end
        for _ in records.lines(iter([b"y" * 65536] * 40)):
            pass
    assert info.value.code.aws_code == "OverMaxRecordSize"


def test_issue18_result_records_over_one_mib_are_refused() -> None:
    import pyarrow as pa

    from s4.engine.errors import S3Error
    from s4.engine.select.output import CsvEncoder, JsonArrayEncoder, JsonRecordsEncoder
    big = pa.record_batch({"s": ["a", "é" * (600 * 1024)]})  # 600 Ki characters, 1.2 MB of UTF-8
    small = pa.record_batch({"s": ["a", "b" * 1000]})
    for encoder in (CsvEncoder(), JsonRecordsEncoder(), JsonArrayEncoder()):
        encoder.begin(small.schema)
        assert encoder.batch(small)
        with pytest.raises(S3Error) as info:
            encoder.batch(big)
        assert info.value.code.aws_code == "OverMaxRecordSize"


def test_issue18_budget_refuses_what_does_not_fit_and_gives_back() -> None:
    from s4.engine.errors import S3Error
    from s4.engine.select.budget import MemoryBudget
    budget = MemoryBudget()
    first = budget.reserve(60, 100)
    with pytest.raises(S3Error) as info:
        budget.reserve(60, 100)
    assert (info.value.code.aws_code, info.value.status, info.value.headers) == ("Busy", 503, {"Retry-After": "1"})
    budget.release(first)
    budget.release(budget.reserve(100, 100))
    assert budget.reserved == 0
