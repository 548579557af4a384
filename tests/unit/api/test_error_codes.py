"""Every ErrorCode renders as an S3 error document a client can parse (issue 18's quality gate)."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from s4.api.s3.xml import error_xml
from s4.engine.errors import ErrorCode, S3Error


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_issue18_every_error_code_renders(code: ErrorCode) -> None:
    assert 300 <= code.status <= 599
    assert code.aws_code and code.aws_code.isascii() and " " not in code.aws_code
    assert code.default_message
    error = S3Error(code, resource="bucket/key<&>", Extra="v&<>")
    root = fromstring(error_xml(code.aws_code, error.message, error.resource, "REQ1", dict(error.fields)))
    assert root.tag == "Error"
    assert root.findtext("Code") == code.aws_code
    assert root.findtext("Message") == code.default_message
    assert root.findtext("RequestId") == "REQ1"
    assert root.findtext("Resource") == "bucket/key<&>"
    assert root.findtext("Extra") == "v&<>"


def test_issue18_error_codes_are_unique() -> None:
    codes = [c.aws_code for c in ErrorCode]
    assert len(codes) == len(set(codes))
