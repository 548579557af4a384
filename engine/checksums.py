"""S3 "additional checksum" algorithms: CRC32, CRC32C, SHA1, SHA256, CRC64NVME.

    new_checksum(alg)     -- incremental hasher: .update(), .b64digest() (the x-amz-checksum-* form)
    header_name / algorithm_from_header -- map between "CRC32" and "x-amz-checksum-crc32"
    composite_checksum    -- multipart COMPOSITE value: checksum of the part digests, "<b64>-N"
    full_object_checksum  -- multipart FULL_OBJECT value for CRCs, combined from part CRCs and lengths
    upload_checksum_type  -- a multipart upload's checksum type (x-amz-checksum-type, or the algorithm's default)
    multipart_checksums   -- CompleteMultipartUpload: the parts' checksums checked, the object's computed and any
                             claimed whole-object value verified (InvalidPart / BadDigest / InvalidRequest)

Digests are big-endian bytes, base64-encoded, exactly as S3 carries them in headers and XML. CRC64NVME
needs the optional ``awscrt`` package for hashing data (a pure-Python loop would be far too slow); the CRC
combination math below is pure Python and works for it regardless.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence

import crc32c as _crc32c

from s4.engine.errors import ErrorCode, S3Error

try:  # optional: only needed to hash data with CRC64NVME
    from awscrt.checksums import crc64nvme as _crc64nvme
except ImportError:  # pragma: no cover - depends on the environment
    _crc64nvme = None

ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
DIGEST_SIZES: dict[str, int] = {"CRC32": 4, "CRC32C": 4, "SHA1": 20, "SHA256": 32, "CRC64NVME": 8}
CRC_ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "CRC64NVME")
HEADER_PREFIX = "x-amz-checksum-"

# Reflected polynomials and widths; all three CRCs use init = xorout = all ones, which is what makes
# the zlib-style combination (crc(A||B) = crc(A) * x^(8|B|) mod P  xor  crc(B)) valid for each.
_CRC_PARAMS: dict[str, tuple[int, int]] = {
    "CRC32": (0xEDB88320, 32),
    "CRC32C": (0x82F63B78, 32),
    "CRC64NVME": (0x9A6C9329AC4BC9B5, 64),
}


def normalize_algorithm(algorithm: str) -> str:
    """Canonical upper-case name; S3Error(InvalidRequest) for anything S3 does not support."""
    name = algorithm.strip().upper()
    if name not in DIGEST_SIZES:
        raise S3Error(ErrorCode.INVALID_REQUEST,
                      f"Checksum algorithm '{algorithm}' is not supported; expected one of "
                      f"{', '.join(ALGORITHMS)}.")
    return name


def crc64nvme_available() -> bool:
    """Whether CRC64NVME data hashing works here (awscrt importable)."""
    return _crc64nvme is not None


class Checksum:
    """Incremental checksum; a uniform face over zlib, crc32c, hashlib and awscrt."""

    __slots__ = ("algorithm", "_crc", "_crc_fn", "_hash", "_size")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = normalize_algorithm(algorithm)
        self._size = DIGEST_SIZES[self.algorithm]
        self._crc = 0
        self._hash: hashlib._Hash | None = None
        self._crc_fn: Callable[[bytes | bytearray | memoryview, int], int] | None = None
        if self.algorithm == "SHA1":
            self._hash = hashlib.sha1()
        elif self.algorithm == "SHA256":
            self._hash = hashlib.sha256()
        elif self.algorithm == "CRC32":
            self._crc_fn = zlib.crc32
        elif self.algorithm == "CRC32C":
            self._crc_fn = _crc32c.crc32c
        else:
            if _crc64nvme is None:
                raise S3Error(ErrorCode.INVALID_REQUEST,
                              "The CRC64NVME checksum algorithm is not available on this server.")
            self._crc_fn = _crc64nvme

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        else:
            assert self._crc_fn is not None
            self._crc = self._crc_fn(data, self._crc)

    def digest(self) -> bytes:
        if self._hash is not None:
            return self._hash.digest()
        return self._crc.to_bytes(self._size, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


def new_checksum(algorithm: str) -> Checksum:
    """A fresh incremental checksum for ``algorithm`` (case-insensitive)."""
    return Checksum(algorithm)


def checksum_of(algorithm: str, data: bytes | bytearray | memoryview) -> str:
    """One-shot base64 digest, for small payloads and tests."""
    c = Checksum(algorithm)
    c.update(data)
    return c.b64digest()


def header_name(algorithm: str) -> str:
    """``"CRC32"`` -> ``"x-amz-checksum-crc32"``."""
    return HEADER_PREFIX + normalize_algorithm(algorithm).lower()


def algorithm_from_header(name: str) -> str | None:
    """``"x-amz-checksum-crc32c"`` (any case) -> ``"CRC32C"``; None for any other header name."""
    lower = name.strip().lower()
    if not lower.startswith(HEADER_PREFIX):
        return None
    alg = lower[len(HEADER_PREFIX):].upper()
    return alg if alg in DIGEST_SIZES else None


def decode_b64_digest(algorithm: str, value: str) -> bytes:
    """Raw digest bytes of a header value; InvalidRequest if it is not valid base64 of the right size."""
    alg = normalize_algorithm(algorithm)
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZES[alg]:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"Value for {header_name(alg)} header is invalid.")
    return raw


def composite_checksum(algorithm: str, part_b64_digests: Sequence[str]) -> str:
    """Multipart COMPOSITE checksum: hash of the concatenated raw part digests, suffixed "-<parts>"."""
    outer = Checksum(algorithm)
    for value in part_b64_digests:
        outer.update(decode_b64_digest(outer.algorithm, value))
    return f"{outer.b64digest()}-{len(part_b64_digests)}"


def _multmodp(a: int, b: int, poly: int, width: int) -> int:
    """a(x) * b(x) mod P(x) for reflected polynomials (bit width-1 is x^0)."""
    top = 1 << (width - 1)
    m = top
    product = 0
    while m:
        if a & m:
            product ^= b
            if not a & (m - 1):
                break
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1
    return product


def _x8n_modp(n: int, poly: int, width: int) -> int:
    """x^(8n) mod P(x), by square-and-multiply so huge lengths cost O(log n) multiplications."""
    result = 1 << (width - 1)  # x^0
    square = 1 << (width - 9)  # x^8
    while n:
        if n & 1:
            result = _multmodp(square, result, poly, width)
        n >>= 1
        if n:
            square = _multmodp(square, square, poly, width)
    return result


def combine_crc(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """CRC of A||B from crc(A), crc(B) and len(B) -- no data re-read."""
    poly, width = _CRC_PARAMS[normalize_algorithm(algorithm)]
    if length2 <= 0:
        return crc1
    return _multmodp(_x8n_modp(length2, poly, width), crc1, poly, width) ^ crc2


def full_object_checksum(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """Multipart FULL_OBJECT checksum (CRC algorithms only) from (part b64 digest, part length) pairs."""
    alg = normalize_algorithm(algorithm)
    if alg not in _CRC_PARAMS:
        raise S3Error(ErrorCode.INVALID_REQUEST,
                      f"The FULL_OBJECT checksum type is not supported for the {alg} algorithm.")
    crc = 0  # the CRC of no data, for init = xorout = all ones
    for value, length in parts:
        part = int.from_bytes(decode_b64_digest(alg, value), "big")
        crc = combine_crc(alg, crc, part, length)
    return base64.b64encode(crc.to_bytes(DIGEST_SIZES[alg], "big")).decode("ascii")


COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"


def upload_checksum_type(algorithm: str, requested: str) -> str:
    """The checksum type of a multipart upload created with ``algorithm`` ("" for none) and the client's
    ``x-amz-checksum-type`` (may be ""): COMPOSITE by default, FULL_OBJECT for CRC64NVME (the only type S3 allows
    it); FULL_OBJECT needs a CRC (only CRCs combine), and every refusal is InvalidRequest as S3 answers."""
    kind = requested.strip().upper()
    if not algorithm:
        if kind:
            raise S3Error(ErrorCode.INVALID_REQUEST, "The x-amz-checksum-type header can only be used with the "
                          "x-amz-checksum-algorithm header.")
        return ""
    alg = normalize_algorithm(algorithm)
    if not kind:
        return FULL_OBJECT if alg == "CRC64NVME" else COMPOSITE
    if kind not in (COMPOSITE, FULL_OBJECT):
        raise S3Error(ErrorCode.INVALID_REQUEST, "Value for x-amz-checksum-type header is invalid.")
    if kind == FULL_OBJECT and alg not in _CRC_PARAMS:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"The FULL_OBJECT checksum type cannot be used with the "
                      f"{alg.lower()} checksum algorithm.")
    if kind == COMPOSITE and alg == "CRC64NVME":
        raise S3Error(ErrorCode.INVALID_REQUEST, "The COMPOSITE checksum type cannot be used with the crc64nvme "
                      "checksum algorithm.")
    return kind


def _same(claimed: str, computed: str) -> bool:
    """A composite value may be claimed with or without its ``-N`` suffix; the digest must match exactly."""
    return claimed.strip() == computed or claimed.strip() == computed.partition("-")[0]


def multipart_checksums(algorithm: str, kind: str, parts: Sequence[tuple[int, Mapping[str, str], int]],
                        listed: Sequence[Mapping[str, str]], claimed: Mapping[str, str], claimed_type: str,
                        upload_id: str) -> dict[str, str]:
    """The completed object's checksums, or the S3 error that refuses the completion (nothing is recorded).

    ``parts``: (number, stored checksums, size) of each part in order; ``listed``: the checksums the client's
    CompleteMultipartUpload names for each part (InvalidPart when one differs from the stored part's; a part listed
    without one uses the stored value, which the server computed or verified as the part arrived, as RGW does:
    ceph's s3-tests complete SHA256 uploads that way); ``claimed``: whole-object ``x-amz-checksum-*`` headers
    (BadDigest when the computed value differs; InvalidRequest when it cannot be computed, never stored
    unverified); ``claimed_type``: ``x-amz-checksum-type`` (must be the upload's)."""
    for (number, stored, _), names in zip(parts, listed, strict=True):
        for alg, value in names.items():
            name = alg.upper()
            if name not in DIGEST_SIZES or stored.get(name) != value.strip():
                raise S3Error(ErrorCode.INVALID_PART, UploadId=upload_id, PartNumber=str(number))
    if claimed_type and kind and claimed_type.strip().upper() != kind:
        raise S3Error(ErrorCode.INVALID_REQUEST, f"The upload was created using the {kind} checksum mode. The "
                      f"complete request must use the same checksum mode.")
    out: dict[str, str] = {}
    if algorithm and all(algorithm in stored for _, stored, _ in parts):
        if kind == FULL_OBJECT:
            out[algorithm] = full_object_checksum(algorithm, [(stored[algorithm], size) for _, stored, size in parts])
        else:
            out[algorithm] = composite_checksum(algorithm, [stored[algorithm] for _, stored, _ in parts])
    for alg, value in claimed.items():
        name = normalize_algorithm(alg)
        if name not in out and name in _CRC_PARAMS and not algorithm and \
                all(name in stored for _, stored, _ in parts):  # no declared algorithm: a CRC still combines
            out[name] = full_object_checksum(name, [(stored[name], size) for _, stored, size in parts])
        if name not in out:
            raise S3Error(ErrorCode.INVALID_REQUEST, f"The {name} checksum of the object cannot be verified: the "
                          f"upload's parts do not carry {name} checksums.")
        if not _same(value, out[name]):
            raise S3Error(ErrorCode.BAD_DIGEST, f"The {name} you specified did not match the calculated checksum.")
    return out
