"""An object's encryption as its version record keeps it (the ``se`` field), and the cipher it opens to.

``se`` holds no key and no plaintext: ``a`` the mode (``AES256`` for SSE-S3, ``SSE-C``), ``w`` the data key
wrapped (under the master key, or under the customer key for SSE-C), ``i`` the object id (bound into every
segment and into the wrapping), ``g`` the segment size, ``mac`` the SSE-C key-MAC; for SSE-KMS (``aws:kms``)
``kid``/``kv`` the KMS key and version the data key is wrapped under, ``ctx`` the encryption context (base64
JSON, bound into the wrapping) and ``bk`` a bucket key was asked for; on versions, ``pn`` the
nonce prefix of each part in order (one for a single PUT). A multipart upload keeps ``se`` without ``pn``; each
part record keeps its own prefix (``se: {"n": prefix}``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ErrorCode, S3Error
from .keys import CustomerKey, MasterKeys, UnwrapError, unwrap
from .keys import wrap as wrap_with
from .segments import SEGMENT_BYTES, SegmentCipher, new_object_id

SSE_S3 = "AES256"
SSE_C = "SSE-C"
SSE_KMS = "aws:kms"
#: (key id, version) -> the KMS key version's material; raises the S3 error of a missing or disabled key
KmsLookup = Callable[[str, str], bytes]


@dataclass(frozen=True, slots=True)
class KmsKey:
    """What an SSE-KMS write wraps its data key with: a KMS key version's material, the encryption context
    (base64 JSON, as the header carries it; bound into the wrapping) and whether a bucket key was asked for."""

    key_id: str
    version: str
    material: bytes
    context: str
    bucket_key: bool = False

    def __repr__(self) -> str:  # never the material in logs or tracebacks
        return f"KmsKey({self.key_id!r}, {self.version!r})"


def _kms_label(object_id: bytes, context: str) -> bytes:
    return object_id + b"\0" + context.encode()


@dataclass(frozen=True, slots=True)
class ObjectKeys:
    """A new or opened object's cipher and the ``se`` record that reopens it."""

    cipher: SegmentCipher
    record: dict[str, Any]

    @property
    def mode(self) -> str:
        return str(self.record["a"])


def new_object_keys(master: MasterKeys, customer: CustomerKey | None = None,
                    segment_bytes: int = SEGMENT_BYTES, kms: KmsKey | None = None) -> ObjectKeys:
    """A fresh random data key and object id: SSE-C when ``customer`` is given, SSE-KMS with ``kms``, else
    SSE-S3."""
    data_key, object_id = os.urandom(32), new_object_id()
    record: dict[str, Any] = {"i": object_id, "g": segment_bytes}
    if kms is not None:
        record.update(a=SSE_KMS, kid=kms.key_id, kv=kms.version, ctx=kms.context,
                      w=wrap_with(kms.material, data_key, _kms_label(object_id, kms.context)))
        if kms.bucket_key:
            record["bk"] = True
    elif customer is None:
        record.update(a=SSE_S3, w=master.wrap(data_key, object_id))
    else:
        record.update(a=SSE_C, w=wrap_with(customer.key, data_key, object_id), mac=customer.mac(object_id))
    return ObjectKeys(SegmentCipher(data_key, object_id, segment_bytes), record)


NEEDS_KEY = ("The object was stored using a form of Server Side Encryption. The correct parameters must be "
             "provided to retrieve the object.")
NOT_APPLICABLE = "The encryption parameters are not applicable to this object."


def open_object_keys(se: dict[str, Any], master: MasterKeys, customer: CustomerKey | None,
                     wrong_key: ErrorCode = ErrorCode.ACCESS_DENIED, kms: KmsLookup | None = None) -> ObjectKeys:
    """The cipher of a stored object (or upload). SSE-C without the key: 400 InvalidRequest; with a key whose MAC
    does not match: ``wrong_key`` (403 AccessDenied on reads, as AWS); a customer key for an SSE-S3 or SSE-KMS
    object: 400. SSE-KMS asks ``kms`` for the key version (a disabled key: its 400, nothing opened)."""
    object_id = se["i"]
    if se["a"] == SSE_KMS and kms is not None:
        if customer is not None:
            raise S3Error(ErrorCode.INVALID_REQUEST, NOT_APPLICABLE)
        try:
            data_key = unwrap(kms(se["kid"], se["kv"]), se["w"], _kms_label(object_id, se.get("ctx", "")))
        except UnwrapError:
            raise S3Error(ErrorCode.INTERNAL_ERROR, "This object's data key does not open under its KMS key "
                          "version.") from None
        return ObjectKeys(SegmentCipher(data_key, object_id, se.get("g", SEGMENT_BYTES)), se)
    if se["a"] not in (SSE_S3, SSE_C):
        raise S3Error(ErrorCode.INTERNAL_ERROR, f"This object is encrypted with {se['a']!r}, which this node cannot "
                      "open.")
    if se["a"] == SSE_C:
        if customer is None:
            raise S3Error(ErrorCode.INVALID_REQUEST, NEEDS_KEY)
        if not hmac.compare_digest(customer.mac(object_id), se["mac"]):
            if wrong_key is ErrorCode.ACCESS_DENIED:
                raise S3Error(ErrorCode.ACCESS_DENIED)
            raise S3Error(wrong_key, "The provided encryption parameters did not match the ones used originally.")
        try:
            data_key = unwrap(customer.key, se["w"], object_id)
        except UnwrapError:
            raise S3Error(ErrorCode.ACCESS_DENIED) from None
    else:
        if customer is not None:
            raise S3Error(ErrorCode.INVALID_REQUEST, NOT_APPLICABLE)
        try:
            data_key = master.unwrap(se["w"], object_id)
        except UnwrapError:
            raise S3Error(ErrorCode.INTERNAL_ERROR, "This object's data key cannot be unwrapped: the node's SSE "
                          "master key (sse.key) is not the one it was written with.") from None
    return ObjectKeys(SegmentCipher(data_key, object_id, se.get("g", SEGMENT_BYTES)), se)
