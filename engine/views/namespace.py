"""The namespace tree: what makes prefix rename O(1) and delimiter listing one range scan.

Each key ``a/b/c.txt`` is a path of directory entries ``a/`` -> ``b/`` and a leaf ``c.txt``. Entries live in the
``ns`` database keyed by ``parent node id + name``; a directory entry's name keeps its trailing ``/``. Because
``/`` (0x2F) sorts between ``.`` and ``0``, visiting each directory's entries in byte order and descending into
sub-directories in place yields keys in exactly S3's byte order ("a.txt" < "a/..." < "a0").

LMDB keys stop at 511 bytes and a name may be 1,024. A name of ``NAME_PIECE_BYTES`` or more is stored as a
**piece** entry (its first ``NAME_PIECE_BYTES`` bytes, kind ``C``) pointing at a node that holds the rest of the
name, recursively. Whole names are shorter than a piece and pieces all have the same length, so no two entries
collide, and the walk, which visits a piece's node in place, still yields names in byte order
(docs/architecture/views.md#long-names). Callers see whole names only.

A leaf points at an object id; the object's versions are keyed by that id, so moving a directory entry moves
every key and version under it without touching them. The same tree, in the ``upload_ns`` database, indexes the
keys that have multipart uploads in flight. See docs/architecture/views.md#namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import keys
from .keys import NAME_PIECE_BYTES, NS_DIR, NS_LEAF, NS_PIECE, decode_ns_value, ns_key, ns_prefix, ns_value

#: py-lmdb's calls take their arguments positionally here: ``get(key, default, db)``, ``put(key, value, dupdata,
#: overwrite, append, db)``, ``delete(key, value, db)``. Its keyword parsing cost ~700 instructions a call (a small
#: request makes dozens: docs/performance.md, "Issue 18's last bar").
DIR = NS_DIR
_ident = keys.U64.unpack_from  # the id after a value's kind byte, without slicing
LEAF = NS_LEAF
PIECE = NS_PIECE


def split_key(key: bytes) -> tuple[list[bytes], bytes]:
    """``b"a/b/c"`` -> ([b"a/", b"b/"], b"c"); a key ending in ``/`` has an empty leaf name."""
    parts = key.split(b"/")
    return [p + b"/" for p in parts[:-1]], parts[-1]


def _get(txn: Any, db: Any, parent: int, name: bytes) -> bytes | None:
    """The value of entry ``name`` (any length) in directory ``parent``, following its pieces."""
    while len(name) >= NAME_PIECE_BYTES:
        val = txn.get(ns_key(parent, name[:NAME_PIECE_BYTES]), None, db)
        if val is None or val[:1] != PIECE:
            return None
        parent, name = decode_ns_value(val)[1], name[NAME_PIECE_BYTES:]
    found: bytes | None = txn.get(ns_key(parent, name), None, db)
    return found


def _put(txn: Any, db: Any, parent: int, name: bytes, value: bytes, alloc: Callable[[], int]) -> None:
    """Store entry ``name`` in ``parent``, creating the piece nodes a long name needs."""
    while len(name) >= NAME_PIECE_BYTES:
        key = ns_key(parent, name[:NAME_PIECE_BYTES])
        val = txn.get(key, None, db)
        if val is None:
            node = alloc()
            txn.put(key, ns_value(PIECE, node), False, True, False, db)
        else:
            node = decode_ns_value(val)[1]
        parent, name = node, name[NAME_PIECE_BYTES:]
    txn.put(ns_key(parent, name), value, False, True, False, db)


def _delete(txn: Any, db: Any, parent: int, name: bytes) -> None:
    """Delete entry ``name`` from ``parent``, then the piece entries left pointing at empty nodes."""
    chain: list[tuple[int, bytes]] = []  # (node, piece) of every piece entry on the way down
    while len(name) >= NAME_PIECE_BYTES:
        piece = name[:NAME_PIECE_BYTES]
        val = txn.get(ns_key(parent, piece), None, db)
        if val is None:
            return
        chain.append((parent, piece))
        parent, name = decode_ns_value(val)[1], name[NAME_PIECE_BYTES:]
    txn.delete(ns_key(parent, name), b"", db)
    for node, piece in reversed(chain):
        if has_children(txn, db, parent):
            return
        txn.delete(ns_key(node, piece), b"", db)
        parent = node


def find_dir(txn: Any, db: Any, root: int, dirs: list[bytes]) -> int | None:
    node = root
    for name in dirs:
        val = _get(txn, db, node, name)
        if val is None:
            return None
        node = _ident(val, 1)[0]
    return node


def find_object(txn: Any, db: Any, root: int, key: bytes) -> int | None:
    dirs, leaf = split_key(key)
    node = find_dir(txn, db, root, dirs)
    if node is None:
        return None
    val = _get(txn, db, node, leaf)
    return _ident(val, 1)[0] if val is not None else None


def ensure_dirs(txn: Any, db: Any, root: int, dirs: list[bytes], alloc: Callable[[], int]) -> int:
    """The node of the directory path ``dirs``, creating missing directories with fresh ids."""
    node = root
    for name in dirs:
        val = _get(txn, db, node, name)
        if val is None:
            child = alloc()
            _put(txn, db, node, name, ns_value(DIR, child), alloc)
            node = child
        else:
            node = decode_ns_value(val)[1]
    return node


def ensure_object(txn: Any, db: Any, root: int, key: bytes, alloc: Callable[[], int],
                  leaf_id: int | None = None) -> tuple[int, bool]:
    """The object id for ``key``, creating directories and the leaf as needed; returns (id, created).

    ``leaf_id`` places an existing object (a renamed key keeps its id and so its versions); new directories
    always get fresh ids from ``alloc``.
    """
    dirs, leaf = split_key(key)
    node = ensure_dirs(txn, db, root, dirs, alloc)
    val = _get(txn, db, node, leaf)
    if val is not None:
        return decode_ns_value(val)[1], False
    oid = alloc() if leaf_id is None else leaf_id
    _put(txn, db, node, leaf, ns_value(LEAF, oid), alloc)
    return oid, True


def has_children(txn: Any, db: Any, node: int) -> bool:
    cur = txn.cursor(db)
    prefix = ns_prefix(node)
    return bool(cur.set_range(prefix)) and cur.key()[:8] == prefix


def remove_entry_and_prune(txn: Any, db: Any, root: int, path: list[bytes]) -> None:
    """Delete the entry at ``path`` (dir names then entry name), then every directory left empty above it."""
    parent = find_dir(txn, db, root, path[:-1])
    if parent is None:
        return
    _delete(txn, db, parent, path[-1])
    prune(txn, db, root, path[:-1])


def prune(txn: Any, db: Any, root: int, dirs: list[bytes]) -> None:
    """Remove the directories along ``dirs`` that are empty, deepest first, stopping at the first non-empty one."""
    nodes = [root]
    for name in dirs:
        val = _get(txn, db, nodes[-1], name)
        if val is None:
            break
        nodes.append(decode_ns_value(val)[1])
    for depth in range(len(nodes) - 1, 0, -1):
        if has_children(txn, db, nodes[depth]):
            return
        _delete(txn, db, nodes[depth - 1], dirs[depth - 1])


def remove_object(txn: Any, db: Any, root: int, key: bytes) -> None:
    dirs, leaf = split_key(key)
    remove_entry_and_prune(txn, db, root, [*dirs, leaf])


class _Frame:
    """One node being visited: its cursor, and the bytes every entry name in it is appended to."""

    __slots__ = ("cur", "prefix", "base", "ok")

    def __init__(self, txn: Any, db: Any, node: int, base: bytes, seek: bytes) -> None:
        self.cur = txn.cursor(db)
        self.prefix = ns_prefix(node)
        self.base = base
        self.ok = bool(self.cur.set_range(self.prefix + seek))

    def at(self, name: bytes) -> bytes | None:
        """The value if the cursor stands exactly on entry ``name`` (then consumed), else None."""
        if self.ok and self.cur.key() == self.prefix + name:
            val: bytes = self.cur.value()
            self.ok = bool(self.cur.next())
            return val
        return None


def walk(txn: Any, db: Any, node: int, base: bytes, start: bytes | None, inclusive: bool
         ) -> Iterator[tuple[bytes, int]]:
    """Yield ``(key, object id)`` under ``node`` in S3 byte order, from ``start`` on (> or >=).

    ``start`` is None (everything) or begins with ``base``; positioning costs one seek per directory level and
    name piece. Iterative (a stack of cursors), so a key of 1,023 slashes is as good as any other.
    """
    stack: list[_Frame] = []
    if start is None:
        stack.append(_Frame(txn, db, node, base, b""))
    else:
        leaf = _position(txn, db, node, base, start, inclusive, stack)
        if leaf is not None:
            yield leaf
    while stack:  # the hot loop of every listing: locals only, one leaf per turn of the inner loop
        frame = stack[-1]
        cur, prefix, base, ok = frame.cur, frame.prefix, frame.base, frame.ok
        while ok:
            k = cur.key()
            if k[:8] != prefix:
                break
            val = cur.value()
            ok = cur.next()
            if val[:1] == LEAF:
                yield base + k[8:], _ident(val, 1)[0]
            else:  # a directory or a name piece: its node's entries come next, in place
                frame.ok = ok
                stack.append(_Frame(txn, db, _ident(val, 1)[0], base + k[8:], b""))
                break
        else:
            stack.pop()
            continue
        if stack[-1] is frame:
            stack.pop()


def _position(txn: Any, db: Any, node: int, base: bytes, start: bytes, inclusive: bool, stack: list[_Frame]
              ) -> tuple[bytes, int] | None:
    """Push the cursors that continue a walk from ``start``; returns the leaf named ``start`` if it is due."""
    while True:  # one directory level per turn
        rest = start[len(base):]
        cut = rest.find(b"/")
        entry = rest[: cut + 1] if cut >= 0 else rest
        parent, prefix, name = node, base, entry
        while len(name) >= NAME_PIECE_BYTES:  # seek through the pieces of a long name
            piece = name[:NAME_PIECE_BYTES]
            frame = _Frame(txn, db, parent, prefix, piece)
            stack.append(frame)
            val = frame.at(piece)
            if val is None:
                return None  # no name with this piece: the cursor already stands on the first one after
            parent, prefix, name = decode_ns_value(val)[1], prefix + piece, name[NAME_PIECE_BYTES:]
        frame = _Frame(txn, db, parent, prefix, name)
        stack.append(frame)
        val = frame.at(name)
        if val is None:
            return None
        kind, ident = decode_ns_value(val)
        if kind == DIR:
            node, base = ident, base + entry
            continue
        return (base + entry, ident) if inclusive and rest == entry else None


def iter_from(txn: Any, db: Any, root: int, start: bytes, inclusive: bool) -> Iterator[tuple[bytes, int]]:
    return walk(txn, db, root, b"", start, inclusive)


def _entries(txn: Any, db: Any, node: int) -> list[tuple[bytes, bytes]]:
    """(whole name, value) of every entry of directory ``node``, pieces joined, in name order."""
    out = []
    stack = [_Frame(txn, db, node, b"", b"")]
    while stack:
        frame = stack[-1]
        if not frame.ok or frame.cur.key()[:8] != frame.prefix:
            stack.pop()
            continue
        name, val = frame.base + frame.cur.key()[8:], frame.cur.value()
        frame.ok = bool(frame.cur.next())
        if val[:1] == PIECE:
            stack.append(_Frame(txn, db, decode_ns_value(val)[1], name, b""))
        else:
            out.append((name, val))
    return out


def merge_into(txn: Any, db: Any, src_node: int, dst_node: int, on_conflict: Callable[[int], None],
               alloc: Callable[[], int]) -> None:
    """Move every entry of directory ``src_node`` into ``dst_node``; a leaf present in both keeps the source's
    object and hands the destination's to ``on_conflict``. Costs O(entries that overlap), not O(keys)."""
    pending = [(src_node, dst_node)]
    while pending:
        src, dst = pending.pop()
        for name, val in _entries(txn, db, src):
            existing = _get(txn, db, dst, name)
            if existing is not None and val[:1] == DIR:
                pending.append((decode_ns_value(val)[1], decode_ns_value(existing)[1]))
            else:
                if existing is not None:
                    on_conflict(decode_ns_value(existing)[1])
                _put(txn, db, dst, name, val, alloc)
            _delete(txn, db, src, name)


def move_dir(txn: Any, db: Any, root: int, src: bytes, dst: bytes, alloc: Callable[[], int],
             on_conflict: Callable[[int], None] | None = None) -> bool:
    """Re-parent directory ``src`` (ends with '/') as ``dst``: one entry moves, however many keys it holds.

    If ``dst`` exists its contents are merged (``on_conflict`` receives each overwritten object id); the caller
    has checked that merging was asked for and that ``dst`` is not inside ``src``. ``dst`` may be an ancestor of
    ``src``: the source entry is detached first, so it is never merged into itself. False if ``src`` is absent.
    """
    src_dirs, _ = split_key(src)
    parent = find_dir(txn, db, root, src_dirs[:-1])
    if parent is None:
        return False
    val = _get(txn, db, parent, src_dirs[-1])
    if val is None:
        return False
    _delete(txn, db, parent, src_dirs[-1])
    dst_dirs, _ = split_key(dst)
    node = ensure_dirs(txn, db, root, dst_dirs[:-1], alloc)
    existing = _get(txn, db, node, dst_dirs[-1])
    if existing is None:
        _put(txn, db, node, dst_dirs[-1], val, alloc)
    else:
        merge_into(txn, db, decode_ns_value(val)[1], decode_ns_value(existing)[1],
                   on_conflict or (lambda _oid: None), alloc)
    prune(txn, db, root, src_dirs[:-1])
    return True

