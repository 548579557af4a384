"""Client side of blob transfer: send a local blob to a peer, fetch a peer's blob into local volumes.

Memory stays bounded by one piece (1 MiB) per transfer plus what HTTP/2 flow control lets grpclib buffer, whatever
the blob's size: the sender reads its blob piece by piece through the volumes' verified reader (a damaged local
copy stops the transfer before a wrong byte is sent), and a fetched blob is written piece by piece into a new
record and hashed on the way, so it counts as stored only when its SHA-256 matches (cluster/blob_server.py's
``BlobService`` receives both ways: the fetch stores through the same code as ``PutBlob``).

Time is bounded twice: every message must make progress within ``Limits.idle_s``, and the whole call must end
within ``Limits.deadline_s(size)`` (a base plus the size at a floor rate), which grpclib also sends to the peer as
the call's deadline. Failures raise ``BlobTransferError`` (with the gRPC status when the peer gave one) or, when
the local copy to send is damaged, ``DamagedBlob``. docs/architecture/replication.md, "Blob transfer".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import anyio.to_thread
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ..engine import timeline
from ..engine.model import BlobLocation
from .blob_server import BlobService
from .blobs import HASH_BYTES, INLINE_BYTES, pieces
from .peers import PeerPool
from .pre_encoded import Encoded
from .wire.s4cluster.v1 import BlobHeader, GetBlobChunk, GetBlobRequest, PutBlobChunk, PutBlobReply

PUT_BLOB = "/s4cluster.v1.S4Cluster/PutBlob"
GET_BLOB = "/s4cluster.v1.S4Cluster/GetBlob"


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a transfer may take: ``idle_s`` per message, ``base_s + size / min_rate`` for the whole call."""

    idle_s: float = 30.0
    base_s: float = 30.0
    min_rate: float = 1024 * 1024  # bytes per second

    def deadline_s(self, size: int) -> float:
        return self.base_s + size / self.min_rate


DEFAULT_LIMITS = Limits()


class BlobTransferError(Exception):
    """A transfer failed; ``status`` is the peer's gRPC status when it answered one (NOT_FOUND, DATA_LOSS, ...)."""

    def __init__(self, peer: str, message: str, status: Status | None = None) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer, self.status = peer, status


class BlobUnavailable(Exception):
    """No replica could deliver a verified copy; ``failures`` says why, per replica."""

    def __init__(self, digest: bytes, failures: dict[str, BaseException]) -> None:
        why = "; ".join(f"{peer}: {exc}" for peer, exc in failures.items()) or "no replica to ask"
        super().__init__(f"blob {digest.hex()} could not be fetched from any replica: {why}")
        self.digest, self.failures = digest, failures


class PieceReader(Protocol):
    """Verified reads of one local blob (engine/volumes/reads.py ``BlobReader``)."""

    def read(self, lo: int, n: int) -> bytes: ...


class PieceMessages(Protocol):
    """The ``PutBlobChunk`` data message of each piece of one local blob, encoded (cluster/pre_encoded.py)."""

    async def message(self, lo: int, n: int) -> Encoded: ...


def encode_piece(reader: PieceReader, lo: int, n: int) -> Encoded:
    """Read a piece through the verified reader and encode its ``PutBlobChunk`` (``Encoded.piece``: one copy)."""
    return Encoded.piece(reader.read(lo, n), PutBlobChunk)


class EncodedPieces:
    """``PieceMessages`` of a ``PieceReader``: each piece read and encoded when asked (a thread for large ones)."""

    def __init__(self, reader: PieceReader) -> None:
        self.reader = reader

    async def message(self, lo: int, n: int) -> Encoded:
        if n <= INLINE_BYTES:
            return encode_piece(self.reader, lo, n)
        return await anyio.to_thread.run_sync(encode_piece, self.reader, lo, n)


def _error(peer: str, exc: BaseException) -> BlobTransferError:
    if isinstance(exc, GRPCError):
        return BlobTransferError(peer, f"{exc.status.name}: {exc.message}", exc.status)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return BlobTransferError(peer, "no progress before the deadline", Status.DEADLINE_EXCEEDED)
    return BlobTransferError(peer, f"{type(exc).__name__}: {exc}")


async def send_blob(pool: PeerPool, peer: str, digest: bytes, size: int, reader: PieceReader | PieceMessages, *,
                    limits: Limits = DEFAULT_LIMITS) -> PutBlobReply:
    """Stream one local blob to ``peer`` (PutBlob); returns its reply (``stored`` or ``already_had``).

    ``reader``: the blob's verified reads, or its pieces' messages already encoded (``PieceMessages``: one encoding
    shared by every peer a chunk is pushed to, cluster/blob_push.py).

    The peer may answer before all data is sent (it already holds the blob, or refuses): the reply is awaited
    alongside the sending, which then stops. A local read failing its checks (``DamagedBlob``) cancels the call,
    so the peer keeps nothing, and propagates."""
    if len(digest) != HASH_BYTES:
        raise ValueError("digest must be a sha256")
    channel = pool.bulk_stub(peer).channel
    messages = cast(PieceMessages, reader) if hasattr(reader, "message") else EncodedPieces(reader)
    try:
        async with asyncio.timeout(limits.deadline_s(size) + 1), channel.request(
                PUT_BLOB, Cardinality.STREAM_UNARY, PutBlobChunk, PutBlobReply,
                timeout=limits.deadline_s(size)) as stream:
            await stream.send_request()
            async with asyncio.timeout(limits.idle_s):
                await stream.send_message(PutBlobChunk(header=BlobHeader(content_hash=digest, size=size)))

            async def send_data() -> None:
                for lo, n in pieces(0, size):
                    message = await messages.message(lo, n)
                    async with asyncio.timeout(limits.idle_s):
                        # an encoded PutBlobChunk: the bulk channel's PassThroughCodec sends its bytes as they are
                        await stream.send_message(message)  # type: ignore[arg-type]
                async with asyncio.timeout(limits.idle_s):
                    await stream.end()
                if timeline.enabled:
                    timeline.mark("push.sent_all", f"{peer} {digest[:4].hex()}")

            sender = asyncio.ensure_future(send_data())
            receiver = asyncio.ensure_future(stream.recv_message())
            try:
                await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
                if not receiver.done():
                    sender.result()  # the send failed (a damaged local copy, a stalled peer): raise why
                    await asyncio.wait((receiver,))  # all sent: the peer's answer
                reply = receiver.result()  # the peer's answer (or its error) wins over a send cut short by it
            finally:
                for task in (sender, receiver):
                    task.cancel()
                await asyncio.gather(sender, receiver, return_exceptions=True)
            if not (sender.done() and not sender.cancelled() and sender.exception() is None):
                await stream.cancel()  # answered before all was sent: reset our half instead of ending it
    except (GRPCError, StreamTerminatedError, OSError, TimeoutError) as exc:
        raise _error(peer, exc) from exc
    if reply is None:
        raise BlobTransferError(peer, "PutBlob ended without a reply")
    return reply


async def fetch_blob(pool: PeerPool, peer: str, digest: bytes, local: BlobService, *,
                     limits: Limits = DEFAULT_LIMITS) -> BlobLocation:
    """Fetch a whole blob from ``peer`` into this node's volumes (GetBlob), verified, fsynced and staged.

    Returns the local location (already held: no transfer). The bytes go through ``local.put_blob``, the same
    path as a peer's PutBlob: a wrong size or hash from the peer leaves nothing stored (``BlobTransferError``)."""
    if len(digest) != HASH_BYTES:
        raise ValueError("digest must be a sha256")
    while True:  # one transfer of a blob at a time per node: a second caller waits for it (catch-up racing a write)
        held = local.holds(digest)
        if held is not None:
            return held
        running = local.fetching.get(digest)
        if running is None:
            break
        with contextlib.suppress(Exception):
            await asyncio.shield(running)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    local.fetching[digest] = done
    try:
        return await _fetch_blob(pool, peer, digest, local, limits)
    finally:
        del local.fetching[digest]
        done.set_result(None)


async def _fetch_blob(pool: PeerPool, peer: str, digest: bytes, local: BlobService, limits: Limits) -> BlobLocation:
    channel = pool.bulk_stub(peer).channel
    loop = asyncio.get_running_loop()
    try:
        # No grpc deadline (the size is unknown until the header): the idle and whole-call timeouts here bound it,
        # and cancelling resets the stream, which the peer sees at once.
        async with asyncio.timeout(limits.deadline_s(0)) as whole, channel.request(
                GET_BLOB, Cardinality.UNARY_STREAM, GetBlobRequest, GetBlobChunk) as stream:
            await stream.send_message(GetBlobRequest(content_hash=digest), end=True)
            first = await _next(stream, limits.idle_s)
            if first is None or first.header is None:
                raise BlobTransferError(peer, "GetBlob did not start with a BlobHeader")
            header = first.header
            if bytes(header.content_hash) != digest or header.offset != 0:
                raise BlobTransferError(peer, "GetBlob answered another blob or range")
            whole.reschedule(loop.time() + limits.deadline_s(header.size))
            reply = await local.put_blob(peer, header, _data(stream, limits.idle_s))
    except (GRPCError, StreamTerminatedError, OSError, TimeoutError) as exc:
        raise _error(peer, exc) from exc
    if not (reply.stored or reply.already_had):
        raise BlobTransferError(peer, "GetBlob: the blob was not stored")
    loc = local.holds(digest)
    if loc is None:  # evicted from the staged table at once (bounds too small): the bytes are orphaned
        raise BlobTransferError(peer, "the fetched blob was stored but could not be staged (staged table bounds)")
    return loc


async def fetch_from_any(pool: PeerPool, peers: Sequence[str], digest: bytes, local: BlobService, *,
                         limits: Limits = DEFAULT_LIMITS) -> BlobLocation:
    """The read path's "bytes from one replica that has them, checked against the content hash": try ``peers``
    in turn until one delivers a verified copy; ``BlobUnavailable`` with every replica's failure otherwise."""
    held = local.holds(digest)
    if held is not None:
        return held
    failures: dict[str, BaseException] = {}
    for peer in peers:
        try:
            return await fetch_blob(pool, peer, digest, local, limits=limits)
        except (BlobTransferError, GRPCError, KeyError) as exc:
            if isinstance(exc, BlobTransferError) and exc.status is Status.RESOURCE_EXHAUSTED:
                raise  # this node's disk is full (GetBlob never answers that): no replica can help
            failures[peer] = exc
    raise BlobUnavailable(digest, failures)


async def _next(stream: Any, idle_s: float) -> GetBlobChunk | None:
    async with asyncio.timeout(idle_s):
        message: GetBlobChunk | None = await stream.recv_message()
        if message is None:  # the stream ended: a status other than OK (DATA_LOSS mid-blob) raises here
            await stream.recv_trailing_metadata()
        return message


async def _data(stream: Any, idle_s: float) -> AsyncIterator[bytes]:
    while (chunk := await _next(stream, idle_s)) is not None:
        if chunk.data is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "GetBlob: only the first message may be a BlobHeader")
        yield chunk.data
