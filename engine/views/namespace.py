"""The namespace tree: what makes prefix rename O(1) and delimiter listing one range scan.

Each key ``a/b/c.txt`` is a path of directory entries ``a/`` -> ``b/`` and a leaf ``c.txt``. Entries live in the
``ns`` database keyed by ``parent node id + name``; a directory entry's name keeps its trailing ``/``. Because
``/`` (0x2F) sorts between ``.`` and ``0``, visiting each directory's entries in byte order and descending into
sub-directories in place yields keys in exactly S3's byte order ("a.txt" < "a/..." < "a0").

A leaf points at an object id; the object's versions are keyed by that id, so moving a directory entry moves
every key and version under it without touching them. See docs/architecture/views.md#namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .env import from_u64, u64

DIR = b"D"
LEAF = b"F"


def split_key(key: bytes) -> tuple[list[bytes], bytes]:
    """``b"a/b/c"`` -> ([b"a/", b"b/"], b"c"); a key ending in ``/`` has an empty leaf name."""
    parts = key.split(b"/")
    return [p + b"/" for p in parts[:-1]], parts[-1]


def _get(txn: Any, db: Any, parent: int, name: bytes) -> bytes | None:
    return txn.get(u64(parent) + name, db=db)


def find_dir(txn: Any, db: Any, root: int, dirs: list[bytes]) -> int | None:
    node = root
    for name in dirs:
        val = _get(txn, db, node, name)
        if val is None:
            return None
        node = from_u64(val[1:])
    return node


def find_object(txn: Any, db: Any, root: int, key: bytes) -> int | None:
    dirs, leaf = split_key(key)
    node = find_dir(txn, db, root, dirs)
    if node is None:
        return None
    val = _get(txn, db, node, leaf)
    return from_u64(val[1:]) if val is not None else None


def ensure_dirs(txn: Any, db: Any, root: int, dirs: list[bytes], alloc: Callable[[], int]) -> int:
    """The node of the directory path ``dirs``, creating missing directories with fresh ids."""
    node = root
    for name in dirs:
        val = _get(txn, db, node, name)
        if val is None:
            child = alloc()
            txn.put(u64(node) + name, DIR + u64(child), db=db)
            node = child
        else:
            node = from_u64(val[1:])
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
        return from_u64(val[1:]), False
    oid = alloc() if leaf_id is None else leaf_id
    txn.put(u64(node) + leaf, LEAF + u64(oid), db=db)
    return oid, True


def has_children(txn: Any, db: Any, node: int) -> bool:
    cur = txn.cursor(db)
    prefix = u64(node)
    return bool(cur.set_range(prefix)) and cur.key()[:8] == prefix


def remove_entry_and_prune(txn: Any, db: Any, root: int, path: list[bytes]) -> None:
    """Delete the entry at ``path`` (dir names then entry name), then every directory left empty above it."""
    parent = find_dir(txn, db, root, path[:-1])
    if parent is None:
        return
    txn.delete(u64(parent) + path[-1], db=db)
    prune(txn, db, root, path[:-1])


def prune(txn: Any, db: Any, root: int, dirs: list[bytes]) -> None:
    """Remove the directories along ``dirs`` that are empty, deepest first, stopping at the first non-empty one."""
    nodes = [root]
    for name in dirs:
        val = _get(txn, db, nodes[-1], name)
        if val is None:
            break
        nodes.append(from_u64(val[1:]))
    for depth in range(len(nodes) - 1, 0, -1):
        if has_children(txn, db, nodes[depth]):
            return
        txn.delete(u64(nodes[depth - 1]) + dirs[depth - 1], db=db)


def remove_object(txn: Any, db: Any, root: int, key: bytes) -> None:
    dirs, leaf = split_key(key)
    remove_entry_and_prune(txn, db, root, [*dirs, leaf])


def walk(txn: Any, db: Any, node: int, base: bytes, start: bytes | None, inclusive: bool
         ) -> Iterator[tuple[bytes, int]]:
    """Yield ``(key, object id)`` under ``node`` in S3 byte order, from ``start`` on (> or >=).

    ``start`` is None (everything) or begins with ``base``; positioning costs one seek per directory level.
    """
    cur = txn.cursor(db)
    prefix = u64(node)
    if start is None:
        ok = cur.set_range(prefix)
    else:
        rest = start[len(base):]
        cut = rest.find(b"/")
        seg = rest[: cut + 1] if cut >= 0 else rest
        ok = cur.set_range(prefix + seg)
        if ok and cur.key() == prefix + seg:
            val = cur.value()
            if val[:1] == DIR:
                yield from walk(txn, db, from_u64(val[1:]), base + seg, start, inclusive)
            elif inclusive and rest == seg:
                yield base + seg, from_u64(val[1:])
            ok = cur.next()
    while ok:
        k = cur.key()
        if k[:8] != prefix:
            return
        val = cur.value()
        if val[:1] == DIR:
            yield from walk(txn, db, from_u64(val[1:]), base + k[8:], None, inclusive)
        else:
            yield base + k[8:], from_u64(val[1:])
        ok = cur.next()


def iter_from(txn: Any, db: Any, root: int, start: bytes, inclusive: bool) -> Iterator[tuple[bytes, int]]:
    return walk(txn, db, root, b"", start, inclusive)


def _entries(txn: Any, db: Any, node: int) -> list[tuple[bytes, bytes]]:
    cur = txn.cursor(db)
    prefix = u64(node)
    out = []
    ok = cur.set_range(prefix)
    while ok and cur.key()[:8] == prefix:
        out.append((cur.key()[8:], cur.value()))
        ok = cur.next()
    return out


def merge_into(txn: Any, db: Any, src_node: int, dst_node: int, on_conflict: Callable[[int], None]) -> None:
    """Move every entry of directory ``src_node`` into ``dst_node``; a leaf present in both keeps the source's
    object and hands the destination's to ``on_conflict``. Costs O(entries that overlap), not O(keys)."""
    for name, val in _entries(txn, db, src_node):
        existing = _get(txn, db, dst_node, name)
        if existing is not None and val[:1] == DIR:
            merge_into(txn, db, from_u64(val[1:]), from_u64(existing[1:]), on_conflict)
        else:
            if existing is not None:
                on_conflict(from_u64(existing[1:]))
            txn.put(u64(dst_node) + name, val, db=db)
        txn.delete(u64(src_node) + name, db=db)


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
    txn.delete(u64(parent) + src_dirs[-1], db=db)
    dst_dirs, _ = split_key(dst)
    node = ensure_dirs(txn, db, root, dst_dirs[:-1], alloc)
    existing = _get(txn, db, node, dst_dirs[-1])
    if existing is None:
        txn.put(u64(node) + dst_dirs[-1], val, db=db)
    else:
        merge_into(txn, db, from_u64(val[1:]), from_u64(existing[1:]), on_conflict or (lambda _oid: None))
    prune(txn, db, root, src_dirs[:-1])
    return True
