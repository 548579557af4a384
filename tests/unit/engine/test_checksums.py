"""S3 checksum algorithms: known vectors, botocore agreement, incremental use, multipart combinations."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine import checksums
from s4.engine.checksums import (
    ALGORITHMS,
    CRC_ALGORITHMS,
    algorithm_from_header,
    checksum_of,
    combine_crc,
    composite_checksum,
    decode_b64_digest,
    full_object_checksum,
    header_name,
    new_checksum,
)
from s4.engine.errors import ErrorCode, S3Error

CHECK = b"123456789"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("algorithm, expected", [
    ("CRC32", b64((0xCBF43926).to_bytes(4, "big"))),
    ("CRC32C", b64((0xE3069283).to_bytes(4, "big"))),
    ("CRC64NVME", b64((0xAE8B14860A799888).to_bytes(8, "big"))),
    ("SHA1", b64(hashlib.sha1(CHECK).digest())),
    ("SHA256", b64(hashlib.sha256(CHECK).digest())),
])
def test_check_values(algorithm: str, expected: str) -> None:
    assert checksum_of(algorithm, CHECK) == expected
    assert checksum_of(algorithm.lower(), memoryview(CHECK)) == expected


def test_empty_input_and_digest_sizes() -> None:
    assert checksum_of("CRC32", b"") == "AAAAAA=="
    assert checksum_of("CRC64NVME", b"") == "AAAAAAAAAAA="
    for algorithm in ALGORITHMS:
        assert len(new_checksum(algorithm).digest()) == checksums.DIGEST_SIZES[algorithm]


BOTOCORE = {
    "CRC32": httpchecksum.Crc32Checksum,
    "CRC32C": httpchecksum.CrtCrc32cChecksum,
    "SHA1": httpchecksum.Sha1Checksum,
    "SHA256": httpchecksum.Sha256Checksum,
    "CRC64NVME": httpchecksum.CrtCrc64NvmeChecksum,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_matches_botocore(algorithm: str) -> None:
    data = os.urandom(100_003)
    theirs = BOTOCORE[algorithm]()
    theirs.update(data)
    assert checksum_of(algorithm, data) == theirs.b64digest()
    # the AWS "checksum of the part checksums" form, cross-checked against botocore's own hashing
    parts = [os.urandom(n) for n in (10, 2000, 1)]
    digests = [checksum_of(algorithm, p) for p in parts]
    outer = BOTOCORE[algorithm]()
    outer.update(b"".join(base64.b64decode(d) for d in digests))
    assert composite_checksum(algorithm, digests) == f"{outer.b64digest()}-3"


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=5))
def test_incremental_equals_one_shot(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for algorithm in ALGORITHMS:
        c = new_checksum(algorithm)
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            c.update(data[lo:hi])
        assert c.b64digest() == checksum_of(algorithm, data)


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(st.binary(max_size=700), min_size=1, max_size=6))
def test_full_object_checksum_combines_parts(parts: list[bytes]) -> None:
    for algorithm in CRC_ALGORITHMS:
        pieces = [(checksum_of(algorithm, p), len(p)) for p in parts]
        assert full_object_checksum(algorithm, pieces) == checksum_of(algorithm, b"".join(parts))


def test_combine_crc_matches_awscrt_for_large_lengths() -> None:
    awscrt = pytest.importorskip("awscrt.checksums")
    for algorithm, combine in (("CRC32", awscrt.combine_crc32), ("CRC32C", awscrt.combine_crc32c),
                               ("CRC64NVME", awscrt.combine_crc64nvme)):
        for length in (1, 8, 5 * 1024**3, 5 * 1024**4 + 17):
            a, b = 0x12345678, 0x0BADF00D
            assert combine_crc(algorithm, a, b, length) == combine(a, b, length)


def test_full_object_rejects_sha() -> None:
    with pytest.raises(S3Error) as info:
        full_object_checksum("SHA256", [(checksum_of("SHA256", b"x"), 1)])
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_header_names() -> None:
    for algorithm in ALGORITHMS:
        name = header_name(algorithm)
        assert name == f"x-amz-checksum-{algorithm.lower()}"
        assert algorithm_from_header(name) == algorithm
        assert algorithm_from_header(name.upper()) == algorithm
    assert algorithm_from_header("x-amz-checksum-md4") is None
    assert algorithm_from_header("x-amz-checksum-type") is None
    assert algorithm_from_header("content-md5") is None


@pytest.mark.parametrize("value", ["", "not base64!", b64(b"12345"), b64(b"123")])
def test_decode_b64_digest_rejects_bad_values(value: str) -> None:
    with pytest.raises(S3Error) as info:
        decode_b64_digest("CRC32", value)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_unknown_algorithm() -> None:
    with pytest.raises(S3Error) as info:
        new_checksum("MD4")
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_crc64nvme_without_awscrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checksums, "_crc64nvme", None)
    assert not checksums.crc64nvme_available()
    with pytest.raises(S3Error) as info:
        new_checksum("CRC64NVME")
    assert info.value.code is ErrorCode.INVALID_REQUEST
    # combining part CRCs is pure Python and keeps working
    assert full_object_checksum("CRC64NVME", [("AAAAAAAAAAE=", 3)]) == "AAAAAAAAAAE="
