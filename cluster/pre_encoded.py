"""gRPC messages encoded once by betterproto2 and sent as those bytes (``Encoded``, ``PassThroughCodec``).

A large write's chunks go to every peer (cluster/blob_push.py), each 1 MiB piece as a ``PutBlobChunk`` message.
betterproto2 (pure Python) encodes a 1 MiB ``bytes`` field through five copies and a fresh buffer each: ~1 ms of
CPU per MiB on this machine, as much as the coordinator's SHA-256, CRCs and socket writes of that MiB together, and
paid once per peer for the same bytes. ``Encoded`` carries the bytes betterproto2 produced for one message, so a
piece encoded once is sent to both peers; ``PassThroughCodec`` (the codec of the blob connection, cluster/h2_tuning.py
``BulkChannel``) hands them to grpclib unchanged and encodes every other message as grpclib's ``ProtoCodec`` does.
Nothing on the wire changes: the receiver parses the same bytes with the same generated class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import betterproto2
from grpclib.encoding.proto import ProtoCodec


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message of ``message_type`` already encoded (``bytes(message)``); ``len`` is its size on the wire."""

    data: bytes
    message_type: type

    @classmethod
    def of(cls, message: betterproto2.Message) -> Encoded:
        return cls(bytes(message), type(message))

    def __len__(self) -> int:
        return len(self.data)


class PassThroughCodec(ProtoCodec):
    """grpclib's protobuf codec, sending an ``Encoded`` of the call's request type as its bytes."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            if not issubclass(message.message_type, message_type):
                raise TypeError(f"an encoded {message.message_type.__name__} sent where a {message_type.__name__} "
                                "is expected")
            return message.data
        return super().encode(message, message_type)
