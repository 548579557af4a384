"""Issue 19: the hand-made ApplyEventsStream envelopes (cluster/stream_wire.py) write exactly the bytes betterproto2
writes for the generated messages, and read what it writes (and unknown fields), so a node with either codec talks
to the other; a truncated message is refused (ValueError), never read as something else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.stream_wire import StreamReply, StreamRequest
from s4.cluster.wire.s4cluster.v1 import (
    ApplyEventsReply,
    ApplyEventsRequest,
    ApplyEventsStreamReply,
    ApplyEventsStreamRequest,
)

ids = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
blobs = st.binary(max_size=300)
requests = st.one_of(st.none(), st.builds(lambda e: ApplyEventsRequest(events=e), st.lists(blobs, max_size=3)))
replies = st.one_of(st.none(), st.builds(lambda a, s: ApplyEventsReply(applied=a, journal_seq=s), u32, ids))


@settings(max_examples=300, deadline=None)
@given(ids, requests, u32, blobs)
def test_a_request_has_the_generated_bytes_both_ways(ident: int, request: ApplyEventsRequest | None, timeout: int,
                                                     packed: bytes) -> None:
    ours = StreamRequest(id=ident, request=request, timeout_ms=timeout, packed=packed)
    theirs = ApplyEventsStreamRequest(id=ident, request=request, timeout_ms=timeout, packed=packed)
    assert bytes(ours) == bytes(theirs)
    back = StreamRequest.FromString(bytes(theirs))
    assert (back.id, back.request, back.timeout_ms, back.packed) == (ident, request, timeout, packed)


@settings(max_examples=300, deadline=None)
@given(ids, replies, u32, st.text(max_size=40), blobs)
def test_a_reply_has_the_generated_bytes_both_ways(ident: int, reply: ApplyEventsReply | None, status: int,
                                                   message: str, packed: bytes) -> None:
    ours = StreamReply(id=ident, reply=reply, status=status, message=message, packed=packed)
    theirs = ApplyEventsStreamReply(id=ident, reply=reply, status=status, message=message, packed=packed)
    assert bytes(ours) == bytes(theirs)
    back = StreamReply.FromString(bytes(theirs))
    assert (back.id, back.reply, back.status, back.message, back.packed) == (ident, reply, status, message, packed)


def test_unknown_fields_are_skipped() -> None:
    known = bytes(ApplyEventsStreamReply(id=7, packed=b"abc"))
    extra = bytes([0x30, 0x05]) + bytes([0x3A, 0x02]) + b"zz" + bytes([0x41]) + b"\0" * 8 + bytes([0x4D]) + b"\0" * 4
    back = StreamReply.FromString(known + extra)
    assert (back.id, back.packed) == (7, b"abc")


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_a_truncated_message_is_refused(cut: int) -> None:
    data = bytes(ApplyEventsStreamRequest(id=300, packed=b"x" * 10))
    with pytest.raises(ValueError):
        StreamRequest.FromString(data[:-cut])
