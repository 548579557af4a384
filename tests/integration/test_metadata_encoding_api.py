"""Non-ASCII user metadata: stored as text, returned as RFC 2047 encoded words (as S3 documents), whichever way
the client sent it (raw UTF-8 bytes, or encoded words)."""

from __future__ import annotations

import http.client
from email.header import Header, decode_header, make_header
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from helpers.s3client import make_client
from helpers.server import ServerProcess


def _send_meta(server: ServerProcess, value: str) -> Any:
    """A client of its own that puts the header in after botocore's own validation, as s3-tests does (botocore
    sends it as UTF-8)."""
    def add(**kwargs: Any) -> None:
        kwargs["params"]["headers"]["x-amz-meta-meta1"] = value
    client = make_client(server.endpoint)
    client.meta.events.register("before-call.s3.PutObject", add)
    return client


def _raw_meta(s3: Any, bucket: str, key: str) -> bytes:
    """The header's wire bytes on a HEAD (a presigned URL read with http.client, which keeps every byte)."""
    url = urlsplit(s3.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": key}))
    conn = http.client.HTTPConnection(url.netloc, timeout=30)
    try:
        conn.request("HEAD", f"{url.path}?{url.query}")
        value = conn.getresponse().getheader("x-amz-meta-meta1")
    finally:
        conn.close()
    assert value is not None
    return value.encode("latin-1")


@pytest.mark.parametrize("sent", ["Hello World\xe9", "=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?=",
                                  "=?utf-8?q?Hello_World=C3=A9?="])
def test_non_ascii_metadata_round_trips_as_rfc2047(server: ServerProcess, s3: Any, bucket: str, sent: str) -> None:
    _send_meta(server, sent).put_object(Bucket=bucket, Key="k", Body=b"x")
    raw = _raw_meta(s3, bucket, "k")
    assert raw.isascii() and raw.startswith(b"=?utf-8?")  # was the UTF-8 bytes of what was sent, as latin-1 text
    assert str(make_header(decode_header(raw.decode("ascii")))) == "Hello World\xe9"
    got = s3.get_object(Bucket=bucket, Key="k")["Metadata"]["meta1"]
    assert str(make_header(decode_header(got))) == "Hello World\xe9"


def test_ascii_metadata_that_only_looks_encoded_is_kept(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"meta1": "a =? b ?= c"})
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"]["meta1"] == "a =? b ?= c"


@pytest.mark.parametrize(("count", "fits"), [(1000, True), (1100, False)])
def test_metadata_limit_counts_utf8_bytes_of_the_text(server: ServerProcess, bucket: str, count: int,
                                                       fits: bool) -> None:
    """The 2 KiB limit counts the UTF-8 bytes of the text, not of its encoded words: 1,000 "é" (2,000 bytes, about
    2,700 characters encoded) fit, 1,100 (2,200 bytes) do not."""
    client = _send_meta(server, Header("\xe9" * count, "utf-8", maxlinelen=0).encode())
    if fits:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
        return
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert exc.value.response["Error"]["Code"] == "MetadataTooLarge"
