"""POST object: a browser's HTML form upload (``POST /bucket``, ``multipart/form-data``), stored as PutObject does.

The form is parsed by falcon's multipart form handler, streaming: the fields before ``file`` are read (bounded by
``MAX_FORM_FIELDS_BYTES``), the file's bytes go straight into the engine's ingest, and fields after the file are
ignored, as S3 does. Who the caller is comes from the form, not the headers:

* ``x-amz-algorithm``/``x-amz-credential``/``x-amz-date``/``x-amz-signature``: SigV4 over the policy field;
* ``AWSAccessKeyId``/``signature``: SigV2 over the policy field;
* neither: anonymous (only a bucket policy or ACL allowing anonymous ``s3:PutObject`` lets it through).

Then the policy (api/s3/post_policy.py) must hold for the fields, and the signer must be allowed ``s3:PutObject``
on the key through the one evaluator (api/s3/access.py). The form's fields become the headers of a PutObject
(``Content-Type``, ``Cache-Control``, ``x-amz-meta-*``, ``x-amz-checksum-*``, ``acl`` as ``x-amz-acl``, ``tagging``
as ``x-amz-tagging``...), checked by the same security-header rules and stored by the same handler
(objects.put_object). The router sends only a query-less ``POST /bucket`` here (router.QUERYLESS): a form posted to
any sub-resource or to a key is authenticated by its headers like every other request.
docs/architecture/access-control.md, "POST object".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode, urlsplit

import falcon
import falcon.asgi
from falcon.asgi.multipart import BodyPart
from falcon.asgi.reader import BufferedReader
from falcon.media.multipart import MultipartFormHandler, MultipartParseOptions
from falcon.util.mediatypes import parse_header

from s4.engine.errors import ErrorCode, S3Error
from s4.engine.names import check_key

from ..auth import sigv2, sigv4
from ..auth.request import AuthContext
from ..inputs import header_value
from .access import AccessControl, RequestFacts, client_address
from .call import Call
from .objects import MAX_OBJECT_TAGS, put_object
from .post_policy import parse_post_policy
from .security import check_security_headers
from .xml_parse import parse_tagging
from .xml_render import post_response_xml

log = logging.getLogger(__name__)
#: The fields before the file, together (S3: MaxPostPreDataLengthExceeded past its limit).
MAX_FORM_FIELDS_BYTES = 64 * 1024
MAX_FORM_PARTS = 128
READ_CHUNK_BYTES = 64 * 1024
_V4_FIELDS = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
_V2_FIELDS = ("awsaccesskeyid", "signature")
#: Form fields that are not headers of the object: the target, the signature, what to answer.
_NOT_HEADERS = frozenset({"key", "bucket", "policy", "file", "acl", "tagging", "success_action_status",
                          "success_action_redirect", "redirect", "x-amz-security-token", "x-amz-content-sha256",
                          "x-amz-decoded-content-length", "x-amz-trailer", *_V4_FIELDS, *_V2_FIELDS})
_HEADER_FIELDS = frozenset({"content-type", "cache-control", "content-disposition", "content-encoding", "expires",
                            "content-md5", "content-language"})


def _form_options() -> MultipartParseOptions:
    options = MultipartParseOptions()
    options.max_body_part_buffer_size = MAX_FORM_FIELDS_BYTES
    options.max_body_part_count = MAX_FORM_PARTS
    return options


FORM = MultipartFormHandler(_form_options())


def _malformed(detail: str) -> S3Error:
    return S3Error(ErrorCode.MALFORMED_POST_REQUEST, f"The body of your POST request is not well-formed "
                   f"multipart/form-data: {detail}.")


def _missing(name: str) -> S3Error:
    return S3Error(ErrorCode.INVALID_ARGUMENT, f"Bucket POST must contain a field named '{name}'.  If it is "
                   "specified, please check the order of the fields.", ArgumentName=name, ArgumentValue="")


class PostObject:
    """The handler; holds the process's access control and credential lookup (api/app.py S3Service)."""

    def __init__(self, access: AccessControl, lookup_secret: Callable[[str], str | None],
                 with_iam_feed: Callable[[Callable[[], AuthContext | None]], Awaitable[AuthContext | None]]) -> None:
        self.access = access
        self.lookup_secret = lookup_secret
        self.with_iam_feed = with_iam_feed  # several pools: an IAM key created on the registry pool moments ago

    async def __call__(self, call: Call, resp: falcon.asgi.Response) -> None:
        media_type, _ = parse_header(call.headers.get("content-type", ""))
        if media_type.lower() != "multipart/form-data":
            raise S3Error(ErrorCode.PRECONDITION_FAILED,
                          Condition="Bucket POST must be of the enclosure-type multipart/form-data")
        parts = await _open_form(call)
        fields, file_part, filename = await _read_fields(parts)
        key = fields.get("key")
        if not key:
            raise _missing("key")
        key = key.replace("${filename}", filename)
        if not key:
            raise _missing("key")
        check_key(key)  # before a byte of the file: PutObject's key rules (length, characters)
        fields["key"] = key
        fields["bucket"] = call.bucket  # the request's bucket is what a condition on the bucket must allow
        try:
            auth = await self.signer(fields)
            call.req.context.actor = auth.access_key if auth is not None else ""  # the access log names the signer
            length_range = None
            if auth is not None:
                policy = parse_post_policy(fields["policy"])
                policy.check(fields, time.time())
                length_range = policy.length_range
        except S3Error as exc:
            if exc.status == 403:  # who was refused and why (the evaluator logs its own refusals the same way)
                log.info("access denied: actor=%s operation=PostObject resource=arn:aws:s3:::%s/%s decided-by=%s",
                         fields.get("awsaccesskeyid") or fields.get("x-amz-credential", "anonymous").split("/")[0],
                         call.bucket, key, exc.message)
            raise
        headers = _object_headers(fields)
        check_security_headers("PutObject", headers)
        who = self.access.principal(auth)
        facts = RequestFacts(headers, call.query, client_address(call.req.scope), call.req.scheme == "https", auth,
                             time.time())
        self.access.authorize(who, "PostObject", call.bucket, key, facts)
        low, high = length_range or (0, call.settings.max_upload_bytes)
        upload = dataclasses.replace(call, key=key, headers=headers, auth=auth,
                                     body=_file_bytes(file_part, parts, low, min(high, call.settings.max_upload_bytes)),
                                     authorize=self.access.guard(who, facts, "PostObject"))
        redirect = _redirect_target(fields)  # before the upload: nothing may fail once it is stored
        await put_object(upload, resp)
        _answer(call, resp, key, fields.get("success_action_status", ""), redirect)

    async def signer(self, fields: dict[str, str]) -> AuthContext | None:
        """The form's verified signer, or None (anonymous); an IAM key this node does not know yet is looked for in
        the registry pool first, as for header signatures (app.py ``with_iam_feed``)."""
        return await self.with_iam_feed(lambda: self._authenticate(fields))

    def _authenticate(self, fields: dict[str, str]) -> AuthContext | None:
        """The form's signer (None: anonymous). The policy is required with a signature and refused without one."""
        if any(name in fields for name in _V4_FIELDS):
            for name in (*_V4_FIELDS, "policy"):
                if name not in fields:
                    raise _missing(name)
            return sigv4.verify_post_policy(fields["policy"], fields["x-amz-algorithm"], fields["x-amz-credential"],
                                            fields["x-amz-date"], fields["x-amz-signature"], self.lookup_secret)
        if any(name in fields for name in _V2_FIELDS):
            for name, shown in (("awsaccesskeyid", "AWSAccessKeyId"), ("signature", "signature"),
                                ("policy", "policy")):
                if name not in fields:
                    raise _missing(shown)
            return sigv2.verify_post_policy(fields["policy"], fields["awsaccesskeyid"], fields["signature"],
                                            self.lookup_secret)
        if "policy" in fields:  # a policy nobody signed restricts nothing: S3 asks for the signer
            raise _missing("AWSAccessKeyId")
        return None


async def _open_form(call: Call) -> AsyncIterator[BodyPart]:
    try:
        form = await FORM.deserialize_async(BufferedReader(call.body_stream(), chunk_size=READ_CHUNK_BYTES),
                                            call.headers["content-type"], None)
    except falcon.HTTPError as exc:  # no boundary, or a boundary of the wrong length
        raise _malformed(str(exc.description or exc.title)) from exc
    return form.__aiter__()


async def _read_fields(parts: AsyncIterator[BodyPart]) -> tuple[dict[str, str], BodyPart, str]:
    """The fields before the file (names lower-case, values as UTF-8 text), the file's part and its file name."""
    fields: dict[str, str] = {}
    size = 0
    try:
        async for part in parts:
            name = (part.name or "").lower()
            if not name:
                raise _malformed("a part has no field name")
            if name == "file":
                return fields, part, part.filename or ""
            data = await part.get_data()
            size += len(name) + len(data)
            if size > MAX_FORM_FIELDS_BYTES:
                raise S3Error(ErrorCode.MAX_POST_PRE_DATA_LENGTH_EXCEEDED)
            if name in fields:
                raise S3Error(ErrorCode.INVALID_ARGUMENT, f"The form field {name} is given more than once.",
                              ArgumentName=name[:64], ArgumentValue="")
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _malformed(f"the field {name[:64]} is not UTF-8") from exc
    except falcon.HTTPError as exc:  # MultipartParseError: a field too large, a part without headers, ...
        if "too large" in str(exc.description):
            raise S3Error(ErrorCode.MAX_POST_PRE_DATA_LENGTH_EXCEEDED) from exc
        raise _malformed(str(exc.description or exc.title)) from exc
    except (UnicodeDecodeError, LookupError) as exc:  # a Content-Disposition header that is not UTF-8
        raise _malformed("a part header is not UTF-8") from exc
    raise S3Error(ErrorCode.INCORRECT_NUMBER_OF_FILES_IN_POST_REQUEST, ArgumentName="file", ArgumentValue="0")


async def _file_bytes(part: BodyPart, parts: AsyncIterator[BodyPart], low: int, high: int) -> AsyncIterator[bytes]:
    """The file's bytes, refused past ``high``; at its end, the form must go on (a boundary follows: a body cut
    short ends the file without one) and the size must be at least ``low``. Raised here, inside the engine's
    ingest, an error leaves nothing recorded."""
    size = 0
    async for chunk in part.stream:
        size += len(chunk)
        if size > high:
            raise S3Error(ErrorCode.ENTITY_TOO_LARGE, "Your proposed upload exceeds the maximum allowed size",
                          ProposedSize=str(size), MaxSizeAllowed=str(high))
        yield chunk
    try:
        await anext(parts)  # consumes the boundary after the file (and at most the next part's headers)
    except StopAsyncIteration:
        pass
    except falcon.HTTPError as exc:
        raise S3Error(ErrorCode.INCOMPLETE_BODY, "The form ended inside the file field.") from exc
    if size < low:
        raise S3Error(ErrorCode.ENTITY_TOO_SMALL, "Your proposed upload is smaller than the minimum allowed size",
                      ProposedSize=str(size), MinSizeAllowed=str(low))


def _object_headers(fields: dict[str, str]) -> dict[str, str]:
    """The form's fields as the request headers of a PutObject (wire form: UTF-8 bytes as latin-1 text)."""
    headers: dict[str, str] = {}
    for name, value in fields.items():
        if name in _NOT_HEADERS or not (name in _HEADER_FIELDS or name.startswith("x-amz-")):
            continue
        headers[name] = header_value(value, name=name)
    if "acl" in fields:
        headers["x-amz-acl"] = header_value(fields["acl"], name="acl")
    if "tagging" in fields:
        tags = parse_tagging(fields["tagging"].encode("utf-8"), max_tags=MAX_OBJECT_TAGS)
        headers["x-amz-tagging"] = urlencode(tags, quote_via=quote, safe="")
    return headers


def _answer(call: Call, resp: falcon.asgi.Response, key: str, status: str, redirect: str | None) -> None:
    """303 to ``redirect`` with bucket, key and ETag; else ``success_action_status`` 200 or 201 (a PostResponse
    document); else 204. Nothing here can fail: the object is stored."""
    etag = (resp.get_header("ETag") or "").strip('"')
    host = call.headers.get("host", "")
    location = f"{call.req.scheme}://{host}{call.req.path.rstrip('/')}/{quote(key, safe='/')}"
    resp.set_header("Location", location)
    if redirect is not None:
        query = urlencode({"bucket": call.bucket, "key": key, "etag": f'"{etag}"'}, quote_via=quote, safe="")
        resp.status = falcon.HTTP_303
        resp.set_header("Location", f"{redirect}{'&' if '?' in redirect else '?'}{query}")
        return
    status = status.strip()
    if status == "201":
        resp.status = falcon.HTTP_201
        resp.content_type = "application/xml"
        resp.data = post_response_xml(location, call.bucket, key, etag)
    elif status == "200":
        resp.status = falcon.HTTP_200
    else:
        resp.status = falcon.HTTP_204


def _redirect_target(fields: dict[str, str]) -> str | None:
    """``success_action_redirect`` (or the older ``redirect``) as a header value when it is an absolute http(s)
    URL; anything else is ignored and the status answer applies, as S3 does."""
    url = fields.get("success_action_redirect") or fields.get("redirect")
    if not url:
        return None
    try:
        parts = urlsplit(url)
        value = header_value(url, name="success_action_redirect")
    except (ValueError, S3Error):  # not a URL, or a control character that would split the header
        return None
    return value if parts.scheme in ("http", "https") and parts.netloc else None
