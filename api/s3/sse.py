"""Server-side encryption at the S3 edge: the encryption a write asks for (its headers, else the bucket's
default), the key a read of an encrypted object needs, the response headers, and the bucket encryption
configuration (Put/Get/DeleteBucketEncryption). The crypto itself is engine/crypto (docs/architecture/encryption.md).

* ``x-amz-server-side-encryption: AES256`` (or a bucket default of AES256): SSE-S3, the data key wrapped by the
  node's master key.
* ``aws:kms`` with ``x-amz-server-side-encryption-aws-kms-key-id`` (or a bucket default naming a KMSMasterKeyID):
  SSE-KMS, the data key wrapped by the current version of a key of the built-in KMS (engine/kms.py), bound to the
  encryption context; S4 has no default ``aws/s3`` key, so the key id is required. ``aws:kms:dsse`` is refused.
* ``x-amz-server-side-encryption-customer-*``: SSE-C (key never stored; a key-MAC refuses a wrong one with 403 on
  reads, 400 on an UploadPart). Over plain HTTP it is refused as AWS does, unless ``S4_SSE_C_ALLOW_HTTP``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import falcon.asgi

from s4.engine import Ingested
from s4.engine.crypto import CustomerKey, KmsKey, ObjectKeys, PartSealer, new_object_keys
from s4.engine.crypto.keys import COPY_SOURCE_PREFIX, CUSTOMER_PREFIX
from s4.engine.crypto.objects import SSE_C, SSE_KMS, SSE_S3
from s4.engine.errors import ErrorCode, S3Error
from s4.engine.model import ObjectVersion, Upload

from .call import Call
from .xml_parse import bool_of, children, malformed, parse_root, text_of
from .xml_render import S3_NS, XML_DECL, xml_escape

SSE_HEADER = "x-amz-server-side-encryption"
KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
CONTEXT_HEADER = "x-amz-server-side-encryption-context"
BUCKET_KEY_HEADER = "x-amz-server-side-encryption-bucket-key-enabled"
CONFIG_KIND = "encryption"  # the bucket configuration holding the default encryption: {"a": "AES256", "bk": bool}
SECURE_ONLY = ("Requests specifying Server Side Encryption with Customer provided keys must be made over a secure "
               "connection.")

__all__ = ["COPY_SOURCE_PREFIX", "CUSTOMER_PREFIX", "SSE_HEADER", "Sealing", "check_completion_key",
           "customer_key", "delete_bucket_encryption", "for_part", "for_write", "get_bucket_encryption",
           "keys_for_serving", "put_bucket_encryption", "read_keys", "refuse_write_headers", "set_headers"]


def customer_key(call: Call, prefix: str = CUSTOMER_PREFIX) -> CustomerKey | None:
    """The request's SSE-C key (checked), or None; over plain HTTP refused unless the operator allows it."""
    key = CustomerKey.from_headers(call.headers, prefix)
    if key is not None and call.req.scheme != "https" and not call.settings.sse_c_allow_http:
        raise S3Error(ErrorCode.INVALID_REQUEST, SECURE_ONLY)
    return key


@dataclass(slots=True)
class Sealing:
    """A write's encryption: the new object's keys, the sealer of the part being written, the SSE-C key MD5."""

    keys: ObjectKeys
    sealer: PartSealer
    customer_md5: str | None = None

    def etag(self, stored: Ingested) -> str | None:
        """S3's ETag of what was sealed: the plaintext MD5 for SSE-S3 (None: the ingest's), not for SSE-C and
        SSE-KMS (AWS's ETags of those are not the plaintext's MD5: S4's is keyed by the object's key,
        ``SegmentCipher.etag``)."""
        return self.keys.cipher.etag(stored.md5.digest()) if self.keys.mode in (SSE_C, SSE_KMS) else None

    def version_record(self) -> dict[str, Any]:
        """``se`` of a single-part object (engine/crypto/objects.py)."""
        return dict(self.keys.record, pn=[self.sealer.prefix])

    def part_record(self) -> dict[str, Any]:
        return {"n": self.sealer.prefix}


def for_write(call: Call) -> Sealing | None:
    """The encryption of a new object (PutObject, CopyObject's destination, CreateMultipartUpload): SSE-C with a
    customer key, else SSE-S3 or SSE-KMS when asked or when the bucket's default says so, else None (plaintext)."""
    if _WRITE_HEADERS.isdisjoint(call.headers) and not call.bucket_config(CONFIG_KIND):
        return None  # no encryption header and no bucket default (most writes): what the rest answers, in one call
    customer = customer_key(call)
    requested = call.headers.get(SSE_HEADER)
    key_id = call.headers.get(KMS_KEY_HEADER)
    if customer is not None:
        if requested is not None or key_id is not None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Server Side Encryption with Customer provided key is "
                          "incompatible with the encryption method specified", ArgumentName=SSE_HEADER,
                          ArgumentValue=(requested or "")[:64])
        keys = new_object_keys(call.engine.sse_keys, customer)
        return Sealing(keys, keys.cipher.sealer(), customer.key_md5)
    if requested is None:
        if key_id is not None or CONTEXT_HEADER in call.headers:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Server Side Encryption with AWS KMS managed key requires "
                          "HTTP header x-amz-server-side-encryption : aws:kms", ArgumentName=SSE_HEADER,
                          ArgumentValue="null")
        default = call.bucket_config(CONFIG_KIND) or {}
        mode, key_id, bucket_key = default.get("a"), default.get("kid"), bool(default.get("bk"))
    else:
        mode = requested.strip()
        bucket_key = call.headers.get(BUCKET_KEY_HEADER, "").strip().lower() == "true"
    if mode == SSE_S3:
        if key_id is not None and requested is not None:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "A KMS key id is only valid with aws:kms",
                          ArgumentName=KMS_KEY_HEADER, ArgumentValue=key_id[:64])
        keys = new_object_keys(call.engine.sse_keys)
        return Sealing(keys, keys.cipher.sealer())
    if mode == SSE_KMS:
        if not key_id:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "S4 has no default aws/s3 KMS key: name a key with "
                          "x-amz-server-side-encryption-aws-kms-key-id.", ArgumentName=KMS_KEY_HEADER,
                          ArgumentValue="null")
        version, material = call.engine.kms_material(key_id.strip())  # NotFound / Disabled: 400, nothing stored
        kms = KmsKey(key_id.strip(), version, material, _context(call), bucket_key)
        keys = new_object_keys(call.engine.sse_keys, kms=kms)
        return Sealing(keys, keys.cipher.sealer())
    return None


def _context(call: Call) -> str:
    """The encryption context (base64 of a JSON object of strings), as given, or AWS's default one naming the
    object: ``{"aws:s3:arn": "arn:aws:s3:::bucket/key"}``. Bound into the data key's wrapping."""
    value = call.headers.get(CONTEXT_HEADER)
    if value is None:
        arn = f"arn:aws:s3:::{call.bucket}/{call.key}"
        return base64.b64encode(json.dumps({"aws:s3:arn": arn}).encode()).decode()
    try:
        doc = json.loads(base64.b64decode(value.strip(), validate=True))
    except (binascii.Error, ValueError):
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "The encryption context must be base64 of a JSON object of "
                      "strings.", ArgumentName=CONTEXT_HEADER, ArgumentValue=value[:64])
    return value.strip()


def for_part(call: Call, upload: Upload) -> Sealing | None:
    """The sealing of one part of ``upload`` (None: a plaintext upload, which takes no customer key). An SSE-C
    upload needs the same key on every part: a missing one is 400, a different one 400 (AWS's InvalidRequest)."""
    customer = customer_key(call)
    keys = call.engine.object_keys_of(upload.encryption, customer, ErrorCode.INVALID_REQUEST)
    if keys is None:
        return None
    return Sealing(keys, keys.cipher.sealer(), customer.key_md5 if customer else None)


async def check_completion_key(call: Call, upload_id: str) -> None:
    """CompleteMultipartUpload of an SSE-C upload needs the upload's key: 400 InvalidRequest without it or with
    another (AWS; ceph s3-tests check both). An upload already completed is the engine's to answer (a retry)."""
    try:
        upload = await call.engine.require_upload(call.bucket, call.key, upload_id)
    except S3Error as exc:
        if exc.code is ErrorCode.NO_SUCH_UPLOAD:
            return
        raise
    if upload.encryption.get("a") == SSE_C:
        call.engine.object_keys_of(upload.encryption, customer_key(call), ErrorCode.INVALID_REQUEST)


def refuse_write_headers(call: Call) -> None:
    """GET/HEAD with ``x-amz-server-side-encryption``: 400, as AWS (the header belongs to writes)."""
    if SSE_HEADER in call.headers:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-server-side-encryption header is not supported for this "
                      "operation.", ArgumentName=SSE_HEADER, ArgumentValue=call.headers[SSE_HEADER][:64])


def read_keys(call: Call, version: ObjectVersion, prefix: str = CUSTOMER_PREFIX,
              wrong_key: ErrorCode = ErrorCode.ACCESS_DENIED) -> ObjectKeys | None:
    """The keys to read ``version`` with (None: plaintext). SSE-C needs the request's key (``prefix``: the copy
    source's headers for a copy)."""
    return call.engine.object_keys(version, customer_key(call, prefix), wrong_key)


#: The headers that name a customer key (CustomerKey.from_headers: any one of them)
_ALGORITHM, _KEY, _KEY_MD5 = (CUSTOMER_PREFIX + name for name in ("algorithm", "key", "key-md5"))
#: The headers ``for_write`` reads: without any of them a write is plaintext unless its bucket's default says not.
_WRITE_HEADERS = frozenset({_ALGORITHM, _KEY, _KEY_MD5, SSE_HEADER, KMS_KEY_HEADER, CONTEXT_HEADER})


def keys_for_serving(call: Call, version: ObjectVersion, *, body: bool) -> ObjectKeys | None:
    """``read_keys`` for a GET; a HEAD opens nothing (it decrypts nothing: a disabled KMS key still answers HEAD, as
    AWS) but still needs an SSE-C object's right key, and refuses one given for another kind of object."""
    headers = call.headers
    if not version.encryption and _ALGORITHM not in headers and _KEY not in headers and _KEY_MD5 not in headers:
        return None  # plaintext, no customer key named: what the calls below answer, without them (most GETs)
    if body or version.encryption.get("a") == SSE_C:
        return read_keys(call, version)
    if customer_key(call) is not None:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The encryption parameters are not applicable to this object.")
    return None


def set_headers(call: Call, resp: falcon.asgi.Response, encryption: dict[str, Any],
                prefix: str = CUSTOMER_PREFIX) -> None:
    """The response headers AWS sends for an encrypted object: the algorithm; for SSE-C the key's MD5 as the
    request sent it (``prefix``: whose headers)."""
    if not encryption:
        return
    if encryption["a"] == SSE_C:
        resp.set_header("x-amz-server-side-encryption-customer-algorithm", "AES256")
        md5 = call.headers.get(prefix + "key-md5")
        if md5:
            resp.set_header("x-amz-server-side-encryption-customer-key-MD5", md5.strip())
    elif encryption["a"] == SSE_KMS:
        resp.set_header(SSE_HEADER, SSE_KMS)
        resp.set_header(KMS_KEY_HEADER, encryption["kid"])
        if encryption.get("bk"):
            resp.set_header(BUCKET_KEY_HEADER, "true")
    else:
        resp.set_header(SSE_HEADER, SSE_S3)


# -- bucket default encryption ------------------------------------------------------------------------------------
def parse_encryption_config(body: bytes) -> dict[str, Any]:
    """A ServerSideEncryptionConfiguration: one Rule; AES256 is stored, aws:kms is NotImplemented (no KMS)."""
    root = parse_root(body, "ServerSideEncryptionConfiguration")
    rules = [elem for name, elem in children(root) if name == "Rule"]
    if len(rules) != 1 or len(rules) != len(root):
        malformed()
    algorithm, key_id, bucket_key = "", "", False
    for name, elem in children(rules[0]):
        if name == "ApplyServerSideEncryptionByDefault":
            for inner, value in children(elem):
                if inner == "SSEAlgorithm":
                    algorithm = text_of(value).strip()
                elif inner == "KMSMasterKeyID":
                    key_id = text_of(value).strip()
                else:
                    malformed()
        elif name == "BucketKeyEnabled":
            bucket_key = bool_of(elem)
        else:
            malformed()
    if algorithm == "aws:kms:dsse":
        raise S3Error(ErrorCode.NOT_IMPLEMENTED, "S4 does not support DSSE-KMS.")
    if algorithm == SSE_KMS:
        if not key_id:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "S4 has no default aws/s3 KMS key: name a KMSMasterKeyID.",
                          ArgumentName="KMSMasterKeyID", ArgumentValue="null")
        return {"a": algorithm, "kid": key_id, "bk": bucket_key}
    if algorithm != SSE_S3 or key_id:
        malformed()
    return {"a": algorithm, "bk": bucket_key}


def encryption_config_xml(config: dict[str, Any]) -> bytes:
    bucket_key = "true" if config.get("bk") else "false"
    key_id = f"<KMSMasterKeyID>{xml_escape(config['kid'])}</KMSMasterKeyID>" if config.get("kid") else ""
    return (f'{XML_DECL}<ServerSideEncryptionConfiguration xmlns="{S3_NS}"><Rule><ApplyServerSideEncryptionByDefault>'
            f"<SSEAlgorithm>{config['a']}</SSEAlgorithm>{key_id}</ApplyServerSideEncryptionByDefault>"
            f"<BucketKeyEnabled>{bucket_key}</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>").encode()


async def put_bucket_encryption(call: Call, resp: falcon.asgi.Response) -> None:
    config = parse_encryption_config(await call.read_body())
    await call.engine.set_bucket_config(call.bucket, CONFIG_KIND, config, actor=call.actor)


async def get_bucket_encryption(call: Call, resp: falcon.asgi.Response) -> None:
    config = call.engine.get_bucket_config(call.bucket, CONFIG_KIND)
    if not config:
        raise S3Error(ErrorCode.SERVER_SIDE_ENCRYPTION_NOT_FOUND, BucketName=call.bucket)
    resp.content_type = "application/xml"
    resp.data = encryption_config_xml(config)


async def delete_bucket_encryption(call: Call, resp: falcon.asgi.Response) -> None:
    call.engine.get_bucket(call.bucket)
    await call.engine.set_bucket_config(call.bucket, CONFIG_KIND, None, actor=call.actor)
    resp.status = falcon.HTTP_204
