"""The encryption layer (engine/crypto): segment sealing, range plans at every edge, tamper detection, key
handling, and encrypted objects through the Engine (ingest sealed, ranges read back exact, no plaintext on disk)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.crypto import (
    CustomerKey,
    DecryptError,
    MasterKeys,
    SegmentCipher,
    load_or_create_master_key,
    new_object_keys,
    open_object_keys,
    sealed_size,
)
from s4.engine.crypto.keys import MASTER_KEY_FILE
from s4.engine.crypto.segments import TAG_BYTES, SpanOpener, new_object_id, open_span, plan

KEY = os.urandom(32)


def seal_parts(cipher: SegmentCipher, parts: list[bytes], chunk: int) -> tuple[bytes, list[bytes]]:
    """The stored stream of an object made of these parts, sealed as the ingest path does (chunk by chunk)."""
    stored, prefixes = [], []
    for part in parts:
        sealer = cipher.sealer()
        size = sealer.chunk_bytes(chunk)
        for lo in range(0, len(part), size):
            stored.append(sealer.seal_chunk(part[lo:lo + size]))
        prefixes.append(sealer.prefix)
    return b"".join(stored), prefixes


def read_range(cipher: SegmentCipher, stored: bytes, sizes: list[int], prefixes: list[bytes], start: int,
               length: int, pieces: int = 0) -> bytes:
    """Plaintext [start, start+length) via the plan: whole spans (``pieces`` 0) or streamed in small pieces."""
    out = []
    for span in plan(sizes, prefixes, start, length, cipher.segment_bytes):
        data = stored[span.start:span.start + span.length]
        if not pieces:
            out.append(open_span(cipher, span, data))
            continue
        opener = SpanOpener(cipher, span)
        for lo in range(0, len(data), pieces):
            out.append(opener.feed(data[lo:lo + pieces]))
        out.append(opener.finish())
    return b"".join(out)


def test_sealed_size_adds_one_tag_per_segment() -> None:
    assert [sealed_size(n, 16) for n in (0, 1, 16, 17, 32, 33)] == [0, 17, 32, 49, 64, 81]
    cipher = SegmentCipher(KEY, new_object_id(), 16)
    stored, _ = seal_parts(cipher, [bytes(33)], 32)
    assert len(stored) == sealed_size(33, 16)


def test_ranges_at_every_edge_of_segments_and_parts() -> None:
    """Every (start, end) of a 3-part object with 16-byte segments: part and segment edges, empty tail part."""
    cipher = SegmentCipher(KEY, new_object_id(), 16)
    parts = [os.urandom(33), os.urandom(16), os.urandom(7)]
    plain = b"".join(parts)
    stored, prefixes = seal_parts(cipher, parts, 32)
    sizes = [len(p) for p in parts]
    for start in range(len(plain)):
        for end in range(start + 1, len(plain) + 1):
            assert read_range(cipher, stored, sizes, prefixes, start, end - start) == plain[start:end]
    assert read_range(cipher, stored, sizes, prefixes, 5, 40, pieces=3) == plain[5:45]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=4), st.integers(1, 64), st.integers(1, 200),
       st.data())
def test_any_sizes_and_ranges_read_back_exact(part_sizes: list[int], segment: int, chunk: int,
                                              data: st.DataObject) -> None:
    cipher = SegmentCipher(KEY, new_object_id(), segment)
    parts = [os.urandom(n) for n in part_sizes]
    plain = b"".join(parts)
    stored, prefixes = seal_parts(cipher, parts, chunk)
    assert len(stored) == sum(sealed_size(n, segment) for n in part_sizes)
    if not plain:
        return
    start = data.draw(st.integers(0, len(plain) - 1))
    length = data.draw(st.integers(1, len(plain) - start))
    pieces = data.draw(st.sampled_from([0, 1, 7, 100]))
    assert read_range(cipher, stored, part_sizes, prefixes, start, length, pieces) == plain[start:start + length]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.data())
def test_any_flipped_bit_is_an_error_never_bytes(size: int, data: st.DataObject) -> None:
    cipher = SegmentCipher(KEY, new_object_id(), 32)
    plain = os.urandom(size)
    stored, prefixes = seal_parts(cipher, [plain], 64)
    at = data.draw(st.integers(0, len(stored) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(stored)
    tampered[at] ^= 1 << bit
    with pytest.raises(DecryptError):
        read_range(cipher, bytes(tampered), [size], prefixes, 0, size)


def test_swapped_segments_parts_and_objects_are_detected() -> None:
    seg = 16
    cipher = SegmentCipher(KEY, new_object_id(), seg)
    parts = [os.urandom(32), os.urandom(32)]
    stored, prefixes = seal_parts(cipher, parts, 32)
    s = seg + TAG_BYTES
    first, second = stored[:s], stored[s:2 * s]
    swapped = second + first + stored[2 * s:]  # two segments of one part reordered
    with pytest.raises(DecryptError):
        read_range(cipher, swapped, [32, 32], prefixes, 0, 64)
    across = stored[2 * s:3 * s] + stored[s:]  # part 2's first segment put in part 1's place
    with pytest.raises(DecryptError):
        read_range(cipher, across, [32, 32], prefixes, 0, 64)
    other = SegmentCipher(KEY, new_object_id(), seg)  # same key (an SSE-C customer's), another object
    with pytest.raises(DecryptError):
        read_range(other, stored, [32, 32], prefixes, 0, 64)
    with pytest.raises(DecryptError):  # truncated: the record says more than is stored
        read_range(cipher, stored[:-1], [32, 32], prefixes, 0, 64)


def test_customer_key_headers_are_checked() -> None:
    key = os.urandom(32)
    good = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
            "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    parsed = CustomerKey.from_headers(good)
    assert parsed is not None and parsed.key == key and base64.b64encode(key).decode() not in repr(parsed)
    assert CustomerKey.from_headers({}) is None
    bad_cases = [
        dict(good, **{"x-amz-server-side-encryption-customer-key-md5": "AAAAAAAAAAAAAAAAAAAAAA=="}),
        {k: v for k, v in good.items() if not k.endswith("md5")},
        {k: v for k, v in good.items() if not k.endswith("-key")},
        {k: v for k, v in good.items() if not k.endswith("algorithm")},
        dict(good, **{"x-amz-server-side-encryption-customer-key": base64.b64encode(key[:16]).decode()}),
    ]
    for headers in bad_cases:
        with pytest.raises(S3Error) as exc:
            CustomerKey.from_headers(headers)
        assert exc.value.code.status == 400
    with pytest.raises(S3Error) as exc:
        CustomerKey.from_headers(dict(good, **{"x-amz-server-side-encryption-customer-algorithm": "AES128"}))
    assert exc.value.code is ErrorCode.INVALID_ENCRYPTION_ALGORITHM


def test_wrong_customer_key_is_refused_by_its_mac() -> None:
    master = MasterKeys(os.urandom(32))
    right, wrong = CustomerKey(os.urandom(32), "m1"), CustomerKey(os.urandom(32), "m2")
    keys = new_object_keys(master, right)
    assert "w" in keys.record and right.key not in repr(keys.record).encode()
    assert open_object_keys(keys.record, master, right).cipher.object_id == keys.cipher.object_id
    with pytest.raises(S3Error) as exc:
        open_object_keys(keys.record, master, wrong)
    assert exc.value.code is ErrorCode.ACCESS_DENIED
    with pytest.raises(S3Error) as exc:
        open_object_keys(keys.record, master, None)
    assert exc.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(S3Error) as exc:
        open_object_keys(keys.record, master, wrong, ErrorCode.INVALID_REQUEST)
    assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_sse_s3_data_key_needs_the_master_key() -> None:
    old, new = os.urandom(32), os.urandom(32)
    keys = new_object_keys(MasterKeys(old))
    assert open_object_keys(keys.record, MasterKeys(new, old), None).record is keys.record  # an older key opens
    with pytest.raises(S3Error) as exc:
        open_object_keys(keys.record, MasterKeys(new), None)
    assert exc.value.code is ErrorCode.INTERNAL_ERROR and "sse.key" in exc.value.message


def test_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_master_key(tmp_path)
    path = tmp_path / MASTER_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_master_key(tmp_path) == key and len(key) == 32


# -- through the Engine -------------------------------------------------------------------------------------------


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_sse_s3(engine: Engine, key: str, data: bytes) -> object:
    keys = new_object_keys(engine.sse_keys)
    sealer = keys.cipher.sealer()
    stored = await engine.ingest(_one(data), sealer=sealer)
    return await engine.put_object("bkt", key, stored, encryption=dict(keys.record, pn=[sealer.prefix]))


def volume_bytes(engine: Engine) -> bytes:
    return b"".join(p.read_bytes() for p in Path(engine.volumes.directory).glob("*.vol"))


@pytest.mark.anyio
async def test_encrypted_object_reads_back_exact_and_is_ciphertext_on_disk(make_engine: object) -> None:
    engine = make_engine(chunk_bytes=200 * 1024)  # type: ignore[operator]
    await engine.create_bucket("bkt")
    plain = (b"the plaintext marker 0123456789 " * 20000)[:600_001]
    version = await put_sse_s3(engine, "k", plain)
    head = engine.head_object("bkt", "k")
    assert (head.size, head.etag) == (len(plain), hashlib.md5(plain).hexdigest())  # SSE-S3: the plaintext MD5
    assert head.encryption["a"] == "AES256" and "pn" in head.encryption
    assert b"the plaintext marker" not in volume_bytes(engine)
    for start, length in [(0, len(plain)), (0, 1), (65535, 2), (65536, 65536), (len(plain) - 1, 1),
                          (200 * 1024 - 3, 7), (123_457, 300_000)]:
        got = b"".join([p async for p in engine.read_object(head, start, length)])
        assert got == plain[start:start + length], (start, length)
        assert engine.read_small(head, start, min(length, 1000)) == plain[start:start + min(length, 1000)]
    assert version is not None
    second = await put_sse_s3(engine, "k2", plain)  # same plaintext: no shared blob (no dedup of ciphertext)
    assert not {b.hash for b in head.blobs} & {b.hash for b in engine.head_object("bkt", "k2").blobs}
    assert second is not None


@pytest.mark.anyio
async def test_copy_that_shares_blobs_keeps_the_encryption(make_engine: object) -> None:
    """A copy that references the source's sealed chunks must carry the source's ``se``: without it the copy
    would serve ciphertext as its bytes."""
    engine = make_engine()  # type: ignore[operator]
    await engine.create_bucket("bkt")
    plain = os.urandom(70_000)
    await put_sse_s3(engine, "src", plain)
    source = engine.head_object("bkt", "src")
    await engine.copy_object(source, "bkt", "dst", replace_metadata=False)
    copy = engine.head_object("bkt", "dst")
    assert b"".join([p async for p in engine.read_object(copy)]) == plain


@pytest.mark.anyio
async def test_a_segment_that_fails_its_tag_is_an_error_through_the_engine(make_engine: object) -> None:
    """Stored bytes that pass the volume's CRCs but not GCM (here: the record names another nonce prefix, as a
    segment moved from another part would look) give InternalError from every read path, never bytes."""
    engine = make_engine(chunk_bytes=128 * 1024)  # type: ignore[operator]
    await engine.create_bucket("bkt")
    plain = os.urandom(400_000)
    await put_sse_s3(engine, "k", plain)
    version = engine.head_object("bkt", "k")
    version.encryption["pn"] = [os.urandom(8)]
    with pytest.raises(S3Error) as exc:
        engine.read_small(version, 0, 1000)
    assert exc.value.code is ErrorCode.INTERNAL_ERROR
    pieces: list[bytes] = []
    with pytest.raises(S3Error) as exc:
        async for piece in engine.read_object(version, 70_000, 300_000):
            pieces.append(piece)
    assert exc.value.code is ErrorCode.INTERNAL_ERROR and pieces == []
