"""ListObjects (v1/v2), ListObjectVersions, ListMultipartUploads and ListParts over the views.

Keys come from the namespace walk in S3 byte order. With a delimiter, the first *live* key under a common prefix
emits that prefix and the walk re-seeks past it (``prefix + 0xFF``: no UTF-8 key contains that byte), so a page
costs O(page size x depth) seeks however many keys the prefixes hold. A resume marker that is a common prefix
resumes after everything under it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from . import reads
from .model import (
    Bucket,
    ListEntry,
    ListPage,
    PartListPage,
    Upload,
    UploadListPage,
    VersionListPage,
)
from .views import keys, namespace, upload_index
from .views.env import unpack
from .views.records import Tx

PAST = b"\xff"
_I = TypeVar("_I")


def _start(prefix: bytes, delim: bytes, marker: bytes) -> tuple[bytes, bool]:
    """Where a listing begins: (seek key, inclusive)."""
    if marker and marker >= prefix:
        if delim and marker.startswith(prefix) and marker.endswith(delim) and \
                marker.find(delim, len(prefix)) == len(marker) - len(delim):
            return marker + PAST, False
        return marker, False
    return prefix, True


def _common_prefix(key: bytes, prefix: bytes, delim: bytes) -> bytes | None:
    if not delim:
        return None
    cut = key.find(delim, len(prefix))
    return key[: cut + len(delim)] if cut >= 0 else None


def list_objects(tx: Tx, bucket: Bucket, prefix: str, delimiter: str, start_after: str, max_keys: int) -> ListPage:
    p, delim = prefix.encode(), delimiter.encode()
    ns = tx.dbs["ns"]
    page = ListPage()
    start, inclusive = _start(p, delim, start_after.encode())
    walk: Iterator[tuple[bytes, int]] = namespace.iter_from(tx.txn, ns, bucket.root, start, inclusive)
    latest = tx.latest_reader()
    count = 0
    while True:
        item = next(walk, None)
        if item is None:
            break
        key, oid = item
        if not key.startswith(p):
            break
        rec = latest(oid)
        if rec is None or rec.get("dm"):
            continue
        if count >= max_keys:
            page.is_truncated = True
            break
        cp = _common_prefix(key, p, delim)
        if cp is not None:
            page.common_prefixes.append(cp.decode())
            page.next_marker = cp.decode()
            walk = namespace.iter_from(tx.txn, ns, bucket.root, cp + PAST, False)
        else:
            name = key.decode()
            page.entries.append(ListEntry(name, rec))
            page.next_marker = name
        count += 1
    return page


def list_versions(tx: Tx, bucket: Bucket, prefix: str, delimiter: str, key_marker: str, version_id_marker: str,
                  max_keys: int) -> VersionListPage:
    p, delim = prefix.encode(), delimiter.encode()
    ns = tx.dbs["ns"]
    page = VersionListPage()
    marker = key_marker.encode()
    if marker and version_id_marker:
        start, inclusive = marker, True
    else:
        start, inclusive = _start(p, delim, marker)
        cp = _common_prefix(marker, p, delim) if marker.startswith(p) else None
        if cp is not None and not inclusive:  # a marker inside a listed common prefix resumes after the prefix
            start = max(start, cp + PAST)
    walk = namespace.iter_from(tx.txn, ns, bucket.root, start, inclusive)
    count = 0
    while True:
        item = next(walk, None)
        if item is None:
            break
        key, oid = item
        if not key.startswith(p):
            break
        cp = _common_prefix(key, p, delim)
        if cp is not None:
            if count >= max_keys:
                page.is_truncated = True
                break
            page.common_prefixes.append(cp.decode())
            page.next_key_marker, page.next_version_id_marker = cp.decode(), ""
            count += 1
            walk = namespace.iter_from(tx.txn, ns, bucket.root, cp + PAST, False)
            continue
        name = key.decode()
        # Resume after the marker version; if it was deleted meanwhile (clients that delete each page before
        # asking for the next), its position is unknown: list the key's remaining versions rather than skip them.
        skipping = bool(version_id_marker) and key == marker and tx.version(oid, version_id_marker) is not None
        for index, (_, rec) in enumerate(tx.versions(oid)):
            if skipping:
                skipping = rec["v"] != version_id_marker
                continue
            if count >= max_keys:
                page.is_truncated = True
                return page
            page.versions.append(ListEntry(name, rec, index == 0))
            page.next_key_marker, page.next_version_id_marker = name, rec["v"]
            count += 1
    return page


def list_uploads(tx: Tx, bucket: Bucket, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str,
                 max_uploads: int) -> UploadListPage:
    """Uploads in (key, initiation time) order; the upload-id marker resumes after that upload of the key.

    The walk over the bucket's upload index re-seeks past each common prefix, as ``list_objects`` does."""
    p, delim, marker = prefix.encode(), delimiter.encode(), key_marker.encode()
    page = UploadListPage()
    if marker and upload_id_marker:
        start, inclusive = marker, True
    else:
        start, inclusive = _start(p, delim, marker)
    walk = upload_index.walk(tx, bucket.root, max(start, p), inclusive or start < p)
    passed_marker = not upload_id_marker
    count = 0
    while True:
        item = next(walk, None)
        if item is None:
            break
        key_bytes, upload_id = item
        if not key_bytes.startswith(p):
            break
        if marker and key_bytes == marker and not passed_marker:
            passed_marker = upload_id == upload_id_marker
            continue
        cp = _common_prefix(key_bytes, p, delim)
        if cp is not None:
            walk = upload_index.walk(tx, bucket.root, cp + PAST, False)
            if marker and cp <= marker:
                continue  # the marker's own common prefix was listed on an earlier page
            if count >= max_uploads:
                page.is_truncated = True
                break
            name = cp.decode()
            page.common_prefixes.append(name)
            page.next_key_marker, page.next_upload_id_marker = name, ""
            count += 1
            continue
        upload = tx.upload(upload_id)
        if upload is None:
            continue
        if count >= max_uploads:
            page.is_truncated = True
            break
        page.uploads.append(upload)
        page.next_key_marker, page.next_upload_id_marker = upload.key, upload_id
        count += 1
    return page


def list_parts(tx: Tx, upload: Upload, part_number_marker: int, max_parts: int) -> PartListPage:
    page = PartListPage()
    for part in tx.parts(upload.upload_id, part_number_marker):
        if len(page.parts) >= max_parts:
            page.is_truncated = True
            break
        page.parts.append(part)
        page.next_part_number_marker = part.part_number
    return page


#: For the cluster's listing merge (cluster/listing_merge.py), which must resume and group exactly as these do.
start_of = _start
common_prefix = _common_prefix


# -- raw pages for a coordinator merging replicas (docs/architecture/replication.md, "Quorum reads and listing merge")
def _walk_from(walk: Iterator[tuple[bytes, _I]], prefix: bytes) -> Iterator[tuple[bytes, _I]]:
    for key, ident in walk:
        if not key.startswith(prefix):
            return
        yield key, ident


def key_states(tx: Tx, bucket: Bucket, prefix: str, start: bytes, inclusive: bool, limit: int,
               max_versions: int) -> tuple[list[dict[str, Any]], bool]:
    """Every key under ``prefix`` from ``start`` (> or >=) in S3 order with its whole replicated state
    (``reads.key_state_at``: all versions, delete markers, tombstones, tag clocks), nothing hidden: the coordinator
    decides what shows once R replicas are merged. A page ends after ``limit`` keys or once it holds
    ``max_versions`` versions (a key is never split); the flag says whether more keys follow."""
    p = prefix.encode()
    if start < p:
        start, inclusive = p, True
    walk = _walk_from(namespace.iter_from(tx.txn, tx.dbs["ns"], bucket.root, start, inclusive), p)
    out: list[dict[str, Any]] = []
    held = 0
    for key, oid in walk:
        if len(out) >= limit or held >= max_versions:
            return out, True
        state = reads.key_state_at(tx, bucket.name, key.decode(), oid)
        held += len(state["vs"])
        out.append(state)
    return out, False


def upload_key_states(tx: Tx, bucket: Bucket, prefix: str, start: bytes, inclusive: bool,
                      limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Keys with uploads in flight under ``prefix`` from ``start``, each ``{k, us: [upload record, ...]}`` in
    initiation order; a page ends after ``limit`` uploads (a key is never split)."""
    p = prefix.encode()
    if start < p:
        start, inclusive = p, True
    out: list[dict[str, Any]] = []
    held = 0
    for key, upload_id in _walk_from(upload_index.walk(tx, bucket.root, start, inclusive), p):
        if out and out[-1]["k"] == key.decode():
            current = out[-1]
        elif held >= limit:
            return out, True
        else:
            current = {"k": key.decode(), "us": []}
            out.append(current)
        upload = tx.get("uploads", keys.upload_key(upload_id))
        if upload is not None:
            current["us"].append(unpack(upload))
            held += 1
    return out, False
