"""The node key that encrypts S3 secret keys at rest (journal payloads and the credentials view).

SigV4 needs the plain secret to recompute signatures, so secrets cannot be hashed like passwords; instead they are
encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key kept in ``<data dir>/iam.key``
(mode 0600, created at first start). Journal dumps, audit exports and view files only ever hold ciphertext.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "iam.key"


class KeyringError(RuntimeError):
    """A stored secret that this node's key cannot decrypt (wrong or replaced ``iam.key``)."""


def load_or_create_key(data_dir: Path) -> bytes:
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


class Keyring:
    """Encrypts and decrypts secrets with the node key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise KeyringError("cannot decrypt a stored S3 secret: iam.key does not match the data") from exc
