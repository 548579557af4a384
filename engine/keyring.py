"""The node key that encrypts S3 secret keys at rest (journal payloads and the credentials view).

SigV4 needs the plain secret to recompute signatures, so secrets cannot be hashed like passwords; instead they are
encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key kept in ``<data dir>/iam.key``
(mode 0600, created at first start), or, in a cluster, under a key the pool's nodes share (``Keyring``). Journal
dumps, audit exports and view files only ever hold ciphertext.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

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
    """Encrypts secrets with the first key and decrypts with any of them: a cluster node encrypts with the key its
    pool shares (derived from the cluster secret: cluster/auth.py ``iam_key``), so every node can decrypt what
    any node stored, and still decrypts what it stored under its own ``iam.key`` before it joined a pool."""

    def __init__(self, key: bytes, *older: bytes) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in (key, *older)])

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise KeyringError("cannot decrypt a stored S3 secret: iam.key does not match the data") from exc
