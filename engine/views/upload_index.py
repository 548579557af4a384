"""The index of multipart uploads in flight, in ListMultipartUploads order: by key (S3 byte order), then by
initiation time.

Keys may be 1,024 bytes, so the index cannot be a flat ``bucket + key`` LMDB key. Each bucket's keys with
uploads form a namespace tree in the ``upload_ns`` database (same root id as the bucket's object tree, whose
``ns`` database it does not share); the leaf of a key is a *key id*, and ``upload_keys`` holds
``key id ‖ initiated ms ‖ upload id`` (engine/views/keys.py). A listing walks the tree from its marker like an
object listing, then reads each key's uploads in time order. Only the projector writes it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..model import Upload
from . import keys, namespace
from .records import Tx

DB = "upload_ns"


def add(tx: Tx, root: int, upload: Upload) -> None:
    key_id, _ = namespace.ensure_object(tx.txn, tx.dbs[DB], root, upload.key.encode(), tx.alloc_node)
    tx.put("upload_keys", keys.upload_keys_key(key_id, upload.initiated_ms, upload.upload_id), b"")


def remove(tx: Tx, root: int, upload: Upload) -> None:
    """Drop one upload; the key leaves the tree with its last upload (directories left empty are pruned)."""
    key = upload.key.encode()
    key_id = namespace.find_object(tx.txn, tx.dbs[DB], root, key)
    if key_id is None:
        return
    tx.delete("upload_keys", keys.upload_keys_key(key_id, upload.initiated_ms, upload.upload_id))
    if next(tx.scan("upload_keys", keys.upload_keys_prefix(key_id)), None) is None:
        namespace.remove_object(tx.txn, tx.dbs[DB], root, key)


def walk(tx: Tx, root: int, start: bytes, inclusive: bool) -> Iterator[tuple[bytes, str]]:
    """(key, upload id) of every upload whose key is >= (or >) ``start``, in listing order."""
    for key, key_id in namespace.iter_from(tx.txn, tx.dbs[DB], root, start, inclusive):
        for raw, _ in tx.scan("upload_keys", keys.upload_keys_prefix(key_id)):
            yield key, keys.decode_upload_keys_key(raw)[2]


def under(tx: Tx, root: int, prefix: bytes) -> Iterator[tuple[bytes, str]]:
    """(key, upload id) of every upload whose key starts with ``prefix``."""
    for key, upload_id in walk(tx, root, prefix, True):
        if not key.startswith(prefix):
            return
        yield key, upload_id


def of_key(tx: Tx, root: int, key: bytes) -> list[str]:
    """The upload ids of one key, oldest first."""
    key_id = namespace.find_object(tx.txn, tx.dbs[DB], root, key)
    if key_id is None:
        return []
    return [keys.decode_upload_keys_key(raw)[2] for raw, _ in tx.scan("upload_keys", keys.upload_keys_prefix(key_id))]
