"""The read and delete paths' shortcuts answer as the general code did (docs/performance.md, branch hard-get18)."""

from __future__ import annotations

import pytest

from s4.api.s3.headers import _CONDITIONAL, check_read, delete_conditions
from s4.engine.errors import S3Error
from s4.engine.model import BlobLocation, BlobRef, ObjectVersion

VERSION = ObjectVersion("k", "null", 1_700_000_000_000, 4, "abc")
#: A value of each conditional header that the version above fails (304 or 412).
FAILING = {"if-match": '"other"', "if-none-match": '"abc"', "if-modified-since": "Wed, 01 Jan 2100 00:00:00 GMT",
           "if-unmodified-since": "Thu, 01 Jan 1970 00:00:00 GMT"}


@pytest.mark.parametrize("name", _CONDITIONAL)
def test_every_conditional_header_is_evaluated_with_and_without_a_prefix(name: str) -> None:
    with pytest.raises(S3Error):
        check_read({name: FAILING[name]}, VERSION)
    with pytest.raises(S3Error):
        check_read({"x-amz-copy-source-" + name: FAILING[name]}, VERSION, prefix="x-amz-copy-source-")


def test_a_read_without_conditional_headers_passes() -> None:
    check_read({"host": "h", "range": "bytes=0-1"}, VERSION)


def test_delete_conditions_are_none_only_without_any_conditional_header() -> None:
    assert delete_conditions({"host": "h"}) is None
    for name, value in (("if-match", '"e"'), ("x-amz-if-match-size", "4"),
                        ("x-amz-if-match-last-modified-time", "Wed, 01 Jan 2025 00:00:00 GMT")):
        conditions = delete_conditions({name: value})
        assert conditions is not None and conditions


def test_blob_values_hash_and_compare_by_their_fields() -> None:
    assert len({BlobRef(b"h", 1), BlobRef(b"h", 1), BlobRef(b"h", 2)}) == 2
    assert len({BlobLocation(b"h", "v", 52, 4), BlobLocation(b"h", "v", 52, 4)}) == 1
    assert BlobLocation(b"h", "v", 52, 4) != BlobLocation(b"h", "w", 52, 4)
