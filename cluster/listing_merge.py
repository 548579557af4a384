"""Listings over R replicas: a k-way merge of their raw pages in S3 key order, then S3's listing rules on the
merged stream (docs/architecture/replication.md, "Quorum reads and listing merge").

A replica's page (``ListRange``) holds every key it has under the prefix from a start point, each with its whole
replicated state: delete markers, every version, tombstones, nothing hidden. ``MergedKeys`` keeps one buffer per
replica and yields keys in increasing order, each merged with ``key_merge``; a replica whose buffer runs dry is
asked for its next page before the next key is chosen, so the smallest key any replica holds is always known. A
replica that lacks a key another one lists (its walk passed that key) may still hold its tombstones, which no key
walk finds (they outlive the key's leaf): it is asked for the key's state by ``ReadKeys`` ("fills", batched).

The listing functions below are engine/listing.py's, over the merged stream: same resume points, same grouping,
same truncation rule, so a merged listing pages exactly like one replica holding every event would.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.listing import PAST, common_prefix, start_of
from s4.engine.model import ListEntry, ListPage, Upload, UploadListPage, VersionListPage

from .key_merge import Merged, bucket_life, merge_key_states, merge_upload_states

R = TypeVar("R", bound=Hashable)
PAGE_KEYS = 256  # keys asked of one replica per ListRange


@dataclass
class Page:
    """One replica's answer: key states in S3 order, whether more follow, and its bucket life ``{i, bt}``."""

    states: list[dict[str, Any]]
    more: bool
    life: dict[str, Any] = field(default_factory=dict)


class Source(Protocol[R]):  # type: ignore[misc]
    """Where the merge reads from: one page of a replica (keys from ``start``, ``>=`` when ``inclusive``) and the
    states of some keys (objects) or upload ids (uploads) of a replica."""

    async def page(self, replica: R, start: bytes, inclusive: bool) -> Page: ...

    async def fill(self, replica: R, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class _Kind(Generic[R]):
    """How one kind of listing names what a replica may lack, and merges a key's answers."""

    def lacking(self, key: str, answers: Mapping[R, dict[str, Any] | None]) -> dict[R, list[str]]:
        raise NotImplementedError

    def merge(self, key: str, answers: Mapping[R, dict[str, Any] | None],
              filled: Mapping[tuple[R, str], dict[str, Any]]) -> Merged[R]:
        raise NotImplementedError


class _Objects(_Kind[R]):
    def lacking(self, key: str, answers: Mapping[R, dict[str, Any] | None]) -> dict[R, list[str]]:
        return {r: [key] for r, a in answers.items() if a is None}

    def merge(self, key: str, answers: Mapping[R, dict[str, Any] | None],
              filled: Mapping[tuple[R, str], dict[str, Any]]) -> Merged[R]:
        return merge_key_states({r: a if a is not None else filled[(r, key)] for r, a in answers.items()})


class _Uploads(_Kind[R]):
    """A key's uploads: every upload id some replica lists; a replica not listing one is asked for its state (it
    may hold the upload's end marker). The merged state is ``{k, us: [live upload records in listing order]}``."""

    def lacking(self, key: str, answers: Mapping[R, dict[str, Any] | None]) -> dict[R, list[str]]:
        ids = sorted({u["u"] for a in answers.values() if a is not None for u in a["us"]})
        out: dict[R, list[str]] = {}
        for r, a in answers.items():
            listed = {u["u"] for u in a["us"]} if a is not None else set()
            missing = [i for i in ids if i not in listed]
            if missing:
                out[r] = missing
        return out

    def merge(self, key: str, answers: Mapping[R, dict[str, Any] | None],
              filled: Mapping[tuple[R, str], dict[str, Any]]) -> Merged[R]:
        ids = sorted({u["u"] for a in answers.values() if a is not None for u in a["us"]})
        live: list[dict[str, Any]] = []
        stale: dict[R, set[tuple[str, str]]] = {}
        for upload_id in ids:
            states: dict[R, dict[str, Any]] = {}
            for r, a in answers.items():
                listed = next((u for u in a["us"] if u["u"] == upload_id), None) if a is not None else None
                # a listed upload is live there: its parts do not matter to a listing
                states[r] = ({"id": upload_id, "u": listed, "ps": {}, "end": None} if listed is not None
                             else filled[(r, upload_id)])
            one = merge_upload_states(states)
            if one.state["u"] is not None:
                live.append(one.state["u"])
            for r, lacks in one.stale.items():
                if any(kind != "part" for kind, _ in lacks):
                    stale.setdefault(r, set()).update(lacks)
        live.sort(key=lambda u: (u["t"], u["u"]))
        return Merged({"k": key, "us": live}, {r: tuple(sorted(v)) for r, v in stale.items()})


@dataclass
class _Cursor:
    buffer: deque[dict[str, Any]] = field(default_factory=deque)
    more: bool = True
    resume: bytes = b""  # where its next page starts (exclusive), once it has answered
    inclusive: bool = True


class MergedKeys(Generic[R]):
    """The merged stream of one listing: ``await next()`` is the next key's merged state (or None at the end);
    ``skip_past(bound)`` drops every key below ``bound`` (a common prefix's subtree, ``prefix + 0xFF``).

    The replicas holding another life of the bucket than the newest live one take no part (they are behind and catch
    up); ``alive`` is False when no replica holds a live bucket. ``stale`` collects, per replica, the keys (or
    upload ids) it was found to lack, for the caller to repair."""

    def __init__(self, source: Source[R], replicas: Sequence[R], kind: _Kind[R], start: bytes, inclusive: bool
                 ) -> None:
        self.source, self.kind = source, kind
        self.cursors = {r: _Cursor(resume=start, inclusive=inclusive) for r in replicas}
        self.lives: dict[R, dict[str, Any]] = {}
        self.filled: dict[tuple[R, str], dict[str, Any]] = {}
        self.stale: dict[R, set[str]] = {}
        self.alive = True
        self._started = False

    async def _refill(self) -> None:
        """Every replica that may hold more and has nothing buffered answers its next page (concurrently)."""
        while True:
            dry = [r for r, c in self.cursors.items() if c.more and not c.buffer]
            if not dry:
                return
            pages = await asyncio.gather(*(self.source.page(r, self.cursors[r].resume, self.cursors[r].inclusive)
                                           for r in dry))
            for r, page in zip(dry, pages, strict=True):
                cursor = self.cursors[r]
                self.lives.setdefault(r, page.life)
                # an object key's state carries the bucket life it was read under (key_merge compares them)
                cursor.buffer.extend({**page.life, **state} if "vs" in state else state for state in page.states)
                cursor.more = page.more and bool(page.states)
                if page.states:
                    cursor.resume, cursor.inclusive = page.states[-1]["k"].encode(), False
            if not self._started:
                self._started = True
                self._settle_lives()

    def _settle_lives(self) -> None:
        """Keep only the replicas holding the newest live incarnation of the bucket."""
        inc, _ = bucket_life(self.lives.values())
        self.alive = inc is not None
        for r, life in self.lives.items():
            if not self.alive or life.get("i") is None or tuple(life["i"]) != inc:
                self.cursors.pop(r, None)
                self.stale.setdefault(r, set()).add("")  # the whole bucket: catch-up's job

    def _heads(self, key: str) -> dict[R, dict[str, Any] | None]:
        return {r: (c.buffer[0] if c.buffer and c.buffer[0]["k"] == key else None) for r, c in self.cursors.items()}

    async def _fill_window(self) -> None:
        """Fetch, in one call per replica, what the replicas lack among the keys that are safe to merge now (those
        not beyond any buffered page's end)."""
        bound = min((c.buffer[-1]["k"].encode() for c in self.cursors.values() if c.more and c.buffer), default=None)
        keys = sorted({s["k"] for c in self.cursors.values() for s in c.buffer
                       if bound is None or s["k"].encode() <= bound}, key=str.encode)
        wanted: dict[R, list[str]] = {}
        for key in keys:
            answers = {r: (next((s for s in c.buffer if s["k"] == key), None)) for r, c in self.cursors.items()}
            for r, ids in self.kind.lacking(key, answers).items():
                wanted.setdefault(r, []).extend(i for i in ids if (r, i) not in self.filled)
        wanted = {r: ids for r, ids in wanted.items() if ids}
        if not wanted:
            return
        answers_by = await asyncio.gather(*(self.source.fill(r, ids) for r, ids in wanted.items()))
        for (r, ids), got in zip(wanted.items(), answers_by, strict=True):
            for i in ids:
                self.filled[(r, i)] = got[i]

    async def next(self) -> dict[str, Any] | None:
        await self._refill()
        heads = [c.buffer[0]["k"] for c in self.cursors.values() if c.buffer]
        if not heads:
            return None
        key = min(heads, key=str.encode)
        answers = self._heads(key)
        if any((r, i) not in self.filled for r, ids in self.kind.lacking(key, answers).items() for i in ids):
            await self._fill_window()
        for r, a in answers.items():
            if a is not None:
                self.cursors[r].buffer.popleft()
        merged = self.kind.merge(key, answers, self.filled)
        for r in merged.stale:
            self.stale.setdefault(r, set()).add(key)
        return merged.state

    def skip_past(self, bound: bytes) -> None:
        """Forget every key below ``bound``; a replica left with nothing buffered resumes there."""
        for c in self.cursors.values():
            while c.buffer and c.buffer[0]["k"].encode() < bound:
                c.buffer.popleft()
            if not c.buffer and c.more and (bound > c.resume or (bound == c.resume and c.inclusive)):
                c.resume, c.inclusive = bound, False


def _require_alive(stream: MergedKeys[Any], bucket: str) -> None:
    if not stream.alive:
        raise S3Error(ErrorCode.NO_SUCH_BUCKET, resource=bucket, BucketName=bucket)


async def list_objects(source: Source[R], replicas: Sequence[R], bucket: str, prefix: str, delimiter: str,
                       start_after: str, max_keys: int) -> tuple[ListPage, MergedKeys[R]]:
    """ListObjects (V1 marker / V2 start-after or continuation) over R replicas: engine.listing.list_objects on the
    merged stream. Returns the page and the stream (its ``stale`` names what to repair)."""
    p, delim = prefix.encode(), delimiter.encode()
    start, inclusive = start_of(p, delim, start_after.encode())
    stream = MergedKeys(source, replicas, _Objects(), start, inclusive)
    page = ListPage()
    count = 0
    while True:
        state = await stream.next()
        _require_alive(stream, bucket)
        if state is None:
            break
        key = state["k"].encode()
        rec = state["vs"][0] if state["vs"] else None
        if rec is None or rec.get("dm"):
            continue
        if count >= max_keys:
            page.is_truncated = True
            break
        cp = common_prefix(key, p, delim)
        if cp is not None:
            page.common_prefixes.append(cp.decode())
            page.next_marker = cp.decode()
            stream.skip_past(cp + PAST)
        else:
            page.entries.append(ListEntry(state["k"], rec))
            page.next_marker = state["k"]
        count += 1
    return page, stream


async def list_versions(source: Source[R], replicas: Sequence[R], bucket: str, prefix: str, delimiter: str,
                        key_marker: str, version_id_marker: str, max_keys: int
                        ) -> tuple[VersionListPage, MergedKeys[R]]:
    """ListObjectVersions over R replicas: engine.listing.list_versions on the merged stream."""
    p, delim = prefix.encode(), delimiter.encode()
    marker = key_marker.encode()
    if marker and version_id_marker:
        start, inclusive = marker, True
    else:
        start, inclusive = start_of(p, delim, marker)
        cp = common_prefix(marker, p, delim) if marker.startswith(p) else None
        if cp is not None and not inclusive:
            start = max(start, cp + PAST)
    stream = MergedKeys(source, replicas, _Objects(), start, inclusive)
    page = VersionListPage()
    count = 0
    while True:
        state = await stream.next()
        _require_alive(stream, bucket)
        if state is None:
            break
        if not state["vs"]:
            continue  # no version left in the merge: the key does not exist
        key = state["k"].encode()
        cp = common_prefix(key, p, delim)
        if cp is not None:
            if count >= max_keys:
                page.is_truncated = True
                break
            page.common_prefixes.append(cp.decode())
            page.next_key_marker, page.next_version_id_marker = cp.decode(), ""
            count += 1
            stream.skip_past(cp + PAST)
            continue
        name = state["k"]
        skipping = bool(version_id_marker) and key == marker and any(r["v"] == version_id_marker for r in state["vs"])
        for index, rec in enumerate(state["vs"]):
            if skipping:
                skipping = rec["v"] != version_id_marker
                continue
            if count >= max_keys:
                page.is_truncated = True
                return page, stream
            page.versions.append(ListEntry(name, rec, index == 0))
            page.next_key_marker, page.next_version_id_marker = name, rec["v"]
            count += 1
    return page, stream


async def list_uploads(source: Source[R], replicas: Sequence[R], bucket: str, prefix: str, delimiter: str,
                       key_marker: str, upload_id_marker: str, max_uploads: int
                       ) -> tuple[UploadListPage, MergedKeys[R]]:
    """ListMultipartUploads over R replicas: engine.listing.list_uploads on the merged stream."""
    p, delim, marker = prefix.encode(), delimiter.encode(), key_marker.encode()
    if marker and upload_id_marker:
        start, inclusive = marker, True
    else:
        start, inclusive = start_of(p, delim, marker)
    stream = MergedKeys(source, replicas, _Uploads(), max(start, p), inclusive or start < p)
    page = UploadListPage()
    passed_marker = not upload_id_marker
    count = 0
    while True:
        state = await stream.next()
        _require_alive(stream, bucket)
        if state is None:
            break
        key = state["k"].encode()
        for rec in state["us"]:
            if marker and key == marker and not passed_marker:
                passed_marker = rec["u"] == upload_id_marker
                continue
            cp = common_prefix(key, p, delim)
            if cp is not None:
                stream.skip_past(cp + PAST)
                if marker and cp <= marker:
                    break
                if count >= max_uploads:
                    page.is_truncated = True
                    return page, stream
                page.common_prefixes.append(cp.decode())
                page.next_key_marker, page.next_upload_id_marker = cp.decode(), ""
                count += 1
                break
            if count >= max_uploads:
                page.is_truncated = True
                return page, stream
            page.uploads.append(Upload.from_record(rec))
            page.next_key_marker, page.next_upload_id_marker = state["k"], rec["u"]
            count += 1
    return page, stream


# -- a Source over callables (the wire client and the tests plug theirs in) ----------------------------------------
@dataclass
class CallSource(Generic[R]):
    """A ``Source`` from two coroutine functions."""

    page_of: Callable[[R, bytes, bool], Awaitable[Page]]
    fill_of: Callable[[R, Sequence[str]], Awaitable[dict[str, dict[str, Any]]]]

    async def page(self, replica: R, start: bytes, inclusive: bool) -> Page:
        return await self.page_of(replica, start, inclusive)

    async def fill(self, replica: R, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self.fill_of(replica, ids)


def stale_of(streams: Iterable[MergedKeys[R]]) -> dict[R, set[str]]:
    out: dict[R, set[str]] = {}
    for stream in streams:
        for r, keys in stream.stale.items():
            out.setdefault(r, set()).update(keys)
    return out
