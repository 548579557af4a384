"""Every LMDB key layout of the views, one encoder and one decoder per database (docs/architecture/views.md).

No other module builds or splits a view key by hand. LMDB refuses keys over ``MAX_KEY_BYTES`` (511), so every
layout that embeds a user string bounds it: namespace entry names are cut into pieces (``NAME_PIECE_BYTES``,
namespace.py), a rename's client token is hashed, and a lookup by a string no stored key can hold (a version id
or upload id longer than any S4 issues, a bucket name longer than 63 bytes) is answered "absent" by
``fits`` before it reaches LMDB. ``tests/unit/engine/test_view_keys.py`` round-trips each layout.
"""

from __future__ import annotations

import hashlib
import struct

MAX_KEY_BYTES = 511  # LMDB's compiled-in limit (mdb_env_get_maxkeysize)
U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
MAX_U64 = (1 << 64) - 1

#: Namespace entry names shorter than this are stored whole; longer ones as pieces of exactly this many bytes.
NAME_PIECE_BYTES = 480
assert U64.size + NAME_PIECE_BYTES <= MAX_KEY_BYTES

#: The view layout this code reads and writes; views stamped with another (or none) are rebuilt from the journal.
LAYOUT_VERSION = 6  # 4: the Merkle view (ae_keys, ae_leaves), tag_clocks keep the key, bucket_tombs the delete;
#                    5: lock_clocks (a version's newest object.lock_set, kept before the version arrives)
#                    6: lock_clocks and a version's ``lc`` hold per-field lock states (object_lock.join)


def u64(n: int) -> bytes:
    return U64.pack(n)


def from_u64(data: bytes | memoryview) -> int:
    return int(U64.unpack(data)[0])


def fits(key: bytes) -> bool:
    """Whether LMDB can hold ``key``: a longer one was never stored, so a lookup by it finds nothing."""
    return 0 < len(key) <= MAX_KEY_BYTES


# -- meta -------------------------------------------------------------------------------------------------------
META_LAST_SEQ = b"last_seq"
META_NEXT_NODE = b"next_node"
META_LAYOUT = b"layout"
META_TOMBSTONES = b"tombstones"  # how many version tombstones ``vtombs`` holds (kept until part 2's GC)
#: The projection's flavour: b"single" (a node that never was in a pool: no last-writer-wins bookkeeping) or
#: b"replicated"; absent in views written before the flavour existed, which hold the bookkeeping (replicated).
META_FLAVOUR = b"flavour"
FLAVOUR_SINGLE, FLAVOUR_REPLICATED = b"single", b"replicated"


# -- buckets, bucket_cfg ----------------------------------------------------------------------------------------
def bucket_key(name: str) -> bytes:
    return name.encode()


def decode_bucket_key(key: bytes) -> str:
    return key.decode()


def bucket_cfg_key(bucket: str, kind: str) -> bytes:
    """``bucket \\0 kind``: bucket names hold no NUL, so one bucket's configs are the range ``bucket \\0``."""
    return bucket_prefix(bucket) + kind.encode()


def decode_bucket_cfg_key(key: bytes) -> tuple[str, str]:
    bucket, _, kind = key.partition(b"\0")
    return bucket.decode(), kind.decode()


def bucket_prefix(bucket: str) -> bytes:
    """The range of one bucket in ``bucket_cfg``, ``rename_tokens`` and ``completed_uploads``."""
    return bucket.encode() + b"\0"


# -- ns, upload_ns: the namespace trees ---------------------------------------------------------------------------
NS_DIR = b"D"
NS_LEAF = b"F"
NS_PIECE = b"C"  # a NAME_PIECE_BYTES-long first piece of longer names; the rest lives under its node


def ns_key(parent: int, name: bytes) -> bytes:
    """``u64 parent ‖ name``; ``name`` is shorter than NAME_PIECE_BYTES or a piece of exactly that length."""
    assert len(name) <= NAME_PIECE_BYTES, "namespace names are cut into pieces before they become keys"
    return U64.pack(parent) + name


def ns_prefix(node: int) -> bytes:
    return U64.pack(node)


def decode_ns_key(key: bytes) -> tuple[int, bytes]:
    return from_u64(key[:8]), key[8:]


def ns_value(kind: bytes, ident: int) -> bytes:
    return kind + U64.pack(ident)


def decode_ns_value(value: bytes) -> tuple[bytes, int]:
    return value[:1], from_u64(value[1:9])


# -- versions, vidx ---------------------------------------------------------------------------------------------
def versions_prefix(oid: int) -> bytes:
    return U64.pack(oid)


def version_order(hlc: int, origin: str = "") -> bytes:
    """The suffix that sorts an object's versions newest first by ``(hlc, origin)``: ``u64 (2^64-1 - hlc)`` then the
    origin's bytes inverted and ``0xFF``, so two nodes' versions stamped with the same hlc get distinct keys and the
    greater origin sorts first (node ids hold no NUL byte, so the ``0xFF`` ends a shorter id after a longer one)."""
    return U64.pack(MAX_U64 - hlc) + bytes(255 - c for c in origin.encode()) + b"\xff"


def versions_key(oid: int, order: bytes) -> bytes:
    return U64.pack(oid) + order


def decode_versions_key(key: bytes) -> tuple[int, int]:
    """(object id, hlc)."""
    return from_u64(key[:8]), MAX_U64 - from_u64(key[8:16])


def decode_version_order_origin(key: bytes) -> str:
    """The origin part of a ``versions`` key (after the object id and the inverted hlc)."""
    return bytes(255 - c for c in key[16:-1]).decode()


def vidx_key(oid: int, version_id: str) -> bytes:
    """``u64 oid ‖ version id``; ids S4 issues are "null" or a UUID (36 bytes)."""
    return U64.pack(oid) + version_id.encode()


def decode_vidx_key(key: bytes) -> tuple[int, str]:
    return from_u64(key[:8]), key[8:].decode()


# -- uploads, upload_keys, parts ----------------------------------------------------------------------------------
def upload_key(upload_id: str) -> bytes:
    return upload_id.encode()


def upload_keys_prefix(key_id: int) -> bytes:
    return U64.pack(key_id)


def upload_keys_key(key_id: int, initiated_ms: int, upload_id: str) -> bytes:
    """``u64 key id ‖ u64 initiated ms ‖ upload id``: the key id is the ``upload_ns`` leaf of the upload's key,
    so one key's uploads sort by initiation time (ListMultipartUploads order)."""
    return U64.pack(key_id) + U64.pack(initiated_ms) + upload_id.encode()


def decode_upload_keys_key(key: bytes) -> tuple[int, int, str]:
    """(key id, initiated ms, upload id)."""
    return from_u64(key[:8]), from_u64(key[8:16]), key[16:].decode()


def parts_prefix(upload_id: str) -> bytes:
    return upload_id.encode() + b"\0"


def parts_key(upload_id: str, number: int) -> bytes:
    return parts_prefix(upload_id) + U32.pack(number)


def decode_parts_key(key: bytes) -> tuple[str, int]:
    upload_id, _, number = key.partition(b"\0")
    return upload_id.decode(), int(U32.unpack(number)[0])


# -- rename_tokens, completed_uploads (two databases: the key spaces can never meet) -----------------------------
def rename_token_key(bucket: str, token: str) -> bytes:
    """``bucket \\0 sha256(client token)``: fixed length whatever the client sends (the token is in the value)."""
    return bucket_prefix(bucket) + hashlib.sha256(token.encode()).digest()


def decode_rename_token_key(key: bytes) -> tuple[str, bytes]:
    """(bucket, sha256 of the token)."""
    bucket, _, digest = key.partition(b"\0")
    return bucket.decode(), digest


def completed_upload_key(bucket: str, upload_id: str) -> bytes:
    """``bucket \\0 upload id``: deleting a bucket drops its records and no other bucket's."""
    return bucket_prefix(bucket) + upload_id.encode()


def decode_completed_upload_key(key: bytes) -> tuple[str, str]:
    bucket, _, upload_id = key.partition(b"\0")
    return bucket.decode(), upload_id.decode()


# -- replication: tombstones and last-writer-wins clocks (docs/architecture/replication.md) ---------------------
def object_version_key(bucket: str, key: str, version_id: str) -> bytes:
    """``bucket \\0 sha256(key) version id`` (``vtombs``, ``tag_clocks``, ``lock_clocks``): keyed by name, not by
    object id, because a tombstone outlives the key's namespace leaf; fixed length whatever the key (the key itself
    is in the value)."""
    return bucket_prefix(bucket) + hashlib.sha256(key.encode()).digest() + version_id.encode()


def decode_object_version_key(key: bytes) -> tuple[str, bytes, str]:
    """(bucket, sha256 of the key, version id)."""
    bucket, _, rest = key.partition(b"\0")
    return bucket.decode(), rest[:32], rest[32:].decode()


def event_id_key(origin: str, hlc: int) -> bytes:
    """``origin \\0 u64 hlc`` (``event_ids``): an event's identity; one origin's events sort by hlc."""
    return origin.encode() + b"\0" + U64.pack(hlc)


def decode_event_id_key(key: bytes) -> tuple[str, int]:
    origin, _, hlc = key.partition(b"\0")
    return origin.decode(), from_u64(hlc)


# -- ae_keys, ae_leaves: the Merkle view of anti-entropy (engine/views/merkle.py) -------------------------------
#: A bucket's keys fall into 2**MERKLE_LEAF_BITS leaves by the first bits of sha256(key).
MERKLE_LEAF_BITS = 10


def ae_key_key(bucket: str, key_hash: bytes) -> bytes:
    """``bucket \\0 sha256(key)``: a key's digest; one leaf's keys are one contiguous range (hash order)."""
    return bucket_prefix(bucket) + key_hash


def decode_ae_key_key(key: bytes) -> tuple[str, bytes]:
    bucket, _, digest = key.partition(b"\0")
    return bucket.decode(), digest


def leaf_of(key_hash: bytes) -> int:
    """The leaf a key falls into: the first MERKLE_LEAF_BITS bits of its sha256."""
    return int.from_bytes(key_hash[:2], "big") >> (16 - MERKLE_LEAF_BITS)


def leaf_range(bucket: str, leaf: int) -> tuple[bytes, bytes]:
    """The ``ae_keys`` range [start, end) of one leaf."""
    shift = 16 - MERKLE_LEAF_BITS
    start = bucket_prefix(bucket) + (leaf << shift).to_bytes(2, "big")
    end_leaf = (leaf + 1) << shift
    end = bucket_prefix(bucket) + (end_leaf.to_bytes(2, "big") if end_leaf < 1 << 16 else b"\xff\xff\xff")
    return start, end


def ae_leaf_key(bucket: str, leaf: int) -> bytes:
    """``bucket \\0 u16 leaf``: the XOR of the digests of the leaf's keys."""
    return bucket_prefix(bucket) + leaf.to_bytes(2, "big")


def decode_ae_leaf_key(key: bytes) -> tuple[str, int]:
    bucket, _, leaf = key.partition(b"\0")
    return bucket.decode(), int.from_bytes(leaf, "big")


# -- blobs, volumes, users, user_names, credentials: one plain identifier each ---------------------------------
def text_key(ident: str) -> bytes:
    return ident.encode()


def decode_text_key(key: bytes) -> str:
    return key.decode()


def describe(db: str, key: bytes) -> str:
    """A readable form of any view key (for the replay tool's diffs)."""
    try:
        if db == "ae_keys":
            bucket, digest = decode_ae_key_key(key)
            return f"{bucket}:{digest.hex()[:16]}"
        if db == "ae_leaves":
            bucket, leaf = decode_ae_leaf_key(key)
            return f"{bucket}:leaf {leaf}"
        if db in ("vtombs", "tag_clocks", "lock_clocks"):
            bucket, digest, version_id = decode_object_version_key(key)
            return f"{bucket}:{digest.hex()[:16]}:{version_id}"
        if db == "event_ids":
            origin, hlc = decode_event_id_key(key)
            return f"{origin}:{hlc}"
        if db in ("ns", "upload_ns"):
            parent, name = decode_ns_key(key)
            return f"{parent}:{name!r}"
        if db == "versions":
            oid, hlc = decode_versions_key(key)
            return f"{oid}:hlc={hlc}"
        if db == "vidx":
            oid, version_id = decode_vidx_key(key)
            return f"{oid}:{version_id}"
        if db == "upload_keys":
            key_id, initiated, upload_id = decode_upload_keys_key(key)
            return f"{key_id}:{initiated}:{upload_id}"
        if db == "parts":
            upload_id, number = decode_parts_key(key)
            return f"{upload_id}:{number}"
        if db == "rename_tokens":
            bucket, digest = decode_rename_token_key(key)
            return f"{bucket}:{digest.hex()}"
        if db in ("bucket_cfg", "completed_uploads", "cfg_clocks"):
            return ":".join(key.decode().split("\0"))
        if db == "blobs":
            return key.hex()
        return repr(key.decode())
    except (UnicodeDecodeError, struct.error):
        return key.hex()
