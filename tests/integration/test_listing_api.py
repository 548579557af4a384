"""Listings against a real server: 10,000 keys, paging, delimiters, prefixes, URL encoding, versions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess

from s4.tools.bench.client import Client

N_KEYS = 10_000
TOP_LEVEL = [f"top-{i:03d}" for i in range(25)]


def nested_keys() -> list[str]:
    return [f"{i % 7}/{i:05d}" for i in range(N_KEYS - len(TOP_LEVEL))]


ALL_KEYS = sorted(nested_keys() + TOP_LEVEL)
assert len(ALL_KEYS) == N_KEYS


@pytest.fixture(scope="module")
def big_bucket(s3: Any, server: ServerProcess) -> str:
    """10,000 keys, written by the benchmark's signed client (16 at once): boto3's own per-request CPU made this
    setup the suite's second slowest step (30-50 s); the listings under test are all boto3's."""
    name = f"list-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)

    async def put_all() -> None:
        async with Client(server.endpoint, ACCESS_KEY, SECRET_KEY) as client:
            todo = iter(ALL_KEYS)

            async def lane() -> None:
                for key in todo:
                    await client.request("PUT", f"/{name}/{key}", body=key[-1:].encode())

            await asyncio.gather(*(lane() for _ in range(16)))

    asyncio.run(put_all())
    return name


def test_list_v2_paging_all_keys(s3: Any, big_bucket: str) -> None:
    keys: list[str] = []
    pages = 0
    kwargs: dict[str, Any] = {"Bucket": big_bucket, "MaxKeys": 1000}
    while True:
        page = s3.list_objects_v2(**kwargs)
        pages += 1
        assert page["MaxKeys"] == 1000
        assert page["KeyCount"] == len(page["Contents"])
        keys += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            break
        assert page["KeyCount"] == 1000
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
        assert pages < 20
    assert pages == 10
    assert keys == ALL_KEYS


def test_list_v2_object_fields(s3: Any, big_bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=big_bucket, MaxKeys=3, FetchOwner=True)
    assert [o["Key"] for o in page["Contents"]] == ALL_KEYS[:3]
    first = page["Contents"][0]
    assert first["Size"] == 1
    assert first["ETag"].startswith('"') and len(first["ETag"]) == 34
    assert first["StorageClass"] == "STANDARD"
    assert "ID" in first["Owner"]


def test_list_v2_paginator(s3: Any, big_bucket: str) -> None:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=big_bucket, PaginationConfig={"PageSize": 700}) for o in page["Contents"]]
    assert keys == ALL_KEYS


def test_list_v2_start_after(s3: Any, big_bucket: str) -> None:
    start = ALL_KEYS[4321]
    page = s3.list_objects_v2(Bucket=big_bucket, StartAfter=start, MaxKeys=50)
    assert page["StartAfter"] == start
    assert [o["Key"] for o in page["Contents"]] == ALL_KEYS[4322:4372]
    # start-after a key that does not exist
    page = s3.list_objects_v2(Bucket=big_bucket, StartAfter="3/", MaxKeys=2)
    expected = [k for k in ALL_KEYS if k > "3/"][:2]
    assert [o["Key"] for o in page["Contents"]] == expected
    # after the last key
    page = s3.list_objects_v2(Bucket=big_bucket, StartAfter=ALL_KEYS[-1])
    assert page["KeyCount"] == 0
    assert page["IsTruncated"] is False
    assert "Contents" not in page


def test_list_v1_marker_paging(s3: Any, big_bucket: str) -> None:
    keys: list[str] = []
    marker = ""
    pages = 0
    while True:
        page = s3.list_objects(Bucket=big_bucket, Marker=marker, MaxKeys=1000)
        pages += 1
        assert page["Marker"] == marker
        keys += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        # without a delimiter NextMarker is optional; the last key is the next marker
        marker = page.get("NextMarker", page["Contents"][-1]["Key"])
        assert marker == page["Contents"][-1]["Key"]
        assert pages < 20
    assert pages == 10
    assert keys == ALL_KEYS


def _walk_delimited(s3: Any, bucket: str, page_size: int, prefix: str = "") -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Delimiter": "/", "MaxKeys": page_size, "Prefix": prefix}
    while True:
        page = s3.list_objects_v2(**kwargs)
        pages += 1
        assert page["KeyCount"] == len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        assert page["KeyCount"] <= page_size
        keys += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            return keys, prefixes, pages
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def test_delimiter_common_prefixes_across_pages(s3: Any, big_bucket: str) -> None:
    keys, prefixes, pages = _walk_delimited(s3, big_bucket, page_size=3)
    assert prefixes == [f"{i}/" for i in range(7)]
    assert keys == TOP_LEVEL
    assert pages == (7 + 25 + 2) // 3  # 32 entries, 3 per page -> 11 pages
    # a single large page holds everything
    page = s3.list_objects_v2(Bucket=big_bucket, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [f"{i}/" for i in range(7)]
    assert [o["Key"] for o in page["Contents"]] == TOP_LEVEL
    assert page["KeyCount"] == 32
    assert page["IsTruncated"] is False


def test_delimiter_v1_next_marker(s3: Any, big_bucket: str) -> None:
    prefixes: list[str] = []
    keys: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=big_bucket, Delimiter="/", MaxKeys=4, Marker=marker)
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert prefixes == [f"{i}/" for i in range(7)]
    assert keys == TOP_LEVEL


def test_prefix_filtering(s3: Any, big_bucket: str) -> None:
    expected = [k for k in ALL_KEYS if k.startswith("3/")]
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=big_bucket, Prefix="3/") for o in page.get("Contents", [])]
    assert keys == expected
    assert len(expected) == len([i for i in range(N_KEYS - 25) if i % 7 == 3])
    page = s3.list_objects_v2(Bucket=big_bucket, Prefix="3/0001")
    assert [o["Key"] for o in page["Contents"]] == [k for k in ALL_KEYS if k.startswith("3/0001")]
    page = s3.list_objects_v2(Bucket=big_bucket, Prefix="top-02", Delimiter="/")
    assert [o["Key"] for o in page["Contents"]] == [f"top-02{i}" for i in range(5)]
    page = s3.list_objects_v2(Bucket=big_bucket, Prefix="nothing-here")
    assert page["KeyCount"] == 0
    assert "Contents" not in page
    # prefix + delimiter inside a folder groups nothing further
    keys, prefixes, _ = _walk_delimited(s3, big_bucket, page_size=500, prefix="6/")
    assert prefixes == []
    assert keys == [k for k in ALL_KEYS if k.startswith("6/")]


ODD_KEYS = ["a b/c d.txt", "plus+sign", "x%20literal", "ünïcödé/ß", "emoji-😀", "amp&eq=?", "tab\tkey"]


def test_encoding_type_url(s3: Any, bucket: str) -> None:
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # explicit EncodingType=url: botocore leaves the keys percent-encoded (it only decodes when it set it itself)
    page = s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert page["EncodingType"] == "url"
    encoded = [o["Key"] for o in page["Contents"]]
    assert [unquote_plus(k) for k in encoded] == sorted(ODD_KEYS)
    assert "plus%2Bsign" in encoded
    assert all(" " not in k and "\t" not in k and k.isascii() for k in encoded)
    v1 = s3.list_objects(Bucket=bucket, EncodingType="url")
    assert [unquote_plus(o["Key"]) for o in v1["Contents"]] == sorted(ODD_KEYS)
    delim = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Delimiter="/")
    assert [unquote_plus(p["Prefix"]) for p in delim["CommonPrefixes"]] == ["a b/", "ünïcödé/"]
    # default: botocore asks for url encoding itself and decodes the answer
    auto = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in auto["Contents"]] == sorted(ODD_KEYS)
    auto_v1 = s3.list_objects(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in auto_v1["CommonPrefixes"]] == ["a b/", "ünïcödé/"]
    auto_versions = s3.list_object_versions(Bucket=bucket)
    assert [v["Key"] for v in auto_versions["Versions"]] == sorted(ODD_KEYS)
    # each object is readable by the decoded name
    for key in ODD_KEYS:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"


def test_encoding_type_url_raw(s3: Any, bucket: str) -> None:
    """The wire form: keys are percent-encoded; boto3's automatic decoding is bypassed."""
    for key in ("a b", "c+d", "é"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    raw: dict[str, Any] = {}

    def grab(http_response: Any, **_: Any) -> None:
        raw["body"] = http_response.content.decode()

    s3.meta.events.register("after-call.s3.ListObjectsV2", grab)
    try:
        s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectsV2", grab)
    body = raw["body"]
    import re
    wire = re.findall(r"<Key>(.*?)</Key>", body)
    assert [unquote_plus(k) for k in wire] == ["a b", "c+d", "é"]
    assert all(" " not in k and "é" not in k for k in wire)
    assert "c%2Bd" in wire


def test_invalid_encoding_type(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, EncodingType="base64")
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"


def test_list_object_versions_paging(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    expected: list[tuple[str, str]] = []
    for k in ("k0", "k1", "k2", "k3"):
        ids = [s3.put_object(Bucket=bucket, Key=k, Body=f"{k}-{n}".encode())["VersionId"] for n in range(3)]
        expected += [(k, vid) for vid in reversed(ids)]  # newest first within a key
    marker_id = s3.delete_object(Bucket=bucket, Key="k1")["VersionId"]
    got: list[tuple[str, str]] = []
    markers: list[tuple[str, str]] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "MaxKeys": 5}
    pages = 0
    while True:
        page = s3.list_object_versions(**kwargs)
        pages += 1
        entries = len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
        assert entries <= 5
        got += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        markers += [(m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])]
        if not page["IsTruncated"]:
            break
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
        assert pages < 10
    assert pages == 3  # 13 entries / 5
    assert got == expected
    assert markers == [("k1", marker_id)]
    latest = s3.list_object_versions(Bucket=bucket, Prefix="k2")
    assert [v["IsLatest"] for v in latest["Versions"]] == [True, False, False]
    k1 = s3.list_object_versions(Bucket=bucket, Prefix="k1")
    assert [v["IsLatest"] for v in k1["Versions"]] == [False, False, False]
    assert k1["DeleteMarkers"][0]["IsLatest"] is True


# --- issue 25: listing conformance ---------------------------------------------------------------------------

def test_max_keys_zero_is_an_empty_untruncated_page(s3: Any, bucket: str) -> None:
    for key in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key="u")
    v2 = s3.list_objects_v2(Bucket=bucket, MaxKeys=0)
    assert (v2["IsTruncated"], v2["KeyCount"], "Contents" in v2, "NextContinuationToken" in v2) == (
        False, 0, False, False)
    v1 = s3.list_objects(Bucket=bucket, MaxKeys=0)
    assert (v1["IsTruncated"], "Contents" in v1) == (False, False)
    versions = s3.list_object_versions(Bucket=bucket, MaxKeys=0)
    assert (versions["IsTruncated"], "Versions" in versions) == (False, False)
    uploads = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=0)
    assert (uploads["IsTruncated"], "Uploads" in uploads) == (False, False)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=f"{bucket}-gone", MaxKeys=0)
    assert exc.value.response["Error"]["Code"] == "NoSuchBucket"


def test_allow_unordered_with_delimiter_is_invalid_argument(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="d/k", Body=b"x")

    def unordered(params: dict[str, Any], **_: Any) -> None:
        params["url"] += "&allow-unordered=true"
    s3.meta.events.register("before-call.s3.ListObjectsV2", unordered, unique_id="t-unordered-2")
    s3.meta.events.register("before-call.s3.ListObjects", unordered, unique_id="t-unordered-1")
    try:
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d/k"]
        for call in (s3.list_objects_v2, s3.list_objects):
            with pytest.raises(ClientError) as exc:
                call(Bucket=bucket, Delimiter="/")
            assert (exc.value.response["Error"]["Code"],
                    exc.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("InvalidArgument", 400)
    finally:
        s3.meta.events.unregister("before-call.s3.ListObjectsV2", unique_id="t-unordered-2")
        s3.meta.events.unregister("before-call.s3.ListObjects", unique_id="t-unordered-1")


def test_empty_continuation_token_is_echoed(s3: Any, bucket: str) -> None:
    for key in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    page = s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert page["ContinuationToken"] == ""
    assert [o["Key"] for o in page["Contents"]] == ["a", "b"] and page["IsTruncated"] is False
    assert "ContinuationToken" not in s3.list_objects_v2(Bucket=bucket)


def test_encoding_type_url_encodes_space_as_percent_20(s3: Any, bucket: str) -> None:
    """A space is %20 and a plus %2B: a plain percent-decoder gets the key back too, not only a form decoder."""
    for key in ("foo+1/bar", "quux ab/thud", "asdf+b", "a b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    for call in (s3.list_objects_v2, s3.list_objects):
        page = call(Bucket=bucket, Delimiter="/", EncodingType="url")
        assert [o["Key"] for o in page["Contents"]] == ["a%20b", "asdf%2Bb"]
        assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["foo%2B1/", "quux%20ab/"]


def test_list_buckets_pages_with_max_buckets_and_continuation_token(s3: Any) -> None:
    prefix = f"lbp-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(3)]
    for name in reversed(names):
        s3.create_bucket(Bucket=name)
    try:
        seen: list[str] = []
        token = None
        for _ in range(len(names) + 1):
            page = s3.list_buckets(MaxBuckets=2, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            assert len(page["Buckets"]) <= 2 and page.get("Prefix") == prefix
            seen += [b["Name"] for b in page["Buckets"]]
            token = page.get("ContinuationToken")
            if token is None:
                break
        assert seen == names
        # without a prefix every page holds at most max-buckets, and all pages together hold every bucket
        everything = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        paged: list[str] = []
        token = None
        for _ in range(len(everything) + 1):
            page = s3.list_buckets(MaxBuckets=1, **({"ContinuationToken": token} if token else {}))
            paged += [b["Name"] for b in page["Buckets"]]
            token = page.get("ContinuationToken")
            if token is None:
                break
        assert paged == sorted(everything)
        for bad in ("0", "10001", "x"):  # past botocore's own validation
            def max_buckets(params: dict[str, Any], value: str = bad, **_: Any) -> None:
                params["url"] += f"?max-buckets={value}"
            s3.meta.events.register("before-call.s3.ListBuckets", max_buckets, unique_id="t-max-buckets")
            try:
                with pytest.raises(ClientError) as exc:
                    s3.list_buckets()
            finally:
                s3.meta.events.unregister("before-call.s3.ListBuckets", unique_id="t-max-buckets")
            assert exc.value.response["Error"]["Code"] == "InvalidArgument", bad
    finally:
        for name in names:
            s3.delete_bucket(Bucket=name)
