"""Versioning corner cases against AWS S3 semantics, through boto3 on a real server.

Each test states the S3 behaviour it checks: the ``null`` version of suspended buckets, delete markers in
listings and on GET/HEAD, deleting a specific version or marker, restoring by copy, and ListObjectVersions paging.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, dict[str, str]]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["ResponseMetadata"]["HTTPHeaders"]


def versioning(s3: Any, bucket: str, status: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def body(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bytes:
    extra = {"VersionId": version_id} if version_id else {}
    return s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()  # type: ignore[no-any-return]


def listing(s3: Any, bucket: str, **kwargs: Any) -> tuple[dict[str, Any], list[tuple[str, str, bool, bool]]]:
    """ListObjectVersions: boto3's parsed page and its (key, version id, is latest, is marker) rows in the XML's
    document order (boto3 splits Version and DeleteMarker elements into two lists, losing S3's interleaving)."""
    captured: dict[str, bytes] = {}

    def keep(http_response: Any, **_: Any) -> None:
        captured["xml"] = http_response.content

    s3.meta.events.register("after-call.s3.ListObjectVersions", keep)
    try:
        page = s3.list_object_versions(Bucket=bucket, **kwargs)
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectVersions", keep)
    found = re.findall(r"<(Version|DeleteMarker)><Key>([^<]*)</Key><VersionId>([^<]*)</VersionId>"
                       r"<IsLatest>(true|false)</IsLatest>", captured["xml"].decode())
    return page, [(key, vid, latest == "true", kind == "DeleteMarker") for kind, key, vid, latest in found]


def history(s3: Any, bucket: str, **kwargs: Any) -> list[tuple[str, str, bool, bool]]:
    return listing(s3, bucket, **kwargs)[1]


# --- suspended buckets ------------------------------------------------------------------------------------------

def test_suspended_put_overwrites_the_null_version_and_keeps_others(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"before versioning")  # the null version
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    versioning(s3, bucket, "Suspended")
    s3.put_object(Bucket=bucket, Key="k", Body=b"suspended 1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"suspended 2")
    assert body(s3, bucket, "k") == b"suspended 2"
    assert body(s3, bucket, "k", "null") == b"suspended 2"
    assert body(s3, bucket, "k", v1) == b"v1"
    # exactly one null version (the newest), and the Enabled-era version untouched
    assert history(s3, bucket) == [("k", "null", True, False), ("k", v1, False, False)]
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["VersionId"] == "null"


def test_suspended_delete_adds_a_null_marker_replacing_the_null_version(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    versioning(s3, bucket, "Suspended")
    s3.put_object(Bucket=bucket, Key="k", Body=b"null data")
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] == "null"
    assert history(s3, bucket) == [("k", "null", True, True), ("k", v1, False, False)]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k")
    code, status, headers = err(exc)
    assert (code, status) == ("NoSuchKey", 404) and headers["x-amz-delete-marker"] == "true"
    assert headers["x-amz-version-id"] == "null"
    assert body(s3, bucket, "k", v1) == b"v1"
    # a second delete replaces the null marker with another null marker: still one null entry
    assert s3.delete_object(Bucket=bucket, Key="k")["VersionId"] == "null"
    assert history(s3, bucket) == [("k", "null", True, True), ("k", v1, False, False)]
    # removing the null marker by id brings the Enabled-era version back
    removed = s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    assert removed["DeleteMarker"] is True and removed["VersionId"] == "null"
    assert body(s3, bucket, "k") == b"v1"


def test_suspended_delete_of_a_missing_key_still_adds_a_null_marker(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Suspended")
    deleted = s3.delete_object(Bucket=bucket, Key="never")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] == "null"
    assert history(s3, bucket) == [("never", "null", True, True)]


def test_reenabling_after_suspension_keeps_the_null_version(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Suspended")
    s3.put_object(Bucket=bucket, Key="k", Body=b"null")
    versioning(s3, bucket, "Enabled")
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2")["VersionId"]
    assert v2 != "null"
    assert history(s3, bucket) == [("k", v2, True, False), ("k", "null", False, False)]
    assert body(s3, bucket, "k", "null") == b"null"


def test_unversioned_bucket_reports_no_version_ids(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert "VersionId" not in put
    assert "VersionId" not in s3.head_object(Bucket=bucket, Key="k")
    assert history(s3, bucket) == [("k", "null", True, False)]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert "DeleteMarker" not in deleted and "VersionId" not in deleted
    assert s3.list_object_versions(Bucket=bucket).get("Versions") is None


# --- delete markers ---------------------------------------------------------------------------------------------

def test_markers_in_listing_have_is_latest_and_version_ids(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    a1 = s3.put_object(Bucket=bucket, Key="a", Body=b"a1")["VersionId"]
    m1 = s3.delete_object(Bucket=bucket, Key="a")["VersionId"]
    a2 = s3.put_object(Bucket=bucket, Key="a", Body=b"a2")["VersionId"]
    m2 = s3.delete_object(Bucket=bucket, Key="a")["VersionId"]
    b1 = s3.put_object(Bucket=bucket, Key="b", Body=b"b1")["VersionId"]
    assert len({a1, m1, a2, m2, b1}) == 5 and "null" not in {m1, m2}
    assert history(s3, bucket) == [("a", m2, True, True), ("a", a2, False, False), ("a", m1, False, True),
                                   ("a", a1, False, False), ("b", b1, True, False)]
    page = s3.list_object_versions(Bucket=bucket)
    markers = {m["VersionId"]: m for m in page["DeleteMarkers"]}
    assert markers[m2]["IsLatest"] and not markers[m1]["IsLatest"]
    assert "Size" not in markers[m2] and "ETag" not in markers[m2]
    # ListObjects hides a key whose latest version is a marker
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["b"]


def test_get_and_head_of_a_marker_version_are_method_not_allowed(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=bucket, Key="k", VersionId=marker)
        code, status, headers = err(exc)
        assert status == 405 and headers["x-amz-delete-marker"] == "true"
        assert headers["x-amz-version-id"] == marker
        if call is s3.get_object:  # HEAD has no body, so boto3 only sees the status
            assert code == "MethodNotAllowed"


def test_head_of_a_key_whose_latest_is_a_marker_is_404_with_the_marker_header(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    _, status, headers = err(exc)
    assert status == 404
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker


def test_deleting_the_marker_restores_the_object(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    gone = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker
    assert body(s3, bucket, "k") == b"v1"
    assert s3.head_object(Bucket=bucket, Key="k")["VersionId"] == v1
    assert history(s3, bucket) == [("k", v1, True, False)]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]


def test_deleting_the_latest_version_promotes_the_previous_one(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2")["VersionId"]
    v3 = s3.put_object(Bucket=bucket, Key="k", Body=b"v3")["VersionId"]
    gone = s3.delete_object(Bucket=bucket, Key="k", VersionId=v3)
    assert gone["VersionId"] == v3 and "DeleteMarker" not in gone
    assert body(s3, bucket, "k") == b"v2"
    assert history(s3, bucket) == [("k", v2, True, False), ("k", v1, False, False)]
    # deleting a noncurrent version leaves the latest alone
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    assert history(s3, bucket) == [("k", v2, True, False)]
    # deleting the last version removes the key entirely
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert s3.list_object_versions(Bucket=bucket).get("Versions") is None
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    _, status, headers = err(exc)
    assert status == 404 and headers["x-amz-delete-marker"] == "false"  # no marker left behind


def test_delete_of_a_missing_version_id(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    missing = "6f1c8b9e-0000-4000-8000-000000000000"
    assert s3.delete_object(Bucket=bucket, Key="k", VersionId=missing)["VersionId"] == missing
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", VersionId="not a version id")
    assert err(exc)[:2] == ("InvalidArgument", 400)
    assert body(s3, bucket, "k") == b"v1"


def test_delete_objects_with_version_ids_and_markers(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": marker},
                                                               {"Key": "new"}]})
    by_key = {d["Key"]: d for d in out["Deleted"]}
    assert by_key["k"]["VersionId"] == marker and by_key["k"]["DeleteMarker"] is True
    assert by_key["k"]["DeleteMarkerVersionId"] == marker
    assert by_key["new"]["DeleteMarker"] is True and by_key["new"]["DeleteMarkerVersionId"] not in ("", "null")
    assert body(s3, bucket, "k") == b"v1" and v1


# --- restoring by copy ------------------------------------------------------------------------------------------

def test_copy_with_version_id_restores_an_old_version(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"old", Metadata={"gen": "1"}, ContentType="text/x-old")
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"new")["VersionId"]
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k",
                                                               "VersionId": v1["VersionId"]})
    assert copied["CopySourceVersionId"] == v1["VersionId"]
    v3 = copied["VersionId"]
    assert v3 not in (v1["VersionId"], v2)
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["VersionId"] == v3 and head["Metadata"] == {"gen": "1"} and head["ContentType"] == "text/x-old"
    assert head["ETag"] == v1["ETag"]
    assert body(s3, bucket, "k") == b"old"
    assert [v for _, v, _, _ in history(s3, bucket)] == [v3, v2, v1["VersionId"]]


def test_copy_restores_a_version_hidden_by_a_marker(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"keep me")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="other", CopySource={"Bucket": bucket, "Key": "k"})
    assert err(exc)[:2] == ("NoSuchKey", 404)
    s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v1})
    assert body(s3, bucket, "k") == b"keep me"
    assert [(latest, marker) for _, _, latest, marker in history(s3, bucket)] == [
        (True, False), (False, True), (False, False)]


def test_copy_source_naming_a_marker_is_refused(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "k", "VersionId": marker})
    assert err(exc)[:2] == ("InvalidRequest", 400)


def test_suspended_copy_and_multipart_replace_the_null_version(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"source")["VersionId"]
    versioning(s3, bucket, "Suspended")
    s3.put_object(Bucket=bucket, Key="k", Body=b"first null")
    s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert history(s3, bucket, Prefix="k") == [("k", "null", True, False)]
    assert body(s3, bucket, "k") == b"source"
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"multipart")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert history(s3, bucket, Prefix="k") == [("k", "null", True, False)]
    assert body(s3, bucket, "k") == b"multipart"


def test_suspended_writes_report_version_ids_as_s3_does(s3: Any, bucket: str) -> None:
    """AWS (localstack's AWS-validated snapshots, ceph/s3-tests): in a suspended bucket PutObject and
    CompleteMultipartUpload answer without x-amz-version-id, CopyObject answers ``null``, GET/HEAD say ``null``."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    versioning(s3, bucket, "Suspended")
    assert s3.get_object(Bucket=bucket, Key="src")["VersionId"] == "null"
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["VersionId"] == "null" and "CopySourceVersionId" not in copied
    assert "VersionId" not in s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert "VersionId" not in done
    assert s3.head_object(Bucket=bucket, Key="k")["VersionId"] == "null"


def test_null_version_id_lookups(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k", VersionId="null")
    assert err(exc)[:2] == ("NoSuchVersion", 404)
    # a null version that is latest, deleted by id, promotes the next one
    versioning(s3, bucket, "Suspended")
    s3.put_object(Bucket=bucket, Key="k", Body=b"null")
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == "null"
    s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == v1


def test_tags_follow_the_version_they_were_set_on(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2")["VersionId"]
    tagged = s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1,
                                   Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
    assert tagged["VersionId"] == v1
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["TagSet"] == [{"Key": "old", "Value": "yes"}]
    latest = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert latest["VersionId"] == v2 and latest["TagSet"] == []


# --- ListObjectVersions paging ----------------------------------------------------------------------------------

def _page_all(s3: Any, bucket: str, max_keys: int, **kwargs: Any) -> tuple[list[tuple[str, str]], list[str], int]:
    """Every (key, version id) and common prefix following NextKeyMarker/NextVersionIdMarker; number of pages."""
    rows: list[tuple[str, str]] = []
    prefixes: list[str] = []
    markers: dict[str, str] = {}
    pages = 0
    while True:
        page, got = listing(s3, bucket, MaxKeys=max_keys, **kwargs, **markers)
        pages += 1
        assert len(got) + len(page.get("CommonPrefixes", [])) <= max_keys
        rows += [(key, vid) for key, vid, _, _ in got]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            return rows, prefixes, pages
        markers = {"KeyMarker": page["NextKeyMarker"]}
        if page.get("NextVersionIdMarker"):
            markers["VersionIdMarker"] = page["NextVersionIdMarker"]


def test_paging_across_many_versions_of_one_key(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    ids = []
    for i in range(23):
        if i % 7 == 6:
            ids.append(s3.delete_object(Bucket=bucket, Key="hot")["VersionId"])
        else:
            ids.append(s3.put_object(Bucket=bucket, Key="hot", Body=str(i).encode())["VersionId"])
    s3.put_object(Bucket=bucket, Key="after", Body=b"a")
    s3.put_object(Bucket=bucket, Key="before", Body=b"b")
    expected = set(ids)
    for size in (1, 4, 5, 23, 1000):
        rows, _, pages = _page_all(s3, bucket, size)
        assert [k for k, _ in rows] == ["after", "before"] + ["hot"] * 23, size
        assert {v for k, v in rows if k == "hot"} == expected and len(rows) == 25, size
        assert len(rows) == len(set(rows)), f"page size {size} repeated a version"
        assert pages == -(-25 // size), size
    # the raw page boundary inside one key: NextKeyMarker is the key, NextVersionIdMarker a version of it
    first = s3.list_object_versions(Bucket=bucket, MaxKeys=4, KeyMarker="before")
    assert first["IsTruncated"] and first["NextKeyMarker"] == "hot"
    newest_first = list(reversed(ids))
    assert first["NextVersionIdMarker"] == newest_first[3]
    rest = s3.list_object_versions(Bucket=bucket, KeyMarker="hot", VersionIdMarker=newest_first[3])
    got = [v["VersionId"] for v in rest.get("Versions", [])] + [m["VersionId"] for m in rest.get("DeleteMarkers", [])]
    assert sorted(got) == sorted(newest_first[4:])
    # a key marker without a version-id marker skips every version of that key
    after_hot = s3.list_object_versions(Bucket=bucket, KeyMarker="hot")
    assert after_hot.get("Versions") is None and after_hot.get("DeleteMarkers") is None


def test_paging_with_a_delimiter(s3: Any, bucket: str) -> None:
    versioning(s3, bucket, "Enabled")
    for key in ("a/1", "a/2", "b", "c/x/1", "d"):
        for i in range(3):
            s3.put_object(Bucket=bucket, Key=key, Body=f"{key}{i}".encode())
    s3.delete_object(Bucket=bucket, Key="d")
    s3.delete_object(Bucket=bucket, Key="c/x/1")  # a prefix that holds only a marker-latest key
    everything, prefixes, _ = _page_all(s3, bucket, 1000, Delimiter="/")
    assert prefixes == ["a/", "c/"]
    assert [k for k, _ in everything] == ["b"] * 3 + ["d"] * 4
    assert history(s3, bucket, Delimiter="/")[3][2:] == (True, True)  # d's marker first, latest
    for size in (1, 2, 3, 5):
        rows, pfx, _ = _page_all(s3, bucket, size, Delimiter="/")
        assert rows == everything and pfx == prefixes, size
    inside, pfx, _ = _page_all(s3, bucket, 2, Delimiter="/", Prefix="c/")
    assert inside == [] and pfx == ["c/x/"]
    page = s3.list_object_versions(Bucket=bucket, Delimiter="/", KeyMarker="a/")
    assert [p["Prefix"] for p in page.get("CommonPrefixes", [])] == ["c/"]


def test_paging_resumes_after_a_version_id_marker_that_was_deleted(s3: Any, bucket: str) -> None:
    """AWS (localstack's AWS-validated snapshot): a client that deletes each page of versions before asking for
    the next one (boto3's ``bucket.object_versions.delete()``) still gets the older versions of the key."""
    versioning(s3, bucket, "Enabled")
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=str(i).encode())["VersionId"] for i in range(5)][::-1]
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=3)
    assert [v["VersionId"] for v in page["Versions"]] == ids[:3]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": v} for v in ids[:3]]})
    rest = s3.list_object_versions(Bucket=bucket, KeyMarker=page["NextKeyMarker"],
                                   VersionIdMarker=page["NextVersionIdMarker"])
    assert [v["VersionId"] for v in rest.get("Versions", [])] == ids[3:]


def test_key_marker_inside_a_common_prefix_does_not_repeat_it(s3: Any, bucket: str) -> None:
    """AWS (localstack's AWS-validated snapshot): resuming from a key under an already listed common prefix
    continues after that prefix."""
    versioning(s3, bucket, "Enabled")
    for key in ("folder/a/1", "folder/a/2", "folder/file1", "folder/file2"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    page = s3.list_object_versions(Bucket=bucket, Prefix="folder/", Delimiter="/", MaxKeys=1,
                                   KeyMarker="folder/a/1")
    assert "CommonPrefixes" not in page
    assert [v["Key"] for v in page["Versions"]] == ["folder/file1"]


def test_head_after_unversioned_delete_says_delete_marker_false(s3: Any, bucket: str) -> None:
    """A GET/HEAD 404 for a key with no version says ``x-amz-delete-marker: false`` (it said nothing; s3-tests'
    test_delete_marker_nonversioned); under a delete marker it still says ``true``."""
    s3.put_object(Bucket=bucket, Key="frodo", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="frodo")
    for call in (s3.head_object, s3.get_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=bucket, Key="frodo")
        assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "false"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="bilbo", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="bilbo")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="bilbo")
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
