"""What one request asks about its own bucket before its body, read once.

A PutObject asked the views four times, each in a read transaction of its own (~7,800 instructions, ~2 µs each):
access control (the owning account and the policy), the bucket's existence before the body, the new object's ACL
(the owning account again) and its encryption (the bucket's default). ``BucketReads`` answers all of them from
one transaction (``Engine.bucket_reads``), made on the first question, with the configurations the operation
needs (``kinds_for``).

One snapshot per request, and only until the request reads its body (``forget``): from then on every question goes
to the views again, as before, so a check made after a long upload (DeleteObjects' per-key authorization) sees
a policy changed meanwhile. The questions answered here are all asked before the request writes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s4.engine import Engine, OpenVersion
from s4.engine.engine import GuardedOpen

POLICY_KIND = "policy"  # the bucket configuration holding the bucket policy (s3/access.py)
ENCRYPTION_KIND = "encryption"  # a new object's default encryption (s3/sse.py CONFIG_KIND)
#: The operations that ask about their bucket several times before the body, and the configurations read with
#: the bucket record for them. The others ask once (access control: Engine.bucket_guard, as cheap as one
#: snapshot), so they get no ``BucketReads``.
_KINDS: dict[str, tuple[str, ...]] = {op: (POLICY_KIND, ENCRYPTION_KIND)
                                      for op in ("PutObject", "CopyObject", "CreateMultipartUpload")}


OWNERSHIP_KIND = "ownership"  # the bucket's object ownership (s3/acl.py OWNERSHIP_KIND)
#: The object reads whose access control and handler share one read transaction (``ObjectReads``).
_OBJECT_READS = frozenset({"GetObject", "HeadObject"})
_OBJECT_KINDS = (POLICY_KIND, OWNERSHIP_KIND)  # what their access control asks (s3/access.py ``check``)


def kinds_for(operation: str) -> tuple[str, ...] | None:
    """The configurations to read with the bucket record for ``operation``; None: no ``BucketReads`` for it."""
    return _KINDS.get(operation)


def for_request(engine: Engine, bucket: str, operation: str, key: str = "",
                query: Mapping[str, str] | None = None) -> BucketReads | None:
    """The request's ``BucketReads``, or None when it asks about its bucket only once (or names none). A GET or
    HEAD of an object on a node whose handler reads without settling first (a single node): ``ObjectReads``."""
    if not bucket:
        return None
    kinds = _KINDS.get(operation)
    if kinds is not None:
        return BucketReads(engine, bucket, kinds)
    if operation in _OBJECT_READS and key and engine.key_reads is None:
        return ObjectReads(engine, bucket, key, query.get("versionId") if query else None)
    return None


class BucketReads:
    """The request's bucket: its owning account and configurations, from one read transaction."""

    __slots__ = ("_engine", "bucket", "_kinds", "_read", "_live")

    def __init__(self, engine: Engine, bucket: str, kinds: tuple[str, ...]) -> None:
        self._engine = engine
        self.bucket = bucket
        self._kinds = kinds
        self._read: tuple[str | None, dict[str, Any]] | None = None
        self._live = True  # False once the body is read: every question goes to the views

    def _snapshot(self) -> tuple[str | None, dict[str, Any]] | None:
        if not self._live:
            return None
        if self._read is None:
            self._read = self._engine.bucket_reads(self.bucket, self._kinds)
        return self._read

    def account(self) -> str | None:
        """The owning account's id, or None: no such bucket (``Engine.bucket_account``)."""
        snapshot = self._snapshot()
        return snapshot[0] if snapshot is not None else self._engine.bucket_account(self.bucket)

    def config(self, kind: str) -> Any:
        """The bucket's configuration of that kind, or None: none, or no bucket (``Engine.bucket_config_if_any``)."""
        snapshot = self._snapshot() if kind in self._kinds else None
        return snapshot[1][kind] if snapshot is not None else self._engine.bucket_config_if_any(self.bucket, kind)

    def guard(self, kind: str, other: str | None) -> tuple[str | None, Any, Any]:
        """(``account()``, ``config(kind)``, ``config(other)`` or None when ``other`` is None) in one call: what
        access control asks (s3/access.py ``check``)."""
        snapshot = self._snapshot()
        if snapshot is None or kind not in self._kinds or (other is not None and other not in self._kinds):
            return self.account(), self.config(kind), None if other is None else self.config(other)
        configs = snapshot[1]
        return snapshot[0], configs[kind], None if other is None else configs[other]

    def forget(self) -> None:
        """The body is being read: what was read before it may be stale by the time the handler asks again."""
        self._live = False
        self._read = None


class ObjectReads(BucketReads):
    """A GET or HEAD's one read transaction (``Engine.open_version_guarded``): access control's questions about
    the bucket (its owning account, policy and object ownership) and the version the handler serves
    (``open_version``), from one snapshot, taken on the first question. The version's own error waits for the
    handler, so access control decides first, as when the two read apart. The handler takes the version once
    (``open_version``); it is dropped then."""

    __slots__ = ("_key", "_version_id", "_guarded")

    def __init__(self, engine: Engine, bucket: str, key: str, version_id: str | None) -> None:
        self._engine = engine  # BucketReads' fields, set here: no super() call per GET
        self.bucket = bucket
        self._kinds = _OBJECT_KINDS
        self._read = None
        self._live = True
        self._key = key
        self._version_id = version_id
        self._guarded: GuardedOpen | None = None

    def _snapshot(self) -> tuple[str | None, dict[str, Any]] | None:
        if not self._live:
            return None
        if self._read is None:
            guarded = self._guarded = self._engine.open_version_guarded(self.bucket, self._key, self._version_id,
                                                                        self._kinds)
            self._read = (guarded.account, guarded.configs)
        return self._read

    def open_version(self, key: str, version_id: str | None) -> OpenVersion:
        """What ``Engine.open_version`` answers for the request's own object, from the snapshot (made now if
        access control asked nothing), raising its error; from the views for any other object or a second time."""
        if key == self._key and version_id == self._version_id and self._snapshot() is not None:
            guarded = self._guarded
            self.forget()
            self._guarded = None
            if guarded is not None:
                if isinstance(guarded.opened, OpenVersion):
                    return guarded.opened
                raise guarded.opened
        return self._engine.open_version(self.bucket, key, version_id)
