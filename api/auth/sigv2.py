"""AWS Signature Version 2 (legacy S3 HMAC-SHA1) verification: ``Authorization: AWS`` and presigned query.

    verify_sigv2(req, lookup_secret, now, bucket_from_host=None) -> AuthContext (payload_mode "unsigned")

StringToSign = Method \\n Content-MD5 \\n Content-Type \\n Date|Expires \\n CanonicalizedAmzHeaders
CanonicalizedResource. The resource always names the bucket, so for virtual-hosted requests the caller
passes the bucket it parsed from Host. Presigned URLs from boto3 carry x-amz-*, Content-Type and
Content-MD5 as query parameters; those count as headers here, as S3 treats them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from s4.api.auth.request import AuthContext, AuthRequest, split_query, unquote_bytes, wire_bytes
from s4.api.inputs import SATURATED, digits_value
from s4.engine.errors import ErrorCode, S3Error

MAX_SKEW = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Sub-resources nearly every SigV2 signer (botocore, boto2, s3cmd, the AWS docs) puts in the resource.
SUBRESOURCES: frozenset[str] = frozenset({
    "accelerate", "acl", "analytics", "cors", "delete", "inventory", "lifecycle", "location", "logging",
    "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore", "select",
    "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning",
    "versions", "website",
})
# Newer sub-resources only some signers include; tried as a second candidate when present.
EXTRA_SUBRESOURCES: frozenset[str] = frozenset({
    "encryption", "intelligent-tiering", "legal-hold", "ownershipControls", "policyStatus",
    "publicAccessBlock", "retention", "attributes", "defaultObjectAcl",
})


def _decoded(text: str) -> str:
    """Percent-decoded as latin-1 "byte characters" so re-encoding yields the exact bytes signed."""
    return unquote_bytes(text).decode("latin-1")


def canonical_resource(raw_path: str, query_string: str, bucket_from_host: str | None = None,
                       *, include_extra: bool = False, as_sent: bool = False) -> str:
    """``/bucket/path[?subresources]``: sub-resources sorted by name, values percent-decoded.

    A path-style bucket request ("/bkt") is signed as "/bkt/", as botocore and S3 do (``as_sent`` keeps
    it as "/bkt", which simpler signers use).
    """
    path = raw_path or "/"
    if bucket_from_host:
        path = f"/{bucket_from_host}{path}"
    elif not as_sent and path.count("/") == 1 and len(path) > 1:
        path += "/"
    wanted = SUBRESOURCES | EXTRA_SUBRESOURCES if include_extra else SUBRESOURCES
    subs: list[tuple[str, str]] = []
    for key, value in split_query(query_string):
        name = _decoded(key)
        if name in wanted:
            subs.append((name, name if value is None else f"{name}={_decoded(value)}"))
    if not subs:
        return path
    subs.sort(key=lambda item: item[0])
    return path + "?" + "&".join(text for _, text in subs)


def canonical_amz_headers(amz: Mapping[str, str]) -> str:
    return "".join(f"{name}:{amz[name].strip()}\n" for name in sorted(amz))


def string_to_sign(method: str, content_md5: str, content_type: str, date: str, amz_headers: str,
                   resource: str) -> str:
    return f"{method.upper()}\n{content_md5}\n{content_type}\n{date}\n{amz_headers}{resource}"


def sign(secret: str, sts: str) -> str:
    digest = hmac.digest(secret.encode("utf-8"), wire_bytes(sts), hashlib.sha1)
    return base64.b64encode(digest).decode("ascii")


def _http_date(value: str) -> datetime | None:
    """The date, or None when it is none S3 takes: unparseable, or before the Unix epoch (S3 answers such a
    date AccessDenied as an invalid one, not RequestTimeTooSkewed)."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when if when >= _EPOCH else None


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _query_auth(req: AuthRequest) -> tuple[dict[str, str], dict[str, str]]:
    """(auth params, header-like params): x-amz-*, content-type/md5 in the query stand in for headers."""
    auth: dict[str, str] = {}
    as_headers: dict[str, str] = {}
    for key, value in split_query(req.query_string):
        name = _decoded(key)
        text = _decoded(value or "")
        if name in ("AWSAccessKeyId", "Signature", "Expires"):
            auth.setdefault(name, text)
        elif name.lower().startswith("x-amz-") or name.lower() in ("content-type", "content-md5"):
            as_headers.setdefault(name.lower(), text)
    return auth, as_headers


def verify_sigv2(req: AuthRequest, lookup_secret: Callable[[str], str | None], now: datetime | None = None,
                 bucket_from_host: str | None = None) -> AuthContext:
    """Verify a SigV2-signed request; returns who signed, or raises the S3Error AWS would."""
    now = datetime.now(UTC) if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC))
    headers = dict(req.headers)
    authorization = req.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        access_key, colon, signature = credentials.strip().rpartition(":")
        if scheme != "AWS" or not colon or not access_key or not signature:
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "AWS authorization header is invalid.  Expected "
                          "AwsAccessKeyId:signature", ArgumentName="Authorization",
                          ArgumentValue=authorization[:64])
        dates = _header_dates(headers, now)
        presigned = False
    else:
        auth, as_headers = _query_auth(req)
        if not auth:
            raise S3Error(ErrorCode.ACCESS_DENIED)
        if not all(auth.get(n) for n in ("AWSAccessKeyId", "Signature", "Expires")):
            raise S3Error(ErrorCode.ACCESS_DENIED, "Query-string authentication requires the Signature, "
                                                   "Expires and AWSAccessKeyId parameters")
        access_key, signature = auth["AWSAccessKeyId"], auth["Signature"]
        expires = digits_value(auth["Expires"])
        if expires is None or expires >= SATURATED:
            raise S3Error(ErrorCode.ACCESS_DENIED, "Invalid date (should be seconds since epoch): "
                                                   f"{auth['Expires'][:32]}")
        if now.timestamp() > expires:
            raise S3Error(ErrorCode.ACCESS_DENIED, "Request has expired",
                          Expires=_iso(datetime.fromtimestamp(expires, UTC)), ServerTime=_iso(now))
        for name, value in as_headers.items():
            headers.setdefault(name, value)
        dates = [auth["Expires"]]
        presigned = True

    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, AWSAccessKeyId=access_key)
    amz = {n: v for n, v in headers.items() if n.startswith("x-amz-")}
    md5, ctype = headers.get("content-md5", "").strip(), headers.get("content-type", "").strip()
    resources: list[str] = []
    for as_sent in (False, True):
        for include_extra in (False, True):
            resource = canonical_resource(req.raw_path, req.query_string, bucket_from_host,
                                          include_extra=include_extra, as_sent=as_sent)
            if resource not in resources:
                resources.append(resource)
    provided = signature.replace(" ", "+").encode("ascii", "replace")
    first = ""
    for date, amz_text in _date_candidates(dates, amz, presigned):
        for resource in resources:
            sts = string_to_sign(req.method, md5, ctype, date, amz_text, resource)
            if hmac.compare_digest(sign(secret, sts).encode("ascii"), provided):
                return AuthContext(access_key=access_key, payload_mode="unsigned", signature_version=2,
                                   presigned=presigned)
            first = first or sts
    raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AWSAccessKeyId=access_key, StringToSign=first,
                  SignatureProvided=signature)


def _date_candidates(dates: list[str], amz: dict[str, str], presigned: bool) -> list[tuple[str, str]]:
    """(Date line, amz-header block) pairs to try.

    With x-amz-date the spec says the Date line is empty; some signers put the Date header there instead,
    and AWS's own published example puts the x-amz-date value there and leaves it out of the amz block.
    Presigned URLs only ever sign Expires there, or a header-signed request could be replayed as one.
    """
    full = canonical_amz_headers(amz)
    candidates = [(date, full) for date in dates]
    if "x-amz-date" in amz and not presigned:
        without = {n: v for n, v in amz.items() if n != "x-amz-date"}
        candidates.append((amz["x-amz-date"].strip(), canonical_amz_headers(without)))
    return candidates


def _header_dates(headers: Mapping[str, str], now: datetime) -> list[str]:
    """Date-line candidates: "" when x-amz-date is present (per the spec; Date as fallback), else Date."""
    amz_date = headers.get("x-amz-date")
    date = headers.get("date")
    raw = amz_date if amz_date is not None else date
    when = _http_date(raw) if raw else None
    if when is None and amz_date is not None:
        when = _iso8601_basic(amz_date)
    if when is None:
        raise S3Error(ErrorCode.ACCESS_DENIED,
                      "AWS authentication requires a valid Date or x-amz-date header")
    if abs(now - when) > MAX_SKEW:
        raise S3Error(ErrorCode.REQUEST_TIME_TOO_SKEWED, RequestTime=raw or "", ServerTime=_iso(now),
                      MaxAllowedSkewMilliseconds="900000")
    if amz_date is None:
        return [(date or "").strip()]
    return [""] + ([date.strip()] if date else [])


def _iso8601_basic(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def verify_post_policy(policy: str, access_key: str, signature: str,
                       lookup_secret: Callable[[str], str | None]) -> AuthContext:
    """A browser form upload's SigV2 signature (api/s3/post_object.py): base64 HMAC-SHA1 of the base64 policy
    field under the secret key."""
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, AWSAccessKeyId=access_key)
    provided = signature.strip().replace(" ", "+").encode("ascii", "replace")
    if not hmac.compare_digest(sign(secret, policy).encode("ascii"), provided):
        raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AWSAccessKeyId=access_key, StringToSign=policy[:4096],
                      SignatureProvided=signature[:128])
    return AuthContext(access_key=access_key, payload_mode="unsigned", signature_version=2, form=True)
