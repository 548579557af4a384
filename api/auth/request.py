"""Framework-neutral request view and verified-auth result shared by the SigV2/SigV4 verifiers.

    AuthRequest  -- the few request parts signatures cover, exactly as received
    AuthContext  -- who signed, how, and what the body decoder / payload check needs next
    auth_scheme  -- which verifier a request asks for (or None: anonymous)
    check_payload_sha256 -- the x-amz-content-sha256 body check the caller runs after reading the body

String encoding convention: header values (and ``raw_path`` / ``query_string`` if they carry non-ASCII) are
the wire bytes decoded as latin-1, the ASGI/WSGI convention, so ``wire_bytes`` recovers the exact bytes
the client signed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_to_bytes

from s4.engine.errors import ErrorCode, S3Error

PayloadMode = Literal[
    "unsigned", "sha256", "streaming-signed", "streaming-signed-trailer", "streaming-unsigned-trailer"]
AuthScheme = Literal["sigv4", "sigv4-query", "sigv2", "sigv2-query"]

STREAMING_MODES: frozenset[str] = frozenset(
    {"streaming-signed", "streaming-signed-trailer", "streaming-unsigned-trailer"})


# Not frozen (nothing assigns to them after construction): a frozen dataclass's ``__init__`` sets each field through
# ``object.__setattr__``, several times the cost of a plain one, and every signed request builds one of each
# (AuthContext's twelve fields cost ~10,000 instructions frozen).
@dataclass(slots=True)
class AuthRequest:
    """Method, raw path (percent-encoded, no query), raw query string, lower-case header map."""

    method: str
    raw_path: str
    query_string: str
    headers: Mapping[str, str]


@dataclass(slots=True)
class AuthContext:
    """A verified caller identity plus the signing state later body checks need.

    ``signing_key``/``scope``/``amz_date``/``seed_signature`` feed aws-chunked signature chaining;
    ``payload_sha256`` is set only for payload_mode "sha256" (the caller hashes the body and calls
    ``check_payload_sha256``). SigV2 contexts leave the SigV4-only fields empty.
    """

    access_key: str
    payload_mode: PayloadMode
    region: str = ""
    service: str = ""
    amz_date: str = ""
    signing_key: bytes = b""
    scope: str = ""
    seed_signature: str = ""
    payload_sha256: str | None = None
    signature_version: int = 4
    presigned: bool = False
    form: bool = False  # a POST object form's policy signature (api/s3/post_object.py)

    @property
    def streaming(self) -> bool:
        """Whether the body is aws-chunked framed (decode it with s4.api.auth.chunked)."""
        return self.payload_mode in STREAMING_MODES


def wire_bytes(text: str) -> bytes:
    """The bytes a latin-1-decoded string came from; UTF-8 for strings that cannot be latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def split_query(query_string: str) -> list[tuple[str, str | None]]:
    """Raw (still percent-encoded) query pairs in order; value None when a key has no '='."""
    pairs: list[tuple[str, str | None]] = []
    if not query_string:
        return pairs
    for part in query_string.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        pairs.append((key, value if eq else None))
    return pairs


def unquote_bytes(text: str, *, plus_is_space: bool = False) -> bytes:
    """Percent-decode to raw bytes (no charset guess); invalid escapes are kept literally."""
    raw = wire_bytes(text)
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    return unquote_to_bytes(raw)


def query_params(query_string: str) -> dict[str, str]:
    """Decoded query parameters (first occurrence wins), for reading auth parameters by name."""
    params: dict[str, str] = {}
    for key, value in split_query(query_string):
        name = unquote_bytes(key).decode("utf-8", "replace")
        if name not in params:
            params[name] = unquote_bytes(value or "").decode("utf-8", "replace")
    return params


def auth_scheme(req: AuthRequest) -> AuthScheme | None:
    """Which signature scheme the request uses; None for an anonymous request."""
    authorization = req.headers.get("authorization")
    if authorization is not None:
        if authorization.startswith("AWS4-"):
            return "sigv4"
        if authorization.startswith("AWS "):
            return "sigv2"
        raise S3Error(ErrorCode.INVALID_ARGUMENT, "Unsupported Authorization Type",
                      ArgumentName="Authorization", ArgumentValue=authorization[:64])
    qs = req.query_string
    if "X-Amz-" in qs or "AWSAccessKeyId" in qs or "Signature" in qs:  # cheap pre-filter
        params = query_params(qs)
        if "X-Amz-Algorithm" in params or "X-Amz-Credential" in params:
            return "sigv4-query"
        if "AWSAccessKeyId" in params or "Signature" in params:
            return "sigv2-query"
    return None


def payload_mismatch_error(expected_hex: str, computed_hex: str) -> S3Error:
    """The error S3 returns when the body does not hash to the signed x-amz-content-sha256."""
    return S3Error(ErrorCode.X_AMZ_CONTENT_SHA256_MISMATCH,
                   ClientComputedContentSHA256=expected_hex, S3ComputedContentSHA256=computed_hex)


def check_payload_sha256(ctx: AuthContext, computed_hex: str) -> None:
    """Raise XAmzContentSHA256Mismatch if ``ctx`` signed a body hash other than ``computed_hex``."""
    if ctx.payload_mode == "sha256" and ctx.payload_sha256 != computed_hex.lower():
        raise payload_mismatch_error(ctx.payload_sha256 or "", computed_hex.lower())
