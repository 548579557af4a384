"""aws-chunked body decoding: chunk framing, SigV4 chunk/trailer signatures, trailing checksums.

    decode_aws_chunked(source, ctx, trailer_names, decoded_length, trailers) -> async iterator of payload
    ChunkedDecoder   -- the synchronous core: feed(bytes) -> payload pieces, then close()
    ChunkedTrailers  -- filled in once the body is complete: verified checksums and the raw trailers

Wire format: ``hex-size[;chunk-signature=sig]\\r\\n <data> \\r\\n`` repeated, then a zero-size chunk, then
optional ``name:value\\r\\n`` trailer lines (``x-amz-trailer-signature`` last when signed) and ``\\r\\n``.
Payload is passed on as it arrives -- never more than one network read is held -- so chunk signatures are
checked when each chunk ends: the data is trustworthy only once the iterator finishes without raising.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from s4.api.auth.request import AuthContext
from s4.api.auth.sigv4 import EMPTY_SHA256, hmac_hex
from s4.engine.checksums import Checksum, algorithm_from_header, decode_b64_digest, new_checksum
from s4.engine.errors import ErrorCode, S3Error

PAYLOAD_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
MAX_LINE = 4096  # chunk header or trailer line; bounds memory against a peer that never sends "\n"
MAX_TRAILER_BYTES = 16 * 1024
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


@dataclass(slots=True)
class ChunkedTrailers:
    """Outcome of a fully decoded body: ``checksums`` maps "CRC32" etc. to the verified base64 value."""

    checksums: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    complete: bool = False


def parse_trailer_names(x_amz_trailer: str | None) -> list[str]:
    """The declared trailer names from an ``x-amz-trailer`` header value (comma separated)."""
    if not x_amz_trailer:
        return []
    return [n.strip().lower() for n in x_amz_trailer.split(",") if n.strip()]


def _malformed(message: str) -> S3Error:
    return S3Error(ErrorCode.INVALID_REQUEST, f"Malformed aws-chunked body: {message}")


def _incomplete(message: str) -> S3Error:
    return S3Error(ErrorCode.INCOMPLETE_BODY, message)


class ChunkedDecoder:
    """Incremental aws-chunked parser; input may be split anywhere across ``feed`` calls."""

    def __init__(self, ctx: AuthContext, trailer_names: Iterable[str], decoded_length: int | None,
                 trailers: ChunkedTrailers | None = None) -> None:
        self._ctx = ctx
        self._signed = ctx.payload_mode in ("streaming-signed", "streaming-signed-trailer")
        self._sign_trailer = ctx.payload_mode == "streaming-signed-trailer"
        self._declared = [n.strip().lower() for n in trailer_names if n.strip()]
        self._checksums: dict[str, Checksum] = {}
        for name in self._declared:
            algorithm = algorithm_from_header(name)
            if algorithm is not None:
                self._checksums[name] = new_checksum(algorithm)
            elif name.startswith("x-amz-checksum-"):
                raise S3Error(ErrorCode.INVALID_REQUEST, f"The trailing checksum {name} is not supported.")
        self._decoded_length = decoded_length
        self.trailers = trailers if trailers is not None else ChunkedTrailers()
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._total = 0
        self._prev_signature = ctx.seed_signature
        self._chunk_signature: str | None = None
        self._chunk_hash = hashlib.sha256() if self._signed else None
        self._trailer_lines: list[tuple[str, str]] = []
        self._trailer_signature: str | None = None
        self._trailer_bytes = 0
        self._blank_skipped = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, piece: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume one network read; return the payload bytes it completed, in order."""
        if isinstance(piece, memoryview):
            piece = piece.tobytes()
        out: list[bytes] = []
        size = len(piece)
        view = memoryview(piece)
        pos = 0
        while pos < size:
            if self._state == _DATA:
                take = min(self._remaining, size - pos)
                data = view[pos:pos + take]
                if self._chunk_hash is not None:
                    self._chunk_hash.update(data)
                for checksum in self._checksums.values():
                    checksum.update(data)
                out.append(piece if take == size and isinstance(piece, bytes) else data.tobytes())
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if self._chunk_hash is not None:
                        self._verify_chunk(self._chunk_hash.hexdigest())
                    self._state = _DATA_END
                continue
            if self._state == _DONE:
                if bytes(view[pos:]).strip():
                    raise _malformed("data after the final chunk")
                break
            newline = piece.find(b"\n", pos)
            end = size if newline < 0 else newline
            if len(self._line) + end - pos > MAX_LINE:
                raise _malformed("chunk header or trailer line too long")
            self._line += view[pos:end]
            if newline < 0:
                break
            pos = newline + 1
            line = bytes(self._line)
            self._line.clear()
            self._on_line(line[:-1] if line.endswith(b"\r") else line)
        return out

    def close(self) -> None:
        """Call at end of input: checks the body was complete and verifies trailers."""
        if self._state == _DONE:
            return
        if self._state == _TRAILER and not self._line:
            self._finish()  # final blank line missing: everything signed/checksummed already arrived
            return
        raise _incomplete("The aws-chunked body ended before its final chunk.")

    def _on_line(self, line: bytes) -> None:
        if self._state == _HEADER:
            self._on_chunk_header(line)
        elif self._state == _DATA_END:
            if line:
                raise _malformed("chunk data longer than its declared size")
            self._state = _HEADER
        else:
            self._on_trailer_line(line)

    def _on_chunk_header(self, line: bytes) -> None:
        size_part, _, extensions = line.partition(b";")
        size_part = size_part.strip()
        if not size_part or len(size_part) > 16 or not _HEX_DIGITS.issuperset(size_part):
            raise _malformed(f"invalid chunk size {size_part[:32]!r}")
        chunk_size = int(size_part, 16)
        signature: str | None = None
        for ext in extensions.split(b";") if extensions else ():
            key, _, value = ext.partition(b"=")
            if key.strip() == b"chunk-signature":
                signature = value.strip().decode("ascii", "replace").lower()
        self._total += chunk_size
        if self._decoded_length is not None and self._total > self._decoded_length:
            raise _incomplete("The aws-chunked body is longer than x-amz-decoded-content-length.")
        self._chunk_signature = signature
        if chunk_size:
            self._remaining = chunk_size
            self._state = _DATA
            if self._signed:
                self._chunk_hash = hashlib.sha256()
            return
        if self._signed:
            self._verify_chunk(EMPTY_SHA256)
        self._state = _TRAILER

    def _verify_chunk(self, data_sha256: str) -> None:
        ctx = self._ctx
        sts = (f"{PAYLOAD_ALGORITHM}\n{ctx.amz_date}\n{ctx.scope}\n{self._prev_signature}\n"
               f"{EMPTY_SHA256}\n{data_sha256}")
        expected = hmac_hex(ctx.signing_key, sts)
        provided = self._chunk_signature or ""
        if not hmac.compare_digest(expected.encode(), provided.encode("ascii", "replace")):
            raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "The chunk signature does not match.",
                          StringToSign=sts, SignatureProvided=provided)
        self._prev_signature = expected

    def _on_trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _malformed("trailers too large")
        if not line:
            if (not self._trailer_lines and self._trailer_signature is None and self._declared
                    and not self._blank_skipped):
                self._blank_skipped = True  # some clients end the zero chunk with its own blank line
                return
            self._finish()
            return
        name, colon, value = line.partition(b":")
        if not colon:
            raise _malformed("invalid trailer line")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        if key == "x-amz-trailer-signature":
            self._trailer_signature = text.lower()
        else:
            self._trailer_lines.append((key, text))

    def _finish(self) -> None:
        self._state = _DONE
        if self._decoded_length is not None and self._total != self._decoded_length:
            raise _incomplete("The aws-chunked body is shorter than x-amz-decoded-content-length.")
        received = dict(self._trailer_lines)
        for name in received:
            if name not in self._declared:
                raise S3Error(ErrorCode.INVALID_REQUEST,
                              f"The trailing header {name} was not declared in x-amz-trailer.")
        for name in self._declared:
            if name not in received:
                raise _incomplete(f"The trailing header {name} declared in x-amz-trailer was not sent.")
        if self._sign_trailer:
            self._verify_trailer_signature()
        for name, checksum in self._checksums.items():
            claimed = decode_b64_digest(checksum.algorithm, received[name])
            if not hmac.compare_digest(claimed, checksum.digest()):
                message = f"The {checksum.algorithm} you specified did not match the calculated checksum."
                raise S3Error(ErrorCode.BAD_DIGEST, message)
            self.trailers.checksums[checksum.algorithm] = checksum.b64digest()
        self.trailers.headers.update(received)
        self.trailers.complete = True

    def _verify_trailer_signature(self) -> None:
        ctx = self._ctx
        provided = (self._trailer_signature or "").encode("ascii", "replace")
        orders = [self._trailer_lines]
        if len(self._trailer_lines) > 1:
            orders.append(sorted(self._trailer_lines))
        for lines in orders:
            canonical = "".join(f"{name}:{value}\n" for name, value in lines)
            digest = hashlib.sha256(canonical.encode("latin-1", "replace")).hexdigest()
            sts = f"{TRAILER_ALGORITHM}\n{ctx.amz_date}\n{ctx.scope}\n{self._prev_signature}\n{digest}"
            if hmac.compare_digest(hmac_hex(ctx.signing_key, sts).encode(), provided):
                return
        raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "The trailer signature does not match.")


async def decode_aws_chunked(source: AsyncIterator[bytes], ctx: AuthContext, trailer_names: Iterable[str],
                             decoded_length: int | None,
                             trailers: ChunkedTrailers | None = None) -> AsyncIterator[bytes]:
    """Yield the decoded payload of an aws-chunked body; raises S3Error on any framing/signature fault.

    Pass a ``ChunkedTrailers`` to learn the verified trailing checksums once iteration has finished.
    """
    decoder = ChunkedDecoder(ctx, trailer_names, decoded_length, trailers)
    async for piece in source:
        if piece:
            for out in decoder.feed(piece):
                yield out
    decoder.close()
