"""The one decoder of request text (api/inputs.py): strict UTF-8 and integers with S3's errors (issue 18)."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.api.inputs import SATURATED, digits_value, header_value, parse_int, parse_query, unquote_strict
from s4.engine.errors import ErrorCode, S3Error


def test_issue18_invalid_utf8_is_refused_not_replaced() -> None:
    with pytest.raises(S3Error) as exc:
        unquote_strict("/b/u%ff", what="path")
    assert exc.value.code is ErrorCode.INVALID_URI
    assert unquote_strict("/b/u%c3%be", what="path") == "/b/u\u00fe"


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_issue18_two_different_keys_never_decode_to_one(a: bytes, b: bytes) -> None:
    """Decoding is injective: distinct byte strings give distinct keys, or one of them is refused."""
    decoded = []
    for raw in (a, b):
        try:
            decoded.append(unquote_strict(quote_from_bytes(raw), what="path"))
        except S3Error as exc:
            assert exc.code is ErrorCode.INVALID_URI
            decoded.append(None)
    if a != b and None not in decoded:
        assert decoded[0] != decoded[1]
    for raw, text in zip((a, b), decoded, strict=True):
        if text is not None:
            assert text.encode("utf-8") == raw


def test_issue18_query_values_are_strict_too() -> None:
    assert parse_query("prefix=a%2Bb+c&marker=") == {"prefix": "a+b c", "marker": ""}
    for bad in ("prefix=%ff", "%fe=1", "versionId=%c3"):
        with pytest.raises(S3Error) as exc:
            parse_query(bad)
        assert exc.value.code is ErrorCode.INVALID_URI


@pytest.mark.parametrize("text", ["²", "٣", "1_000", " 5", "5 ", "+5", "0x10", "", "-", "1e3", "1" * 5000])
def test_issue18_parse_int_refuses_what_int_would_take_or_choke_on(text: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_int(text, "partNumber", minimum=1, maximum=10_000)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert exc.value.fields["ArgumentName"] == "partNumber"
    assert len(exc.value.fields["ArgumentValue"]) <= 64


@given(st.text(max_size=30))
def test_issue18_parse_int_raises_only_s3_errors(text: str) -> None:
    try:
        value = parse_int(text, "n", minimum=-5, maximum=10**12)
    except S3Error:
        return
    assert -5 <= value <= 10**12
    digits = text[1:] if text.startswith("-") else text
    assert digits.isascii() and digits.isdigit() and int(digits) == abs(value)


def test_issue18_digits_saturate_instead_of_overflowing() -> None:
    assert digits_value("0" * 50 + "7") == 7
    assert digits_value("9" * 5000) == SATURATED
    assert digits_value("²") is None
    assert parse_int("-1", "p", minimum=-1) == -1
    with pytest.raises(S3Error):
        parse_int("4294967296", "p", maximum=10_000)


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "a\x7fb"])
def test_issue18_response_header_values_refuse_control_characters(bad: str) -> None:
    with pytest.raises(S3Error) as exc:
        header_value(bad, name="response-content-type")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_issue18_response_header_values_keep_utf8_bytes() -> None:
    assert header_value("text/plain\tx", name="h") == "text/plain\tx"
    assert header_value("attachment; filename=\u00e9\u65e5", name="h").encode("latin-1") == \
        "attachment; filename=\u00e9\u65e5".encode()
