"""The one place request text becomes values: percent-decoding to strict UTF-8, and integers with S3's errors.

Every user string S4 takes from the request URI (bucket, key, query parameters such as prefix, marker or
versionId) or from a header naming an object (``x-amz-copy-source``, ``x-amz-rename-source``) is decoded here,
and bytes that are not UTF-8 are refused -- never replaced with U+FFFD, which would let two different request
keys (``u%fe`` and ``u%ff``) name one stored key. AWS answers such a URI ``400 InvalidURI``; a header is
``400 InvalidArgument``.

Every integer S4 reads from a query parameter, header or XML element goes through ``parse_int``: ASCII digits
only (``int()`` would take ``"²"``-like digits from other scripts, ``"1_000"`` and surrounding spaces), no
unbounded conversion (a 5,000-digit value is a range error, not Python's ``ValueError``), and the caller's
S3 error for anything else.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from s4.engine.errors import ErrorCode, S3Error

#: Longest digit string converted exactly; longer ones are out of every range S4 accepts (and saturate).
MAX_DIGITS = 19
SATURATED = 10**MAX_DIGITS
_ASCII_DIGITS = frozenset("0123456789")
#: Characters a response header value must not carry (header injection, or a value uvicorn refuses).
_CONTROL = frozenset(chr(c) for c in (*range(0, 9), *range(10, 32), 127))


def wire_bytes(text: str) -> bytes:
    """The bytes a latin-1-decoded ASGI string came from (path, query string and header values arrive so)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def decode_bytes(raw: bytes, *, what: str, code: ErrorCode = ErrorCode.INVALID_URI) -> str:
    """Strict UTF-8; ``code`` (InvalidURI for the URI, InvalidArgument for headers) when not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if code is ErrorCode.INVALID_URI:
            raise S3Error(code, f"Couldn't parse the specified URI: the {what} is not valid UTF-8.") from None
        raise S3Error(code, f"The {what} is not valid UTF-8.", ArgumentName=what) from None


def unquote_strict(text: str, *, what: str, code: ErrorCode = ErrorCode.INVALID_URI,
                   plus_is_space: bool = False) -> str:
    """Percent-decode ``text`` (latin-1 wire string) to a UTF-8 string, refusing bytes that are not UTF-8."""
    if "%" not in text and "+" not in text and text.isascii():
        return text  # the usual case: nothing to decode
    raw = wire_bytes(text)
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    return decode_bytes(unquote_to_bytes(raw), what=what, code=code)


def parse_query(query_string: str, *, code: ErrorCode = ErrorCode.INVALID_URI,
                what: str = "query string") -> dict[str, str]:
    """Query parameters (the last occurrence wins, as with ``dict(parse_qsl(...))`` before; blank values kept;
    ``+`` is a space), strictly decoded."""
    params: dict[str, str] = {}
    if not query_string:
        return params
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params[unquote_strict(name, what=what, code=code, plus_is_space=True)] = unquote_strict(
            value, what=what, code=code, plus_is_space=True)
    return params


def header_value(text: str, *, name: str) -> str:
    """A client-chosen response header value (``response-*`` overrides): no control characters (CR/LF/NUL
    would split or end the header), and the UTF-8 text as its wire bytes (ASGI header values are latin-1)."""
    if _CONTROL.intersection(text):
        raise S3Error(ErrorCode.INVALID_ARGUMENT, f"{name} contains a control character.", ArgumentName=name)
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def digits_value(text: str) -> int | None:
    """The value of a string of ASCII digits (None if ``text`` is anything else); past ``MAX_DIGITS`` digits
    the value saturates at ``SATURATED``, which is beyond every limit S4 checks."""
    if not text or not _ASCII_DIGITS.issuperset(text):
        return None
    stripped = text.lstrip("0") or "0"
    return SATURATED if len(stripped) > MAX_DIGITS else int(stripped)


def parse_int(text: str, name: str, *, minimum: int = 0, maximum: int = SATURATED,
              code: ErrorCode = ErrorCode.INVALID_ARGUMENT, message: str | None = None,
              argument: bool = True) -> int:
    """An integer within [minimum, maximum] written as ASCII digits (a leading ``-`` is read, and refused by a
    non-negative ``minimum``); otherwise S3Error(``code``) naming the argument (value shortened to 64 chars)."""
    negative = text.startswith("-")
    value = digits_value(text[1:] if negative else text)
    if value is not None and negative:
        value = -value
    if value is None or not minimum <= value <= maximum:
        message = message or f"{name} must be an integer between {minimum} and {maximum}."
        if argument:
            raise S3Error(code, message, ArgumentName=name, ArgumentValue=text[:64])
        raise S3Error(code, message)
    return value
