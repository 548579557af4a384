"""Two costs of Python's HTTP/2 stack (grpclib over h2 and hyperframe) on the inter-node connections, removed.

1. **Every received frame is hexlified whole.** h2's ``H2Connection._receive_frame`` logs
   ``repr(frame)`` at trace level, evaluated for every frame even with its no-op logger, and hyperframe 6's
   ``_raw_data_repr`` (what a DATA frame's repr prints) hexlifies the frame's entire payload before keeping the
   first 20 hex digits. A replica fetching a 64 MiB object's chunks hexlified 64 MiB (a quarter of its CPU in
   py-spy); every small ApplyEvents paid it too. ``fast_frame_repr`` replaces the function with one that hexlifies
   only the bytes it prints: the same string, for any input (tests/unit/cluster/test_h2_tuning.py checks it against
   the original).
2. **Blob data moves in 16 KiB frames.** HTTP/2's default ``SETTINGS_MAX_FRAME_SIZE`` is 16 KiB, so a 4 MiB chunk
   is 256 DATA frames, each a trip through h2's state machine and a socket write in grpclib. The blob connection
   (``PeerPool.bulk_stub``) advertises ``BULK_MAX_FRAME`` (1 MiB + 1 KiB) instead (``BulkChannel``), so a peer
   sending it a blob's pieces (GetBlob replies) sends a 1 MiB piece's whole message in one frame; the flow-control
   windows (4 MiB, grpclib's default) are
   unchanged. The small calls keep their own connection with the default frames. The gRPC server advertises the
   same on every connection it accepts (``large_frames_protocol``), so a blob pushed to it (PutBlob) arrives in
   1 MiB frames too.

3. **Every byte sent is copied four times in h2.** A DATA frame is serialized as ``header + b"".join([padding,
   data, padding])`` (two copies of the payload), appended to the connection's outgoing ``bytearray`` (a third)
   and handed to grpclib as ``bytes(that buffer)`` (a fourth), for every MiB of a blob sent to each peer.
   ``LeanH2Connection`` (the connections of ``BulkChannel`` and of the gRPC server) writes a large DATA payload to
   its transport as it is, after the bytes queued before and the frame's header (no copy), or, without a transport,
   appends header and payload to the buffer directly and hands a large buffer over as it is (one copy). The bytes
   on the wire are the same (tests/unit/cluster/test_h2_tuning.py compares them with hyperframe's own
   ``serialize``); frames with padding and every other frame type go through hyperframe as before.

4. **Every received frame is printed for a trace log nobody reads.** ``H2Connection._receive_frame`` evaluates
   ``repr(frame)`` for its trace-level log call before anything else, for every frame received on every connection
   (~4-9 µs each: the frame's flags and body formatted; ~3% of each node's loop thread under the pool's 4 KiB PUTs,
   py-spy). ``quiet_receive_frame`` installs the same method without that one statement (h2's logger is its no-op
   ``DummyLogger`` here); tests/unit/cluster/test_h2_tuning.py compares its syntax tree with h2's own minus that
   statement, so it fails when h2 changes the method.

All four reach into the libraries' internals (hyperframe's module function, grpclib's ``Channel._protocol_factory``,
its ``H2Protocol.connection``); tests/unit/cluster/test_h2_tuning.py fails if either moves.
"""

from __future__ import annotations

import binascii
from typing import Any

import hyperframe.frame
from grpclib.client import Channel
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame, RstStreamFrame

from .pre_encoded import BlobCodec

#: The frame size the blob connection advertises (HTTP/2 allows 16 KiB to 16 MiB - 1): a 1 MiB piece's whole message
#: (gRPC's 5-byte prefix, the field's tag and length, the piece) in one DATA frame, so grpclib sends the message's own
#: bytes (a frame of less than the message is a copy of its slice) and the receiver parses one frame per piece, not two.
BULK_MAX_FRAME = 1024 * 1024 + 1024
#: DATA payloads from this size on skip hyperframe's serialize; outgoing buffers from this size on are handed over
#: without the copy into ``bytes`` (smaller ones: the copy costs less than the bookkeeping).
LEAN_BYTES = 64 * 1024

_original_raw_data_repr = hyperframe.frame._raw_data_repr


def _raw_data_repr(data: bytes | None) -> str:
    """hyperframe's ``_raw_data_repr``, hexlifying only the 10 bytes it shows (then ``...``)."""
    if not data:
        return "None"
    return "<hex:" + binascii.hexlify(data[:10]).decode("ascii") + ("..." if len(data) > 10 else "") + ">"


def fast_frame_repr() -> None:
    """Install ``_raw_data_repr`` in hyperframe (idempotent)."""
    hyperframe.frame._raw_data_repr = _raw_data_repr


_FRAME_HEADER = hyperframe.frame._STRUCT_HBBBL  # hyperframe's own: length (24 bits), type, flags, stream id


def data_frame_header(frame: DataFrame, length: int) -> bytes:
    """The 9-byte header hyperframe's ``Frame.serialize`` writes for ``frame`` with a ``length``-byte body."""
    flags = 0
    for flag, bit in frame.defined_flags:
        if flag in frame.flags:
            flags |= bit
    return _FRAME_HEADER.pack((length >> 8) & 0xFFFF, length & 0xFF, frame.type, flags, frame.stream_id & 0x7FFFFFFF)


class LeanH2Connection(H2Connection):
    """h2's connection, sending large DATA payloads with one copy instead of four (point 3 above), or none when it
    knows its ``transport``: then the bytes queued before, the frame's header and the payload itself go to the
    transport in that order (``writelines``: the transport keeps a reference to a payload it cannot send at once,
    it does not copy it), and whatever h2 queues after goes out through ``data_to_send`` as before."""

    transport: Any = None

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        if not frames:
            return
        out = self._data_to_send
        for frame in frames:
            if type(frame) is DataFrame and not frame.pad_length and len(frame.data) >= LEAN_BYTES:
                frame.body_len = len(frame.data)
                if self.transport is not None:
                    out += data_frame_header(frame, frame.body_len)
                    self.transport.writelines((out, frame.data))
                    out = self._data_to_send = bytearray()  # handed over: never written to again
                    continue
                out += data_frame_header(frame, frame.body_len)
                out += frame.data
            else:
                out += frame.serialize()
        assert all(f.body_len <= self.max_outbound_frame_size for f in frames)

    def data_to_send(self, amount: int | None = None) -> bytes:
        if amount is None and len(self._data_to_send) >= LEAN_BYTES:
            data, self._data_to_send = self._data_to_send, bytearray()
            return data  # type: ignore[return-value]  # a bytearray nobody writes to again: transports take any buffer
        return super().data_to_send(amount)


class _BulkProtocol(H2Protocol):
    """grpclib's protocol, advertising ``BULK_MAX_FRAME`` as its SETTINGS_MAX_FRAME_SIZE once connected, on a
    ``LeanH2Connection``."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        h2 = self.connection._connection
        h2.__class__ = LeanH2Connection  # grpclib builds a plain H2Connection; same state, leaner sends
        assert isinstance(h2, LeanH2Connection)
        h2.transport = transport  # grpclib writes h2's output to this transport only, so the order is kept
        h2.update_settings({SettingCodes.MAX_FRAME_SIZE: BULK_MAX_FRAME})
        self.connection.flush()


def large_frames_protocol(handler: Any, config: Any, h2_config: Any) -> H2Protocol:
    """A server connection's protocol advertising ``BULK_MAX_FRAME``: a peer pushing a blob to this node
    (``PutBlob``, cluster/blob_push.py) sends it in 1 MiB DATA frames instead of 16 KiB ones, as ``GetBlob``
    answers to a ``BulkChannel`` are (a 64 MiB object pushed in 16 KiB frames cost both ends 4,096 trips through
    h2 per peer: about twice the CPU of the fetch)."""
    return _BulkProtocol(handler, config, h2_config)


class BulkChannel(Channel):
    """A grpclib ``Channel`` whose connection takes DATA frames of up to ``BULK_MAX_FRAME``, sending messages
    encoded beforehand (cluster/pre_encoded.py ``Encoded``: a blob's pieces encoded once for every peer) as they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("codec", BlobCodec())
        super().__init__(*args, **kwargs)

    def _protocol_factory(self) -> H2Protocol:
        return _BulkProtocol(self._protocol_handler(), self._config, self._h2_config)

    @staticmethod
    def _protocol_handler() -> Any:
        from grpclib.client import Handler

        return Handler()


_original_receive_frame = H2Connection._receive_frame


def _receive_frame(self: H2Connection, frame: Frame) -> list[Event]:
    """h2 4's ``H2Connection._receive_frame`` without its first statement, the trace log of ``repr(frame)``."""
    events: list[Event]
    try:
        # I don't love using __class__ here, maybe reconsider it.
        frames, events = self._frame_dispatch_table[frame.__class__](frame)
    except StreamClosedError as e:
        # If the stream was closed by RST_STREAM, we just send a RST_STREAM
        # to the remote peer. Otherwise, this is a connection error, and so
        # we will re-raise to trigger one.
        if self._stream_is_closed_by_reset(e.stream_id):
            f = RstStreamFrame(e.stream_id)
            f.error_code = e.error_code
            self._prepare_for_sending([f])
            events = e._events
        else:
            raise
    except StreamIDTooLowError as e:
        # The stream ID seems invalid. This may happen when the closed
        # stream has been cleaned up, or when the remote peer has opened a
        # new stream with a higher stream ID than this one, forcing it
        # closed implicitly.
        #
        # Check how the stream was closed: depending on the mechanism, it
        # is either a stream error or a connection error.
        if self._stream_is_closed_by_reset(e.stream_id):
            # Closed by RST_STREAM is a stream error.
            f = RstStreamFrame(e.stream_id)
            f.error_code = ErrorCodes.STREAM_CLOSED
            self._prepare_for_sending([f])
            events = []
        elif self._stream_is_closed_by_end(e.stream_id):
            # Closed by END_STREAM is a connection error.
            raise StreamClosedError(e.stream_id) from e
        else:
            # Closed implicitly, also a connection error, but of type
            # PROTOCOL_ERROR.
            raise
    else:
        self._prepare_for_sending(frames)

    return events


def quiet_receive_frame() -> None:
    """Install ``_receive_frame`` in h2's connection class (idempotent): every connection, client and server."""
    H2Connection._receive_frame = _receive_frame  # type: ignore[method-assign]


fast_frame_repr()
quiet_receive_frame()
