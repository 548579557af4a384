"""Reads of encrypted versions: only the sealed segments that cover the asked plaintext range are read (through
the engine's verified blob reads) and opened; a segment that fails its tag is an error, never bytes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread

from ..errors import ErrorCode, S3Error
from ..model import BlobLocation, ObjectVersion
from .objects import ObjectKeys
from .segments import SEGMENT_BYTES, DecryptError, Span, SpanOpener, open_span, plan

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)
_THREAD_BYTES = 64 * 1024  # opening more than this goes to a worker thread, off the event loop


def _failed(version: ObjectVersion, exc: DecryptError) -> S3Error:
    log.error("encrypted object %s (version %s) failed to decrypt: %s", version.key, version.version_id, exc)
    return S3Error(ErrorCode.INTERNAL_ERROR, "The stored data of this object failed its authentication check, so "
                   "it was not sent.")


def stored_version(version: ObjectVersion) -> ObjectVersion:
    """The version as its stored (sealed) stream: the engine's blob reads work in stored offsets."""
    return dataclasses.replace(version, size=sum(b.size for b in version.blobs), encryption={})


def spans(version: ObjectVersion, start: int, length: int) -> list[Span]:
    se = version.encryption
    try:
        return list(plan(version.part_sizes or [version.size], list(se["pn"]), start, length,
                         se.get("g", SEGMENT_BYTES)))
    except DecryptError as exc:
        raise _failed(version, exc) from None


def read_small(engine: Engine, version: ObjectVersion, keys: ObjectKeys, start: int, length: int,
               locations: list[BlobLocation] | None = None) -> bytes:
    """``Engine.read_small`` of plaintext ``[start, start+length)``: read the covering segments, open, trim."""
    stored = stored_version(version)
    try:
        return b"".join(open_span(keys.cipher, span, engine.read_small(stored, span.start, span.length, locations))
                        for span in spans(version, start, length))
    except DecryptError as exc:
        raise _failed(version, exc) from None


async def read_failover(engine: Engine, version: ObjectVersion, keys: ObjectKeys, start: int,
                        length: int) -> bytes:
    return b"".join([piece async for piece in read_object(engine, version, keys, start, length)])


async def read_object(engine: Engine, version: ObjectVersion, keys: ObjectKeys, start: int = 0,
                      length: int | None = None,
                      locations: list[BlobLocation] | None = None) -> AsyncIterator[bytes]:
    """``Engine.read_object`` of plaintext: the covering segments stream in (verified) and are opened one by one."""
    stored = stored_version(version)
    length = version.size - start if length is None else min(length, version.size - start)
    try:
        for span in spans(version, start, length):
            opener = SpanOpener(keys.cipher, span)
            async for piece in engine.read_object(stored, span.start, span.length, locations):
                if len(piece) > _THREAD_BYTES:
                    plain = await anyio.to_thread.run_sync(opener.feed, piece)
                else:
                    plain = opener.feed(piece)
                if plain:
                    yield plain
            tail = opener.finish()
            if tail:
                yield tail
    except DecryptError as exc:
        raise _failed(version, exc) from None
