"""Every view key layout (engine/views/keys.py) round-trips, stays within LMDB's key limit for every valid input,
and sorts the way the reads that scan it need."""

from __future__ import annotations

import string
import tempfile
import uuid
from pathlib import Path

import lmdb
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.engine.views import keys
from s4.engine.views.env import Views
from s4.engine.views.records import Tx

buckets = st.text(alphabet=string.ascii_lowercase + string.digits + ".-", min_size=3, max_size=63)
u64s = st.integers(0, keys.MAX_U64)
version_ids = st.one_of(st.just("null"), st.uuids().map(str))
upload_ids = st.binary(min_size=20, max_size=20).map(bytes.hex)  # 40 hex chars, as create_multipart issues


def test_lmdb_limit_is_what_the_layouts_assume() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(tmp)
        assert env.max_key_size() == keys.MAX_KEY_BYTES
        env.close()


@given(parent=u64s, name=st.binary(max_size=keys.NAME_PIECE_BYTES), kind=st.sampled_from(
    [keys.NS_DIR, keys.NS_LEAF, keys.NS_PIECE]), ident=u64s)
def test_ns_round_trip(parent: int, name: bytes, kind: bytes, ident: int) -> None:
    key = keys.ns_key(parent, name)
    assert keys.fits(key)
    assert keys.decode_ns_key(key) == (parent, name)
    assert key.startswith(keys.ns_prefix(parent))
    assert keys.decode_ns_value(keys.ns_value(kind, ident)) == (kind, ident)


@given(oid=u64s, hlc=u64s, version_id=version_ids)
def test_versions_and_vidx_round_trip(oid: int, hlc: int, version_id: str) -> None:
    key = keys.versions_key(oid, keys.version_order(hlc))
    assert keys.decode_versions_key(key) == (oid, hlc)
    assert keys.fits(key) and keys.fits(keys.vidx_key(oid, version_id))
    assert keys.decode_vidx_key(keys.vidx_key(oid, version_id)) == (oid, version_id)


@given(oid=u64s, a=u64s, b=u64s)
def test_versions_sort_newest_first(oid: int, a: int, b: int) -> None:
    ka, kb = keys.versions_key(oid, keys.version_order(a)), keys.versions_key(oid, keys.version_order(b))
    assert (ka < kb) == (a > b)


node_ids = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)


@given(oid=u64s, a=st.tuples(u64s, node_ids), b=st.tuples(u64s, node_ids))
def test_versions_sort_by_hlc_then_origin_newest_first(oid: int, a: tuple[int, str], b: tuple[int, str]) -> None:
    """Two nodes may stamp one hlc: the origin is part of the key, so both versions are kept, in (hlc, origin)
    order, and the decoded hlc is unchanged."""
    ka, kb = keys.versions_key(oid, keys.version_order(*a)), keys.versions_key(oid, keys.version_order(*b))
    assert (ka < kb) == (a > b) and (ka == kb) == (a == b)
    assert keys.decode_versions_key(ka) == (oid, a[0]) and keys.decode_version_order_origin(ka) == a[1]


@given(bucket=buckets, key=st.text(max_size=1024), version_id=version_ids)
def test_object_version_key_round_trip(bucket: str, key: str, version_id: str) -> None:
    ovk = keys.object_version_key(bucket, key, version_id)
    assert keys.fits(ovk) and ovk.startswith(keys.bucket_prefix(bucket))
    assert keys.decode_object_version_key(ovk)[::2] == (bucket, version_id)


@given(key_id=u64s, ms=u64s, upload_id=upload_ids, ms2=u64s)
def test_upload_keys_round_trip_and_time_order(key_id: int, ms: int, upload_id: str, ms2: int) -> None:
    key = keys.upload_keys_key(key_id, ms, upload_id)
    assert keys.fits(key)
    assert keys.decode_upload_keys_key(key) == (key_id, ms, upload_id)
    assert key.startswith(keys.upload_keys_prefix(key_id))
    if ms < ms2:
        assert key < keys.upload_keys_key(key_id, ms2, upload_id)


@given(upload_id=upload_ids, number=st.integers(1, 10_000), other=st.integers(1, 10_000))
def test_parts_round_trip_and_number_order(upload_id: str, number: int, other: int) -> None:
    key = keys.parts_key(upload_id, number)
    assert keys.fits(key) and keys.decode_parts_key(key) == (upload_id, number)
    assert key.startswith(keys.parts_prefix(upload_id))
    assert (key < keys.parts_key(upload_id, other)) == (number < other)


@given(bucket=buckets, kind=st.sampled_from(["cors", "lifecycle", "tagging", "policy", "website"]), token=st.text(
    max_size=3000), upload_id=upload_ids, other=buckets)
def test_bucket_scoped_layouts_round_trip_and_stay_in_their_bucket(bucket: str, kind: str, token: str,
                                                                   upload_id: str, other: str) -> None:
    cfg = keys.bucket_cfg_key(bucket, kind)
    rename = keys.rename_token_key(bucket, token)
    done = keys.completed_upload_key(bucket, upload_id)
    assert all(keys.fits(k) for k in (cfg, rename, done, keys.bucket_key(bucket)))
    assert keys.decode_bucket_cfg_key(cfg) == (bucket, kind)
    assert keys.decode_rename_token_key(rename)[0] == bucket
    assert keys.decode_completed_upload_key(done) == (bucket, upload_id)
    assert keys.decode_bucket_key(keys.bucket_key(bucket)) == bucket
    for key in (cfg, rename, done):  # a bucket's range holds its own keys only
        assert key.startswith(keys.bucket_prefix(bucket))
        assert key.startswith(keys.bucket_prefix(other)) == (other == bucket)


def test_issue18_bucket_named_mpu_does_not_own_other_buckets_upload_records() -> None:
    """The old shared ``tokens`` database put every completed upload under ``b"mpu\\0"``."""
    upload_id = uuid.uuid4().hex + "abcdefgh"
    assert not keys.completed_upload_key("photos", upload_id).startswith(keys.bucket_prefix("mpu"))
    with tempfile.TemporaryDirectory() as tmp:
        views = Views(Path(tmp) / "views", sync=False)
        try:
            with views.env.begin(write=True) as txn:
                tx = Tx(txn, views.dbs)
                tx.put_completed_upload("photos", upload_id, {"k": "obj"})
                tx.put_rename_token("mpu", upload_id, "a", "b")
                tx.drop_bucket_records("mpu")
                assert tx.completed_upload("photos", upload_id) == {"k": "obj"}
                assert tx.rename_token("mpu", upload_id) is None
        finally:
            views.close()


@settings(max_examples=50)
@given(text=st.text(max_size=1500))
def test_lookups_by_overlong_strings_find_nothing(text: str) -> None:
    """A version id, upload id or bucket name longer than LMDB allows was never stored: absent, not an error."""
    with tempfile.TemporaryDirectory() as tmp:
        views = Views(Path(tmp) / "views", sync=False)
        try:
            with views.read() as txn:
                tx = Tx(txn, views.dbs)
                assert tx.version(1, text) is None
                assert tx.upload(text) is None
                assert tx.part(text, 1) is None
                assert tx.bucket(text) is None
                assert tx.rename_token("b", text) is None
                assert list(tx.parts(text)) == []
        finally:
            views.close()


@given(db=st.sampled_from(["ns", "upload_ns", "versions", "vidx", "upload_keys", "parts", "rename_tokens",
                           "bucket_cfg", "completed_uploads", "blobs", "buckets"]), raw=st.binary(max_size=600))
def test_describe_never_fails(db: str, raw: bytes) -> None:
    assert isinstance(keys.describe(db, raw), str)
