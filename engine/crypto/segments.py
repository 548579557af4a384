"""AES-256-GCM over one part's plaintext, segment by segment, so a range read opens only the segments it needs.

A part's plaintext is cut into segments of ``segment_bytes`` (the last may be shorter); segment ``i`` is stored as
``AESGCM(data_key).encrypt(nonce, plaintext, aad)`` (ciphertext then a 16-byte tag) with

    nonce = prefix (8 random bytes, fresh per part upload) || i (4 bytes, big-endian)
    aad   = b"s4-sse-v1" || object id (16 random bytes) || prefix || i

so a segment moved to another place of the same part, to another part or to another object fails its tag. The
sealed segments of a part are stored back to back; the stored stream of an object is its parts' streams in
order. No byte of plaintext is ever written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEGMENT_BYTES = 64 * 1024
TAG_BYTES = 16
PREFIX_BYTES = 8
OBJECT_ID_BYTES = 16
_AAD_LABEL = b"s4-sse-v1"
_ETAG_LABEL = b"s4-sse-etag-v1"
MAX_SEGMENTS = 1 << 32  # the counter's width: 256 TiB per part at 64 KiB segments


class DecryptError(Exception):
    """A sealed segment failed its GCM tag: tampered or damaged bytes, a segment out of place, or the wrong key."""


def sealed_size(plain: int, segment_bytes: int = SEGMENT_BYTES) -> int:
    """Stored bytes of a part of ``plain`` plaintext bytes: each segment adds its tag."""
    return plain + TAG_BYTES * (-(-plain // segment_bytes))


def new_prefix() -> bytes:
    return os.urandom(PREFIX_BYTES)


def new_object_id() -> bytes:
    return os.urandom(OBJECT_ID_BYTES)


class SegmentCipher:
    """One object's data key and identity: seals and opens its segments."""

    def __init__(self, data_key: bytes, object_id: bytes, segment_bytes: int = SEGMENT_BYTES) -> None:
        if len(data_key) != 32 or len(object_id) != OBJECT_ID_BYTES or segment_bytes <= 0:
            raise ValueError("a data key is 32 bytes, an object id 16, a segment size positive")
        self._aead = AESGCM(data_key)
        self.object_id = object_id
        self.segment_bytes = segment_bytes
        self._etag_key = hmac.new(data_key, _ETAG_LABEL, hashlib.sha256).digest()

    def etag(self, plain_md5: bytes) -> str:
        """The ETag of plaintext with this MD5 under this object's key, for modes whose ETag must not be the
        plaintext's MD5 (SSE-C, SSE-KMS, as AWS): 32 hex digits, the same for the same bytes under the same key (a
        re-sent part keeps its ETag), unlinkable to the plaintext without the key."""
        return hmac.new(self._etag_key, plain_md5, hashlib.md5).hexdigest()

    def _nonce_aad(self, prefix: bytes, index: int) -> tuple[bytes, bytes]:
        if len(prefix) != PREFIX_BYTES or not 0 <= index < MAX_SEGMENTS:
            raise ValueError("bad nonce prefix or segment index")
        counter = index.to_bytes(4, "big")
        return prefix + counter, _AAD_LABEL + self.object_id + prefix + counter

    def seal(self, prefix: bytes, index: int, plain: bytes | memoryview) -> bytes:
        nonce, aad = self._nonce_aad(prefix, index)
        return self._aead.encrypt(nonce, plain, aad)

    def open(self, prefix: bytes, index: int, sealed: bytes | memoryview) -> bytes:
        nonce, aad = self._nonce_aad(prefix, index)
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptError(f"segment {index} failed its authentication tag") from None

    def sealer(self, prefix: bytes | None = None) -> PartSealer:
        return PartSealer(self, prefix if prefix is not None else new_prefix())


@dataclass
class PartSealer:
    """Seals one part as the ingest path cuts it: every chunk but the last is a whole number of segments
    (``chunk_bytes`` rounds the ingest chunk size down to one), so each stored blob holds whole sealed segments."""

    cipher: SegmentCipher
    prefix: bytes
    next_index: int = 0

    def chunk_bytes(self, wanted: int) -> int:
        seg = self.cipher.segment_bytes
        return max(seg, wanted - wanted % seg)

    def seal_chunk(self, plain: bytes) -> bytes:
        seg = self.cipher.segment_bytes
        view = memoryview(plain)
        out = []
        for lo in range(0, len(plain), seg):
            out.append(self.cipher.seal(self.prefix, self.next_index, view[lo:lo + seg]))
            self.next_index += 1
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Span:
    """What to read and open for one part's share of a plaintext range: stored bytes ``[start, start+length)`` of
    the object's stored stream, holding segments ``first..`` of the part with nonce ``prefix``; of their
    plaintext, ``skip`` bytes are dropped in front and ``take`` bytes kept."""

    prefix: bytes
    first: int
    start: int
    length: int
    skip: int
    take: int


def plan(part_sizes: list[int], prefixes: list[bytes], start: int, length: int,
         segment_bytes: int = SEGMENT_BYTES) -> Iterator[Span]:
    """The spans of plaintext ``[start, start+length)`` of an object made of parts of these plaintext sizes."""
    if len(part_sizes) != len(prefixes):
        raise DecryptError("the object's parts and nonce prefixes do not match")
    end = start + length
    sealed_seg = segment_bytes + TAG_BYTES
    plain_pos = stored_pos = 0
    for size, prefix in zip(part_sizes, prefixes, strict=True):
        lo, hi = max(start, plain_pos), min(end, plain_pos + size)
        if lo < hi:
            first, last = (lo - plain_pos) // segment_bytes, (hi - 1 - plain_pos) // segment_bytes
            seg_start = stored_pos + first * sealed_seg
            seg_end = min(stored_pos + sealed_size(size, segment_bytes), stored_pos + (last + 1) * sealed_seg)
            yield Span(prefix, first, seg_start, seg_end - seg_start, lo - plain_pos - first * segment_bytes, hi - lo)
        plain_pos += size
        stored_pos += sealed_size(size, segment_bytes)
        if plain_pos >= end:
            return


def open_span(cipher: SegmentCipher, span: Span, stored: bytes) -> bytes:
    """The plaintext a span keeps, from all of its stored bytes."""
    if len(stored) != span.length:
        raise DecryptError("stored bytes shorter than the object's record says")
    sealed_seg = cipher.segment_bytes + TAG_BYTES
    plain = b"".join(cipher.open(span.prefix, span.first + n, stored[lo:lo + sealed_seg])
                     for n, lo in enumerate(range(0, len(stored), sealed_seg)))
    return plain[span.skip:span.skip + span.take]


class SpanOpener:
    """Opens a span's stored bytes as they stream in, one sealed segment at a time (bounded memory)."""

    def __init__(self, cipher: SegmentCipher, span: Span) -> None:
        self.cipher, self.span = cipher, span
        self._buf = bytearray()
        self._index = span.first
        self._skip, self._left = span.skip, span.take
        self._sealed_seg = cipher.segment_bytes + TAG_BYTES

    def feed(self, piece: bytes | bytearray) -> bytes:
        """The plaintext of every sealed segment completed by ``piece`` (the rest waits for the next piece). The
        consumed bytes are dropped once per piece: dropping them per segment would move the buffer each time."""
        self._buf += piece
        out = []
        pos, seg = 0, self._sealed_seg
        with memoryview(self._buf) as view:
            while len(view) - pos >= seg:
                out.append(self._open(view[pos:pos + seg]))
                pos += seg
        del self._buf[:pos]
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._open(bytes(self._buf)) if self._buf else b""
        self._buf.clear()
        if self._left:
            raise DecryptError("stored bytes shorter than the object's record says")
        return tail

    def _open(self, sealed: bytes | memoryview) -> bytes:
        plain = self.cipher.open(self.span.prefix, self._index, sealed)
        self._index += 1
        if self._skip:
            plain, self._skip = plain[self._skip:], max(0, self._skip - len(plain))
        plain = plain[: self._left]
        self._left -= len(plain)
        return plain
