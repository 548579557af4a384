"""CompleteMultipartUpload's checksum rules (engine/checksums.py ``multipart_checksums``): the object's value is
computed from its parts (COMPOSITE or FULL_OBJECT), every claim the client makes is checked against what was
stored, and each refusal is the S3 error. Before issue 22 the completion dropped the client's CRC and accepted
any whole-object value."""

from __future__ import annotations

import base64
import zlib

import pytest

from s4.engine.checksums import (
    COMPOSITE,
    FULL_OBJECT,
    checksum_of,
    composite_checksum,
    crc64nvme_available,
    multipart_checksums,
    upload_checksum_type,
)
from s4.engine.errors import ErrorCode, S3Error

BODIES = [b"a" * 1000, b"b" * 333, b"tail"]


def _parts(alg: str) -> list[tuple[int, dict[str, str], int]]:
    return [(n, {alg: checksum_of(alg, body)}, len(body)) for n, body in enumerate(BODIES, start=1)]


def _listed(alg: str) -> list[dict[str, str]]:
    return [{alg: checksum_of(alg, body)} for body in BODIES]


def test_upload_checksum_type_defaults_and_refusals() -> None:
    assert upload_checksum_type("", "") == ""
    assert upload_checksum_type("CRC32", "") == COMPOSITE
    assert upload_checksum_type("SHA256", "composite") == COMPOSITE
    assert upload_checksum_type("CRC32C", "FULL_OBJECT") == FULL_OBJECT
    assert upload_checksum_type("CRC64NVME", "") == FULL_OBJECT
    for alg, kind in (("SHA1", "FULL_OBJECT"), ("CRC64NVME", "COMPOSITE"), ("CRC32", "BOTH"), ("", "COMPOSITE")):
        with pytest.raises(S3Error) as err:
            upload_checksum_type(alg, kind)
        assert err.value.code is ErrorCode.INVALID_REQUEST


def test_composite_checksum_of_the_parts_is_kept() -> None:
    got = multipart_checksums("CRC32", COMPOSITE, _parts("CRC32"), _listed("CRC32"), {}, "", "u")
    assert got == {"CRC32": composite_checksum("CRC32", [checksum_of("CRC32", b) for b in BODIES])}
    assert got["CRC32"].endswith("-3")


def test_full_object_crc_equals_the_crc_of_the_whole_body() -> None:
    whole = base64.b64encode(zlib.crc32(b"".join(BODIES)).to_bytes(4, "big")).decode()
    got = multipart_checksums("CRC32", FULL_OBJECT, _parts("CRC32"), [{}, {}, {}], {"CRC32": whole}, "", "u")
    assert got == {"CRC32": whole}


@pytest.mark.skipif(not crc64nvme_available(), reason="awscrt not installed")
def test_full_object_crc64nvme() -> None:
    whole = checksum_of("CRC64NVME", b"".join(BODIES))
    assert multipart_checksums("CRC64NVME", FULL_OBJECT, _parts("CRC64NVME"), _listed("CRC64NVME"),
                               {"CRC64NVME": whole}, "FULL_OBJECT", "u") == {"CRC64NVME": whole}


def test_wrong_whole_object_checksum_is_bad_digest() -> None:
    wrong = checksum_of("CRC32", b"something else")
    for kind in (COMPOSITE, FULL_OBJECT):
        with pytest.raises(S3Error) as err:
            multipart_checksums("CRC32", kind, _parts("CRC32"), _listed("CRC32"), {"CRC32": wrong + "-3"}, "", "u")
        assert err.value.code is ErrorCode.BAD_DIGEST


def test_composite_claim_is_accepted_with_or_without_its_part_count() -> None:
    value = multipart_checksums("SHA256", COMPOSITE, _parts("SHA256"), _listed("SHA256"), {}, "", "u")["SHA256"]
    for claim in (value, value.partition("-")[0]):
        assert multipart_checksums("SHA256", COMPOSITE, _parts("SHA256"), _listed("SHA256"),
                                   {"SHA256": claim}, "", "u") == {"SHA256": value}


def test_wrong_part_checksum_is_invalid_part() -> None:
    listed = _listed("CRC32")
    listed[1] = {"CRC32": checksum_of("CRC32", b"not part two")}
    with pytest.raises(S3Error) as err:
        multipart_checksums("CRC32", COMPOSITE, _parts("CRC32"), listed, {}, "", "u")
    assert err.value.code is ErrorCode.INVALID_PART
    assert err.value.fields["PartNumber"] == "2"


def test_unlisted_part_checksums_use_the_stored_ones() -> None:
    listed = _listed("CRC32C")
    listed[2] = {}
    assert multipart_checksums("CRC32C", COMPOSITE, _parts("CRC32C"), listed, {}, "", "u") == \
        multipart_checksums("CRC32C", COMPOSITE, _parts("CRC32C"), _listed("CRC32C"), {}, "", "u")


def test_checksum_type_must_be_the_uploads() -> None:
    with pytest.raises(S3Error) as err:
        multipart_checksums("CRC32", COMPOSITE, _parts("CRC32"), _listed("CRC32"), {}, "FULL_OBJECT", "u")
    assert err.value.code is ErrorCode.INVALID_REQUEST


def test_unverifiable_claim_is_refused_not_stored() -> None:
    """No declared algorithm and parts without that checksum: the claim cannot be checked, so it is refused."""
    parts = [(n, {}, len(b)) for n, b in enumerate(BODIES, start=1)]
    with pytest.raises(S3Error) as err:
        multipart_checksums("", "", parts, [{}, {}, {}], {"SHA1": checksum_of("SHA1", b"x")}, "", "u")
    assert err.value.code is ErrorCode.INVALID_REQUEST


def test_undeclared_crc_still_combines() -> None:
    whole = base64.b64encode(zlib.crc32(b"".join(BODIES)).to_bytes(4, "big")).decode()
    assert multipart_checksums("", "", _parts("CRC32"), [{}, {}, {}], {"CRC32": whole}, "", "u") == {"CRC32": whole}
    assert multipart_checksums("", "", _parts("CRC32"), [{}, {}, {}], {}, "", "u") == {}
