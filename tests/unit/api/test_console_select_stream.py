"""The console's decoder of SelectObjectContent's event stream (api/console/select.py): records come back whatever
the chunking, and an error message mid-stream is raised, not shown as rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.api.console.select import SelectFailed, records, request_xml
from s4.api.s3 import eventstream


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for cut in sorted(set(cuts)):
        yield data[at:cut]
        at = cut
    yield data[at:]


def _collect(data: bytes, cuts: list[int]) -> list[bytes]:
    async def run() -> list[bytes]:
        return [r async for r in records(_chunks(data, cuts))]
    return asyncio.run(run())


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=5), st.data())
def test_console_select_records_decoded_whatever_the_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join([eventstream.cont(), *map(eventstream.records, payloads), eventstream.stats(1, 1, 1),
                       eventstream.end()])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert _collect(stream, cuts) == payloads


def test_console_select_error_event_raised() -> None:
    stream = eventstream.records(b"a,1\n") + eventstream.error("CastFailed", "not a number")
    with pytest.raises(SelectFailed, match="CastFailed: not a number"):
        _collect(stream, [])


def test_console_select_request_escapes_the_expression() -> None:
    body = request_xml("SELECT * FROM s3object s WHERE s.a < '<x>&'", "json-document").decode()
    assert "s.a &lt; '&lt;x&gt;&amp;'" in body and "<Type>DOCUMENT</Type>" in body
