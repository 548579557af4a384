"""AWS Signature Version 4 verification, as S3 does it: Authorization header and presigned query forms.

    verify_sigv4(req, lookup_secret, now) -> AuthContext   (raises S3Error with the AWS error codes)

S3 specifics: the URI is not double-encoded and not dot-normalised; each path segment is percent-decoded
and re-encoded with the RFC 3986 unreserved set, so clients that encode "safe" characters differently
still match (the path exactly as sent is tried too). x-amz-content-sha256 selects the payload mode; body
hashes and aws-chunked signatures are checked later by the caller / s4.api.auth.chunked using the returned
context. Every x-amz-* header present must be signed, as must host.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from s4.api.auth.request import (
    AuthContext,
    AuthRequest,
    PayloadMode,
    query_params,
    split_query,
    unquote_bytes,
    wire_bytes,
)
from s4.api.inputs import digits_value
from s4.engine.errors import ErrorCode, S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 604800
_UNRESERVED = "-_.~"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SPACES = re.compile(r"[ \t]+")
_ALREADY_CANONICAL_PATH = re.compile(r"[A-Za-z0-9/_.~-]*")
_PAYLOAD_MODES: dict[str, PayloadMode] = {
    "UNSIGNED-PAYLOAD": "unsigned",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": "streaming-signed",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": "streaming-signed-trailer",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": "streaming-unsigned-trailer",
}
_QUERY_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                 "X-Amz-SignedHeaders", "X-Amz-Expires")
_HEADER_LEAD = "The authorization header is malformed; "
_QUERY_LEAD = "Error parsing the X-Amz-Credential parameter; "
_CREDENTIAL_FORM = 'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over date/region/service; cached since it only changes daily per key."""
    key = hmac.digest(("AWS4" + secret).encode("utf-8"), date.encode("ascii"), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode("utf-8"), "sha256")
    return key


def hmac_hex(key: bytes, message: str | bytes) -> str:
    data = message if isinstance(message, bytes) else message.encode("utf-8")
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def canonical_uri(raw_path: str) -> str:
    """Each segment decoded then re-encoded with the unreserved set -- one encoding, as S3 signs it."""
    if not raw_path:
        return "/"
    if _ALREADY_CANONICAL_PATH.fullmatch(raw_path):  # nothing to decode or encode: most keys, and it is cheap
        return raw_path
    return "/".join(quote(unquote_bytes(seg), safe=_UNRESERVED) for seg in raw_path.split("/"))


def canonical_query(query_string: str, *, presigned: bool = False, plus_is_space: bool = True,
                    reencode: bool = True) -> str:
    """Pairs re-encoded, sorted by key then value; X-Amz-Signature dropped for presigned URLs.

    ``reencode=False`` keeps each pair as sent (some signers sort the raw query without re-encoding).
    """
    items: list[tuple[str, str]] = []
    for key, value in split_query(query_string):
        if reencode:
            k = quote(unquote_bytes(key, plus_is_space=plus_is_space), safe=_UNRESERVED)
            v = quote(unquote_bytes(value or "", plus_is_space=plus_is_space), safe=_UNRESERVED)
        else:
            k, v = key, value or ""
        if presigned and k == "X-Amz-Signature":
            continue
        items.append((k, v))
    items.sort()
    return "&".join(f"{k}={v}" for k, v in items)


def canonical_header_value(value: str) -> str:
    """Trim, and collapse runs of spaces (ASCII only: values are latin-1 decoded wire bytes)."""
    if "  " in value or "\t" in value:
        value = _SPACES.sub(" ", value)
    return value.strip(" ")


def canonical_request(method: str, uri: str, query: str, headers: Mapping[str, str],
                      signed_headers: tuple[str, ...], payload_hash: str) -> str:
    canon_headers = "".join(f"{n}:{canonical_header_value(headers.get(n, ''))}\n" for n in signed_headers)
    return "\n".join((method.upper(), uri, query, canon_headers, ";".join(signed_headers), payload_hash))


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(wire_bytes(canonical)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


@dataclass(slots=True)
class _Parsed:
    """The signature claims of one request, before any cryptography."""

    malformed: ErrorCode
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str = ""
    request_time: datetime | None = None
    payload_hash: str = "UNSIGNED-PAYLOAD"
    expires: int | None = None

    @property
    def presigned(self) -> bool:
        return self.expires is not None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _parse_credential(value: str, malformed: ErrorCode) -> tuple[str, str, str, str]:
    prefix = _HEADER_LEAD if malformed is ErrorCode.AUTHORIZATION_HEADER_MALFORMED else _QUERY_LEAD
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise S3Error(malformed, f"{prefix}the Credential is mal-formed; {_CREDENTIAL_FORM}")
    if len(parts[1]) != 8 or not parts[1].isdigit():
        raise S3Error(malformed, f'{prefix}incorrect date format "{parts[1]}". This date in the credential '
                               'must be in the format "yyyyMMdd".')
    return parts[0], parts[1], parts[2], parts[3]


@functools.lru_cache(maxsize=256)
def _parse_amz_date(value: str) -> datetime | None:
    """ISO 8601 basic ``YYYYMMDDTHHMMSSZ`` without strptime's overhead; None if invalid. Cached: every request of
    the same second carries the same text (datetimes are immutable, so sharing one is safe)."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z":
        return None
    digits = value[:8] + value[9:15]
    if not digits.isdigit():
        return None
    try:
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def _header_claims(rest: str) -> tuple[tuple[str, str, str, str, tuple[str, ...]], str]:
    """((access key, date, region, service, signed headers), signature) from the Authorization header after
    the algorithm. Everything before the signature repeats across a client's requests for a day, so it is
    parsed once (``_parse_claims``, cached) and only the signature is taken apart per request."""
    head, sep, tail = rest.rpartition("Signature=")
    if sep and tail.strip() and head.rstrip().endswith(",") and "," not in tail and "=" not in tail:
        return _parse_claims(head), tail.strip().lower()
    claims = _parse_claims(rest)  # unusual order or a malformed header: the general parse says what is wrong
    return claims, _components(rest)["Signature"].lower()


@functools.lru_cache(maxsize=1024)
def _parse_claims(text: str) -> tuple[str, str, str, str, tuple[str, ...]]:
    parts = _components(text, signature_optional=True)
    akid, date, region, service = _parse_credential(parts["Credential"], ErrorCode.AUTHORIZATION_HEADER_MALFORMED)
    signed = tuple(h.strip().lower() for h in parts["SignedHeaders"].split(";"))
    return akid, date, region, service, signed


def _components(text: str, *, signature_optional: bool = False) -> dict[str, str]:
    """``Name=value`` components of the Authorization header; the S3 errors for malformed or missing ones."""
    malformed = ErrorCode.AUTHORIZATION_HEADER_MALFORMED
    parts: dict[str, str] = {}
    for component in text.split(","):
        if signature_optional and not component.strip():
            continue  # the trailing comma left when the signature was split off
        name, eq, value = component.strip().partition("=")
        if not eq:
            raise S3Error(malformed, f'{_HEADER_LEAD}the authorization component "{component.strip()}" '
                                     'is malformed.')
        parts[name] = value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required == "Signature" and signature_optional:
            continue
        if not parts.get(required):
            raise S3Error(malformed, f"{_HEADER_LEAD}missing {required}.")
    return parts


def _parse_header(req: AuthRequest, authorization: str) -> _Parsed:
    malformed = ErrorCode.AUTHORIZATION_HEADER_MALFORMED
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The authorization mechanism you have provided is not "
                                               "supported. Please use AWS4-HMAC-SHA256.")
    claims, signature = _header_claims(rest)
    parsed = _Parsed(malformed, *claims, signature)

    headers = req.headers
    amz_date = headers.get("x-amz-date")
    when = _parse_amz_date(amz_date.strip()) if amz_date is not None else None
    if amz_date is None and (raw_date := headers.get("date")):
        try:
            when = parsedate_to_datetime(raw_date).astimezone(UTC)
        except (TypeError, ValueError):
            when = None
    if when is None:
        raise S3Error(ErrorCode.ACCESS_DENIED,
                      "AWS authentication requires a valid Date or x-amz-date header")
    parsed.request_time = when
    parsed.amz_date = when.strftime("%Y%m%dT%H%M%SZ") if amz_date is None else amz_date.strip()
    if parsed.amz_date[:8] != parsed.date:
        raise S3Error(malformed,
                      f"{_HEADER_LEAD}Invalid credential date. Date is not the same as X-Amz-Date.")

    content_sha = headers.get("x-amz-content-sha256")
    if content_sha is None:
        raise S3Error(ErrorCode.INVALID_REQUEST,
                      "Missing required header for this request: x-amz-content-sha256")
    content_sha = content_sha.strip()
    if content_sha not in _PAYLOAD_MODES and not _SHA256_HEX.fullmatch(content_sha):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
                    "STREAMING-UNSIGNED-PAYLOAD-TRAILER or a valid sha256 value.",
                    ArgumentName="x-amz-content-sha256", ArgumentValue=content_sha[:80])
    parsed.payload_hash = content_sha
    return parsed


def _parse_query(params: dict[str, str]) -> _Parsed:
    malformed = ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR
    if any(not params.get(name) for name in _QUERY_PARAMS):
        raise S3Error(malformed, "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                               "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                               "X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(malformed, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    akid, date, region, service = _parse_credential(params["X-Amz-Credential"], malformed)
    signed = tuple(h.strip().lower() for h in params["X-Amz-SignedHeaders"].split(";"))
    parsed = _Parsed(malformed, akid, date, region, service, signed, params["X-Amz-Signature"].lower())
    parsed.amz_date = params["X-Amz-Date"]
    parsed.request_time = _parse_amz_date(parsed.amz_date)
    if parsed.request_time is None:
        raise S3Error(malformed, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if parsed.amz_date[:8] != date:
        raise S3Error(malformed, f'Invalid credential date "{date}". This date is not the same as '
                                 f'X-Amz-Date: "{parsed.amz_date[:8]}".')
    raw_expires = params["X-Amz-Expires"]
    expires = digits_value(raw_expires.removeprefix("-"))
    if expires is None:
        raise S3Error(malformed, "X-Amz-Expires should be a number")
    if raw_expires.startswith("-") and expires:  # out of range: 403 AccessDenied, as S3 answers (s3-tests)
        raise S3Error(ErrorCode.ACCESS_DENIED, "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error(ErrorCode.ACCESS_DENIED, "X-Amz-Expires must be less than a week (in "
                      f"seconds); that is, the given X-Amz-Expires must be less than {MAX_PRESIGN_EXPIRES} seconds")
    parsed.expires = expires
    content_sha = params.get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
    if content_sha != "UNSIGNED-PAYLOAD" and not _SHA256_HEX.fullmatch(content_sha):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a valid "
                    "sha256 value.", ArgumentName="X-Amz-Content-Sha256", ArgumentValue=content_sha[:80])
    parsed.payload_hash = content_sha
    return parsed


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_time(parsed: _Parsed, now: datetime) -> None:
    when = parsed.request_time
    assert when is not None
    if parsed.expires is None:
        if abs(now - when) > MAX_SKEW:
            raise S3Error(ErrorCode.REQUEST_TIME_TOO_SKEWED, RequestTime=parsed.amz_date,
                          ServerTime=_iso(now), MaxAllowedSkewMilliseconds="900000")
        return
    if when - now > MAX_SKEW:
        raise S3Error(ErrorCode.ACCESS_DENIED, "Request is not valid yet")
    if now > when + timedelta(seconds=parsed.expires) or parsed.expires == 0:  # 0: valid, and already expired
        raise S3Error(ErrorCode.ACCESS_DENIED, "Request has expired",
                      **{"X-Amz-Expires": str(parsed.expires),
                         "Expires": _iso(when + timedelta(seconds=parsed.expires)), "ServerTime": _iso(now)})


def _check_signed_headers(req: AuthRequest, parsed: _Parsed) -> None:
    if "host" not in parsed.signed_headers:
        message = ("X-Amz-SignedHeaders must include host" if parsed.presigned
                   else f"{_HEADER_LEAD}SignedHeaders must include host.")
        raise S3Error(parsed.malformed, message)
    signed = _as_set(parsed.signed_headers)
    missing = sorted(n for n in req.headers if n.startswith("x-amz-") and n not in signed
                     and not (parsed.presigned and n == "x-amz-content-sha256"))
    if missing:
        raise S3Error(ErrorCode.ACCESS_DENIED, "There were headers present in the request which were not "
                                               "signed", HeadersNotSigned=", ".join(missing))


@functools.lru_cache(maxsize=1024)
def _as_set(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(names)


def _variants(req: AuthRequest, presigned: bool, uri: str, query: str) -> Iterator[tuple[str, str]]:
    """(canonical URI, canonical query) pairs other than AWS's own form (``uri``, ``query``), built only when
    that form did not match."""
    uris = [uri] + ([req.raw_path] if req.raw_path and req.raw_path != uri else [])
    queries = [query]
    for variant in ({"plus_is_space": False}, {"reencode": False}):
        alternative = canonical_query(req.query_string, presigned=presigned, **variant)
        if alternative not in queries:
            queries.append(alternative)
    for u in uris:
        for q in queries:
            if (u, q) != (uri, query):
                yield u, q


def _signature_matches(req: AuthRequest, parsed: _Parsed, key: bytes, provided: bytes, uri: str,
                       query: str) -> tuple[str, str] | None:
    """None if the signature over this canonical form is ``provided``, else (canonical request, string to sign)."""
    canonical = canonical_request(req.method, uri, query, req.headers, parsed.signed_headers, parsed.payload_hash)
    sts = string_to_sign(parsed.amz_date, parsed.scope, canonical)
    if hmac.compare_digest(hmac_hex(key, sts).encode("ascii"), provided):
        return None
    return canonical, sts


def _match_signature(req: AuthRequest, parsed: _Parsed, key: bytes) -> None:
    """Accept the canonical form AWS uses, or the as-sent / literal-'+' variants some clients sign.

    The variants are only computed from the received bytes, so they widen encoding tolerance, not access.
    """
    provided = parsed.signature.encode("ascii", "replace")
    uri, query = canonical_uri(req.raw_path), canonical_query(req.query_string, presigned=parsed.presigned)
    first = _signature_matches(req, parsed, key, provided, uri, query)
    if first is None:
        return
    for uri_variant, query_variant in _variants(req, parsed.presigned, uri, query):
        if _signature_matches(req, parsed, key, provided, uri_variant, query_variant) is None:
            return
    raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AWSAccessKeyId=parsed.access_key,
                  StringToSign=first[1], SignatureProvided=parsed.signature, CanonicalRequest=first[0])


def verify_sigv4(req: AuthRequest, lookup_secret: Callable[[str], str | None], now: datetime | None = None,
                 *, expected_region: str | None = None) -> AuthContext:
    """Verify a SigV4-signed request; returns who signed and how, or raises the S3Error AWS would."""
    now = datetime.now(UTC) if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC))
    authorization = req.headers.get("authorization")
    if authorization is not None:
        if "X-Amz-Algorithm=" in req.query_string and "X-Amz-Algorithm" in query_params(req.query_string):
            raise S3Error(ErrorCode.INVALID_ARGUMENT, "Only one auth mechanism allowed; only the "
                          "X-Amz-Algorithm query parameter, Signature query string parameter or the "
                          "Authorization header should be specified", ArgumentName="Authorization")
        parsed = _parse_header(req, authorization)
    else:
        params = query_params(req.query_string)
        if "X-Amz-Algorithm" not in params and "X-Amz-Credential" not in params:
            raise S3Error(ErrorCode.ACCESS_DENIED)
        parsed = _parse_query(params)
    if expected_region is not None and parsed.region != expected_region:
        lead = _QUERY_LEAD if parsed.presigned else _HEADER_LEAD
        raise S3Error(parsed.malformed, f"{lead}the region '{parsed.region}' is wrong; expecting "
                                      f"'{expected_region}'", Region=expected_region)
    _check_time(parsed, now)
    _check_signed_headers(req, parsed)
    secret = lookup_secret(parsed.access_key)
    if secret is None:
        raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, AWSAccessKeyId=parsed.access_key)
    key = signing_key(secret, parsed.date, parsed.region, parsed.service)
    _match_signature(req, parsed, key)
    mode: PayloadMode = _PAYLOAD_MODES.get(parsed.payload_hash, "sha256")
    return AuthContext(
        access_key=parsed.access_key, payload_mode=mode, region=parsed.region, service=parsed.service,
        amz_date=parsed.amz_date, signing_key=key, scope=parsed.scope, seed_signature=parsed.signature,
        payload_sha256=parsed.payload_hash.lower() if mode == "sha256" else None, signature_version=4,
        presigned=parsed.presigned)


def verify_post_policy(policy: str, algorithm: str, credential: str, amz_date: str, signature: str,
                       lookup_secret: Callable[[str], str | None]) -> AuthContext:
    """A browser form upload's SigV4 signature (api/s3/post_object.py): the hex HMAC-SHA256 of the base64 policy
    field under the signing key of the credential's scope. No clock skew check: the policy's expiration bounds
    the form's life."""
    if algorithm != ALGORITHM:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"',
                      ArgumentName="x-amz-algorithm", ArgumentValue=algorithm[:64])
    access_key, date, region, service = _parse_credential(credential, ErrorCode.INVALID_ARGUMENT)
    if _parse_amz_date(amz_date) is None or amz_date[:8] != date:
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-date must be the ISO 8601 basic form "
                      "\"yyyyMMdd'T'HHmmss'Z'\" of the credential's date", ArgumentName="x-amz-date",
                      ArgumentValue=amz_date[:64])
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, AWSAccessKeyId=access_key)
    key = signing_key(secret, date, region, service)
    if not hmac.compare_digest(hmac_hex(key, policy).encode("ascii"),
                               signature.strip().lower().encode("ascii", "replace")):
        raise S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, AWSAccessKeyId=access_key, StringToSign=policy[:4096],
                      SignatureProvided=signature[:128])
    scope = f"{date}/{region}/{service}/aws4_request"
    return AuthContext(access_key=access_key, payload_mode="unsigned", region=region, service=service,
                       amz_date=amz_date, signing_key=key, scope=scope, seed_signature=signature.strip().lower(),
                       signature_version=4, form=True)
