"""Byte streams -> byte streams: decompression, the Stats meter, record splitting, ScanRange, comment filtering."""

from __future__ import annotations

import bz2
import io
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ErrorCode, S3Error
from .inputs import BLOCK_BYTES, MAX_RECORD_BYTES, CsvInput, Meter


def decompress(chunks: Iterator[bytes], compression: str) -> Iterator[bytes]:
    """GZIP (multi-member) and BZIP2 (multi-stream) decoded incrementally, at most one block per piece.

    The cap matters: one 400 KB piece of a gzip bomb inflates to 400 MB in a single ``decompress`` call. With it a
    bomb is just a long stream, read at the consumer's pace; its first record over MAX_RECORD_BYTES ends the query.
    """
    if compression == "NONE":
        yield from chunks
        return
    gzip = compression == "GZIP"
    factory: Callable[[], Any] = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if gzip else bz2.BZ2Decompressor
    decoder = factory()
    try:
        for chunk in chunks:
            while True:  # each turn consumes input or yields up to a block of output
                out = decoder.decompress(chunk, BLOCK_BYTES)
                if out:
                    yield out
                if decoder.eof:  # a member/stream ended: the rest of the input starts the next one
                    chunk, decoder = decoder.unused_data, factory()
                    if not chunk:
                        break
                elif gzip:
                    chunk = decoder.unconsumed_tail
                    if not chunk and len(out) < BLOCK_BYTES:
                        break
                elif decoder.needs_input:
                    break
                else:
                    chunk = b""
    except (zlib.error, OSError, EOFError) as exc:
        raise S3Error(ErrorCode.INVALID_COMPRESSION_FORMAT, f"The object is not valid {compression}: {exc}") from exc


def metered(chunks: Iterator[bytes], meter: Meter) -> Iterator[bytes]:
    for chunk in chunks:
        meter.processed += len(chunk)
        yield chunk


def over_max_record(where: str) -> S3Error:
    return S3Error(ErrorCode.OVER_MAX_RECORD_SIZE, f"A record in the {where} is longer than {MAX_RECORD_BYTES} bytes "
                   "(S3 Select's maxCharsPerRecord of 1 MB).")


def lines(chunks: Iterator[bytes], sep: bytes = b"\n") -> Iterator[bytes]:
    """Whole records (each ending in ``sep`` except perhaps the last); one longer than MAX_RECORD_BYTES is an error,
    never a buffer that grows with the object."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(sep) + 1
        rest = data[cut:]
        if len(rest) > MAX_RECORD_BYTES:
            raise over_max_record("input")
        if cut:
            if sep == b"\n":
                yield from io.BytesIO(data[:cut])
            else:
                *records, _ = data[:cut].split(sep)
                yield from (record + sep for record in records)
    if rest:
        yield rest


def scan_range(chunks: Iterator[bytes], start: int, end: int | None, sep: bytes) -> Iterator[bytes]:
    """Records whose first byte lies in [start, end] (S3's ScanRange); ``chunks`` begins at byte max(start - 1, 0),
    so a record that starts exactly at ``start`` is recognised by the separator just before it."""
    pos = start - 1 if start > 0 else 0
    skipping = start > 0
    for line in lines(chunks, sep):
        line_start, pos = pos, pos + len(line)
        if skipping:
            skipping = False
            continue  # the record that began before ``start`` (or the byte just before it)
        if end is not None and line_start > end:
            return
        yield line


def filtered(chunks: Iterator[bytes], spec: CsvInput) -> Iterator[bytes]:
    """Comment lines dropped and a custom record delimiter turned into \\n, only when asked for."""
    if spec.record_delimiter not in ("\n", "\r\n", ""):
        delim = spec.record_delimiter.encode()
        chunks = (c.replace(b"\n", b" ").replace(delim, b"\n") for c in chunks) if len(delim) == 1 else chunks
    if not spec.comments:
        yield from chunks
        return
    marker = spec.comments.encode()
    for line in lines(chunks):
        if not line.startswith(marker):
            yield line


def peek_first_line(chunks: Iterator[bytes]) -> tuple[bytes | None, Iterator[bytes]]:
    """The first line (None: the stream is empty) and the stream, replayed from its start."""
    seen = b""
    for chunk in chunks:
        seen += chunk
        if b"\n" in seen or len(seen) > 4 * BLOCK_BYTES:
            break

    def replay() -> Iterator[bytes]:
        yield seen
        yield from chunks
    return (seen.split(b"\n", 1)[0] if seen else None), replay()
