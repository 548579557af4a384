"""Key material: the node's master key (wraps SSE-S3 data keys) and customer keys (SSE-C).

The master key is 32 random bytes in ``<data dir>/sse.key`` (mode 0600, created at the first start, like
``iam.key``); in a pool every node derives the same one from the cluster key (cluster/auth.py ``sse_key``), so an
object written through one node reads through any. A node keeps its own ``sse.key`` as an older key: what it
encrypted before it joined a pool stays readable. Losing the key loses every SSE-S3 object (docs/operations.md).

A data key is wrapped with AES-256-GCM under the wrapping key, bound to the object id:
``nonce (12) || ciphertext (32) || tag (16)``. A customer key is never stored: an SSE-C object keeps its data
key wrapped under the customer key and an HMAC-SHA256 key-MAC, so a wrong key is refused before any byte is
decrypted (and without telling anything about the right one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ErrorCode, S3Error

MASTER_KEY_FILE = "sse.key"
KEY_BYTES = 32
_WRAP_LABEL = b"s4-sse-dek-v1"
_MAC_LABEL = b"s4-sse-c-key-mac-v1"


class UnwrapError(Exception):
    """A wrapped data key that none of the keys opens."""


def wrap(key: bytes, data_key: bytes, object_id: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data_key, _WRAP_LABEL + object_id)


def unwrap(key: bytes, wrapped: bytes, object_id: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], _WRAP_LABEL + object_id)
    except InvalidTag:
        raise UnwrapError("the data key does not open under this key") from None


def load_or_create_master_key(data_dir: Path) -> bytes:
    """This node's own master key (``sse.key``: 64 hex digits), created with mode 0600 on the first start."""
    path = Path(data_dir) / MASTER_KEY_FILE
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) != KEY_BYTES:
            raise RuntimeError(f"{path} does not hold a {KEY_BYTES}-byte key")
        return key
    key = os.urandom(KEY_BYTES)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key


class MasterKeys:
    """Wraps with the first key, unwraps with any (a pool's shared key first, then the node's own)."""

    def __init__(self, key: bytes, *older: bytes) -> None:
        self._keys = [key, *older]

    def wrap(self, data_key: bytes, object_id: bytes) -> bytes:
        return wrap(self._keys[0], data_key, object_id)

    def unwrap(self, wrapped: bytes, object_id: bytes) -> bytes:
        for key in self._keys:
            try:
                return unwrap(key, wrapped, object_id)
            except UnwrapError:
                continue
        raise UnwrapError("no master key opens this object's data key (sse.key replaced or lost?)")


CUSTOMER_PREFIX = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """An SSE-C key from a request's headers (checked: algorithm AES256, 32 bytes, matching MD5)."""

    key: bytes
    key_md5: str  # base64, as the client sent it (echoed in responses)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], prefix: str = CUSTOMER_PREFIX) -> CustomerKey | None:
        """None when the request names no customer key; InvalidArgument/InvalidEncryptionAlgorithmError for a
        partial or bad one (AWS's 400s)."""
        algorithm = headers.get(prefix + "algorithm")
        key_b64 = headers.get(prefix + "key")
        key_md5 = headers.get(prefix + "key-md5")
        if algorithm is None and key_b64 is None and key_md5 is None:
            return None
        if algorithm is None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Requests specifying Server Side Encryption with Customer "
                          "provided keys must provide a valid encryption algorithm.",
                          ArgumentName=prefix + "algorithm", ArgumentValue="null")
        if algorithm.strip() != "AES256":
            raise S3Error(ErrorCode.INVALID_ENCRYPTION_ALGORITHM, "The encryption algorithm specified is not "
                          "supported.", ArgumentName=prefix + "algorithm", ArgumentValue=algorithm[:64])
        if key_b64 is None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Requests specifying Server Side Encryption with Customer "
                          "provided keys must provide an appropriate secret key.",
                          ArgumentName=prefix + "key", ArgumentValue="null")
        try:
            key = base64.b64decode(key_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "The secret key was invalid for the specified algorithm.",
                          ArgumentName=prefix + "key", ArgumentValue="null")
        if key_md5 is None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Requests specifying Server Side Encryption with Customer "
                          "provided keys must provide the client calculated MD5 of the secret key.",
                          ArgumentName=prefix + "key-MD5", ArgumentValue="null")
        if base64.b64encode(hashlib.md5(key).digest()).decode() != key_md5.strip():
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "The calculated MD5 hash of the key did not match the hash "
                          "that was provided.", ArgumentName=prefix + "key-MD5", ArgumentValue="null")
        return cls(key, key_md5.strip())

    def mac(self, object_id: bytes) -> bytes:
        """The key-MAC an SSE-C object keeps: proves a later request holds the same key, reveals nothing of it."""
        return hmac.new(self.key, _MAC_LABEL + object_id, hashlib.sha256).digest()

    def __repr__(self) -> str:  # never the key in logs or tracebacks
        return f"CustomerKey(md5={self.key_md5})"
