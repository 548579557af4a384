"""Value types the engine hands to the S3 layer (and stores, msgpack-encoded, in the views).

Views store these as plain dicts with short keys (``to_record``/``from_record``) so a record on disk never
depends on Python class layout. See docs/architecture/views.md. A version's record is built in one place,
``version_record``, whoever writes it (PUT, copy, multipart completion, delete markers, replay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from s4.journal.hlc import physical_ms

NULL_VERSION = "null"
LOCK_FIELDS = ("lk", "lh", "lc")  # a version's object lock (engine/object_lock.py), kept apart from its content
_EMPTY: Mapping[str, str] = MappingProxyType({})  # shared, read-only: most versions have no checksums or headers


# Hashable values, never assigned to after construction, but not ``frozen``: a frozen dataclass's ``__init__`` sets
# each field through ``object.__setattr__``, several times the cost of a plain one, and every GET builds a BlobRef
# and a BlobLocation per chunk (``unsafe_hash``: hashed by their fields, as when frozen).
@dataclass(slots=True, unsafe_hash=True)
class BlobRef:
    """One content-addressed chunk of an object: sha256 of its bytes and its length."""

    hash: bytes
    size: int


@dataclass(slots=True, unsafe_hash=True)
class BlobLocation:
    """Where a blob's bytes are: volume name, offset of the data (after the record header), length."""

    hash: bytes
    volume: str
    offset: int
    size: int

    def to_record(self) -> list[Any]:
        return [self.hash, self.volume, self.offset, self.size]

    @classmethod
    def from_record(cls, rec: list[Any]) -> BlobLocation:
        return cls(rec[0], rec[1], rec[2], rec[3])


def version_record(version_id: str | None, size: int, etag: str, *, delete_marker: bool = False,
                   content_type: str = "", blobs: list[list[Any]] | None = None,
                   metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                   checksums: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
                   part_sizes: list[int] | None = None,
                   part_checksums: list[dict[str, str]] | None = None,
                   acl: list[Any] | None = None,
                   encryption: Mapping[str, Any] | None = None,
                   imported: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A version as stored (short keys, docs/architecture/views.md): ``v`` version id (None: left for the
    decider to choose), ``s`` size, ``e`` ETag; ``dm`` for a delete marker, else ``ct`` content type and ``b``
    the ``[sha256, size]`` of each chunk; ``m`` metadata, ``hd`` headers, ``ck`` checksums, ``tg`` tags, ``ps``
    part sizes and ``pc`` each part's checksums (multipart uploads with checksums) only when not empty; ``acl`` its
    ACL (engine/policy/acl.py record) only when it has one of its own; ``se`` the encryption
    (engine/crypto/objects.py: wrapped data key, never a key or plaintext) only when not empty; ``it``/``is`` an
    import stamp (engine/imports.py: the source's Last-Modified and version identity) for a version copied from
    another server. ``h`` and ``t`` come from the event that writes it (``stamped``)."""
    rec: dict[str, Any] = {"s": size, "e": etag} if version_id is None else {"v": version_id, "s": size, "e": etag}
    if delete_marker:
        rec["dm"] = True
    else:
        rec["ct"] = content_type
        rec["b"] = blobs if blobs is not None else []
    if metadata:  # one test each, not a loop over pairs: every PUT builds one of these
        rec["m"] = metadata
    if headers:
        rec["hd"] = headers
    if checksums:
        rec["ck"] = checksums
    if tags:
        rec["tg"] = tags
    if part_sizes:
        rec["ps"] = part_sizes
    if part_checksums and any(part_checksums):
        rec["pc"] = part_checksums
    if acl:
        rec["acl"] = acl
    if encryption:
        rec["se"] = dict(encryption)
    if imported:
        rec.update(imported)
    return rec


def stamped(rec: dict[str, Any], hlc: int, origin: str | None = None) -> dict[str, Any]:
    """``rec`` as written by the event with this HLC: ``h`` the HLC, ``t`` its wall-clock ms (Last-Modified; an
    imported version's source time ``it`` instead, engine/imports.py) and, in the views, ``o`` the node that
    stamped it: ``(h, o)`` is the version's last-writer-wins order."""
    t = rec.get("it", physical_ms(hlc))
    if origin is None:
        return dict(rec, h=hlc, t=t)
    return dict(rec, h=hlc, t=t, o=origin)


@dataclass(slots=True)
class ObjectVersion:
    """One version of a key: its bytes (as blob refs) and everything returned in GET/HEAD headers."""

    key: str
    version_id: str
    last_modified_ms: int
    size: int = 0
    etag: str = ""  # without quotes
    is_delete_marker: bool = False
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    headers: dict[str, str] = field(default_factory=dict)  # content-encoding, cache-control, expires, ...
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (``-N`` suffix if composite)
    part_sizes: list[int] = field(default_factory=list)  # multipart objects: size of each part, in order
    blobs: list[BlobRef] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    hlc: int = 0
    is_latest: bool = False  # filled in by readers, never stored
    part_checksums: list[dict[str, str]] = field(default_factory=list)  # multipart: each part's checksums, in order
    lock: dict[str, Any] = field(default_factory=dict)  # object lock: ``lk`` retention, ``lh`` legal hold, ``lc``
    acl: list[Any] | None = None  # its own ACL (engine/policy/acl.py record); None: the bucket owner's, private
    encryption: dict[str, Any] = field(default_factory=dict)  # ``se`` (engine/crypto/objects.py); {}: plaintext

    def to_record(self) -> dict[str, Any]:
        rec = version_record(self.version_id, self.size, self.etag, delete_marker=self.is_delete_marker,
                             content_type=self.content_type, blobs=[[b.hash, b.size] for b in self.blobs],
                             metadata=self.metadata, headers=self.headers, checksums=self.checksums,
                             tags=self.tags, part_sizes=self.part_sizes, part_checksums=self.part_checksums,
                             acl=self.acl, encryption=self.encryption)
        rec["h"], rec["t"] = self.hlc, self.last_modified_ms
        if self.lock:
            rec.update(self.lock)
        return rec

    @classmethod
    def from_record(cls, key: str, rec: dict[str, Any]) -> ObjectVersion:
        # Positional, in field order: a listing page builds a thousand of these, and keywords cost a third more.
        get = rec.get
        version = cls(key, rec["v"], rec["t"], get("s", 0), get("e", ""), get("dm", False),
                      get("ct", "binary/octet-stream"), get("m") or {}, get("hd") or {}, get("ck") or {},
                      get("ps") or [], [BlobRef(h, s) for h, s in get("b", ())], get("tg") or {}, get("h", 0))
        part_checksums = get("pc")
        if part_checksums:
            version.part_checksums = part_checksums
        if "lk" in rec or "lh" in rec:
            version.lock = {k: rec[k] for k in LOCK_FIELDS if k in rec}
        acl = get("acl")
        if acl:
            version.acl = acl
        encryption = get("se")
        if encryption:
            version.encryption = encryption
        return version


@dataclass(slots=True)
class Bucket:
    name: str
    created_ms: int
    region: str = "us-east-1"
    versioning: str = ""  # "", "Enabled", "Suspended"
    root: int = 0  # namespace node id of the bucket's root directory
    owner: str = ""
    object_count: int = 0  # keys whose latest version is not a delete marker
    bytes_stored: int = 0  # sum of the sizes of every stored version
    incarnation: list[Any] | None = None  # [hlc, origin] of the bucket.created event: which life of the name
    account: str = ""  # the owning account's id (engine/accounts.py); "": created before accounts, the default one
    account_name: str = ""  # and its name (the Owner's DisplayName)

    def to_record(self) -> dict[str, Any]:
        rec = {"c": self.created_ms, "r": self.region, "v": self.versioning, "root": self.root,
               "o": self.owner, "n": self.object_count, "sz": self.bytes_stored, "i": self.incarnation}
        if self.account:
            rec["a"], rec["an"] = self.account, self.account_name
        return rec

    @classmethod
    def from_record(cls, name: str, rec: dict[str, Any]) -> Bucket:
        return cls(name, rec["c"], rec.get("r", "us-east-1"), rec.get("v", ""), rec.get("root", 0),
                   rec.get("o", ""), rec.get("n", 0), rec.get("sz", 0), rec.get("i"), rec.get("a", ""),
                   rec.get("an", ""))


@dataclass(slots=True)
class Part:
    part_number: int
    etag: str
    size: int
    last_modified_ms: int
    blobs: list[BlobRef] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    encryption: dict[str, Any] = field(default_factory=dict)  # an encrypted upload's part: {"n": nonce prefix}

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"n": self.part_number, "e": self.etag, "s": self.size, "t": self.last_modified_ms,
                               "b": [[b.hash, b.size] for b in self.blobs]}
        if self.checksums:
            rec["ck"] = self.checksums
        if self.encryption:
            rec["se"] = self.encryption
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Part:
        return cls(rec["n"], rec["e"], rec["s"], rec["t"], [BlobRef(h, s) for h, s in rec["b"]],
                   rec.get("ck", {}), rec.get("se") or {})


@dataclass(slots=True)
class Upload:
    """An in-progress multipart upload and the object attributes it will complete with."""

    upload_id: str
    bucket: str
    key: str
    initiated_ms: int
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    owner: str = ""
    checksum_type: str = ""  # "COMPOSITE" or "FULL_OBJECT" when checksum_algorithm is set (engine/checksums.py)
    lock: dict[str, Any] = field(default_factory=dict)  # object lock the completed version starts with (lk/lh)
    acl: list[Any] | None = None  # the completed object's own ACL (CreateMultipartUpload's x-amz-acl/grants)
    encryption: dict[str, Any] = field(default_factory=dict)  # ``se`` without part prefixes; {}: plaintext

    def to_record(self) -> dict[str, Any]:
        rec = {"u": self.upload_id, "bk": self.bucket, "k": self.key, "t": self.initiated_ms,
               "ct": self.content_type, "m": self.metadata, "hd": self.headers, "ca": self.checksum_algorithm,
               "tg": self.tags, "o": self.owner}
        if self.checksum_type:
            rec["cty"] = self.checksum_type
        if self.lock:
            rec["lock"] = self.lock
        if self.acl:
            rec["acl"] = self.acl
        if self.encryption:
            rec["se"] = self.encryption
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Upload:
        return cls(rec["u"], rec["bk"], rec["k"], rec["t"], rec.get("ct", "binary/octet-stream"),
                   rec.get("m", {}), rec.get("hd", {}), rec.get("ca", ""), rec.get("tg", {}), rec.get("o", ""),
                   rec.get("cty", ""), rec.get("lock") or {}, rec.get("acl"), rec.get("se") or {})


@dataclass(slots=True, init=False)
class ListEntry:
    """One version in a listing (a key's latest in ListObjects, any version in ListObjectVersions): the fields a
    listing renders, taken straight from the version's stored record.

    A page holds a thousand of these, and building a whole ``ObjectVersion`` per entry (blob refs, metadata and
    tag dicts) was half of a page's engine time; ``version`` builds it for the callers that need more.
    """

    key: str
    record: dict[str, Any]
    version_id: str
    last_modified_ms: int
    size: int
    etag: str
    is_delete_marker: bool
    is_latest: bool
    checksums: Mapping[str, str]
    headers: Mapping[str, str]

    def __init__(self, key: str, record: dict[str, Any], is_latest: bool = True) -> None:
        get = record.get
        self.key = key
        self.record = record
        self.version_id = record["v"]
        self.last_modified_ms = record["t"]
        self.size = get("s", 0)
        self.etag = get("e", "")
        self.is_delete_marker = get("dm", False)
        self.is_latest = is_latest
        self.checksums = get("ck") or _EMPTY
        self.headers = get("hd") or _EMPTY

    @classmethod
    def of(cls, version: ObjectVersion) -> ListEntry:
        return cls(version.key, version.to_record(), version.is_latest)

    @property
    def version(self) -> ObjectVersion:
        version = ObjectVersion.from_record(self.key, self.record)
        version.is_latest = self.is_latest
        return version


@dataclass(slots=True)
class ListPage:
    """One page of ListObjects/ListObjectsV2: keys and common prefixes, already merged in S3 order."""

    entries: list[ListEntry] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_marker: str = ""  # last key or common prefix returned; the resume point


@dataclass(slots=True)
class VersionListPage:
    versions: list[ListEntry] = field(default_factory=list)  # includes delete markers, S3 order
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_key_marker: str = ""
    next_version_id_marker: str = ""


@dataclass(slots=True)
class UploadListPage:
    uploads: list[Upload] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_key_marker: str = ""
    next_upload_id_marker: str = ""


@dataclass(slots=True)
class PartListPage:
    parts: list[Part] = field(default_factory=list)
    is_truncated: bool = False
    next_part_number_marker: int = 0
