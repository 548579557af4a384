"""One S3 request as the handlers see it: target, parsed query, headers, verified caller, and its body.

Body handling lives here so every operation gets the same checks: aws-chunked decoding (with chunk signatures
and trailing checksums), the signed ``x-amz-content-sha256``, ``Content-MD5`` and ``x-amz-checksum-*`` headers.
All of them are verified after the bytes are staged and *before* the engine records anything, so a bad body
changes nothing.

Nothing reads the body before ``check_before_body`` has validated what the headers allow (the bucket exists,
the declared length is within the operation's limit): the server answers ``Expect: 100-continue`` only when the
application first asks for the body (api/body_gate.py), so a refused request never receives one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import falcon.asgi

from s4.engine import Engine, Ingested
from s4.engine.accounts import DEFAULT_ACCOUNT, Account, of_bucket
from s4.engine.checksums import ALGORITHMS, algorithm_from_header, header_name, new_checksum
from s4.engine.crypto import PartSealer
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.policy import Principal

from ..auth.chunked import ChunkedTrailers, decode_aws_chunked, parse_trailer_names
from ..auth.request import AuthContext, check_payload_sha256
from ..inputs import digits_value, parse_int
from ..settings import ApiSettings
from .bucket_reads import BucketReads

MAX_XML_BODY_BYTES = 2 * 1024 * 1024
#: Operations whose body is object data (limited by S4_MAX_UPLOAD_SIZE); every other body is a small document.
#: Upload ids S4 issues are 40 hex digits; anything past this cannot be one (and would not fit a view key).
MAX_UPLOAD_ID_CHARS = 128
DATA_BODIES = frozenset({"PutObject", "UploadPart"})
#: POST object: what a form may carry around its file (fields, part headers, boundaries) past S4_MAX_UPLOAD_SIZE.
MAX_FORM_OVERHEAD_BYTES = 1024 * 1024


@dataclass
class Call:
    engine: Engine
    settings: ApiSettings
    req: falcon.asgi.Request
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    auth: AuthContext | None
    request_id: str
    #: An aws-chunked body's trailers once decoded; made when such a body is read (not for every request)
    trailers: ChunkedTrailers | None = None
    #: ``authorize(action, bucket, key)``: access control for a second resource of this request (s3/access.py)
    authorize: Callable[[str, str, str], None] = field(default=lambda action, bucket, key: None)
    #: The object data when it is not the request body itself (POST object: the form's file field)
    body: AsyncIterator[bytes] | None = None
    who: Principal | None = None  # the caller (s3/access.py): its account owns what it creates
    #: The request's bucket as read once before the body (s3/bucket_reads.py); None: ask the engine each time
    bucket_reads: BucketReads | None = None

    @property
    def account(self) -> Account:
        """The caller's account (anonymous or unknown: the default one, which is never used to create)."""
        who = self.who
        if who is None or who.anonymous or not who.account:
            return DEFAULT_ACCOUNT
        return Account(who.account, who.account_name or DEFAULT_ACCOUNT.name)

    def bucket_owner(self) -> Account:
        """The account owning this request's bucket (NoSuchBucket when there is none): ``Owner`` fields."""
        bucket = self.engine.get_bucket(self.bucket)
        return of_bucket(bucket.account, bucket.account_name)

    def bucket_account(self) -> str | None:
        """The id of the account owning this request's bucket, or None: no such bucket."""
        reads = self.bucket_reads
        return reads.account() if reads is not None else self.engine.bucket_account(self.bucket)

    def bucket_config(self, kind: str) -> Any:
        """This request's bucket's configuration of that kind, or None: none, or no such bucket."""
        reads = self.bucket_reads
        return reads.config(kind) if reads is not None else self.engine.bucket_config_if_any(self.bucket, kind)

    @property
    def actor(self) -> str:
        return self.auth.access_key if self.auth else ""

    def _source(self) -> AsyncIterator[bytes]:
        if self.bucket_reads is not None:
            self.bucket_reads.forget()  # what the handler asks after the body, it asks the views again
        if self.body is not None:
            return self.body
        source: AsyncIterator[bytes] = self.req.stream.__aiter__()
        if self.auth is not None and self.auth.streaming:
            if self.trailers is None:
                self.trailers = ChunkedTrailers()
            source = decode_aws_chunked(source, self.auth, parse_trailer_names(self.headers.get("x-amz-trailer")),
                                        self._decoded_length(), self.trailers)
        return source

    def body_stream(self) -> AsyncIterator[bytes]:
        """The request body (aws-chunked framing decoded), or ``body`` when set; for handlers that parse it."""
        return self._source()

    def _decoded_length(self) -> int | None:
        value = self.headers.get("x-amz-decoded-content-length")
        return None if value is None else parse_int(value.strip(), "x-amz-decoded-content-length")

    def declared_length(self) -> int | None:
        """The body's length as the client declared it (decoded length of an aws-chunked body)."""
        decoded = self._decoded_length()
        if decoded is not None:
            return decoded
        return digits_value(self.headers.get("content-length", ""))

    @property
    def has_body(self) -> bool:
        """Whether the request declares a body (a non-zero Content-Length, or Transfer-Encoding)."""
        return bool(digits_value(self.headers.get("content-length", ""))) or "transfer-encoding" in self.headers

    def check_framing(self, operation: str) -> None:
        """A data upload with neither Content-Length nor Transfer-Encoding has an empty body in HTTP/1.1: S3
        refuses it (411) rather than store an empty object the client did not mean. A chunked body of unknown
        length is taken (S4 streams it)."""
        headers = self.headers
        if operation in DATA_BODIES and "content-length" not in headers and "transfer-encoding" not in headers:
            raise S3Error(ErrorCode.MISSING_CONTENT_LENGTH)

    async def check_before_body(self, operation: str) -> None:
        """What the headers allow checking before a byte of the body is read: the declared length within the
        operation's limit, and the bucket exists (CreateBucket excepted). Operation-specific checks (the upload
        of an UploadPart, tags, metadata) run in the handlers, still before they read the body."""
        declared = self.declared_length()
        if operation in DATA_BODIES:
            limit = self.settings.max_upload_bytes
            if declared is not None and declared > limit:
                raise S3Error(ErrorCode.ENTITY_TOO_LARGE, ProposedSize=str(declared), MaxSizeAllowed=str(limit))
        elif operation == "PostObject":
            limit = self.settings.max_upload_bytes + MAX_FORM_OVERHEAD_BYTES
            if declared is not None and declared > limit:
                raise S3Error(ErrorCode.ENTITY_TOO_LARGE, ProposedSize=str(declared), MaxSizeAllowed=str(limit))
        elif declared is not None and declared > MAX_XML_BODY_BYTES:
            raise S3Error(ErrorCode.MALFORMED_XML, "The request body is too large.")
        if self.bucket and operation != "CreateBucket" and not (
                self.bucket_reads is not None and self.bucket_reads.account() is not None):
            await self.engine.require_bucket(self.bucket)  # (a pool: looked for on R replicas before NoSuchBucket)

    def upload_id(self) -> str:
        """The ``uploadId`` parameter; one that cannot name an upload (empty, or longer than any S4 issues) is
        NoSuchUpload before it reaches the views."""
        value = self.query.get("uploadId", "")
        if not value or len(value) > MAX_UPLOAD_ID_CHARS:
            raise S3Error(ErrorCode.NO_SUCH_UPLOAD, resource=value[:MAX_UPLOAD_ID_CHARS],
                          UploadId=value[:MAX_UPLOAD_ID_CHARS])
        return value

    async def read_body(self, limit: int = MAX_XML_BODY_BYTES) -> bytes:
        """A small request body (XML/JSON documents), fully verified."""
        chunks: list[bytes] = []
        size = 0
        async for piece in self._source():
            size += len(piece)
            if size > limit:
                raise S3Error(ErrorCode.MALFORMED_XML if limit == MAX_XML_BODY_BYTES else ErrorCode.ENTITY_TOO_LARGE,
                              "The request body is too large.")
            chunks.append(piece)
        body = b"".join(chunks)
        if self.auth is not None and self.auth.payload_mode == "sha256":
            check_payload_sha256(self.auth, hashlib.sha256(body).hexdigest())
        md5 = self.headers.get("content-md5")
        if md5 is not None:
            _check_md5(md5, hashlib.md5(body).digest())
        return body

    async def ingest_body(self, sealer: PartSealer | None = None, also: str = "") -> tuple[Ingested, dict[str, str]]:
        """Stream the body into volumes (sealed by ``sealer`` for an encrypted write: api/s3/sse.py); returns what
        was stored and the verified checksums (of the plaintext) to keep. ``also``: an algorithm computed whatever
        the client sends (a part of an upload created with it)."""
        limit = self.settings.max_upload_bytes
        declared = self.declared_length()
        if declared is not None and declared > limit:
            raise S3Error(ErrorCode.ENTITY_TOO_LARGE, ProposedSize=str(declared), MaxSizeAllowed=str(limit))
        hashers: list[Any] = []
        payload_hash = None
        if self.auth is not None and self.auth.payload_mode == "sha256":
            payload_hash = hashlib.sha256()
            hashers.append(payload_hash)
        claimed = self.claimed_checksums()
        computed = {alg: new_checksum(alg) for alg in claimed} if claimed else {}  # (no comprehension when none)
        trailing = self._trailer_algorithms() if "x-amz-trailer" in self.headers else []
        for wanted in (self._requested_algorithm(), also):
            if wanted and wanted not in computed and wanted not in trailing:  # a trailer's is verified as it ends
                computed[wanted] = new_checksum(wanted)
        hashers.extend(computed.values())
        stored = await self.engine.ingest(self._source(), max_bytes=limit, hashers=hashers, sealer=sealer)
        if declared is not None and stored.size != declared and "content-length" in self.headers and \
                not (self.auth and self.auth.streaming):
            raise S3Error(ErrorCode.INCOMPLETE_BODY)
        if payload_hash is not None and self.auth is not None:
            check_payload_sha256(self.auth, payload_hash.hexdigest())
        md5 = self.headers.get("content-md5")
        if md5 is not None:
            _check_md5(md5, stored.md5.digest())
        checksums = {alg: c.b64digest() for alg, c in computed.items()} if computed else {}
        for alg, value in claimed.items():
            if checksums[alg] != value:
                raise S3Error(ErrorCode.BAD_DIGEST, f"The {alg} you specified did not match the calculated checksum.")
        if self.trailers is not None:
            checksums.update(self.trailers.checksums)
        return stored, checksums

    def named_algorithms(self) -> list[str]:
        """Every checksum algorithm the request names for its body: headers, trailers, x-amz-sdk-checksum-algorithm."""
        named = [*self.claimed_checksums(), *self._trailer_algorithms()]
        requested = self._requested_algorithm()
        return [*named, requested] if requested else named

    def claimed_checksums(self) -> dict[str, str]:
        """``x-amz-checksum-<alg>`` headers as algorithm -> value (InvalidRequest for an unknown algorithm)."""
        out = {}
        for name, value in self.headers.items():
            if name.startswith("x-amz-checksum-") and name not in ("x-amz-checksum-mode", "x-amz-checksum-type",
                                                                   "x-amz-checksum-algorithm"):
                alg = algorithm_from_header(name)
                if alg is None:
                    raise S3Error(ErrorCode.INVALID_REQUEST, f"Unsupported checksum header {name}")
                out[alg] = value
        return out

    def _requested_algorithm(self) -> str:
        value = (self.headers.get("x-amz-sdk-checksum-algorithm") or self.headers.get("x-amz-checksum-algorithm")
                 or "").upper()
        if value and value not in ALGORITHMS:
            raise S3Error(ErrorCode.INVALID_REQUEST, f"Checksum algorithm {value} is not supported.")
        return value

    def _trailer_algorithms(self) -> list[str]:
        return [a for n in parse_trailer_names(self.headers.get("x-amz-trailer"))
                if (a := algorithm_from_header(n))]


def _check_md5(header: str, digest: bytes) -> None:
    try:
        claimed = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise S3Error(ErrorCode.INVALID_DIGEST) from exc
    if len(claimed) != 16:
        raise S3Error(ErrorCode.INVALID_DIGEST)
    if claimed != digest:
        raise S3Error(ErrorCode.BAD_DIGEST, ExpectedDigest=header, CalculatedDigest=base64.b64encode(digest).decode())


def checksum_headers(checksums: dict[str, str]) -> dict[str, str]:
    return {header_name(alg): value for alg, value in checksums.items()}
